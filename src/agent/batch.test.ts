// A batch keeps the one-by-one outcome (in order, stop at the first failure) while grouping work: one bulk
// driver call per run of networks or ports, VM starts side by side.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import type { NetworkDriver } from '../drivers/network/types.js';
import { RecordingRunner } from '../exec/runner.js';
import { VmlinkError } from '../shared/errors.js';
import type { NetworkConfig, ObservedVm, VmConfig } from '../shared/model.js';
import { Agent } from './agent.js';
import type { AgentAction } from './wire.js';

const net = (name: string, backend: 'linux' | 'ovs' = 'linux'): NetworkConfig => ({
  name,
  mode: 'isolated',
  backend,
  bridge: `vlb-${name}`,
  mtu: 1500,
  forwards: [],
});
const vm = (name: string, network = 'n1'): VmConfig => ({
  name,
  cpus: 1,
  memoryMiB: 128,
  image: { kind: 'test-guest' },
  disks: [],
  nics: [
    {
      network,
      backend: 'linux',
      bridge: `vlb-${network}`,
      tap: `vlt-${name}-0`,
      mac: '52:54:00:00:00:01',
      mtu: 1500,
    },
  ],
  state: 'running',
});

function driver(calls: string[], networks: string[] = []): NetworkDriver {
  const held = new Set(networks);
  return {
    ensureNetwork: async (cfg) => void calls.push(`ensure ${cfg.name}`),
    ensureNetworks: async (items) => {
      calls.push(`ensureNetworks ${items.map((i) => i.cfg.name).join(',')}`);
      return items.map(() => ({ ok: true as const }));
    },
    deleteNetwork: async (name) => void calls.push(`delete ${name}`),
    deleteNetworks: async (names) => {
      calls.push(`deleteNetworks ${names.join(',')}`);
      return names.map(() => ({ ok: true as const }));
    },
    listNetworks: async () =>
      [...held].map((name) => ({ name, bridge: `vlb-${name}`, configHash: 'h', problems: [] })),
    appliedConfig: async () => undefined,
    ensurePort: async (p) => void calls.push(`port ${p.tap}`),
    ensurePorts: async (ps) => void calls.push(`ports ${ps.map((p) => p.tap).join(',')}`),
    deletePort: async (tap) => void calls.push(`unport ${tap}`),
    deletePorts: async (taps) => void calls.push(`unports ${taps.join(',')}`),
    portAttached: async () => true,
    capabilities: async () => ({}),
  };
}

function hypervisor(
  calls: string[],
  vms: Map<string, ObservedVm & { cfg?: VmConfig }>,
  failStart = '',
): HypervisorDriver {
  return {
    adopt: async () => {},
    list: async () => [...vms.values()].map(({ cfg: _, ...v }) => v),
    config: async (name: string) => vms.get(name)?.cfg,
    create: async (cfg: VmConfig, configHash: string) => {
      calls.push(`create ${cfg.name}`);
      vms.set(cfg.name, { name: cfg.name, state: 'stopped', configHash, problems: [], cfg });
    },
    start: async (name: string) => {
      calls.push(`start ${name}`);
      if (name === failStart) throw new VmlinkError('exec', `qemu of ${name} exited`);
      vms.get(name)!.state = 'running';
    },
    delete: async (name: string) => {
      calls.push(`destroy ${name}`);
      vms.delete(name);
    },
  } as unknown as HypervisorDriver;
}

describe('agent batches', () => {
  let dir: string;
  let calls: string[];
  let vms: Map<string, ObservedVm & { cfg?: VmConfig }>;
  const make = (opts: { failStart?: string; networks?: string[]; ovs?: boolean } = {}) => {
    const agent = new Agent({
      host: 'host1',
      runner: new RecordingRunner(),
      networks: {
        linux: driver(calls, opts.networks),
        ...(opts.ovs ? { ovs: driver(calls) } : {}),
      },
      hypervisor: hypervisor(calls, vms, opts.failStart),
      stateDir: dir,
    });
    return agent;
  };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmlink-batch-'));
    calls = [];
    vms = new Map();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('hands a run of networks of one backend to one bulk call', async () => {
    const agent = make({ ovs: true });
    const actions: AgentAction[] = [
      { kind: 'network.ensure', network: net('a'), configHash: 'aaaaaaaa' },
      { kind: 'network.ensure', network: net('b'), configHash: 'aaaaaaaa' },
      { kind: 'network.ensure', network: net('c', 'ovs'), configHash: 'aaaaaaaa' },
      { kind: 'network.ensure', network: net('d'), configHash: 'aaaaaaaa' },
      { kind: 'network.ensure', network: net('e'), configHash: 'aaaaaaaa' },
    ];
    expect(await agent.executeBatch(actions)).toEqual(actions.map(() => ({ ok: true })));
    expect(calls).toEqual(['ensureNetworks a,b', 'ensure c', 'ensureNetworks d,e']);
  });

  it('creates VMs with their ports in one call, and stops at a VM it must not reconfigure', async () => {
    const agent = make();
    vms.set('busy', { name: 'busy', state: 'running', configHash: 'old', problems: [], cfg: vm('busy') });
    const actions: AgentAction[] = ['v1', 'v2', 'busy', 'v3'].map((n) => ({
      kind: 'vm.create',
      vm: vm(n),
      configHash: 'bbbbbbbb',
    }));
    const r = await agent.executeBatch(actions);
    expect(r.map((x) => x.ok)).toEqual([true, true, false]);
    expect(String((r[2] as { error: Error }).error.message)).toMatch(
      /reconfiguring VM busy requires stopped/,
    );
    expect(calls).toEqual(['ports vlt-v1-0,vlt-v2-0', 'create v1', 'create v2']);
  });

  it('starts every VM of a run, side by side, each with its own outcome', async () => {
    const agent = make({ failStart: 'v2' });
    for (const n of ['v1', 'v2', 'v3', 'v4'])
      vms.set(n, { name: n, state: 'stopped', configHash: 'h', problems: [], cfg: vm(n) });
    const r = await agent.executeBatch(['v1', 'v2', 'v3', 'v4'].map((name) => ({ kind: 'vm.start', name })));
    expect(r.map((x) => x.ok)).toEqual([true, false, true, true]);
    expect([...vms.values()].filter((v) => v.state === 'running').map((v) => v.name)).toEqual([
      'v1',
      'v3',
      'v4',
    ]);
  });

  it('deletes VMs, then their ports together; networks no VM uses in one bulk call', async () => {
    const agent = make({ networks: ['n1', 'n2', 'n3'] });
    for (const n of ['v1', 'v2'])
      vms.set(n, { name: n, state: 'stopped', configHash: 'h', problems: [], cfg: vm(n) });
    vms.set('keep', { name: 'keep', state: 'running', configHash: 'h', problems: [], cfg: vm('keep', 'n3') });
    expect(
      await agent.executeBatch([
        { kind: 'vm.delete', name: 'v1' },
        { kind: 'vm.delete', name: 'v2' },
      ]),
    ).toEqual([{ ok: true }, { ok: true }]);
    const r = await agent.executeBatch(['n1', 'n2', 'n3'].map((name) => ({ kind: 'network.delete', name })));
    // n3 is still used by VM keep: the bulk part ends before it, and it is refused with the reason.
    expect(r.map((x) => x.ok)).toEqual([true, true, false]);
    expect(String((r[2] as { error: Error }).error.message)).toMatch(/still used by VM\(s\) keep/);
    expect(calls).toEqual(['destroy v1', 'destroy v2', 'unports vlt-v1-0,vlt-v2-0', 'deleteNetworks n1,n2']);
  });
});
