import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startQemuNbd, stopQemuNbd } from '../../backup/qemu-nbd.js';
import { FastLuksRunner } from '../../storage/fast-luks.test-util.js';
import { createRetryingLuks } from '../../storage/qemu-img.js';
import { daemonFiles, openDaemon, stopLeftDaemon } from './backup-daemon.js';
import type { BackupDisk } from './backup-disks.js';
import {
  type NbdServers,
  type OfflineDeps,
  offlineKeys,
  openRestore,
  parseImageInfo,
} from './backup-offline.js';

// A stopped VM's LUKS-encrypted qcow2 disk backed up (full, then incremental through its persistent bitmap) through
// the real qemu-storage-daemon (the key over its QMP socket: no file) and restored through the real qemu-nbd (the nbd
// helper's startQemuNbd: the key as a 0600 file that is gone once it serves).

const runner = new FastLuksRunner();
const MiB = 1024 * 1024;
const KEY = Buffer.from('correct horse battery').toString('base64');
const WRONG = Buffer.from('wrong key').toString('base64');
const B1 = 'vmlink-nightly-20261201T010000Z';
const B2 = 'vmlink-nightly-20261201T020000Z';
let dir = '';

const nbd: NbdServers = {
  start: (o) => startQemuNbd(runner, o),
  stopLeft: async (d, name) => {
    await stopQemuNbd(d, name);
  },
};
const image = () => join(dir, 'data.qcow2');
const disk = (): BackupDisk => ({
  name: 'data',
  node: 'disk0',
  index: 0,
  qcow2: true,
  encrypted: true,
  image: image(),
});
const socketDir = () => join(dir, 'nbd');
function deps(key = KEY): OfflineDeps {
  return {
    vm: 'db1',
    runner,
    nbd,
    socketDir: socketDir(),
    keys: new Map([['data', key]]),
    record: { write: async () => {}, remove: async () => {} },
  };
}
/** `qemu-io` on the encrypted image with its key (stdin). */
const io = (cmd: string, key = KEY) =>
  runner.run(
    [
      'sh',
      '-c',
      'cat | exec "$@"',
      'sh',
      'qemu-io',
      '--object',
      'secret,id=k,file=/dev/stdin,format=base64',
      '--image-opts',
      `driver=qcow2,file.driver=file,file.filename=${image()},encrypt.key-secret=k`,
      '-c',
      cmd,
    ],
    { input: key },
  );
const nbdUrl = (socket: string) => `nbd+unix:///data?socket=${socket}`;
async function readAll(socket: string): Promise<Buffer> {
  const out = join(dir, `read-${Date.now()}.raw`);
  await runner.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'raw', nbdUrl(socket), out]);
  const b = await readFile(out);
  await rm(out);
  return b;
}
async function dirtyExtents(socket: string, bitmap: string): Promise<number[]> {
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

describe('stopped VM with a LUKS-encrypted disk (real qemu-img, qemu-storage-daemon, qemu-nbd)', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-bk-luks-'));
    // As the agent makes an encrypted volume: qemu-img's key-derivation timing can read 0 ms here and give up.
    await createRetryingLuks(
      runner,
      ['qemu-img', 'create', '-q', '-f', 'qcow2', image(), String(8 * MiB)],
      KEY,
      image(),
    );
    await io('write -P 0x11 1M 64k');
  });
  afterAll(async () => {
    await stopQemuNbd(socketDir(), 'data').catch(() => {});
    await stopLeftDaemon(socketDir()).catch(() => {});
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('full then incremental backup, restore: bytes equal; no key file while the daemon serves', async () => {
    const d = deps();
    const full = await openDaemon(d, [disk()], { bitmaps: { next: B1 }, freeze: false, full: true });
    expect((await readdir(socketDir())).filter((f) => f.startsWith('key-'))).toEqual([]);
    const fullBytes = await readAll(full.disks[0]!.socket);
    expect(fullBytes.length).toBe(8 * MiB);
    expect(fullBytes.subarray(1 * MiB, 1 * MiB + 4).toString('hex')).toBe('11111111');
    await full.end('commit');
    await io('write -P 0x22 5M 4k');
    const inc = await openDaemon(d, [disk()], {
      bitmaps: { base: B1, next: B2 },
      freeze: false,
      full: false,
    });
    expect(inc.disks[0]!.changed).toEqual({ context: `qemu:dirty-bitmap:${B1}` });
    expect(await dirtyExtents(inc.disks[0]!.socket, B1)).toEqual([5 * MiB]);
    const incBytes = await readAll(inc.disks[0]!.socket);
    await inc.end('commit');
    const bitmaps = parseImageInfo(
      image(),
      (await runner.run(['qemu-img', 'info', '-U', '--output=json', image()])).stdout,
    ).bitmaps;
    expect([...bitmaps.keys()]).toEqual([B2]);
    // Restore the full backup's bytes over the disk, then the incremental's changed block.
    await io('write -P 0x99 0 8M');
    const r = await openRestore(d, [disk()]);
    const src = join(dir, 'full.raw');
    await writeFile(src, fullBytes);
    await runner.run([
      'qemu-img',
      'convert',
      '-n',
      '-f',
      'raw',
      '-O',
      'raw',
      src,
      nbdUrl(r.disks[0]!.socket),
    ]);
    await runner.run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x22 5M 4k', nbdUrl(r.disks[0]!.socket)]);
    await r.close();
    const check = await openRestore(d, [disk()]);
    expect((await readAll(check.disks[0]!.socket)).equals(incBytes)).toBe(true);
    await check.close();
    // Still encrypted: the image file holds no plaintext pattern.
    expect((await readFile(image())).includes(Buffer.alloc(4096, 0x22))).toBe(false);
  });

  it('a wrong key is refused by qemu-nbd and the daemon (no key file left); a missing secret is refused naming disk and secret', async () => {
    await expect(openRestore(deps(WRONG), [disk()])).rejects.toThrow(/Invalid password|cannot unlock/);
    expect((await readdir(socketDir())).filter((f) => f.startsWith('key-'))).toEqual([]);
    await expect(
      openDaemon(deps(WRONG), [disk()], {
        bitmaps: { base: B2, next: 'vmlink-nightly-20261201T030000Z' },
        freeze: false,
        full: false,
      }),
    ).rejects.toThrow(/Invalid password|cannot unlock/);
    expect(existsSync(daemonFiles(socketDir()).identity)).toBe(false); // the refused daemon is stopped
    expect(() =>
      offlineKeys(
        'db1',
        [{ name: 'data', encryption: { secret: 'dbkey' } }],
        [disk()],
        [{ name: 'other', value: KEY }],
      ),
    ).toThrow(/disk data is encrypted with secret dbkey, whose value the controller did not send/);
    const { keys: _k, ...noKeys } = deps();
    await expect(openRestore(noKeys, [disk()])).rejects.toThrow(
      /disk data is encrypted and its key was not given/,
    );
  });
});
