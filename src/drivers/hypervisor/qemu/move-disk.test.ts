import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordingRunner, SystemRunner } from '../../../exec/runner.js';
import { ConflictError } from '../../../shared/errors.js';
import type { DiskConfig } from '../../../shared/model.js';
import { DirStorage } from '../../storage/dir.js';
import type { StorageDriver } from '../../storage/types.js';
import { vmPaths } from './cmdline.js';
import { ALT_SLOT } from './disk-slots.js';
import { moveVmDisk } from './move-disk.js';
import type { QmpClient } from './qmp.js';
import type { VmAccess } from './vm-access.js';
import type { StoredVm } from './vm-store.js';

/** QEMU's side as a fake: block nodes, and one mirror job that reaches READY (or fails with `failWith`). */
function fakeQmp(failWith?: string) {
  const calls: Array<[string, Record<string, unknown>]> = [];
  let job: { id: string; status: string; error?: string } | undefined;
  const qmp = {
    execute: async <T>(cmd: string, args?: Record<string, unknown>): Promise<T> => {
      const a = args ?? {};
      calls.push([cmd, a]);
      switch (cmd) {
        case 'query-named-block-nodes':
          return [
            { 'node-name': 'disk0', image: { 'virtual-size': 32 * 1024 * 1024 } },
            { 'node-name': 'disk0-file' },
          ] as T;
        case 'blockdev-mirror':
          job = {
            id: a['job-id'] as string,
            status: failWith ? 'concluded' : 'ready',
            ...(failWith ? { error: failWith } : {}),
          };
          return {} as T;
        case 'query-block-jobs':
          return (
            job && job.status !== 'concluded'
              ? [{ device: job.id, len: 100, offset: 100, ready: true, status: job.status }]
              : []
          ) as T;
        case 'query-jobs':
          return (job ? [job] : []) as T;
        case 'job-complete':
        case 'block-job-cancel':
          if (job) job.status = 'concluded';
          return {} as T;
        case 'job-dismiss':
          job = undefined;
          return {} as T;
        default:
          return {} as T;
      }
    },
  };
  return { qmp: qmp as unknown as QmpClient, calls };
}

