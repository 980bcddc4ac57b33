import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import type { AppliedNetworkConfig, NetworkDriver } from '../drivers/network/types.js';
import { RecordingRunner } from '../exec/runner.js';
import type { LeaseStatus } from '../shared/cluster.js';
import { FencedError, UnsupportedError } from '../shared/errors.js';
import type { NetworkConfig, NicConfig, ObservedNetwork, VmConfig } from '../shared/model.js';
import { legacyTapName } from '../spec/net.js';
import { Agent } from './agent.js';
import type { ClusterMembership } from './cluster/types.js';
import { keepLegacyTaps } from './vm-reconfigure.js';

const net = (name: string, mtu = 1500): NetworkConfig => ({
  name,
  mode: 'bridge',
  backend: 'linux',
  bridge: 'vlb-00000001',
  mtu,
  uplink: 'eth0',
  forwards: [],
});

/** A network driver that only records what it is asked. */
function fakeDriver(calls: string[], applied = new Map<string, AppliedNetworkConfig>()): NetworkDriver {
  const nets = new Map<string, ObservedNetwork>();
  return {
    ensureNetwork: async (cfg, hash) => {
      calls.push(`ensure ${cfg.name} mtu=${cfg.mtu} ${hash}`);
      nets.set(cfg.name, { name: cfg.name, bridge: cfg.bridge, configHash: hash, problems: [] });
      applied.set(cfg.name, { config: cfg, configHash: hash });
    },
    deleteNetwork: async (name) => {
      calls.push(`delete ${name}`);
      nets.delete(name);
      applied.delete(name);
    },
    listNetworks: async () => [...nets.values()],
    appliedConfig: async (name) => applied.get(name),
    ensurePort: async (p) => {
      calls.push(`port ${p.tap}`);
    },
    deletePort: async (tap) => {
      calls.push(`unport ${tap}`);
    },
    portAttached: async () => true,
    capabilities: async () => ({ vxlan: true }),
  };
}

const hypervisor = {
  adopt: async () => {},
  list: async () => [],
  config: async () => undefined,
} as unknown as HypervisorDriver;

