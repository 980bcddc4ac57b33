import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AgentAction } from '../agent/wire.js';
import { RecordingRunner } from '../exec/runner.js';
import { NotFoundError, UnavailableError, VmlinkError } from '../shared/errors.js';
import type { HostReport, ObservedVm } from '../shared/model.js';
import type { ObservedPool, ObservedVolume } from '../shared/storage.js';
import { createControllerApi } from './api.js';
import { Controller } from './controller.js';
import type { AgentPort } from './hosts.js';
import { secretsOfAction } from './secrets/delivery.js';
import { loadOrCreateSecretsKey } from './secrets/sealing.js';
import { secretsOfVm, secretUses } from './secrets/usage.js';
import { SpecParser, SpecStore } from './spec-store.js';
import { SqliteStore } from './store/sqlite.js';
import { TaskManager } from './tasks.js';
import {
  CapacityReportSchema,
  PoolListSchema,
  SnapshotListSchema,
  VolumeChangeSchema,
  VolumeListSchema,
} from './wire-storage.js';

const SPEC = `version: 1
hosts:
  - { name: h1, agent: "unix:///fake/h1.sock" }
  - { name: san1, agent: "unix:///fake/san1.sock", role: storage, address: 10.0.0.9 }
networks: [{ name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }]
pools:
  - { name: local, type: dir, host: h1, reserveMiB: 1000, maxOvercommit: 0.1 }
  - { name: san, type: iscsi, host: san1, chap: { user: vmlink, secret: san-chap } }
  - { name: nas, type: nfs, host: san1 }
volumes:
  - { name: data, pool: local, sizeMiB: 1024, backupCopies: 2 }
  - { name: spare, pool: local, sizeMiB: 64 }
  - { name: lun1, pool: san, sizeMiB: 2048, backupCopies: 1 }
vms:
  - name: web1
    host: h1
    nics: [{ network: natnet }]
    disks:
      - { name: data, pool: local, volume: data }
      - { name: scratch, pool: nas, sizeMiB: 512, backupCopies: 1 }
      - { name: lun, pool: san, volume: lun1 }
`;

// A value that must never show up in an answer, an event or the store.
const KEY = 'volume key 9d2e never shown';
const KEY_B64 = Buffer.from(KEY).toString('base64');

const vol = (name: string, sizeMiB: number, extra: Partial<ObservedVolume> = {}): ObservedVolume => ({
  name,
  format: 'qcow2',
  sizeMiB,
  allocatedMiB: Math.ceil(sizeMiB / 10),
  encrypted: false,
  snapshots: [],
  ...extra,
});

const pool = (
  name: string,
  type: ObservedPool['type'],
  volumes: ObservedVolume[],
  usedMiB = 1000,
): ObservedPool => ({
  name,
  type,
  configHash: 'abcdef12',
  problems: [],
  capacityMiB: 10_000,
  usedMiB,
  freeMiB: 10_000 - usedMiB,
  volumes,
});

/** A host agent as storage requests see it: pools and VMs in its report; actions recorded and applied. */
class FakeStorageHost {
  readonly actions: AgentAction[] = [];
  pools: ObservedPool[] = [];
  vms: ObservedVm[] = [];
  down = false;
  constructor(readonly name: string) {}

  client(): AgentPort {
    const no = async () => {
      throw new VmlinkError('unsupported', 'not in this fake');
    };
    return {
      health: no,
      confirm: no,
      confirmState: no,
      exec: no,
      interfaces: no,
      console: no,
      flows: no,
      actBatch: no,
      report: async () => {
        if (this.down) throw new UnavailableError(`cannot reach the agent of ${this.name}: ECONNREFUSED`);
        return this.report();
      },
      act: async (a) => this.act(a),
      vmSnapshots: async (vm) => {
        if (!this.vms.some((v) => v.name === vm)) throw new NotFoundError('vm', vm);
        return [{ name: 'nightly', createdAt: '2026-12-01T02:00:00Z', vmStateBytes: 268435456 }];
      },
    };
  }

  private report(): HostReport {
    return {
      host: this.name,
      agentVersion: 'fake',
      capabilities: {
        accelerator: 'tcg',
        acceleratorReason: 'fake',
        cpus: 2,
        memoryMiB: 2048,
        network: {},
        backends: [],
      },
      networks: [],
      vms: this.vms,
      pools: structuredClone(this.pools),
    };
  }