describe('moving a running disk (fake QMP, real files)', () => {
  let dir = '';
  let stored: StoredVm;
  let written: StoredVm | undefined;
  let running = true;
  const runner = new RecordingRunner();
  const data = (): DiskConfig => ({
    name: 'data',
    source: {
      kind: 'file',
      pool: 'a',
      volume: 'web-data',
      path: join(dir, 'a', 'web-data.qcow2'),
      format: 'qcow2',
    },
  });
  const storage = {
    volumePath: (v: { name: string; dir: string }) => join(v.dir, `${v.name}.qcow2`),
    createVolume: async (v: { name: string; dir: string }) => {
      const p = join(v.dir, `${v.name}.qcow2`);
      await writeFile(p, '');
      return p;
    },
  } as unknown as StorageDriver;
  const access = (qmp: QmpClient): VmAccess => ({
    paths: (n) => vmPaths(dir, n),
    stored: async () => stored,
    mustStored: async () => stored,
    writeStored: async (_n, vm) => {
      written = vm;
    },
    livePid: async () => (running ? 4242 : undefined),
    running: async () => running,
    identity: async () => ({ uid: 1, gid: 1 }) as never,
    qmp: async () => qmp,
    dropQmp: async () => {},
    fdChannel: () => ({ runner, helper: '/x/vmlink-qmp-fd', qmpFdSocket: '/run/q.sock' }),
    locked: (_n, fn) => fn(),
  });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-mvdisk-'));
    for (const p of ['a', 'b']) await import('node:fs/promises').then((f) => f.mkdir(join(dir, p)));
    await writeFile(join(dir, 'a', 'web-data.qcow2'), 'old');
    stored = {
      config: {
        name: 'web',
        cpus: 1,
        memoryMiB: 128,
        image: { kind: 'test-guest' },
        disks: [data()],
        nics: [],
        state: 'running',
      },
      configHash: 'h1',
      accel: 'tcg',
      argv: [],
      diskSlots: [0],
    } as StoredVm;
    written = undefined;
    running = true;
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('opens the new volume beside the disk, mirrors, pivots, records the new source and slot, then removes the old file', async () => {
    const q = fakeQmp();
    const r = await moveVmDisk({ vms: access(q.qmp), storage, runner }, 'web', 'data', {
      pool: 'b',
      dir: join(dir, 'b'),
      volume: 'web-data',
    });
    const newPath = join(dir, 'b', 'web-data.qcow2');
    expect(r.to).toEqual({ kind: 'file', pool: 'b', volume: 'web-data', path: newPath, format: 'qcow2' });
    // Root hands QEMU the file by descriptor (fd set 300, the slot's second set), then the qcow2 node over it.
    expect(runner.calls.at(-1)?.argv).toEqual(
      expect.arrayContaining(['--file', newPath, '--read-write', '--fdset', '300']),
    );
    const seq = q.calls
      .map(([c, a]) => `${c}${a['node-name'] ? ` ${a['node-name']}` : ''}`)
      .filter((c) => !c.startsWith('query-'));
    expect(seq).toEqual([
      'remove-fd',
      'blockdev-add disk0m',
      'blockdev-mirror',
      'job-complete',
      'job-dismiss',
      'blockdev-del disk0',
      'blockdev-del disk0-file',
      'remove-fd',
    ]);
    expect(q.calls.find(([c]) => c === 'blockdev-mirror')?.[1]).toMatchObject({
      device: 'disk0',
      target: 'disk0m',
      sync: 'full',
    });
    expect(written?.config.disks[0]?.source).toEqual(r.to);
    expect(written?.diskSlots).toEqual([ALT_SLOT]);
    expect(written?.configHash).toBe('h1');
    expect(existsSync(join(dir, 'a', 'web-data.qcow2'))).toBe(false);
    expect(existsSync(newPath)).toBe(true);
  });

  it('rolls back when the copy fails: job cancelled, new nodes and volume removed, old disk and record untouched', async () => {
    const q = fakeQmp('No space left on device');
    await expect(
      moveVmDisk({ vms: access(q.qmp), storage, runner }, 'web', 'data', {
        pool: 'b',
        dir: join(dir, 'b'),
        volume: 'web-data',
      }),
    ).rejects.toThrow(/VM web: the copy of disk0 stopped before it caught up: No space left on device/);
    expect(written).toBeUndefined();
    expect(existsSync(join(dir, 'b', 'web-data.qcow2'))).toBe(false);
    expect(existsSync(join(dir, 'a', 'web-data.qcow2'))).toBe(true);
    const dels = q.calls.filter(([c]) => c === 'blockdev-del').map(([, a]) => a['node-name']);
    expect(dels).toEqual(['disk0m', 'disk0m-file']);
    expect(q.calls.some(([c, a]) => c === 'block-job-cancel' && a.force === true)).toBe(true);
  });

  it('refuses a stopped VM, a CD-ROM, an encrypted disk, the pool it is in, and a volume that exists', async () => {
    const q = fakeQmp();
    const go = (disk: string, pool = 'b', volume = 'web-data') =>
      moveVmDisk({ vms: access(q.qmp), storage, runner }, 'web', disk, {
        pool,
        dir: join(dir, pool),
        volume,
      });
    await expect(go('data', 'a', 'x')).rejects.toThrow(/disk data is in pool a already/);
    await writeFile(join(dir, 'b', 'taken.qcow2'), 'someone');
    await expect(go('data', 'b', 'taken')).rejects.toThrow(/volume taken exists in pool b already/);
    stored.config.disks.push(
      { ...data(), name: 'cd', media: 'cdrom' },
      { ...data(), name: 'vault', encryption: { secret: 'k' } },
    );
    await expect(go('cd')).rejects.toThrow(/CD-ROM/);
    await expect(go('vault')).rejects.toThrow(/encrypted/);
    expect(q.calls.filter(([c]) => c === 'blockdev-mirror')).toEqual([]);
    expect(written).toBeUndefined();
  });

  it('refuses a running disk holding internal snapshots, before any copy', async () => {
    const q = fakeQmp();
    const base = q.qmp.execute.bind(q.qmp);
    const withSnap = {
      execute: async <T>(cmd: string, args?: Record<string, unknown>): Promise<T> =>
        cmd === 'query-named-block-nodes'
          ? ([
              {
                'node-name': 'disk0',
                image: { 'virtual-size': 1 << 25, snapshots: [{ name: 'before-upgrade' }] },
              },
            ] as T)
          : base<T>(cmd, args),
    } as unknown as QmpClient;
    await expect(
      moveVmDisk({ vms: access(withSnap), storage, runner }, 'web', 'data', {
        pool: 'b',
        dir: join(dir, 'b'),
        volume: 'web-data',
      }),
    ).rejects.toThrow(/holds snapshot\(s\) before-upgrade; .* delete them first/);
    expect(existsSync(join(dir, 'b', 'web-data.qcow2'))).toBe(false);
    expect(written).toBeUndefined();
  });
});

