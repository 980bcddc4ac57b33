import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AgentClient } from '../controller/agents.js';
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import type { PoolBackendOptions } from '../drivers/storage/registry.js';
import type { PoolBackend } from '../drivers/storage/types.js';
import { RecordingRunner } from '../exec/runner.js';
import { listen } from '../shared/http/server.js';
import type { ObservedVm, VmConfig } from '../shared/model.js';
import {
  type ObservedPool,
  POOL_FEATURES,
  type PoolConfig,
  type PoolType,
  volumeFileName,
} from '../shared/storage.js';
import { Agent } from './agent.js';
import { hostPoolBackends } from './main.js';
import { createAgentServer } from './server.js';
import { isComputeAction, isStorageAction, STORAGE_ACTION_KINDS } from './storage.js';
import { type AgentAction, AgentActionSchema } from './wire.js';
import { diskSourceIssues, importPathIssues, poolPathIssues } from './wire-checks.js';

/** A pool backend that records what it is asked and keeps its pools in memory, as listPools reports them. */
function fakeBackend(type: PoolType, calls: string[]): PoolBackend {
  const pools = new Map<string, ObservedPool>();
  const rec = (s: string) => async () => {
    calls.push(`${type}: ${s}`);
  };
  return {
    type,
    features: POOL_FEATURES[type],
    ensurePool: async (pool, hash, _ctx, secrets) => {
      calls.push(
        `${type}: ensurePool ${pool.name} ${pool.path}${secrets?.length ? ` secrets=${secrets.map((s) => s.name)}` : ''}`,
      );
      pools.set(pool.name, {
        name: pool.name,
        type,
        configHash: hash,
        problems: [],
        config: pool,
        capacityMiB: 1000,
        usedMiB: 100,
        freeMiB: 900,
        volumes: [],
      });
    },
    deletePool: async (pool) => {
      calls.push(`${type}: deletePool ${pool.name}`);
      pools.delete(pool.name);
    },
    listPools: async () => [...pools.values()],
    createVolume: async (pool, v, _ctx, secrets) => {
      calls.push(
        `${type}: createVolume ${pool.name}/${v.name} ${v.sizeMiB}${secrets?.length ? ` key=${secrets[0]!.name}` : ''}`,
      );
    },
    resizeVolume: async (pool, name, size, _ctx, secrets) =>
      rec(`resizeVolume ${pool.name}/${name} ${size}${secrets?.length ? ` key=${secrets[0]!.name}` : ''}`)(),
    deleteVolume: async (pool, name) => rec(`deleteVolume ${pool.name}/${name}`)(),
    importVolume: async (pool, name, src) => rec(`importVolume ${pool.name}/${name} ${src}`)(),
    createSnapshot: async (pool, v, s) => rec(`createSnapshot ${pool.name}/${v}@${s}`)(),
    rollbackSnapshot: async (pool, v, s) => rec(`rollbackSnapshot ${pool.name}/${v}@${s}`)(),
    deleteSnapshot: async (pool, v, s) => rec(`deleteSnapshot ${pool.name}/${v}@${s}`)(),
    ...(POOL_FEATURES[type].fence
      ? {
          fenceVolume: async (
            pool: PoolConfig,
            v: string,
            o: { host: string; address: string; token: string },
          ) => rec(`fenceVolume ${pool.name}/${v} ${o.host} ${o.address} ${o.token}`)(),
        }
      : {}),
  };
}

const ROOT = '/var/lib/vmlink/pools';
const dirPool: PoolConfig = { name: 'local', type: 'dir', path: `${ROOT}/local` };
const nfsPool: PoolConfig = {
  name: 'nas',
  type: 'nfs',
  path: `${ROOT}/nas`,
  nfs: { exportId: 7, pseudoPath: '/vmlink/nas' },
};

const vmCfg = (name: string, path: string): VmConfig => ({
  name,
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  disks: [{ name: 'data', source: { kind: 'file', pool: 'local', volume: 'data', path, format: 'qcow2' } }],
  nics: [],
  state: 'running',
});