  private async act(a: AgentAction): Promise<void> {
    this.actions.push(structuredClone(a));
    const p = (name: string) => this.pools.find((x) => x.name === name)!;
    switch (a.kind) {
      case 'volume.ensure':
        p(a.volume.pool).volumes.push(
          vol(a.volume.name, a.volume.sizeMiB, { encrypted: !!a.volume.encryption }),
        );
        return;
      case 'volume.import':
        p(a.pool).volumes.push(vol(a.name, 100));
        return;
      case 'volume.resize':
        p(a.pool).volumes.find((v) => v.name === a.name)!.sizeMiB = a.sizeMiB;
        return;
      case 'volume.delete':
        p(a.pool).volumes = p(a.pool).volumes.filter((v) => v.name !== a.name);
        return;
      case 'volume.snapshot':
        p(a.pool)
          .volumes.find((v) => v.name === a.name)!
          .snapshots.push({ name: a.snapshot, createdAt: 'now' });
        return;
      default:
        return;
    }
  }
}

const sent = (h: FakeStorageHost) => h.actions.map((a) => a.kind);

describe('storage API (fake agents)', () => {
  let dir: string;
  let store: SqliteStore;
  let tasks: TaskManager;
  let app: FastifyInstance;
  let h1: FakeStorageHost;
  let san1: FakeStorageHost;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmlink-storage-api-'));
    store = new SqliteStore(join(dir, 'vmlink.db'));
    h1 = new FakeStorageHost('h1');
    san1 = new FakeStorageHost('san1');
    const hosts = new Map([
      ['h1', h1],
      ['san1', san1],
    ]);
    const controller = new Controller(store, new RecordingRunner(), {
      agents: (_spec, host) => hosts.get(host)!.client(),
      secretsKey: loadOrCreateSecretsKey(join(dir, 'secrets.key')),
    });
    tasks = new TaskManager();
    app = await createControllerApi(controller, tasks);
    await new SpecStore(store).recordAttempt(SPEC, 'site.yaml');
    h1.pools = [pool('local', 'dir', [vol('data', 1024), vol('spare', 64), vol('tmp', 100)], 8_500)];
    san1.pools = [pool('san', 'iscsi', [vol('lun1', 2048, { format: 'raw' })]), pool('nas', 'nfs', [])];
    h1.vms = [
      {
        name: 'web1',
        state: 'running',
        configHash: 'x',
        problems: [],
      },
    ];
  });
  afterEach(async () => {
    await app.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown) =>
    app.inject({ method, url, ...(payload === undefined ? {} : { payload: payload as object }) });
  const done = async (r: { statusCode: number; json: () => { taskId: string } }) => {
    expect(r.statusCode).toBe(202);
    return tasks.wait(r.json().taskId);
  };

  it('lists pools, volumes with their users and where the spec declares them, against the API contract', async () => {
    const pools = PoolListSchema.parse((await call('GET', '/v1/pools')).json());
    expect(pools.map((p) => `${p.name}:${p.type}@${p.host}:${p.state}:${p.volumes}`)).toEqual([
      'local:dir@h1:ok:3',
      'san:iscsi@san1:ok:1',
      'nas:nfs@san1:ok:0',
    ]);
    expect(pools[1]?.features.snapshots).toBe(false);
    const volumes = VolumeListSchema.parse((await call('GET', '/v1/volumes?pool=local')).json());
    expect(volumes.map((v) => [v.name, v.usedBy, v.declaredAt])).toEqual([
      ['data', [{ vm: 'web1', disk: 'data', running: true }], 'volumes[0]'],
      ['spare', [], 'volumes[1]'],
      ['tmp', [], undefined],
    ]);
    expect((await call('GET', '/v1/volumes?pool=nope')).statusCode).toBe(404);
    san1.down = true;
    const degraded = PoolListSchema.parse((await call('GET', '/v1/pools')).json());
    expect(degraded[1]).toMatchObject({ state: 'unknown', error: expect.stringMatching(/ECONNREFUSED/) });
  });

  it('reports capacity: provisioned, backup, reserve and the projected need, with warnings', async () => {
    const r = CapacityReportSchema.parse((await call('GET', '/v1/capacity')).json());
    const local = r.pools.find((p) => p.pool === 'local')!;
    // data 1024 + spare 64 + tmp 100 (made outside the spec); backup = 1024 × 2.
    expect(local).toMatchObject({ provisionedMiB: 1188, backupMiB: 2048, reserveMiB: 1000, usedRatio: 0.85 });
    expect(local.projectedNeedMiB).toBe(Math.ceil(1188 * 1.5 + 2048 * 2 + 1000 * 0.3));
    expect(local.warnings.join('\n')).toMatch(/85 % of its filesystem is used \(above 80 %\)/);
    expect(local.warnings.join('\n')).toMatch(/over maxOvercommit 0.1/);
    // The nfs pool holds web1's scratch disk, not made yet: counted at its spec size, backup 512 × 1.
    expect(r.pools.find((p) => p.pool === 'nas')).toMatchObject({
      provisionedMiB: 512,
      backupMiB: 512,
      warnings: [],
    });
    expect(r.pools.find((p) => p.pool === 'san')).toMatchObject({ provisionedMiB: 2048, backupMiB: 2048 });
  });

  it('creates a volume with its key delivered to the pool host only; refuses what the pool cannot do', async () => {
    expect((await call('POST', '/v1/secrets/vol-key', { value: KEY_B64 })).statusCode).toBe(200);
    const r = await call('POST', '/v1/volumes', {
      pool: 'nas',
      name: 'vault',
      sizeMiB: 256,
      encryption: { secret: 'vol-key' },
    });
    expect(r.statusCode).toBe(200);
    expect(VolumeChangeSchema.parse(r.json())).toEqual({ pool: 'nas', name: 'vault' });
    expect(san1.actions).toEqual([
      {
        kind: 'volume.ensure',
        volume: {
          pool: 'nas',
          name: 'vault',
          sizeMiB: 256,
          format: 'qcow2',
          encryption: { secret: 'vol-key' },
        },
        secrets: [{ name: 'vol-key', value: KEY_B64 }],
      },
    ]);
    // Growing or snapshotting it later needs the key too: the controller remembers which secret, never the value.
    san1.actions.length = 0;
    const grown = await call('POST', '/v1/volumes/nas/vault/resize', { sizeMiB: 512 });
    expect(grown.statusCode).toBe(200);
    await call('POST', '/v1/volumes/nas/vault/snapshots', { name: 's1' });
    const key = { encryption: { secret: 'vol-key' }, secrets: [{ name: 'vol-key', value: KEY_B64 }] };
    expect(san1.actions).toEqual([
      { kind: 'volume.resize', pool: 'nas', name: 'vault', sizeMiB: 512, ...key },
      { kind: 'volume.snapshot', pool: 'nas', name: 'vault', snapshot: 's1', ...key },
    ]);
    const again = await call('POST', '/v1/volumes', { pool: 'nas', name: 'vault', sizeMiB: 256 });
    expect(again.json().error).toMatchObject({
      kind: 'conflict',
      message: 'volume nas/vault already exists',
    });
    const iscsi = await call('POST', '/v1/volumes', {
      pool: 'san',
      name: 'x',
      sizeMiB: 8,
      encryption: { secret: 'vol-key' },
    });
    expect(iscsi.json().error.message).toMatch(
      /pool san \(iscsi\) cannot do this: iSCSI LUNs are raw: LUKS volumes need qcow2/,
    );
    await call('POST', '/v1/volumes', { pool: 'san', name: 'lun2', sizeMiB: 8 });
    expect(san1.actions.at(-1)).toMatchObject({ volume: { format: 'raw' } });
    // The value is nowhere but in the action the host got: not in answers, events, volume lists, or the store.
    const events = await call('GET', '/v1/events');
    const list = await call('GET', '/v1/volumes');
    const db = readFileSync(join(dir, 'vmlink.db')).toString('latin1');
    for (const where of [r.body, grown.body, again.body, events.body, list.body, db]) {
      expect(where).not.toContain(KEY);
      expect(where).not.toContain(KEY_B64);
    }
    expect(events.body).toContain('nas/vault 256 MiB (encrypted)');
  });

  it('grows a volume online through the running VM that has it, offline otherwise; never shrinks', async () => {
    const shrink = await call('POST', '/v1/volumes/local/data/resize', { sizeMiB: 512 });
    expect(shrink.json().error).toMatchObject({ kind: 'invalid' });
    expect(shrink.json().error.message).toMatch(
      /volume local\/data is 1024 MiB; a resize only grows it \(asked 512 MiB\)/,
    );
    const online = await call('POST', '/v1/volumes/local/data/resize', { sizeMiB: 2048 });
    expect(VolumeChangeSchema.parse(online.json())).toMatchObject({ via: 'web1' });
    expect(online.json().note).toMatch(
      /the spec still says 1024 MiB at volumes\[0\]: set its sizeMiB to 2048/,
    );
    expect(h1.actions).toEqual([{ kind: 'vm.resizeDisk', name: 'web1', disk: 'data', sizeMiB: 2048 }]);
    // iSCSI LUNs cannot grow under a running VM: refused naming it and why.
    const lun = await call('POST', '/v1/volumes/san/lun1/resize', { sizeMiB: 4096 });
    expect(lun.json().error).toMatchObject({ kind: 'conflict' });
    expect(lun.json().error.message).toMatch(
      /open in running VM web1 and tgtd cannot grow a LUN while a VM has it open: stop the VM first/,
    );
    // With web1's host silent, nobody can say whether it has the LUN open: refused, nothing sent.
    h1.down = true;
    const silent = await call('POST', '/v1/volumes/san/lun1/resize', { sizeMiB: 4096 });
    expect(silent.json().error.message).toMatch(
      /cannot tell whether VM web1 \(host h1\) has volume san\/lun1 open/,
    );
    h1.down = false;
    h1.vms[0]!.state = 'stopped';
    expect((await call('POST', '/v1/volumes/san/lun1/resize', { sizeMiB: 4096 })).statusCode).toBe(200);
    expect(san1.actions).toEqual([{ kind: 'volume.resize', pool: 'san', name: 'lun1', sizeMiB: 4096 }]);
    expect((await call('POST', '/v1/volumes/local/nope/resize', { sizeMiB: 4096 })).statusCode).toBe(404);
  });

  it('deletes only a volume no VM uses and the spec does not declare; every host must answer', async () => {
    const used = await call('DELETE', '/v1/volumes/local/data');
    expect(used.json().error).toMatchObject({ kind: 'conflict' });
    expect(used.json().error.message).toMatch(/volume local\/data is used by VM web1 \(disk data, running\)/);
    const declared = await call('DELETE', '/v1/volumes/local/spare');
    expect(declared.json().error.message).toMatch(
      /declared in the spec at volumes\[1\]: remove it from the spec and apply first/,
    );
    // A VM an older spec left on the host still uses it (its reported config says so).
    h1.vms.push({
      name: 'old',
      state: 'stopped',
      configHash: 'y',
      problems: [],
      config: {
        name: 'old',
        cpus: 1,
        memoryMiB: 256,
        image: { kind: 'test-guest' },
        nics: [],
        state: 'stopped',
        disks: [
          {
            name: 'd',
            source: {
              kind: 'file',
              pool: 'local',
              volume: 'tmp',
              path: '/var/lib/vmlink/pools/local/tmp.qcow2',
              format: 'qcow2',
            },
          },
        ],
      },
    });
    expect((await call('DELETE', '/v1/volumes/local/tmp')).json().error.message).toMatch(
      /used by VM old \(disk d\)/,
    );
    h1.vms.pop();
    san1.down = true;
    expect((await call('DELETE', '/v1/volumes/local/tmp')).json().error.message).toMatch(
      /host\(s\) san1 did not answer; nothing was deleted/,
    );
    san1.down = false;
    expect(h1.actions).toEqual([]);
    expect((await call('DELETE', '/v1/volumes/local/tmp')).statusCode).toBe(200);
    expect(h1.actions).toEqual([{ kind: 'volume.delete', pool: 'local', name: 'tmp' }]);
  });

  it('snapshots a volume no running VM has open; a running VM snapshots through vm snapshot (a task)', async () => {
    const running = await call('POST', '/v1/volumes/local/data/snapshots', { name: 'before' });
    expect(running.json().error.message).toMatch(/open in running VM web1: use `vmlink vm snapshot`/);
    const iscsi = await call('POST', '/v1/volumes/san/lun1/snapshots', { name: 'before' });
    expect(iscsi.json().error.message).toMatch(/iSCSI LUNs are raw: snapshots need qcow2/);
    expect((await call('POST', '/v1/volumes/local/tmp/snapshots', { name: 'before' })).statusCode).toBe(200);
    const snaps = SnapshotListSchema.parse((await call('GET', '/v1/volumes/local/tmp/snapshots')).json());
    expect(snaps.snapshots.map((s) => s.name)).toEqual(['before']);
    expect((await call('POST', '/v1/volumes/local/tmp/snapshots/gone/rollback')).statusCode).toBe(404);
    expect((await call('POST', '/v1/volumes/local/tmp/snapshots/before/rollback')).statusCode).toBe(200);
    expect((await call('DELETE', '/v1/volumes/local/tmp/snapshots/before')).statusCode).toBe(200);
    expect(sent(h1)).toEqual(['volume.snapshot', 'volume.rollback', 'volume.snapshotDelete']);

    h1.actions.length = 0;
    const t = await done(await call('POST', '/v1/vms/web1/snapshots', { name: 'nightly', memory: true }));
    expect(t).toMatchObject({
      state: 'succeeded',
      kind: 'storage',
      result: { vm: 'web1', snapshot: 'nightly' },
    });
    expect(await done(await call('POST', '/v1/vms/web1/snapshots/nightly/rollback'))).toMatchObject({
      state: 'succeeded',
    });
    expect((await call('DELETE', '/v1/vms/web1/snapshots/nightly')).json()).toEqual({
      vm: 'web1',
      snapshot: 'nightly',
    });
    expect(h1.actions).toEqual([
      { kind: 'vm.snapshot', name: 'web1', snapshot: 'nightly', memory: true },
      { kind: 'vm.rollback', name: 'web1', snapshot: 'nightly' },
      { kind: 'vm.snapshotDelete', name: 'web1', snapshot: 'nightly' },
    ]);
    const list = SnapshotListSchema.parse((await call('GET', '/v1/vms/web1/snapshots')).json());
    expect(list.snapshots[0]).toMatchObject({ name: 'nightly', vmStateBytes: 268435456 });
    expect((await call('GET', '/v1/vms/nope/snapshots')).statusCode).toBe(404);
  });

  it('imports a file or copies a volume as a task; clones within a pool, linked only where the pool can', async () => {
    const imp = await done(
      await call('POST', '/v1/images/import', {
        pool: 'local',
        name: 'debian',
        sourcePath: '/var/lib/vmlink/images/debian.qcow2',
      }),
    );
    expect(imp).toMatchObject({ state: 'succeeded', result: { pool: 'local', name: 'debian' } });
    expect(h1.actions.at(-1)).toEqual({
      kind: 'volume.import',
      pool: 'local',
      name: 'debian',
      sourcePath: '/var/lib/vmlink/images/debian.qcow2',
    });
    const both = await call('POST', '/v1/images/import', { pool: 'local', name: 'x' });
    expect(both.statusCode).toBe(422);
    const cross = await done(
      await call('POST', '/v1/images/import', {
        pool: 'local',
        name: 'x',
        fromVolume: { pool: 'san', volume: 'lun1' },
      }),
    );
    expect(cross.error?.message).toMatch(/volumes are copied within their pool only/);
    const copy = await done(
      await call('POST', '/v1/images/import', {
        pool: 'local',
        name: 'copy',
        fromVolume: { pool: 'local', volume: 'debian' },
      }),
    );
    expect(copy.state).toBe('succeeded');
    expect(h1.actions.at(-1)).toEqual({
      kind: 'volume.ensure',
      volume: {
        pool: 'local',
        name: 'copy',
        sizeMiB: 100,
        format: 'qcow2',
        from: { volume: 'debian', linked: false },
      },
    });
    const linked = await done(
      await call('POST', '/v1/volumes/local/debian/clone', { name: 'web2-root', linked: true }),
    );
    expect(linked.state).toBe('succeeded');
    expect(h1.actions.at(-1)).toMatchObject({ volume: { from: { volume: 'debian', linked: true } } });
    const lunClone = await done(
      await call('POST', '/v1/volumes/san/lun1/clone', { name: 'c', linked: true }),
    );
    expect(lunClone.error?.message).toMatch(/linked clones need qcow2 \(a full clone works\)/);
  });

  it('audits every storage change with the volume it names', async () => {
    await call('POST', '/v1/volumes/local/tmp/snapshots', { name: 'a' });
    await call('DELETE', '/v1/volumes/local/data');
    await call('POST', '/v1/volumes', { pool: 'nas', name: 'new', sizeMiB: 8 });
    const audit = (await call('GET', '/v1/audit')).json() as Array<{
      route: string;
      object?: string;
      status: number;
    }>;
    expect(audit.map((e) => [e.route, e.object, e.status])).toEqual([
      ['/v1/volumes/:pool/:name/snapshots', 'local/tmp', 200],
      ['/v1/volumes/:pool/:name', 'local/data', 409],
      ['/v1/volumes', 'nas/new', 200],
    ]);
  });
});