describe('moving a stopped disk (real qemu-img, real files)', () => {
  let dir = '';
  let stored: StoredVm;
  let written: StoredVm | undefined;
  const sys = new SystemRunner();
  const access = (): VmAccess =>
    ({
      paths: (n: string) => vmPaths(dir, n),
      mustStored: async () => stored,
      writeStored: async (_n: string, vm: StoredVm) => {
        written = vm;
      },
      running: async () => false,
      qmp: async () => {
        throw new Error('a stopped VM has no QMP');
      },
    }) as unknown as VmAccess;
  const go = () =>
    moveVmDisk({ vms: access(), storage: new DirStorage(sys), runner: sys }, 'web', 'data', {
      pool: 'b',
      dir: join(dir, 'b'),
      volume: 'web-data',
    });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-mvdisk-off-'));
    await mkdir(join(dir, 'b'));
    await mkdir(join(dir, 'vms', 'web'), { recursive: true });
    const disk = vmPaths(dir, 'web').disk('data');
    await sys.run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk, '8M']);
    await sys.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x6b 1M 64k', disk]);
    await sys.run(['qemu-img', 'bitmap', '--add', disk, 'vmlink-b1']);
    stored = {
      config: {
        name: 'web',
        cpus: 1,
        memoryMiB: 128,
        image: { kind: 'test-guest' },
        disks: [{ name: 'data' }],
        nics: [],
        state: 'stopped',
      },
      configHash: 'h1',
      accel: 'tcg',
      argv: [],
      diskSlots: [0],
    } as StoredVm;
    written = undefined;
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('copies the VM-directory disk into the pool with its data and bitmaps, records it, removes the old file', async () => {
    const r = await go();
    const path = join(dir, 'b', 'web-data.qcow2');
    expect(r).toMatchObject({ vm: 'web', disk: 'data', from: 'the VM directory' });
    expect(r.to).toEqual({ kind: 'file', pool: 'b', volume: 'web-data', path, format: 'qcow2' });
    expect((await sys.run(['qemu-io', '-f', 'qcow2', '-c', 'read -P 0x6b 1M 64k', path])).code).toBe(0);
    expect((await sys.run(['qemu-img', 'info', path])).stdout).toContain('vmlink-b1');
    expect(written?.config.disks[0]?.source).toEqual(r.to);
    expect(written?.diskSlots).toEqual([0]);
    expect(written?.configHash).toBe('h1');
    expect(existsSync(vmPaths(dir, 'web').disk('data'))).toBe(false);
  });

  it('refuses a disk with internal snapshots, changing nothing', async () => {
    await sys.run(['qemu-img', 'snapshot', '-c', 'nightly', vmPaths(dir, 'web').disk('data')]);
    await expect(go()).rejects.toThrow(ConflictError);
    await expect(go()).rejects.toThrow(/holds snapshot\(s\) nightly/);
    expect(existsSync(join(dir, 'b', 'web-data.qcow2'))).toBe(false);
    expect(existsSync(vmPaths(dir, 'web').disk('data'))).toBe(true);
    expect(written).toBeUndefined();
  });
});