/** A hypervisor with VMs and the optional disk methods recorded. */
function fakeHypervisor(calls: string[], vms: ObservedVm[], withDiskOps = true): HypervisorDriver {
  const ops = withDiskOps
    ? {
        resizeDisk: async (n: string, d: string, s: number) =>
          void calls.push(`qemu: resizeDisk ${n} ${d} ${s}`),
        snapshot: async (n: string, s: string, o: { memory: boolean }) =>
          void calls.push(`qemu: snapshot ${n}@${s} memory=${o.memory}`),
        rollback: async (n: string, s: string) => void calls.push(`qemu: rollback ${n}@${s}`),
        deleteSnapshot: async (n: string, s: string) => void calls.push(`qemu: deleteSnapshot ${n}@${s}`),
        snapshots: async () => [{ name: 's1', createdAt: '2026-12-01T00:00:00Z' }],
        moveDisk: async (n: string, d: string, to: { pool: string; dir: string; volume: string }) => {
          calls.push(`qemu: moveDisk ${n} ${d} -> ${to.pool} ${to.dir} ${to.volume}`);
          return {};
        },
      }
    : {};
  return {
    adopt: async () => {},
    list: async () => vms,
    config: async (n: string) => vms.find((v) => v.name === n)?.config,
    accelerator: async () => {
      throw new Error('a storage host must not probe the accelerator');
    },
    create: async (cfg: VmConfig) => void calls.push(`qemu: create ${cfg.name}`),
    ...ops,
  } as unknown as HypervisorDriver;
}