describe('secrets of storage steps', () => {
  const spec = new SpecParser().parse(SPEC, 'site.yaml');
  it('gives an iscsi pool its CHAP password, an encrypted volume its key, a VM its disks and CHAP', () => {
    expect(
      secretsOfAction(spec, {
        kind: 'pool.ensure',
        pool: {
          name: 'san',
          type: 'iscsi',
          path: '/var/lib/vmlink/pools/san',
          chap: { user: 'u', secret: 'san-chap' },
        },
        configHash: 'abcdef12',
        secrets: [],
      }),
    ).toEqual(['san-chap']);
    expect(
      secretsOfAction(spec, {
        kind: 'volume.ensure',
        volume: { pool: 'nas', name: 'v', sizeMiB: 1, format: 'qcow2', encryption: { secret: 'k' } },
        secrets: [],
      }),
    ).toEqual(['k']);
    expect(secretsOfAction(spec, { kind: 'volume.delete', pool: 'nas', name: 'v' })).toEqual([]);
    const vm = {
      name: 'web1',
      cpus: 1,
      memoryMiB: 256,
      image: { kind: 'test-guest' as const },
      nics: [],
      state: 'running' as const,
      disks: [
        {
          name: 'lun',
          source: {
            kind: 'iscsi' as const,
            pool: 'san',
            volume: 'lun1',
            portal: '10.0.0.9:3260',
            iqn: 'iqn.2026-12.io.vmlink:san1.san.lun1',
            lun: 1,
            chap: { user: 'u', secret: 'san-chap' },
          },
        },
        { name: 'v', sizeMiB: 8, encryption: { secret: 'k' } },
      ],
    };
    expect(secretsOfAction(spec, { kind: 'vm.create', vm, configHash: 'abcdef12', secrets: [] })).toEqual([
      'k',
      'san-chap',
    ]);
    // At start, from the spec: web1 attaches san/lun1 through the CHAP-guarded pool.
    expect(secretsOfVm(spec, 'web1')).toEqual(['san-chap']);
    // A VM that attaches an encrypted volume of `volumes:` gets its key, whether or not its disk repeats it.
    const withKey = new SpecParser().parse(
      SPEC.replace(
        '{ name: spare, pool: local, sizeMiB: 64 }',
        '{ name: spare, pool: local, sizeMiB: 64, encryption: { secret: spare-key } }',
      ),
      'site.yaml',
    );
    const spare = {
      ...vm,
      disks: [
        {
          name: 's',
          source: {
            kind: 'file' as const,
            pool: 'local',
            volume: 'spare',
            path: '/var/lib/vmlink/pools/local/spare.qcow2',
            format: 'qcow2' as const,
          },
        },
      ],
    };
    expect(
      secretsOfAction(withKey, { kind: 'vm.hotplug', vm: spare, configHash: 'abcdef12', secrets: [] }),
    ).toEqual(['spare-key']);
    expect(
      secretsOfAction(withKey, { kind: 'volume.rollback', pool: 'local', name: 'spare', snapshot: 's' }),
    ).toEqual(['spare-key']);
    expect(secretUses(spec)).toEqual([
      { secret: 'san-chap', user: 'pool san (CHAP)', path: 'pools[1].chap.secret' },
    ]);
  });
});