describe('agent', () => {
  let dir: string;
  let calls: string[];
  let applied: Map<string, AppliedNetworkConfig>;
  let agent: Agent;
  beforeEach(async () => {
    vi.useFakeTimers();
    dir = mkdtempSync(join(tmpdir(), 'vmlink-agent-'));
    calls = [];
    applied = new Map();
    agent = new Agent({
      host: 'host1',
      runner: new RecordingRunner(),
      networks: { linux: fakeDriver(calls, applied) },
      hypervisor,
      stateDir: dir,
    });
    await agent.start();
  });
  afterEach(() => {
    agent.stop();
    vi.useRealTimers();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a network of a backend the host lacks, naming the remedy', async () => {
    await expect(
      agent.execute({
        kind: 'network.ensure',
        network: { ...net('trunk'), backend: 'ovs' },
        configHash: 'abcdef01',
      }),
    ).rejects.toThrow(/needs the ovs network backend, which host host1 lacks .*openvswitch-switch/);
    expect(calls).toEqual([]);
    expect(agent.backends).toEqual(['linux']);
  });

  it('deletes a network it created under commit-confirm when the confirmation does not come', async () => {
    const id = randomUUID();
    await agent.execute({
      kind: 'network.ensure',
      network: net('lan'),
      configHash: 'abcdef01',
      confirm: { id, timeoutMs: 5_000 },
    });
    expect(agent.confirmState(id).state).toBe('pending');
    await vi.advanceTimersByTimeAsync(5_000);
    await vi.waitFor(() => expect(agent.confirmState(id).state).toBe('rolled-back'));
    expect(calls).toEqual(['ensure lan mtu=1500 abcdef01', 'delete lan']);
  });

  it('puts the previous config back, and keeps a confirmed change', async () => {
    // The agent asks the backend what it last built `lan` from (it reads no backend's files itself).
    applied.set('lan', { config: net('lan', 1500), configHash: 'aaaaaaaa' });
    const id = randomUUID();
    await agent.execute({
      kind: 'network.ensure',
      network: net('lan', 9000),
      configHash: 'bbbbbbbb',
      confirm: { id, timeoutMs: 5_000 },
    });
    // A second risky change waits for the first one's fate.
    await expect(
      agent.execute({
        kind: 'network.delete',
        name: 'lan',
        confirm: { id: randomUUID(), timeoutMs: 5_000 },
      }),
    ).rejects.toThrow(/still pending/);
    await vi.advanceTimersByTimeAsync(5_000);
    await vi.waitFor(() => expect(agent.confirmState(id).state).toBe('rolled-back'));
    expect(calls).toEqual(['ensure lan mtu=9000 bbbbbbbb', 'ensure lan mtu=1500 aaaaaaaa']);

    const kept = randomUUID();
    await agent.execute({
      kind: 'network.ensure',
      network: net('lan', 9000),
      configHash: 'bbbbbbbb',
      confirm: { id: kept, timeoutMs: 5_000 },
    });
    expect(agent.confirm(kept).state).toBe('confirmed');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls).toHaveLength(3);
  });

  describe('vm.hotplug', () => {
    const nic = (i: number): NicConfig => ({
      network: `net${i}`,
      backend: 'linux',
      bridge: `vlb-${i}`,
      tap: `vlt-app1-${i}`,
      mac: `52:54:00:00:00:0${i}`,
      mtu: 1500,
    });
    const vm = (nics: NicConfig[]): VmConfig => ({
      name: 'app1',
      cpus: 1,
      memoryMiB: 256,
      image: { kind: 'test-guest' },
      disks: [],
      nics,
      state: 'running',
    });
    /** A hypervisor whose VM app1 runs with `nics`; `hotplug` says whether it has hot-plug slots. */
    const withVm = (nics: NicConfig[], hotplug: boolean, refuse?: string) =>
      new Agent({
        host: 'host1',
        runner: new RecordingRunner(),
        networks: { linux: fakeDriver(calls) },
        stateDir: dir,
        hypervisor: {
          list: async () => [{ name: 'app1', state: 'running', configHash: 'aaaaaaaa', problems: [] }],
          config: async () => vm(nics),
          canHotplug: async () => hotplug,
          hotplug: async (cfg: VmConfig, hash: string, _x: unknown, secrets?: Array<{ name: string }>) => {
            if (refuse) throw new UnsupportedError(refuse);
            calls.push(
              `hotplug ${cfg.nics.map((n) => n.tap).join(',')} ${hash}${secrets ? ` with ${secrets.map((k) => k.name)}` : ''}`,
            );
          },
          stop: async () => {
            calls.push('stop');
          },
          create: async (_c: VmConfig, _h: string, _x: unknown, secrets?: Array<{ name: string }>) => {
            calls.push(secrets ? `create with ${secrets.map((k) => k.name)}` : 'create');
          },
          start: async (_n: string, _x: unknown, secrets?: Array<{ name: string }>) => {
            calls.push(secrets ? `start with ${secrets.map((k) => k.name)}` : 'start');
          },
        } as unknown as HypervisorDriver,
      });

    it('creates the new NIC port, hot-plugs, and removes the ports of unplugged NICs', async () => {
      await withVm([nic(0), nic(1)], true).execute({
        kind: 'vm.hotplug',
        vm: vm([nic(0), nic(2)]),
        configHash: 'bbbbbbbb',
      });
      expect(calls).toEqual([
        'port vlt-app1-0',
        'port vlt-app1-2',
        'hotplug vlt-app1-0,vlt-app1-2 bbbbbbbb',
        'unport vlt-app1-1',
      ]);
    });

    it('restarts a VM started without hot-plug slots instead, and says so', async () => {
      const progress: string[] = [];
      await withVm([nic(0)], false).execute(
        { kind: 'vm.hotplug', vm: vm([nic(0), nic(1)]), configHash: 'bbbbbbbb' },
        { progress: (m) => progress.push(m) },
      );
      expect(calls).toEqual(['port vlt-app1-0', 'port vlt-app1-1', 'stop', 'create', 'start']);
      expect(progress).toEqual([
        'VM app1 cannot take this hot-plug (it was started without hot-plug slots); applying the change by a restart',
      ]);
    });

    it('hands the step secrets to the hot-plug, and restarts instead when the driver refuses it as unsupported', async () => {
      await withVm([nic(0)], true).execute({
        kind: 'vm.hotplug',
        vm: vm([nic(0)]),
        configHash: 'bbbbbbbb',
        secrets: [{ name: 'san-chap', value: 'cHc=' }],
      });
      expect(calls).toEqual(['port vlt-app1-0', 'hotplug vlt-app1-0 bbbbbbbb with san-chap']);
      calls.length = 0;
      const progress: string[] = [];
      await withVm([nic(0)], true, 'VM app1 has no CD-ROM controller').execute(
        { kind: 'vm.hotplug', vm: vm([nic(0)]), configHash: 'bbbbbbbb' },
        { progress: (m) => progress.push(m) },
      );
      expect(calls).toEqual(['port vlt-app1-0', 'stop', 'create', 'start']);
      expect(progress).toEqual([
        'VM app1 cannot take this hot-plug (VM app1 has no CD-ROM controller); applying the change by a restart',
      ]);
    });

    it('passes the keys of encrypted disks on to the create and start of that restart', async () => {
      await withVm([nic(0)], false).execute({
        kind: 'vm.hotplug',
        vm: vm([nic(0), nic(1)]),
        configHash: 'bbbbbbbb',
        secrets: [{ name: 'k1', value: 'c2VjcmV0' }],
      });
      expect(calls.slice(-2)).toEqual(['create with k1', 'start with k1']);
    });
  });
});

