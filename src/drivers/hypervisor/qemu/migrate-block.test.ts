// Block migration's QMP sequences and its source-side run (VmMigrations.migrateOut) against a fake QMP monitor that
// acts like QEMU where it matters: `migrate` and an nbd `blockdev-add` connect to the agent's sockets.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { VmConfig } from '../../../shared/model.js';
import type { VmPaths } from './cmdline.js';
import { exportDisks, localDisks, stopExports } from './migrate-block.js';
import { VmMigrations } from './migrate-vm.js';
import type { QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

const cfg = (over: Partial<VmConfig> = {}): VmConfig => ({
  name: 'web',
  cpus: 1,
  memoryMiB: 64,
  image: { kind: 'test-guest' },
  disks: [{ name: 'data', sizeMiB: 32 }],
  nics: [],
  state: 'running',
  ...over,
});
const stored = (c: VmConfig, diskSlots?: number[]): StoredVm => ({
  config: c,
  configHash: 'h',
  accel: 'tcg',
  argv: [],
  ...(diskSlots ? { diskSlots } : {}),
});
const file = {
  kind: 'file' as const,
  pool: 'local',
  volume: 'web-data',
  path: '/p/web-data',
  format: 'qcow2' as const,
};

describe('which disks block migration copies', () => {
  it("the image overlay (only its own clusters) and VM-directory disks by their slot's node; shared volumes stay", () => {
    const c = cfg({
      image: { kind: 'qcow2', path: '/img/base.qcow2' } as VmConfig['image'],
      disks: [
        { name: 'data', sizeMiB: 32 },
        {
          name: 'shared',
          source: { kind: 'nfs', pool: 'n', volume: 'v', url: 'nfs://s/e/v', format: 'qcow2' } as never,
        },
        { name: 'logs', sizeMiB: 8 },
      ],
    });
    expect(localDisks(stored(c, [0, 1, 102]))).toEqual([
      { disk: 'root', node: 'root', sync: 'top' },
      { disk: 'data', node: 'disk0', sync: 'full' },
      { disk: 'logs', node: 'disk2m', sync: 'full' },
    ]);
  });

  it('copies an encrypted disk in the VM directory like any other (the target opens its own copy with the key)', () => {
    expect(
      localDisks(stored(cfg({ disks: [{ name: 'vault', sizeMiB: 8, encryption: { secret: 'k' } }] }))),
    ).toEqual([{ disk: 'vault', node: 'disk0', sync: 'full' }]);
  });

  it('refuses a dir-pool volume and a local CD-ROM, naming the disk and the fix', () => {
    expect(() => localDisks(stored(cfg({ disks: [{ name: 'data', source: file }] })))).toThrow(
      'VM web: disk data is a volume of dir pool local, which block migration does not copy; move it to a shared pool first',
    );
    expect(() => localDisks(stored(cfg({ disks: [{ name: 'iso', media: 'cdrom' }] })))).toThrow(/CD-ROM/);
    expect(() =>
      localDisks(
        stored(cfg({ image: { kind: 'volume' } as VmConfig['image'], rootSource: file, disks: [] })),
      ),
    ).toThrow(/its root disk is a dir-pool volume/);
  });
});

/** A QMP monitor recording each command; `on` answers (or acts) per command. */
function fakeQmp(on: Record<string, (args: unknown) => unknown>) {
  const sent: Array<{ cmd: string; args?: unknown }> = [];
  const qmp = {
    execute: async <T>(cmd: string, args?: unknown): Promise<T> => {
      sent.push(args === undefined ? { cmd } : { cmd, args });
      const a = on[cmd]?.(args);
      const v = a instanceof Promise ? await a : a;
      if (v instanceof Error) throw v;
      return (v ?? {}) as T;
    },
  };
  return { qmp: qmp as unknown as QmpClient, sent, cmds: () => sent.map((s) => s.cmd) };
}

describe('target: the NBD export', () => {
  it('exports each disk writable on the unix socket, bounded in connections, and says how many bytes may come', async () => {
    const { qmp, sent } = fakeQmp({
      'query-named-block-nodes': () => [{ 'node-name': 'disk0', image: { 'virtual-size': 32 * 1048576 } }],
    });
    const max = await exportDisks(
      qmp,
      '/run/web/nbd-in.sock',
      [{ disk: 'data', node: 'disk0', sync: 'full' }],
      'web',
    );
    expect(max).toBe(16 * 32 * 1048576 + 64 * 1048576);
    expect(sent.slice(1)).toEqual([
      {
        cmd: 'nbd-server-start',
        args: { addr: { type: 'unix', data: { path: '/run/web/nbd-in.sock' } }, 'max-connections': 2 },
      },
      {
        cmd: 'block-export-add',
        args: { type: 'nbd', id: 'mig-data', 'node-name': 'disk0', name: 'data', writable: true },
      },
    ]);
    await stopExports(qmp);
    expect(sent.at(-1)).toEqual({ cmd: 'nbd-server-stop' });
  });
});

let dir = '';
/** Every directory a test made (one test may set up twice). */
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/**
 * A source VM whose "QEMU" connects to the agent's sockets as the real one does, with mirrors that become READY at
 * the second poll, a migration that passes pre-switchover, and `fail` to break one step.
 */
function source(fail?: 'mirror' | 'finish') {
  dir = mkdtempSync(join(tmpdir(), 'vmlink-mgb-blk-'));
  dirs.push(dir);
  const runDir = dir;
  const conns: Socket[] = [];
  const dial = (path: string) =>
    new Promise<void>((resolve, reject) => {
      const s = connect(path, () => resolve());
      s.on('error', reject);
      conns.push(s);
    });
  let polls = 0;
  let migrate = 0;
  const q = fakeQmp({
    'blockdev-add': (a) => dial((a as { server: { path: string } }).server.path),
    'query-block-jobs': () => {
      polls++;
      if (fail === 'mirror' && polls > 1)
        return [{ device: 'vmlink-mirror-mig-data', status: 'concluded', error: 'Input/output error' }];
      return [{ device: 'vmlink-mirror-mig-data', len: 100, offset: polls > 1 ? 100 : 40, ready: polls > 1 }];
    },
    'query-jobs': () =>
      fail !== 'finish'
        ? [{ id: 'vmlink-mirror-mig-data', status: 'concluded' }]
        : [{ id: 'vmlink-mirror-mig-data', status: 'concluded', error: 'Connection reset by peer' }],
    migrate: (a) => dial((a as { uri: string }).uri.slice('unix:'.length)),
    'query-migrate': () => {
      migrate++;
      if (migrate === 1) return { status: 'active', ram: { transferred: 1, remaining: 9, total: 10 } };
      if (migrate === 2)
        return { status: 'pre-switchover', ram: { transferred: 10, remaining: 0, total: 10 } };
      return { status: 'completed', downtime: 12, ram: { transferred: 10, remaining: 0, total: 10 } };
    },
    'query-status': () => ({ status: 'paused' }),
  });
  const m = new VmMigrations({
    paths: () => ({ runDir }) as VmPaths,
    identity: async () => ({ uid: process.getuid!(), gid: process.getgid!(), groups: [] }),
    running: async () => true,
    qmp: async () => q.qmp,
    mustStored: async () => stored(cfg()),
    launchIncoming: async () => {},
    locked: (_n, fn) => fn(),
  });
  return {
    m,
    q,
    conns,
    close: () => {
      for (const c of conns) c.destroy();
    },
  };
}

describe('source: a block migration', () => {
  it('mirrors each local disk onto an nbd node through the tunnel until READY, then migrates and ends the copies paused', async () => {
    const s = source();
    const tunnelled: Socket[] = [];
    const progress: Array<{ status: string; diskDoneBytes?: number }> = [];
    const last = await s.m.migrateOut(
      'web',
      {
        downtimeLimitMs: 300,
        nbdTunnel: (c) => tunnelled.push(c),
        onProgress: (p) => progress.push(p),
        blockCopyTimeoutMs: 5_000,
      },
      async (stream) => void stream.destroy(),
    );
    s.close();
    expect(tunnelled).toHaveLength(1);
    expect(last).toMatchObject({
      status: 'completed',
      downtimeMs: 12,
      diskDoneBytes: 100,
      diskTotalBytes: 100,
    });
    expect(progress[0]).toMatchObject({ status: 'disks', diskDoneBytes: 40 });
    const cmds = s.q.cmds();
    // The disks' copy caught up before memory moves; the mirrors end (not forced) while paused in pre-switchover,
    // and only then does QEMU go on.
    const order = [
      'blockdev-add',
      'blockdev-mirror',
      'migrate',
      'block-job-cancel',
      'blockdev-del',
      'migrate-continue',
    ];
    const at = order.map((c) => cmds.indexOf(c));
    expect(
      at.every((x) => x >= 0),
      cmds.join(' '),
    ).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    expect(s.q.sent.find((x) => x.cmd === 'blockdev-add')?.args).toEqual({
      driver: 'nbd',
      'node-name': 'mig-data',
      server: { type: 'unix', path: `${dir}/nbd-out.sock` },
      export: 'data',
    });
    expect(s.q.sent.find((x) => x.cmd === 'blockdev-mirror')?.args).toMatchObject({
      device: 'disk0',
      target: 'mig-data',
      sync: 'full',
    });
    expect(s.q.sent.find((x) => x.cmd === 'block-job-cancel')?.args).toEqual({
      device: 'vmlink-mirror-mig-data',
    });
    expect(s.q.sent.find((x) => x.cmd === 'migrate-set-capabilities')?.args).toMatchObject({
      capabilities: expect.arrayContaining([{ capability: 'pause-before-switchover', state: true }]),
    });
    expect(cmds).not.toContain('migrate_cancel');
  });

  it('a mirror that breaks before READY: no memory is sent, the copy is dropped, the guest runs on here', async () => {
    const s = source('mirror');
    await expect(
      s.m.migrateOut(
        'web',
        { downtimeLimitMs: 300, nbdTunnel: () => {}, blockCopyTimeoutMs: 5_000 },
        async () => {},
      ),
    ).rejects.toThrow('VM web: the copy of disk0 stopped before it caught up: Input/output error');
    s.close();
    const cmds = s.q.cmds();
    expect(cmds).not.toContain('migrate');
    expect(s.q.sent).toContainEqual({
      cmd: 'block-job-cancel',
      args: { device: 'vmlink-mirror-mig-data', force: true },
    });
    expect(s.q.sent).toContainEqual({ cmd: 'blockdev-del', args: { 'node-name': 'mig-data' } });
    expect(cmds.at(-1)).toBe('cont');
  });

  it('a copy that failed by the switch-over: QEMU never goes on, the migration is cancelled and the guest resumes', async () => {
    const s = source('finish');
    await expect(
      s.m.migrateOut(
        'web',
        { downtimeLimitMs: 300, nbdTunnel: () => {}, blockCopyTimeoutMs: 5_000 },
        async (stream) => void stream.destroy(),
      ),
    ).rejects.toThrow(/block job vmlink-mirror-mig-data failed: Connection reset by peer/);
    s.close();
    const cmds = s.q.cmds();
    expect(cmds).not.toContain('migrate-continue');
    expect(cmds).toContain('migrate_cancel');
    expect(cmds.at(-1)).toBe('cont');
  });

  it('the relay fails once QEMU completed: with holdOnceSent the guest stays paused and the last progress says held', async () => {
    for (const hold of [true, false]) {
      const s = source();
      const seen: string[] = [];
      // The relay fails after QEMU reported the whole state sent (the target's answer lost, say).
      const relay = async () => {
        while (s.q.cmds().filter((c) => c === 'query-migrate').length < 3)
          await new Promise((r) => setTimeout(r, 5));
        throw new Error('the target agent went away');
      };
      await expect(
        s.m.migrateOut(
          'web',
          {
            downtimeLimitMs: 300,
            nbdTunnel: () => {},
            blockCopyTimeoutMs: 5_000,
            onProgress: (p) => seen.push(p.status),
            ...(hold ? { holdOnceSent: true } : {}),
          },
          relay,
        ),
      ).rejects.toThrow('the target agent went away');
      s.close();
      if (hold) {
        expect(s.q.cmds()).not.toContain('cont');
        expect(seen.at(-1)).toBe('held');
      } else expect(s.q.cmds().at(-1)).toBe('cont');
    }
  });

  it('refuses a VM with local disks when the agent gives no tunnel', async () => {
    const s = source();
    await expect(s.m.migrateOut('web', { downtimeLimitMs: 300 }, async () => {})).rejects.toThrow(
      'VM web has local disks and no way to copy them',
    );
    expect(s.q.cmds()).toEqual([]);
  });
});
