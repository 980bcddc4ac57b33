import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SystemRunner } from '../../../exec/runner.js';
import { processOpenFiles, readIdentityFile } from '../../../shared/process.js';
import { pollUntil } from '../../../shared/time.js';
import { type DaemonDeps, daemonFiles, openDaemon, SPARE_DIR_NAME, stopLeftDaemon } from './backup-daemon.js';
import type { BackupDisk } from './backup-disks.js';
import type { NbdServers } from './backup-offline.js';
import { SpareDaemon } from './backup-spare.js';

// The host's spare qemu-storage-daemon with the real daemon and real qcow2 images: a stopped VM's view takes it, it
// never holds an image before, a dead one is replaced, the agent's stop and the next agent's start stop it.

const runner = new SystemRunner();
const MiB = 1024 * 1024;
let dir = '';
const spares: SpareDaemon[] = [];

const nbd: NbdServers = {
  start: () => Promise.reject(new Error('no qemu-nbd in this test')),
  stopLeft: async () => {},
};
const root = () => join(dir, SPARE_DIR_NAME);
const socketDir = () => join(dir, 'vm', 'nbd');
const image = () => join(dir, 'root.qcow2');
const disk = (): BackupDisk => ({
  name: 'root',
  node: 'root',
  index: 0,
  qcow2: true,
  encrypted: false,
  image: image(),
});
const alive = (pid: number) => existsSync(`/proc/${pid}`);
const gone = (pid: number) => pollUntil(() => !alive(pid), { timeoutMs: 10_000, intervalMs: 10 });

function newSpare(): SpareDaemon {
  const s = new SpareDaemon({ runner, root: root() });
  spares.push(s);
  return s;
}

function deps(spare: SpareDaemon): DaemonDeps {
  return {
    vm: 'web1',
    runner,
    nbd,
    socketDir: socketDir(),
    record: { write: async () => {}, remove: async () => {} },
    spare,
  };
}

let n = 0;
/** One backup view of the stopped VM's disk (a new `next` bitmap each time), ended with commit; its daemon's pid. */
async function backupOnce(spare: SpareDaemon): Promise<number> {
  const v = await openDaemon(deps(spare), [disk()], {
    bitmaps: { next: `vmlink-p-2026120${n++}T000000Z` },
    freeze: false,
    full: false,
  });
  const id = await readIdentityFile(daemonFiles(socketDir()).identity);
  expect(id).toBeDefined();
  expect(v.disks[0]!.sizeBytes).toBe(16 * MiB);
  await v.end('commit');
  return id!.pid;
}

describe('the backup spare storage daemon (real qemu-storage-daemon)', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-bk-spare-'));
    await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', image(), String(16 * MiB)]);
  });
  afterEach(async () => {
    for (const s of spares.splice(0)) await s.close();
    await stopLeftDaemon(socketDir()).catch(() => {});
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the first view starts its own daemon; the next takes the spare started after it, which held no image', async () => {
    const spare = newSpare();
    expect(await spare.pid()).toBeUndefined(); // none until a stopped VM's backup ran
    const first = await backupOnce(spare);
    const ready = await spare.pid();
    expect(ready).toBeDefined();
    expect(ready).not.toBe(first);
    expect(await gone(first)).toBe(true);
    // A spare opens nothing but its log and pidfile: no image, so no image lock a VM start could run into.
    const [sub] = await readdir(root());
    const own = daemonFiles(join(root(), sub!));
    const files = await processOpenFiles(ready!);
    expect([...new Set(files.map((f) => f.path))].sort()).toEqual([own.log, own.pidfile]);
    const second = await backupOnce(spare);
    expect(second).toBe(ready);
    expect(await gone(second)).toBe(true);
    // Taken: its directory went; the next spare is another process in a directory of its own.
    const next = await spare.pid();
    expect(next).toBeDefined();
    expect(next).not.toBe(ready);
    expect(await readdir(root())).toHaveLength(1);
    expect((await readdir(root()))[0]).not.toBe(sub);
  });

  it('a taken spare is the VM socket directory’s daemon: stopped by its identity after an agent died mid-view', async () => {
    const spare = newSpare();
    await backupOnce(spare);
    const ready = (await spare.pid())!;
    const v = await openDaemon(deps(spare), [disk()], {
      bitmaps: { next: `vmlink-p-2026121${n++}T000000Z` },
      freeze: false,
      full: false,
    });
    expect((await readIdentityFile(daemonFiles(socketDir()).identity))?.pid).toBe(ready);
    // The agent's restart finds it by the VM's record alone (its pidfile was in the spare's directory).
    expect(await stopLeftDaemon(socketDir())).toBe(true);
    expect(await gone(ready)).toBe(true);
    await v.end('abort').catch(() => {});
  });

  it('a spare that died is not taken: the view starts its own, and a new spare follows', async () => {
    const spare = newSpare();
    await backupOnce(spare);
    const dead = (await spare.pid())!;
    process.kill(dead, 'SIGKILL');
    expect(await gone(dead)).toBe(true);
    expect(
      await pollUntil(async () => (await spare.pid()) === undefined, { timeoutMs: 5_000, intervalMs: 10 }),
    ).toBe(true);
    const own = await backupOnce(spare);
    expect(own).not.toBe(dead);
    const next = await spare.pid();
    expect(next).toBeDefined();
    expect([dead, own]).not.toContain(next);
  });

  it('the agent stop kills the spare; the next agent’s start stops what a dead agent left', async () => {
    const spare = newSpare();
    await backupOnce(spare);
    const pid = (await spare.pid())!;
    await spare.close();
    expect(await gone(pid)).toBe(true);
    expect(await readdir(root())).toEqual([]);
    // Closed: no further spare after a view.
    await backupOnce(spare);
    expect(await spare.pid()).toBeUndefined();
    // An agent that died with its spare up: the next agent's cleanup stops it by its identity.
    const dying = newSpare();
    await backupOnce(dying);
    const left = (await dying.pid())!;
    const restarted = newSpare();
    expect(await restarted.cleanup()).toBe(1);
    expect(await gone(left)).toBe(true);
    expect(await readdir(root())).toEqual([]);
    // Nothing to stop twice; its directory's leftovers (no identity, no process) go too.
    expect(await restarted.cleanup()).toBe(0);
  });
});