describe('secret values on VM actions', () => {
  it('hands them to the hypervisor with the start, and with the create and start of a restart fallback', async () => {
    const seen: string[] = [];
    const secrets = [{ name: 'k1', value: 'c2VjcmV0' }];
    const a = new Agent({
      host: 'host1',
      runner: new RecordingRunner(),
      networks: { linux: fakeDriver([]) },
      stateDir: join(tmpdir(), `vmlink-agent-${randomUUID()}`),
      hypervisor: {
        ...hypervisor,
        list: async () => [{ name: 'app1', state: 'stopped', configHash: 'aaaaaaaa', problems: [] }],
        start: async (name: string, _ctx: unknown, s?: typeof secrets) => {
          seen.push(`start ${name} ${JSON.stringify(s)}`);
        },
      } as unknown as HypervisorDriver,
    });
    await a.execute({ kind: 'vm.start', name: 'app1', secrets });
    expect(seen).toEqual([`start app1 ${JSON.stringify(secrets)}`]);
  });
});

describe('probes from a guest', () => {
  const seen: string[][] = [];
  const guest = {
    ...hypervisor,
    list: async () => [{ name: 'app1', state: 'running' }],
    guestExec: async (_vm: string, argv: string[]) => {
      seen.push(argv);
      return { exitCode: 0, stdout: '64 bytes from 10.0.0.1: seq=0 ttl=64 time=0.4 ms\n', stderr: '' };
    },
  } as unknown as HypervisorDriver;
  const agent = new Agent({
    host: 'host1',
    runner: new RecordingRunner(),
    networks: { linux: fakeDriver([]) },
    hypervisor: guest,
    stateDir: join(tmpdir(), `vmlink-agent-${randomUUID()}`),
  });

  it('leaves through the NIC it names (ping -I), and refuses a NIC-bound http probe it cannot bind', async () => {
    const r = await agent.probe({
      from: { kind: 'vm', name: 'app1', nic: 'eth1' },
      kind: 'ping',
      target: '10.0.0.1',
      timeoutMs: 1000,
    });
    expect(r).toMatchObject({ reachable: true, rttMs: 0.4 });
    expect(seen.at(-1)).toEqual(['ping', '-I', 'eth1', '-c', '1', '-W', '1', '10.0.0.1']);
    await expect(
      agent.probe({
        from: { kind: 'vm', name: 'app1', nic: 'eth1' },
        kind: 'http',
        target: '10.0.0.1',
        timeoutMs: 1000,
      }),
    ).rejects.toThrow(/cannot be bound to NIC eth1/);
    expect(seen).toHaveLength(1);
  });
});

