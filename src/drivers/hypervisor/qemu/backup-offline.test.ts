import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SystemRunner } from '../../../exec/runner.js';
import { pollUntil } from '../../../shared/time.js';
import { daemonFiles, openDaemon, stopLeftDaemon } from './backup-daemon.js';
import type { BackupDisk, ViewRecord } from './backup-disks.js';
import {
  foldOffline,
  type NbdServers,
  type OfflineDeps,
  offlineChap,
  openRestore,
  parseImageInfo,
} from './backup-offline.js';

// A stopped VM's view with real qemu-img (persistent bitmaps), the real qemu-storage-daemon (backups) and real
// qemu-nbd (restores). The nbd helper's startQemuNbd is not this file's: a minimal adapter (qemu-nbd --fork on a unix
// socket) stands in for it here.

const runner = new SystemRunner();
const MiB = 1024 * 1024;
const BASE = 'vmlink-nightly-20261130T120000Z';
const NEXT = 'vmlink-nightly-20261201T120000Z';
let dir = '';

/** qemu-nbd on a unix socket, forked, stopped by its pidfile. */
const nbd: NbdServers = {
  async start(o) {
    const socket = join(o.socketDir, `${o.exportName}.sock`);
    const pidfile = join(o.socketDir, `${o.exportName}.pid`);
    await runner.run([
      'qemu-nbd',
      '--fork',
      '--persistent',
      `--pid-file=${pidfile}`,
      '-k',
      socket,
      '-x',
      o.exportName,
      '-f',
      o.format ?? 'qcow2',
      ...(o.readOnly ? ['-r'] : []),
      ...(o.bitmap ? ['-B', o.bitmap] : []),
      o.image as string, // plain images only here: backup-offline-luks.test.ts serves encrypted ones
    ]);
    const stop = async () => {
      const pid = Number((await readFile(pidfile, 'utf8').catch(() => '0')).trim());
      if (pid > 0) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {}
        for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++)
          await new Promise((r) => setTimeout(r, 20));
      }
      await rm(pidfile, { force: true });
    };
    return { socket, exportName: o.exportName, stop };
  },
  async stopLeft() {},
};

/** Starts of the extents `bitmap` marks dirty in the export `data` on `socket`. */
async function dirtyStarts(socket: string, bitmap: string): Promise<number[]> {
  const map = await runner.run([
    'qemu-img',
    'map',
    '--output=json',
    '--image-opts',
    `driver=nbd,export=data,server.type=unix,server.path=${socket},x-dirty-bitmap=qemu:dirty-bitmap:${bitmap}`,
  ]);
  return (JSON.parse(map.stdout) as Array<{ start: number; data: boolean }>)
    .filter((e) => !e.data)
    .map((e) => e.start);
}
const img = (name: string) => join(dir, `${name}.qcow2`);
const qemuIo = (image: string, cmd: string) => runner.run(['qemu-io', '-f', 'qcow2', '-c', cmd, image]);
const bitmaps = async (image: string) =>
  [
    ...parseImageInfo(
      image,
      (await runner.run(['qemu-img', 'info', '--output=json', image])).stdout,
    ).bitmaps.keys(),
  ].sort();

function deps(): OfflineDeps & { recorded: () => ViewRecord | undefined } {
  let rec: ViewRecord | undefined;
  return {
    vm: 'web1',
    runner,
    nbd,
    socketDir: join(dir, 'nbd'),
    record: {
      write: async (r) => {
        rec = r;
      },
      remove: async () => {
        rec = undefined;
      },
    },
    recorded: () => rec,
  };
}

const disk = (name: string): BackupDisk => ({
  name,
  node: name === 'root' ? 'root' : 'disk0',
  index: name === 'root' ? 0 : 1,
  qcow2: true,
  encrypted: false,
  image: img(name),
});

