import { describe, expect, it } from 'vitest';
import type { HostReport } from '../shared/model.js';
import type { TuningCapabilities } from '../shared/tuning.js';
import { checkTuning } from '../spec/admission-tuning.js';
import { loadSpec } from '../spec/load.js';
import { planChanges } from './diff.js';
import { formatPlan } from './format.js';
import { resolveSpec, resolveUplinks } from './resolve.js';
import { resolveTunings, tuningDrift } from './tuning.js';

const spec = loadSpec(`
version: 1
hosts:
  - name: host1
    network: { mtu: 9000 }
    confirmTimeoutSeconds: 30
    tuning: { congestion: bbr, ecn: 1 }
  - { name: host2 }
networks:
  - { name: lan, host: host1, mode: bridge }
`);

// A lab host on a machine whose default is bbr (kernel 6.18): cubic is loaded but not allowed in the namespace.
const labCaps = (current: TuningCapabilities['current']): TuningCapabilities => ({
  congestion: ['bbr', 'reno'],
  congestionAvailable: ['reno', 'bbr', 'cubic'],
  congestionAllowed: ['reno', 'bbr'],
  rootNamespace: false,
  keys: ['congestion', 'mtuProbing', 'ecn', 'fastOpen'],
  current,
});

const report = (host: string, tuning?: TuningCapabilities): HostReport => ({
  host,
  agentVersion: 'test',
  capabilities: {
    accelerator: 'tcg',
    acceleratorReason: 'test',
    cpus: 2,
    memoryMiB: 2048,
    network: {},
    backends: ['linux'],
    ...(tuning ? { tuning } : {}),
  },
  networks: [],
  vms: [],
});

const plan = (reports: HostReport[]) =>
  planChanges(resolveSpec(spec), reports, resolveUplinks(spec), resolveTunings(spec));

describe('tuning in the plan', () => {
  it('plans the drifting fields only, commit-confirmed, right after the uplink on its host', () => {
    const p = plan([
      report('host1', labCaps({ congestion: 'cubic', mtuProbing: 0, ecn: 1, fastOpen: 1 })),
      report('host2'),
    ]);
    const tune = p.steps.find((s) => s.kind === 'tuning.configure');
    expect(tune).toEqual({
      kind: 'tuning.configure',
      host: 'host1',
      tuning: { congestion: 'bbr' },
      reason: 'drift: observed differs from the spec',
      changes: ['congestion cubic -> bbr'],
      risky: true,
      confirmTimeoutMs: 30_000,
    });
    expect(p.steps.map((s) => s.kind).slice(0, 3)).toEqual([
      'uplink.configure',
      'tuning.configure',
      'network.create',
    ]);
    expect(formatPlan(p)).toContain('~ tuning of host1: congestion cubic -> bbr [commit-confirm 30 s]');
    // A host without hosts[].tuning is left alone whatever it has.
    expect(p.steps.some((s) => s.host === 'host2')).toBe(false);
  });

  it('is unchanged when the host has what the spec says, whatever fields the spec leaves out', () => {
    const p = plan([report('host1', labCaps({ congestion: 'bbr', mtuProbing: 2, ecn: 1, fastOpen: 3 }))]);
    expect(p.steps.some((s) => s.kind === 'tuning.configure')).toBe(false);
    expect(p.unchanged).toContain('tuning of host1');
  });

  it('plans every field when the host does not report tuning', () => {
    const p = plan([report('host1')]);
    expect(p.steps.find((s) => s.kind === 'tuning.configure')).toMatchObject({
      tuning: { congestion: 'bbr', ecn: 1 },
      reason: 'not reported by the host',
      changes: ['congestion ? -> bbr', 'ecn ? -> 1'],
    });
  });

  it('leaves a host the spec no longer names alone, and plans nothing without tunings (destroy)', () => {
    const seen = report('gone', labCaps({ congestion: 'reno' }));
    expect(plan([seen]).steps.some((s) => s.host === 'gone' && s.kind === 'tuning.configure')).toBe(false);
    expect(
      planChanges(resolveSpec(spec), [report('host1')], {}, {}).steps.some(
        (s) => s.kind === 'tuning.configure',
      ),
    ).toBe(false);
  });

  it('drift compares values, so a field equal to the spec is no change', () => {
    expect(tuningDrift({ ecn: 1, fastOpen: 3 }, labCaps({ ecn: 1, fastOpen: 1 }))).toEqual({ fastOpen: 3 });
  });
});

describe('tuning admission', () => {
  const withTuning = (tuning: string) =>
    loadSpec(`
version: 1
hosts:
  - { name: host1, tuning: ${tuning} }
  - { name: host2 }
`);
  const caps = labCaps({ congestion: 'bbr', mtuProbing: 0, ecn: 2, fastOpen: 1 });

  it('admits what the host reports it can set', () => {
    expect(checkTuning(withTuning('{ congestion: reno, ecn: 1 }'), { host1: { tuning: caps } })).toEqual([]);
  });

  it('refuses an algorithm the kernel lacks, naming the host and what it can set', () => {
    expect(checkTuning(withTuning('{ congestion: vegas }'), { host1: { tuning: caps } })).toEqual([
      {
        path: 'hosts[0].tuning.congestion',
        message: expect.stringMatching(
          /^host "host1" cannot apply its tuning: congestion control vegas is not loaded, .*it can set bbr, reno$/,
        ),
      },
    ]);
  });

  it('refuses outside the root namespace an algorithm loaded but not allowed there', () => {
    const [issue] = checkTuning(withTuning('{ congestion: cubic }'), { host1: { tuning: caps } });
    expect(issue?.message).toContain(
      "cubic is loaded but not allowed outside the machine's root network namespace (net.ipv4.tcp_allowed_congestion_control: reno bbr)",
    );
  });

  it('in the root namespace, refuses only what is neither loaded nor loadable', () => {
    const rootCaps = { ...caps, rootNamespace: true, congestion: ['bbr', 'cubic', 'htcp', 'reno'] };
    expect(checkTuning(withTuning('{ congestion: htcp }'), { host1: { tuning: rootCaps } })).toEqual([]);
    expect(
      checkTuning(withTuning('{ congestion: vegas }'), { host1: { tuning: rootCaps } })[0]?.message,
    ).toMatch(/no congestion control vegas \(not loaded, and no module tcp_vegas to load\)/);
  });

  it('refuses a key the namespace lacks, and tuning on a host whose agent reports none', () => {
    const old = { ...caps, keys: ['congestion' as const, 'ecn' as const] };
    expect(checkTuning(withTuning('{ fastOpen: 3 }'), { host1: { tuning: old } })).toEqual([
      {
        path: 'hosts[0].tuning.fastOpen',
        message:
          'host "host1" cannot apply its tuning: its network namespace has no net.ipv4.tcp_fastopen (an older kernel)',
      },
    ]);
    expect(checkTuning(withTuning('{ ecn: 1 }'), { host1: {} })[0]).toMatchObject({
      path: 'hosts[0].tuning',
      message: expect.stringContaining('its agent reports no TCP tuning'),
    });
    // A host without a report (unreachable) is not checked here.
    expect(checkTuning(withTuning('{ congestion: vegas }'), {})).toEqual([]);
  });
});