describe('a running VM whose taps have names from before readable names', () => {
  const nic = (i: number, tap: string) => ({
    network: 'natnet',
    backend: 'linux' as const,
    bridge: 'vlb-natnet',
    tap,
    mac: `52:54:00:00:00:0${i}`,
    mtu: 1500,
  });
  const vmCfg = (taps: string[]) =>
    ({
      name: 'web1',
      cpus: 1,
      memoryMiB: 256,
      state: 'running',
      image: { kind: 'test-guest' },
      disks: [],
      nics: taps.map((t, i) => nic(i, t)),
    }) as unknown as VmConfig;

  it('repairs its ports under the names its QEMU holds, and deletes none of them', async () => {
    const calls: string[] = [];
    const legacy = [legacyTapName('web1', 0), legacyTapName('web1', 1)];
    let stored = vmCfg(legacy);
    const hv = {
      ...hypervisor,
      list: async () => [{ name: 'web1', state: 'running', configHash: 'h1', problems: [] }],
      config: async () => stored,
      create: async (cfg: VmConfig) => {
        stored = cfg;
      },
    } as unknown as HypervisorDriver;
    const driver = fakeDriver(calls);
    driver.deletePort = async (tap) => {
      calls.push(`delete port ${tap}`);
    };
    const a = new Agent({
      host: 'host1',
      runner: new RecordingRunner(),
      networks: { linux: driver },
      hypervisor: hv,
      stateDir: join(tmpdir(), `vmlink-agent-${randomUUID()}`),
    });
    await a.execute({ kind: 'vm.create', vm: vmCfg(['vlt-web1-0', 'vlt-web1-1']), configHash: 'h1' });
    expect(calls).toEqual(legacy.map((t) => `port ${t}`));
    expect(stored.nics.map((n) => n.tap)).toEqual(legacy);
  });

  it("keeps a held tap only when it is the NIC's own hashed name", () => {
    expect(keepLegacyTaps(vmCfg(['vlt-web1-0']), undefined).nics[0]!.tap).toBe('vlt-web1-0');
    expect(keepLegacyTaps(vmCfg(['vlt-web1-0']), vmCfg(['vlt-custom'])).nics[0]!.tap).toBe('vlt-web1-0');
    expect(keepLegacyTaps(vmCfg(['vlt-web1-0']), vmCfg([legacyTapName('web1', 0)])).nics[0]!.tap).toBe(
      legacyTapName('web1', 0),
    );
  });
});

