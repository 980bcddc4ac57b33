// The split of validation into steps that read placement and steps that do not (index.ts): a placement-free step
// must not read where a VM runs, or a memo made for one placement would hide an issue of another.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidSpecError } from '../../shared/errors.js';
import { loadSpec, parseSpecText, placeAndValidate } from '../load.js';
import { placeSpec } from '../placement.js';
import type { Spec } from '../schema.js';
import { validSpecArb } from '../spec.arbitrary.js';
import { VALIDATION_STEPS, validateSpec, validateSpecWith, validationContext } from './index.js';

const PLACEMENT = new Set<PropertyKey>(['host', 'placedBy']);

/** `spec` whose VMs throw when a step reads their placement. */
function blind(spec: Spec): Spec {
  return {
    ...spec,
    vms: spec.vms.map(
      (vm) =>
        new Proxy(vm, {
          get(target, key, receiver) {
            if (PLACEMENT.has(key)) throw new Error(`read vms[].${String(key)} of ${vm.name}`);
            return Reflect.get(target, key, receiver);
          },
        }),
    ),
  };
}

/** Runs every placement-free step over `spec` with its VMs' placement hidden (placed steps see it, as they must). */
function runBlind(spec: Spec): void {
  const seen = validationContext(spec);
  const hidden = { ...seen, spec: blind(spec) };
  for (const step of VALIDATION_STEPS) {
    if (step.placed) step.run(seen, () => {});
    else
      try {
        step.run(hidden, () => {});
      } finally {
        seen.lab = hidden.lab;
        if (hidden.plans) seen.plans = hidden.plans;
      }
  }
}

const examples = fileURLToPath(new URL('../../../examples/', import.meta.url));

describe('validation steps', () => {
  it.each(readdirSync(examples).filter((f) => /\.ya?ml$/.test(f)))(
    'placement-free steps never read placement (%s)',
    (file) => {
      runBlind(loadSpec(readFileSync(`${examples}${file}`, 'utf8'), file));
    },
  );

  it('placement-free steps never read placement (random specs, valid or not)', () => {
    fc.assert(
      fc.property(validSpecArb, fc.nat(), (raw, n) => {
        // Some VMs lose their host (the scheduler places them; without a cluster that is an issue).
        for (const [i, vm] of (raw.vms as Array<{ host?: string }>).entries())
          if ((n >> i) & 1) delete vm.host;
        runBlind(placeSpec(parseSpecText(JSON.stringify(raw))));
      }),
      { numRuns: 150 },
    );
  });

  it('gives the same issues, in the same order, with a memo made for another placement', () => {
    const text = JSON.stringify({
      version: 1,
      cluster: { store: 'etcd', endpoints: ['https://10.0.0.9:2379'] },
      hosts: [
        { name: 'a', agent: 'unix:///a' },
        { name: 'b', agent: 'unix:///b' },
        { name: 's', agent: 'unix:///s', role: 'storage', address: '10.0.0.3' },
      ],
      networks: [{ name: 'ov', mode: 'vxlan', vni: 100, cidr: '10.20.0.0/16' }],
      pools: [{ name: 'local', type: 'dir', host: 'a', path: '/var/lib/vmlink/local' }],
      vms: [
        {
          name: 'v1',
          host: 'a',
          nics: [{ network: 'ov' }],
          disks: [{ name: 'root', pool: 'local', sizeMiB: 64 }],
        },
        { name: 'v2', host: 'b', nics: [{ network: 'missing' }] },
      ],
    });
    const parsed = parseSpecText(text);
    const { issues: first, memo } = validateSpecWith(placeSpec(parsed));
    // Both VMs moved by owner records: v1 away from its dir pool's host, v2 onto the storage host.
    const moved = placeSpec(parsed, {
      v1: { host: 'b', source: 'owner' },
      v2: { host: 's', source: 'owner' },
    });
    const whole = validateSpec(moved);
    expect(validateSpecWith(moved, memo).issues).toEqual(whole);
    // The placement-free issue (the unknown network) is reported from the memo; the placed ones are new.
    expect(whole.length).toBeGreaterThan(first.length);
    expect(whole.some((i) => i.path === 'vms[1].host' && /storage host/.test(i.message))).toBe(true);
    expect(whole.some((i) => /dir pool "local" is on host "a"/.test(i.message))).toBe(true);
    expect(() => placeAndValidate(parsed, 'x.yaml', { v2: { host: 's', source: 'owner' } }, memo)).toThrow(
      InvalidSpecError,
    );
  });
});