describe('agent storage dispatch', () => {
  let dir: string;
  let calls: string[];
  let vms: ObservedVm[];
  const agent = (role: 'compute' | 'storage', diskOps = true) =>
    new Agent({
      host: role === 'storage' ? 'san1' : 'h1',
      runner: new RecordingRunner(),
      networks: {},
      hypervisor: fakeHypervisor(calls, vms, diskOps),
      stateDir: dir,
      storage: {
        role,
        pools:
          role === 'storage'
            ? { nfs: fakeBackend('nfs', calls), iscsi: fakeBackend('iscsi', calls) }
            : { dir: fakeBackend('dir', calls) },
        ...(role === 'storage' ? { importRoots: [join(dir, 'images')] } : {}),
      },
    });
  const act = (a: unknown) => AgentActionSchema.parse(a) as AgentAction;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmlink-agent-storage-'));
    calls = [];
    vms = [];
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('sends pool and volume actions to the backend of the pool type, with the config the pool was made from', async () => {
    const a = agent('storage');
    const secrets = [{ name: 'vol-key', value: 'a2V5' }];
    const images = join(dir, 'images');
    mkdirSync(images);
    writeFileSync(join(images, 'd.qcow2'), '');
    // A link in the image directory does not lead the agent out of it.
    symlinkSync('/etc/passwd', join(images, 'link.img'));
    await expect(
      a.execute(
        act({ kind: 'volume.import', pool: 'nas', name: 'img', sourcePath: join(images, 'link.img') }),
      ),
    ).rejects.toThrow(/\/etc\/passwd is not below/);
    await expect(
      a.execute(
        act({ kind: 'volume.import', pool: 'nas', name: 'img', sourcePath: join(images, 'nope.img') }),
      ),
    ).rejects.toMatchObject({ kind: 'not-found' });
    await a.execute(act({ kind: 'pool.ensure', pool: nfsPool, configHash: 'abcdef12', secrets: [] }));
    await a.execute(
      act({
        kind: 'volume.ensure',
        volume: { pool: 'nas', name: 'v1', sizeMiB: 64, format: 'qcow2', encryption: { secret: 'vol-key' } },
        secrets,
      }),
    );
    await a.execute(
      act({
        kind: 'volume.resize',
        pool: 'nas',
        name: 'v1',
        sizeMiB: 128,
        encryption: { secret: 'vol-key' },
        secrets,
      }),
    );
    await a.execute(act({ kind: 'volume.snapshot', pool: 'nas', name: 'v1', snapshot: 'before' }));
    await a.execute(act({ kind: 'volume.rollback', pool: 'nas', name: 'v1', snapshot: 'before' }));
    await a.execute(act({ kind: 'volume.snapshotDelete', pool: 'nas', name: 'v1', snapshot: 'before' }));
    await a.execute(
      act({ kind: 'volume.import', pool: 'nas', name: 'img', sourcePath: join(images, 'd.qcow2') }),
    );
    await a.execute(act({ kind: 'volume.delete', pool: 'nas', name: 'v1' }));
    await a.execute(act({ kind: 'pool.delete', pool: nfsPool }));
    expect(calls).toEqual([
      'nfs: ensurePool nas /var/lib/vmlink/pools/nas',
      'nfs: createVolume nas/v1 64 key=vol-key',
      'nfs: resizeVolume nas/v1 128 key=vol-key',
      'nfs: createSnapshot nas/v1@before',
      'nfs: rollbackSnapshot nas/v1@before',
      'nfs: deleteSnapshot nas/v1@before',
      `nfs: importVolume nas/img ${realpathSync(images)}/d.qcow2`,
      'nfs: deleteVolume nas/v1',
      'nfs: deletePool nas',
    ]);
  });

  it('refuses a pool it does not hold, a type it does not serve, and a pool path outside its roots', async () => {
    const a = agent('compute');
    await expect(
      a.execute(act({ kind: 'volume.resize', pool: 'nope', name: 'v', sizeMiB: 2 })),
    ).rejects.toMatchObject({
      kind: 'not-found',
    });
    await expect(
      a.execute(act({ kind: 'pool.ensure', pool: nfsPool, configHash: 'abcdef12', secrets: [] })),
    ).rejects.toThrow(
      /pool nas is of type nfs, which host h1 \(role compute\) does not serve \(it serves: dir\); an nfs pool lives on a storage host/,
    );
    await expect(
      a.execute(
        act({
          kind: 'pool.ensure',
          pool: { ...dirPool, path: '/etc/ssh' },
          configHash: 'abcdef12',
          secrets: [],
        }),
      ),
    ).rejects.toThrow(/pool directory \/etc\/ssh is not below \/var\/lib\/vmlink\/pools/);
    await expect(
      a.execute(
        act({ kind: 'pool.ensure', pool: { ...dirPool, path: ROOT }, configHash: 'abcdef12', secrets: [] }),
      ),
    ).rejects.toMatchObject({ kind: 'invalid' });
    await a.execute(act({ kind: 'pool.ensure', pool: dirPool, configHash: 'abcdef12', secrets: [] }));
    await expect(
      a.execute(act({ kind: 'volume.import', pool: 'local', name: 'x', sourcePath: '/etc/shadow' })),
    ).rejects.toThrow(/\/etc\/shadow is not below \/var\/lib\/vmlink\/pools or \/var\/lib\/vmlink\/images/);
    expect(calls).toEqual(['dir: ensurePool local /var/lib/vmlink/pools/local']);
  });

  it('a storage host refuses VM and network actions, one by one and in a batch, and reports pools only', async () => {
    const a = agent('storage');
    await expect(a.execute(act({ kind: 'vm.start', name: 'web1', secrets: [] }))).rejects.toThrow(
      /host san1 is a storage host \(vmlink agent --role storage\): it serves pools and runs no VMs or networks, so it refuses vm.start/,
    );
    await expect(
      a.execute(act({ kind: 'vm.snapshot', name: 'web1', snapshot: 's', memory: false })),
    ).rejects.toMatchObject({
      kind: 'unsupported',
    });
    await expect(a.executeBatch([act({ kind: 'network.delete', name: 'lan' })])).rejects.toThrow(
      /storage host/,
    );
    await a.start(); // adopts nothing, probes nothing
    await a.execute(act({ kind: 'pool.ensure', pool: nfsPool, configHash: 'abcdef12', secrets: [] }));
    const r = await a.report();
    expect(r.vms).toEqual([]);
    expect(r.capabilities.acceleratorReason).toMatch(/storage host/);
    expect(r.pools?.map((p) => `${p.type}:${p.name}`)).toEqual(['nfs:nas']);
  });

  it('checks a VM file disk against the dir pools it holds before creating the VM (batched too)', async () => {
    const a = agent('compute');
    const good = `${ROOT}/local/${volumeFileName('data', 'qcow2')}`;
    const create = (path: string) =>
      act({ kind: 'vm.create', vm: vmCfg('web1', path), configHash: 'abcdef12', secrets: [] });
    await expect(a.execute(create(good))).rejects.toThrow(/pool local is not held by this host/);
    await a.execute(act({ kind: 'pool.ensure', pool: dirPool, configHash: 'abcdef12', secrets: [] }));
    await expect(a.execute(create('/etc/shadow'))).rejects.toThrow(
      /volume data of pool local is \/var\/lib\/vmlink\/pools\/local\/data.qcow2 on this host, not \/etc\/shadow/,
    );
    await expect(a.executeBatch([create(`${ROOT}/other/data.qcow2`)])).rejects.toMatchObject({
      kind: 'invalid',
    });
    expect(calls.filter((c) => c.startsWith('qemu'))).toEqual([]);
    await a.execute(create(good));
    expect(calls.at(-1)).toBe('qemu: create web1');
  });

  it('refuses to snapshot, grow or delete a local volume a running VM has open, naming the VM', async () => {
    const a = agent('compute');
    await a.execute(act({ kind: 'pool.ensure', pool: dirPool, configHash: 'abcdef12', secrets: [] }));
    vms.push({
      name: 'web1',
      state: 'running',
      configHash: 'x',
      problems: [],
      config: vmCfg('web1', `${ROOT}/local/data.qcow2`),
    });
    await expect(
      a.execute(act({ kind: 'volume.snapshot', pool: 'local', name: 'data', snapshot: 's' })),
    ).rejects.toThrow(
      /cannot snapshot volume local\/data while running VM web1 has it open; use vmlink vm snapshot/,
    );
    await expect(
      a.execute(act({ kind: 'volume.resize', pool: 'local', name: 'data', sizeMiB: 9 })),
    ).rejects.toThrow(/running VM web1/);
    vms[0]!.state = 'stopped';
    await expect(a.execute(act({ kind: 'volume.delete', pool: 'local', name: 'data' }))).rejects.toThrow(
      /volume local\/data is a disk of VM web1 on h1/,
    );
    await a.execute(act({ kind: 'volume.snapshot', pool: 'local', name: 'data', snapshot: 's' }));
    expect(calls.at(-1)).toBe('dir: createSnapshot local/data@s');
  });

  it("sends a VM's disk resize and snapshots to the hypervisor, or says it has none", async () => {
    vms.push({ name: 'web1', state: 'running', configHash: 'x', problems: [] });
    const a = agent('compute');
    await a.execute(act({ kind: 'vm.resizeDisk', name: 'web1', disk: 'data', sizeMiB: 2048 }));
    await a.execute(act({ kind: 'vm.snapshot', name: 'web1', snapshot: 's1', memory: true }));
    await a.execute(act({ kind: 'vm.rollback', name: 'web1', snapshot: 's1' }));
    await a.execute(act({ kind: 'vm.snapshotDelete', name: 'web1', snapshot: 's1' }));
    expect(await a.vmSnapshots('web1')).toEqual([{ name: 's1', createdAt: '2026-12-01T00:00:00Z' }]);
    expect(calls).toEqual([
      'qemu: resizeDisk web1 data 2048',
      'qemu: snapshot web1@s1 memory=true',
      'qemu: rollback web1@s1',
      'qemu: deleteSnapshot web1@s1',
    ]);
    await expect(
      a.execute(act({ kind: 'vm.snapshot', name: 'nope', snapshot: 's', memory: false })),
    ).rejects.toMatchObject({
      kind: 'not-found',
    });
    const bare = agent('compute', false);
    await expect(
      bare.execute(act({ kind: 'vm.resizeDisk', name: 'web1', disk: 'data', sizeMiB: 2 })),
    ).rejects.toThrow(/the hypervisor driver of h1 has no online disk resize yet/);
  });

  it("sends a running disk's move into a dir pool of this host to the hypervisor, with the pool's directory", async () => {
    vms.push({ name: 'web1', state: 'running', configHash: 'x', problems: [] });
    const a = agent('compute');
    await a.execute(act({ kind: 'pool.ensure', pool: dirPool, configHash: 'abcdef12', secrets: [] }));
    await a.execute(
      act({ kind: 'vm.moveDisk', name: 'web1', disk: 'data', pool: 'local', volume: 'web1-data' }),
    );
    expect(calls.at(-1)).toBe(`qemu: moveDisk web1 data -> local ${ROOT}/local web1-data`);
    await expect(
      a.execute(act({ kind: 'vm.moveDisk', name: 'web1', disk: 'data', pool: 'nope', volume: 'v' })),
    ).rejects.toMatchObject({ kind: 'not-found' });
    await expect(
      agent('compute', false).execute(
        act({ kind: 'vm.moveDisk', name: 'web1', disk: 'data', pool: 'local', volume: 'v' }),
      ),
    ).rejects.toThrow(/the hypervisor driver of h1 has no moving a disk yet/);
  });

  it('sends volume.fence to a pool backend that fences, and refuses it for nfs with the reason', async () => {
    const a = agent('storage');
    const iscsiPool: PoolConfig = {
      name: 'san',
      type: 'iscsi',
      path: `${ROOT}/san`,
      clients: ['192.168.50.0/24'],
      iscsi: { tgtControlPort: 1 },
    };
    await a.execute(act({ kind: 'pool.ensure', pool: iscsiPool, configHash: 'abcdef12', secrets: [] }));
    await a.execute(act({ kind: 'pool.ensure', pool: nfsPool, configHash: 'abcdef12', secrets: [] }));
    const owner = { host: 'host2', address: '192.168.50.12', token: '1234' };
    await a.execute(act({ kind: 'volume.fence', pool: 'san', volume: 'web-data', owner }));
    expect(calls.at(-1)).toBe('iscsi: fenceVolume san/web-data host2 192.168.50.12 1234');
    const e = await a
      .execute(act({ kind: 'volume.fence', pool: 'nas', volume: 'web-data', owner }))
      .catch((x: unknown) => x);
    expect(e).toMatchObject({ kind: 'unsupported', subject: 'volume/nas/web-data' });
    expect((e as Error).message).toMatch(
      /pool nas \(nfs\) cannot fence volume web-data: an nfs pool is one ganesha export/,
    );
    // The action is strict: no other fields, a real token, an IPv4 owner address, pool and volume names.
    const bad = [
      { kind: 'volume.fence', pool: 'san', volume: 'v', owner, extra: 1 },
      { kind: 'volume.fence', pool: 'san', volume: 'v', owner: { ...owner, token: '0' } },
      { kind: 'volume.fence', pool: 'san', volume: 'v', owner: { ...owner, token: '12a' } },
      { kind: 'volume.fence', pool: 'san', volume: 'v', owner: { ...owner, token: 1234 } },
      { kind: 'volume.fence', pool: 'san', volume: 'v', owner: { ...owner, address: '192.168.50.0/24' } },
      { kind: 'volume.fence', pool: 'san', volume: 'v', owner: { ...owner, address: 'ALL' } },
      { kind: 'volume.fence', pool: 'san', volume: '../v', owner },
      { kind: 'volume.fence', pool: 'san', volume: 'v', owner: { ...owner, host: 'Host 2' } },
      { kind: 'volume.fence', pool: 'san', volume: 'v', owner: { ...owner, role: 'admin' } },
    ];
    for (const b of bad) expect(AgentActionSchema.safeParse(b).success, JSON.stringify(b)).toBe(false);
  });

  it('classifies every storage action of the wire union', () => {
    expect(STORAGE_ACTION_KINDS).toHaveLength(15);
    expect(isStorageAction(act({ kind: 'volume.delete', pool: 'p', name: 'v' }))).toBe(true);
    expect(isStorageAction(act({ kind: 'vm.delete', name: 'v' }))).toBe(false);
    expect(isComputeAction(act({ kind: 'vm.rollback', name: 'v', snapshot: 's' }))).toBe(true);
    expect(isComputeAction(act({ kind: 'pool.delete', pool: dirPool }))).toBe(false);
  });
});