describe('port security reaches the network driver', () => {
  it('guards a NIC by its MAC, fixed and allowed addresses; trunk and portSecurity: false ports go unguarded', async () => {
    const ports: unknown[] = [];
    const driver = { ...fakeDriver([]), ensurePort: async (p: unknown) => void ports.push(p) };
    const dir = mkdtempSync(join(tmpdir(), 'vmlink-agent-'));
    const hv = { ...hypervisor, create: async () => {} } as unknown as HypervisorDriver;
    const a = new Agent({
      host: 'h',
      runner: new RecordingRunner(),
      networks: { linux: driver },
      hypervisor: hv,
      stateDir: dir,
    });
    const nic = (i: number, extra: Partial<NicConfig>): NicConfig => ({
      network: 'lan',
      backend: 'linux',
      bridge: 'vlb-lan',
      tap: `vlt-v-${i}`,
      mac: `52:54:00:00:00:0${i}`,
      mtu: 1500,
      ...extra,
    });
    const vm: VmConfig = {
      name: 'v',
      cpus: 1,
      memoryMiB: 128,
      image: { kind: 'test-guest' },
      disks: [],
      state: 'stopped',
      nics: [
        nic(0, { staticIp: { address: '10.0.0.5', prefixLength: 24 }, allowedAddresses: ['10.0.0.50'] }),
        nic(1, {}),
        nic(2, { portSecurity: false }),
        nic(3, { trunk: { networks: ['lan'], vlans: [100] } }),
        nic(4, { reservedIp: '10.0.0.7' }),
      ],
    };
    await a.execute({ kind: 'vm.create', vm, configHash: 'abcdef01' });
    expect(ports.map((p) => (p as { security?: unknown }).security)).toEqual([
      { mac: '52:54:00:00:00:00', addresses: ['10.0.0.5', '10.0.0.50'] },
      { mac: '52:54:00:00:00:01', addresses: [], dhcp: true },
      undefined,
      undefined,
      // A DHCP reservation is a known address: allowed from the start on whichever host runs the VM.
      { mac: '52:54:00:00:00:04', addresses: ['10.0.0.7'] },
    ]);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('agent start', () => {
  const vmWith = (name: string, tap: string): VmConfig => ({
    name,
    cpus: 1,
    memoryMiB: 128,
    image: { kind: 'test-guest' },
    disks: [],
    nics: [
      {
        network: 'lan',
        backend: 'linux',
        bridge: 'vlb-lan',
        tap,
        mac: '52:54:00:00:00:01',
        mtu: 1500,
        staticIp: { address: '10.0.0.5', prefixLength: 24 },
      },
    ],
    state: 'running',
  });

  it('guards the ports of VMs that already run (an upgraded agent), not those of stopped ones', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmlink-agent-'));
    const ensured: Array<{ tap: string; security?: unknown }> = [];
    const driver = {
      ...fakeDriver([]),
      ensurePort: async (p: { tap: string; security?: unknown }) => void ensured.push(p),
    };
    const hv = {
      adopt: async () => {},
      list: async () => [
        {
          name: 'web1',
          state: 'running',
          configHash: 'h',
          problems: [],
          config: vmWith('web1', 'vlt-web1-0'),
        },
        { name: 'db1', state: 'stopped', configHash: 'h', problems: [], config: vmWith('db1', 'vlt-db1-0') },
      ],
      config: async () => undefined,
    } as unknown as HypervisorDriver;
    const a = new Agent({
      host: 'host1',
      runner: new RecordingRunner(),
      networks: { linux: driver },
      hypervisor: hv,
      stateDir: dir,
    });
    try {
      await a.start();
      expect(ensured.map((p) => p.tap)).toEqual(['vlt-web1-0']);
      expect(ensured[0]!.security).toEqual({ mac: '52:54:00:00:00:01', addresses: ['10.0.0.5'] });
    } finally {
      a.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('starts even when the running VMs cannot be listed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmlink-agent-'));
    const hv = {
      adopt: async () => {},
      list: async () => {
        throw new Error('state dir unreadable');
      },
    } as unknown as HypervisorDriver;
    const a = new Agent({
      host: 'host1',
      runner: new RecordingRunner(),
      networks: { linux: fakeDriver([]) },
      hypervisor: hv,
      stateDir: dir,
    });
    try {
      await expect(a.start()).resolves.toBeUndefined();
    } finally {
      a.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('an agent in a cluster', () => {
  const vmCfg = (name: string): VmConfig => ({
    name,
    cpus: 1,
    memoryMiB: 128,
    image: { kind: 'test-guest' },
    disks: [],
    state: 'running',
    nics: [],
  });
  /** A membership whose owner check and lease mode the test sets. */
  function cluster(opts: { owner?: string; token?: string; mode?: LeaseStatus['mode'] } = {}) {
    const state = { mode: opts.mode ?? 'held', checks: [] as string[] };
    const m: ClusterMembership = {
      start: async () => {},
      stop: async () => {},
      status: () => ({ host: 'host1', mode: state.mode, etcd: 'ok', fencedVms: [] }),
      verifiedStatus: async () => ({ host: 'host1', mode: 'renewing', etcd: 'unreachable', fencedVms: [] }),
      ownedElsewhere: async (vms) => vms.filter((v) => v === 'app3'),
      assertOwner: async (vm, fence) => {
        state.checks.push(`${vm} ${fence?.token ?? '-'}`);
        if (state.mode !== 'held') throw new FencedError(`host1 does not hold its lease`, `vm/${vm}`);
        if (fence?.token !== (opts.token ?? '7') || (opts.owner ?? 'host1') !== 'host1')
          throw new FencedError(`VM ${vm}: token ${fence?.token} is not the owner's`, `vm/${vm}`);
      },
    };
    return { m, state };
  }
  function agentWith(m: ClusterMembership, vms: Array<{ name: string; state: string }>, seen: string[]) {
    return new Agent({
      host: 'host1',
      runner: new RecordingRunner(),
      networks: { linux: fakeDriver([]) },
      stateDir: join(tmpdir(), `vmlink-agent-${randomUUID()}`),
      cluster: m,
      hypervisor: {
        ...hypervisor,
        list: async () => vms.map((v) => ({ ...v, configHash: 'aaaaaaaa', problems: [] })),
        start: async (name: string) => {
          seen.push(`start ${name}`);
        },
        create: async (cfg: VmConfig) => {
          seen.push(`create ${cfg.name}`);
        },
        kill: async (name: string) => {
          seen.push(`kill ${name}`);
          return true;
        },
      } as unknown as HypervisorDriver,
    });
  }

  it('starts a VM only with the token of its owner record, refusing before the hypervisor is touched', async () => {
    const { m, state } = cluster();
    const seen: string[] = [];
    const a = agentWith(m, [{ name: 'app1', state: 'stopped' }], seen);
    await expect(a.execute({ kind: 'vm.start', name: 'app1' })).rejects.toBeInstanceOf(FencedError);
    await expect(a.execute({ kind: 'vm.start', name: 'app1', fence: { token: '6' } })).rejects.toThrow(
      /token 6 is not the owner's/,
    );
    await expect(
      a.execute({ kind: 'vm.create', vm: vmCfg('app2'), configHash: 'bbbbbbbb', fence: { token: '5' } }),
    ).rejects.toBeInstanceOf(FencedError);
    expect(seen).toEqual([]);
    await a.execute({ kind: 'vm.start', name: 'app1', fence: { token: '7' } });
    expect(seen).toEqual(['start app1']);
    expect(state.checks).toEqual(['app1 -', 'app1 6', 'app2 5', 'app1 7']);
  });

  it('refuses batched VM actions the same way, before any of the batch runs', async () => {
    const { m } = cluster();
    const seen: string[] = [];
    const a = agentWith(m, [{ name: 'app1', state: 'stopped' }], seen);
    await expect(
      a.executeBatch([
        { kind: 'vm.start', name: 'app1', fence: { token: '7' } },
        { kind: 'vm.start', name: 'app1', fence: { token: '3' } },
      ]),
    ).rejects.toBeInstanceOf(FencedError);
    expect(seen).toEqual([]);
  });

  it('stops again a VM whose start ended after the lease was lost, and says so', async () => {
    const { m, state } = cluster();
    const seen: string[] = [];
    const a = agentWith(m, [{ name: 'app1', state: 'stopped' }], seen);
    const start = m.assertOwner;
    m.assertOwner = async (vm, fence) => {
      await start(vm, fence);
      state.mode = 'fenced'; // the fence comes while QEMU starts
    };
    await expect(a.execute({ kind: 'vm.start', name: 'app1', fence: { token: '7' } })).rejects.toThrow(
      /VM app1 was stopped again on host host1: the host lost its cluster lease while it started/,
    );
    expect(seen).toEqual(['start app1', 'kill app1']);
  });

  it('fences every running or paused VM at once and names them; the lease status says off without a cluster', async () => {
    const { m } = cluster();
    const seen: string[] = [];
    const a = agentWith(
      m,
      [
        { name: 'app1', state: 'running' },
        { name: 'app2', state: 'stopped' },
        { name: 'app3', state: 'paused' },
      ],
      seen,
    );
    expect(await a.stopVmsOwnedElsewhere()).toEqual(['app3']);
    expect(seen).toEqual(['kill app3']);
    seen.length = 0;
    expect(await a.fenceVms('lease lost')).toEqual(['app1', 'app3']);
    expect(seen.sort()).toEqual(['kill app1', 'kill app3']);
    expect((await a.leaseStatus()).mode).toBe('held');
    expect((await a.leaseStatus(400)).mode).toBe('renewing');
    const solo = new Agent({
      host: 'host1',
      runner: new RecordingRunner(),
      networks: {},
      stateDir: join(tmpdir(), `vmlink-agent-${randomUUID()}`),
      hypervisor,
    });
    expect(await solo.leaseStatus(400)).toEqual({
      host: 'host1',
      mode: 'off',
      etcd: 'unreachable',
      fencedVms: [],
    });
  });
});
