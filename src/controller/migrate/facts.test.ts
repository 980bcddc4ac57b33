import { describe, expect, it } from 'vitest';
import type { HostReport } from '../../shared/model.js';
import type { Spec } from '../../spec/schema.js';
import type { AgentFactory, AgentPort } from '../hosts.js';
import { gatherFacts } from './facts.js';

const spec = {
  hosts: [{ name: 'host1' }, { name: 'host2' }, { name: 'nas', role: 'storage' }],
} as unknown as Spec;
const report = (host: string) => ({ host }) as unknown as HostReport;

/** Agents answering reports; host1 measures the dirty rate with `rate` (a number, or an error to throw). */
function agents(rate: number | Error | undefined, asked: Array<[string, string, number]>): AgentFactory {
  return (_spec, host) =>
    ({
      report: async () => report(host),
      migrationDirtyRate: async (vm: string, seconds: number) => {
        asked.push([host, vm, seconds]);
        if (rate instanceof Error) throw rate;
        return rate;
      },
    }) as unknown as AgentPort;
}

describe('gatherFacts', () => {
  it("adds the source's measured dirty rate (one decimal) beside both reports", async () => {
    const asked: Array<[string, string, number]> = [];
    const f = await gatherFacts(spec, agents(12.34, asked), { vm: 'web', from: 'host1', to: 'host2' });
    expect(f).toMatchObject({ source: { host: 'host1' }, target: { host: 'host2' }, dirtyRateMiBps: 12.3 });
    expect(f.hosts).toEqual(['host1', 'host2']);
    expect(asked).toEqual([['host1', 'web', 1]]);
  });

  it('leaves the rate out when the source cannot measure it or fails to, and never asks a non-compute host', async () => {
    const asked: Array<[string, string, number]> = [];
    const failed = await gatherFacts(spec, agents(new Error('vm web is not running'), asked), {
      vm: 'web',
      from: 'host1',
      to: 'host2',
    });
    expect(failed).not.toHaveProperty('dirtyRateMiBps');
    expect(failed.source).toEqual(report('host1'));
    const blind = await gatherFacts(spec, agents(undefined, asked), {
      vm: 'web',
      from: 'host1',
      to: 'host2',
    });
    expect(blind).not.toHaveProperty('dirtyRateMiBps');
    const fromNas = await gatherFacts(spec, agents(5, asked), { vm: 'web', from: 'nas', to: 'host2' });
    expect(fromNas).toMatchObject({ sourceError: 'nas is not a compute host' });
    expect(fromNas).not.toHaveProperty('dirtyRateMiBps');
    expect(asked.map(([h]) => h)).toEqual(['host1', 'host1']);
  });
});