describe('VM snapshots over the agent API', () => {
  it('the controller client reads them through GET /v1/vms/:name/snapshots; an unknown VM is a 404', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmlink-agent-snapapi-'));
    const vms: ObservedVm[] = [{ name: 'web1', state: 'running', configHash: 'x', problems: [] }];
    const agent = new Agent({
      host: 'h1',
      runner: new RecordingRunner(),
      networks: {},
      hypervisor: fakeHypervisor([], vms),
      stateDir: dir,
    });
    const app = await createAgentServer(agent, { prerequisites: async () => [] });
    try {
      await listen(app, `unix://${join(dir, 'a.sock')}`);
      const client = new AgentClient('h1', `unix://${join(dir, 'a.sock')}`);
      expect(await client.vmSnapshots('web1')).toEqual([{ name: 's1', createdAt: '2026-12-01T00:00:00Z' }]);
      await expect(client.vmSnapshots('nope')).rejects.toMatchObject({ kind: 'not-found' });
    } finally {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('pool backends of a host', () => {
  it('a compute host gets dir pools, a storage host iscsi and nfs ones, from the registry', () => {
    const made: string[] = [];
    const registry = {
      dir: (o: PoolBackendOptions) => {
        made.push(`dir ${o.storageHost}`);
        return fakeBackend('dir', []);
      },
      iscsi: (o: PoolBackendOptions) => {
        made.push(`iscsi ${o.tgtControlPort}`);
        return fakeBackend('iscsi', []);
      },
    };
    const opts = {
      runner: new RecordingRunner(),
      stateDir: '/nonexistent',
      storageHost: 'san1',
      tgtControlPort: 3,
    };
    expect(Object.keys(hostPoolBackends('compute', opts, registry))).toEqual(['dir']);
    // No nfs backend in this registry: left out (its pools are refused naming the host's role).
    expect(Object.keys(hostPoolBackends('storage', opts, registry))).toEqual(['iscsi']);
    expect(made).toEqual(['dir san1', 'iscsi 3']);
    expect(hostPoolBackends('compute', opts).dir?.type).toBe('dir'); // the real registry's DirPool
  });
});

describe('storage wire checks', () => {
  it('pool paths strictly below a root; imports below an import root', () => {
    expect(poolPathIssues('/var/lib/vmlink/pools/a', [ROOT])).toEqual([]);
    expect(poolPathIssues('/srv/pools/a', [ROOT, '/srv/pools/'])).toEqual([]);
    expect(poolPathIssues('/var/lib/vmlink/pools', [ROOT])).toHaveLength(1);
    expect(poolPathIssues('/var/lib/vmlink/poolsX/a', [ROOT])).toHaveLength(1);
    expect(importPathIssues('/var/lib/vmlink/images/a.iso', ['/var/lib/vmlink/images'])).toEqual([]);
    expect(importPathIssues('/root/.ssh/id_rsa', ['/var/lib/vmlink/images'])[0]?.path).toEqual([
      'sourcePath',
    ]);
  });

  it('file sources must be the volume file of a held pool; iscsi and nfs sources are not files', () => {
    const held = new Map([['local', `${ROOT}/local`]]);
    const vm = vmCfg('web1', `${ROOT}/local/data.qcow2`);
    expect(diskSourceIssues(vm, held)).toEqual([]);
    expect(
      diskSourceIssues(
        { ...vm, rootSource: { kind: 'file', pool: 'x', volume: 'r', path: '/x/r.qcow2', format: 'qcow2' } },
        held,
      ),
    ).toEqual([{ path: ['rootSource', 'pool'], message: expect.stringMatching(/pool x is not held/) }]);
    expect(diskSourceIssues(vmCfg('web1', `${ROOT}/local/other.qcow2`), held)[0]?.path).toEqual([
      'disks',
      0,
      'source',
      'path',
    ]);
    const net = {
      ...vm,
      disks: [
        {
          name: 'n',
          source: {
            kind: 'nfs' as const,
            pool: 'nas',
            volume: 'v',
            server: '10.0.0.1',
            export: '/vmlink/nas',
            file: 'v.qcow2',
            format: 'qcow2' as const,
          },
        },
      ],
    };
    expect(diskSourceIssues(net, new Map())).toEqual([]);
  });
});
