// Every example the README points to loads, validates and plans against empty hosts, so a broken example fails CI.
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { planChanges } from '../plan/diff.js';
import { resolveSpec, resolveUplinks } from '../plan/resolve.js';
import { loadSpecFile } from './load.js';

const dir = fileURLToPath(new URL('../../examples/', import.meta.url));
const examples = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));

describe('examples/', () => {
  it('holds examples', () => {
    expect(examples.length).toBeGreaterThan(0);
  });

  it.each(examples)('%s loads, validates and plans from nothing', (file) => {
    const spec = loadSpecFile(`${dir}${file}`);
    const plan = planChanges(resolveSpec(spec), [], resolveUplinks(spec));
    const count = (kind: string) => plan.steps.filter((s) => s.kind === kind).length;
    expect(count('vm.create')).toBe(spec.vms.length);
    if (spec.networks.length > 0) expect(count('network.create')).toBeGreaterThan(0);
    expect(plan.steps.some((s) => s.kind.endsWith('.delete'))).toBe(false);
  });
});