describe('stopped VM backup view (real qemu-img bitmaps, qemu-storage-daemon, qemu-nbd)', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-bk-offline-'));
    for (const n of ['root', 'data'])
      await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', img(n), String(16 * MiB)]);
    await runner.run(['qemu-img', 'bitmap', '--add', img('data'), BASE]);
    await qemuIo(img('data'), 'write -P 0x11 3M 4k');
    await qemuIo(img('root'), 'write -P 0x22 0 4k');
  });
  afterAll(async () => {
    await stopLeftDaemon(join(dir, 'nbd')).catch(() => {});
    // Servers a failed test left: each by its pidfile (ours only).
    for (const n of ['root', 'data']) {
      const pid = Number((await readFile(join(dir, 'nbd', `${n}.pid`), 'utf8').catch(() => '0')).trim());
      if (pid > 0)
        try {
          process.kill(pid, 'SIGTERM');
        } catch {}
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('one daemon serves each disk read-only with the base bitmap where it has one; commit swaps base for next', async () => {
    const d = deps();
    const v = await openDaemon(d, [disk('root'), disk('data')], {
      bitmaps: { base: BASE, next: NEXT },
      freeze: true,
      full: false,
    });
    expect(v.disks.map((x) => [x.name, x.sizeBytes, x.changed])).toEqual([
      ['root', 16 * MiB, { fullReason: 'stopped-no-bitmap' }],
      ['data', 16 * MiB, { context: `qemu:dirty-bitmap:${BASE}` }],
    ]);
    expect(d.recorded()?.disks.map((x) => x.base)).toEqual(['absent', 'usable']);
    const data = v.disks[1]!;
    const map = await runner.run([
      'qemu-img',
      'map',
      '--output=json',
      '--image-opts',
      `driver=nbd,export=data,server.type=unix,server.path=${data.socket},x-dirty-bitmap=qemu:dirty-bitmap:${BASE}`,
    ]);
    const dirty = (JSON.parse(map.stdout) as Array<{ start: number; length: number; data: boolean }>)
      .filter((e) => !e.data)
      .map((e) => [e.start, e.length]);
    expect(dirty).toEqual([[3 * MiB, 64 * 1024]]);
    // Read-only: a write through the export is refused.
    const w = await runner.run(
      ['qemu-io', '-f', 'raw', '-c', 'write 0 4k', `nbd+unix:///data?socket=${data.socket}`],
      { allowFailure: true },
    );
    expect(`${w.stdout}${w.stderr}`).toMatch(/Permission denied|read.only/i);
    // One process serves both disks on one socket.
    expect(v.disks[0]!.socket).toBe(data.socket);
    const pid = Number((await readFile(daemonFiles(join(dir, 'nbd')).pidfile, 'utf8')).trim());
    expect(existsSync(`/proc/${pid}`)).toBe(true);
    await v.end('commit');
    // Exited when end() returns; its /proc entry goes once this process has reaped it (asynchronously, SIGCHLD).
    expect(await pollUntil(() => !existsSync(`/proc/${pid}`), { timeoutMs: 5_000, intervalMs: 10 })).toBe(
      true,
    );
    expect(existsSync(daemonFiles(join(dir, 'nbd')).identity)).toBe(false);
    expect(await bitmaps(img('data'))).toEqual([NEXT]);
    expect(await bitmaps(img('root'))).toEqual([NEXT]);
    expect(d.recorded()).toBeUndefined();
  });

  it('abort merges next into the base and drops next; the base counts again', async () => {
    const d = deps();
    await qemuIo(img('data'), 'write -P 0x33 5M 4k'); // counted by NEXT (now the base)
    const v = await openDaemon(d, [disk('data')], {
      bitmaps: { base: NEXT, next: 'vmlink-nightly-20261202T120000Z' },
      freeze: false,
      full: false,
    });
    await v.end('abort');
    expect(await bitmaps(img('data'))).toEqual([NEXT]);
    await qemuIo(img('data'), 'write -P 0x44 9M 4k'); // the base was re-enabled: it counts this
    const v2 = await openDaemon(d, [disk('data')], {
      bitmaps: { base: NEXT, next: 'vmlink-nightly-20261203T120000Z' },
      freeze: false,
      full: false,
    });
    expect(await dirtyStarts(v2.disks[0]!.socket, NEXT)).toEqual([5 * MiB, 9 * MiB]);
    await v2.end('abort');
  });

  it('an agent that died mid-view: its daemon stopped (SIGTERM) and the view folded back; one killed outright reads whole next time', async () => {
    const d = deps();
    const sd = join(dir, 'nbd');
    const v = await openDaemon(d, [disk('data')], {
      bitmaps: { base: NEXT, next: 'vmlink-nightly-20261204T120000Z' },
      freeze: false,
      full: false,
    });
    const record = d.recorded()!;
    expect(record.disks[0]!.base).toBe('usable');
    // The agent's restart: the daemon left serving is stopped by its identity, then the bitmaps are folded.
    expect(await stopLeftDaemon(sd)).toBe(true);
    await foldOffline(d, record, 'abort');
    expect(await bitmaps(img('data'))).toEqual([NEXT]);
    await qemuIo(img('data'), 'write -P 0x55 11M 4k');
    const v2 = await openDaemon(d, [disk('data')], {
      bitmaps: { base: NEXT, next: 'vmlink-nightly-20261205T120000Z' },
      freeze: false,
      full: false,
    });
    expect(await dirtyStarts(v2.disks[0]!.socket, NEXT)).toEqual([5 * MiB, 9 * MiB, 11 * MiB]);
    // Killed outright: QEMU never stores the bitmaps, the base stays marked in-use.
    process.kill(Number((await readFile(daemonFiles(sd).pidfile, 'utf8')).trim()), 'SIGKILL');
    const record2 = d.recorded()!;
    await stopLeftDaemon(sd);
    await foldOffline(d, record2, 'abort'); // nothing it can merge into, and no error
    const v3 = await openDaemon(d, [disk('data')], {
      bitmaps: { base: NEXT, next: 'vmlink-nightly-20261206T120000Z' },
      freeze: false,
      full: false,
    });
    expect(v3.disks[0]!.changed).toEqual({ fullReason: 'bitmap-inconsistent' });
    await v3.end('commit');
    expect(await bitmaps(img('data'))).toEqual(['vmlink-nightly-20261206T120000Z']);
    void v;
  });

  it('a running view whose QEMU stopped before it ended: the cleanup folds next back and re-enables the base', async () => {
    const image = img('data');
    const base = 'vmlink-p-20261204T120000Z';
    const next = 'vmlink-p-20261205T120000Z';
    await runner.run(['qemu-img', 'bitmap', '--add', '--disable', image, base]);
    await runner.run(['qemu-img', 'bitmap', '--add', image, next]);
    await qemuIo(image, 'write -P 0x66 7M 4k'); // after the cut: in next only
    const d = deps();
    const record: ViewRecord = {
      version: 1,
      kind: 'running',
      base,
      next,
      disks: [{ name: 'data', node: 'disk0', index: 1, image, qcow2: true, base: 'usable' }],
    };
    await foldOffline(d, record, 'abort');
    const info = JSON.parse((await runner.run(['qemu-img', 'info', '--output=json', image])).stdout) as {
      'format-specific': { data: { bitmaps: Array<{ name: string; flags: string[] }> } };
    };
    const b = info['format-specific'].data.bitmaps.find((x) => x.name === base);
    expect(b?.flags).toContain('auto'); // enabled again
    expect(info['format-specific'].data.bitmaps.some((x) => x.name === next)).toBe(false);
    const v = await openDaemon(d, [disk('data')], {
      bitmaps: { base, next: 'vmlink-p-20261206T120000Z' },
      freeze: false,
      full: false,
    });
    const map = await runner.run([
      'qemu-img',
      'map',
      '--output=json',
      '--image-opts',
      `driver=nbd,export=data,server.type=unix,server.path=${v.disks[0]!.socket},x-dirty-bitmap=qemu:dirty-bitmap:${base}`,
    ]);
    const dirty = (JSON.parse(map.stdout) as Array<{ start: number; data: boolean }>)
      .filter((e) => !e.data)
      .map((e) => e.start);
    expect(dirty).toEqual([7 * MiB]);
    await v.end('abort');
  });

  it('a restore view is writable; refuses an encrypted raw volume, and a CHAP LUN without its password', async () => {
    const d = deps();
    const r = await openRestore(d, [disk('root')]);
    const sock = r.disks[0]!.socket;
    await runner.run([
      'qemu-io',
      '-f',
      'raw',
      '-c',
      'write -P 0x55 1M 64k',
      `nbd+unix:///root?socket=${sock}`,
    ]);
    await r.close();
    const check = await qemuIo(img('root'), 'read -P 0x55 1M 64k');
    expect(check.stdout).not.toMatch(/fail/i);
    await expect(openRestore(d, [{ ...disk('root'), encrypted: true }])).rejects.toThrow(
      /disk root is encrypted/,
    );
    await expect(
      openRestore(d, [{ ...disk('root'), encrypted: true, qcow2: false, source: 'iscsi' }]),
    ).rejects.toThrow(/disk root is an encrypted raw image/);
    // A LUN that logs in with CHAP: refused before anything starts when its password was not sent.
    const lun = {
      kind: 'iscsi' as const,
      pool: 'san',
      volume: 'data',
      portal: '192.0.2.1:3260',
      iqn: 'iqn.2026-11.io.vmlink:san.data',
      lun: 1,
      chap: { user: 'vmlink', secret: 'san-chap' },
    };
    await expect(
      openRestore(d, [{ ...disk('root'), qcow2: false, source: 'iscsi', volume: lun }]),
    ).rejects.toThrow(/disk root logs in to its iSCSI target with CHAP and its password was not given/);
    expect(
      offlineChap('v1', [{ ...disk('root'), volume: lun }], [{ name: 'san-chap', value: 'cGFzcw==' }]),
    ).toEqual(new Map([['root', 'cGFzcw==']]));
    expect(() => offlineChap('v1', [{ ...disk('root'), volume: lun }], [])).toThrow(
      /disk root logs in to its iSCSI target with the CHAP password of secret san-chap, whose value the controller did not send/,
    );
  });
});
