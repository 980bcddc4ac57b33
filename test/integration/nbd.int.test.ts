// The NBD client against real qemu-nbd (Debian qemu-utils), started by startQemuNbd: a qcow2 with a persistent dirty
// bitmap made by `qemu-img bitmap --add` and then written through `qemu-io`, whose dirty extents must be exactly the
// written ranges (at the bitmap's granularity) and whose data reads back; base:allocation holes; a missing bitmap
// refused at start and at connect; writes refused on a read-only export; a restore through a writable export (data
// and write-zeroes, then flush) that `qemu-img compare` finds identical; a LUKS qcow2 served through --image-opts and
// a secret object; one inside a network namespace; stop() by identity. Needs no VM; qemu-nbd processes are stopped
// in afterAll, the namespace (vlt-nbd-<pid>) removed in its test.
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectNbd } from '../../src/drivers/backup/nbd-client.js';
import { type QemuNbdServer, startQemuNbd, stopQemuNbd } from '../../src/drivers/backup/qemu-nbd.js';
import type { NbdExtent } from '../../src/drivers/backup/types.js';
import { FastLuksRunner } from '../../src/drivers/storage/fast-luks.test-util.js';
import { createRetryingLuks } from '../../src/drivers/storage/qemu-img.js';
import { SystemRunner } from '../../src/exec/runner.js';
import { UnsupportedError } from '../../src/shared/errors.js';
import { inNetns, isRunning, readIdentityFile } from '../../src/shared/process.js';

const runner = new SystemRunner();
const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 64 * MiB;
const BITMAP = 'vmlink-nbdtest-20261201T120000Z';
const GRANULARITY = 64 * KiB;
/** What qemu-io writes after the bitmap was added: [offset, length, pattern byte]. */
const WRITES: Array<[number, number, number]> = [
  [1 * MiB, 64 * KiB, 0xaa],
  [10 * MiB + 8 * KiB, 300 * KiB, 0xbb], // not aligned: dirty from 10 MiB to 10 MiB + 320 KiB
  [33 * MiB, 4 * KiB, 0xcc],
  [63 * MiB, 1 * MiB, 0xdd], // up to the end of the disk
];

const hasQemuNbd = existsSync('/usr/bin/qemu-nbd') && existsSync('/usr/bin/qemu-io');

describe.runIf(hasQemuNbd)('NBD client and qemu-nbd on real images', () => {
  let dir = '';
  let src = '';
  const servers: QemuNbdServer[] = [];
  const start = async (...args: Parameters<typeof startQemuNbd>) => {
    const s = await startQemuNbd(...args);
    servers.push(s);
    return s;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vlt-nbd-'));
    src = join(dir, 'src.qcow2');
    await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', src, String(SIZE)]);
    // Data before the bitmap: 8 MiB of 0x11, and a zeroed range (allocated as zeroes).
    await runner.run(['qemu-io', '-f', 'qcow2', '-c', `write -P 0x11 0 ${8 * MiB}`, src]);
    await runner.run(['qemu-io', '-f', 'qcow2', '-c', `write -z ${20 * MiB} ${2 * MiB}`, src]);
    await runner.run(['qemu-img', 'bitmap', '--add', '--granularity', String(GRANULARITY), src, BITMAP]);
    await runner.run([
      'qemu-io',
      '-f',
      'qcow2',
      ...WRITES.flatMap(([o, l, p]) => ['-c', `write -P 0x${p.toString(16)} ${o} ${l}`]),
      src,
    ]);
  });

  afterAll(async () => {
    for (const s of servers) await s.stop().catch(() => {});
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('exports the dirty bitmap: its dirty extents are exactly what qemu-io wrote, and the data reads back', async () => {
    const s = await start(runner, {
      image: src,
      readOnly: true,
      bitmap: BITMAP,
      socketDir: join(dir, 'ro'),
      exportName: 'root',
    });
    const ctx = `qemu:dirty-bitmap:${BITMAP}`;
    const c = await connectNbd({ socket: s.socket, exportName: 'root', contexts: ['base:allocation', ctx] });
    try {
      expect(c.sizeBytes).toBe(SIZE);
      expect(c.readOnly).toBe(true);
      const dirty = (await c.blockStatus(ctx, 0, SIZE)).filter((e) => e.flags & 1);
      const expected = WRITES.map(([o, l]) => {
        const a = Math.floor(o / GRANULARITY) * GRANULARITY;
        const b = Math.ceil((o + l) / GRANULARITY) * GRANULARITY;
        return { offset: a, length: b - a, flags: 1 };
      });
      expect(dirty).toEqual(expected);
      for (const [o, l, p] of WRITES) expect((await c.read(o, l)).equals(Buffer.alloc(l, p))).toBe(true);
      // Before the bitmap: 0x11 where not overwritten since.
      expect((await c.read(0, MiB)).equals(Buffer.alloc(MiB, 0x11))).toBe(true);

      // base:allocation: never-written ranges read as holes (bit 0) and zero (bit 1); the whole disk is covered.
      const alloc = await c.blockStatus('base:allocation', 0, SIZE);
      expect(covers(alloc, 0, SIZE)).toBe(true);
      const at = (off: number) => alloc.find((e) => e.offset <= off && off < e.offset + e.length)!.flags;
      expect(at(0)).toBe(0); // data
      expect(at(40 * MiB) & 3).toBe(3); // never written: hole, reads as zeroes
      expect(at(21 * MiB) & 2).toBe(2); // written as zeroes
      expect((await c.read(40 * MiB, MiB)).equals(Buffer.alloc(MiB))).toBe(true);

      // Writes are refused on the read-only export (before anything is sent).
      await expect(c.write(0, Buffer.alloc(512))).rejects.toThrow(/is read-only: write refused/);
    } finally {
      await c.close();
    }
  });

  it('reads 4 MiB chunks 4 at a time in flight, the way the backup pipeline does', async () => {
    const s = await start(runner, { image: src, readOnly: true, socketDir: join(dir, 'ro2') });
    const c = await connectNbd({ socket: s.socket, exportName: 'disk' });
    try {
      const chunk = 4 * MiB;
      const parts: Buffer[] = new Array(SIZE / chunk);
      let next = 0;
      await Promise.all(
        [0, 1, 2, 3].map(async () => {
          while (next < parts.length) {
            const i = next++;
            parts[i] = await c.read(i * chunk, chunk);
          }
        }),
      );
      const whole = Buffer.concat(parts);
      const raw = join(dir, 'src.raw');
      await runner.run(['qemu-img', 'convert', '-O', 'raw', src, raw]);
      const { readFile } = await import('node:fs/promises');
      expect(whole.equals(await readFile(raw))).toBe(true);
    } finally {
      await c.close();
    }
  });

  it('refuses a missing bitmap clearly: at start (quoting qemu-nbd) and at connect', async () => {
    await expect(
      start(runner, { image: src, readOnly: true, bitmap: 'vmlink-nosuch', socketDir: join(dir, 'nob') }),
    ).rejects.toThrow(/qemu-nbd for .* exited at once: .*Bitmap 'vmlink-nosuch' is not found/);
    expect(existsSync(join(dir, 'nob', 'qemu-nbd-disk.sock'))).toBe(false);
    const s = await start(runner, { image: src, readOnly: true, socketDir: join(dir, 'nob2') });
    const err = await connectNbd({
      socket: s.socket,
      exportName: 'disk',
      contexts: ['qemu:dirty-bitmap:vmlink-other'],
    }).catch((e) => e);
    expect(err).toBeInstanceOf(UnsupportedError);
    expect(err.message).toBe(
      `NBD export "disk" on ${s.socket} has no dirty bitmap vmlink-other (the server does not export it)`,
    );
    await expect(connectNbd({ socket: s.socket, exportName: 'vdb' })).rejects.toThrow(
      /NBD export "vdb" .* not found/,
    );
  });

  it('restores through a writable export: data chunks, zero ranges as write-zeroes, flush; qemu-img compare agrees', async () => {
    const tgt = join(dir, 'tgt.qcow2');
    // The target starts full of garbage, so zero ranges must really be written.
    await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', tgt, String(SIZE)]);
    await runner.run(['qemu-io', '-f', 'qcow2', '-c', `write -P 0x5a 0 ${SIZE}`, tgt]);
    const from = await start(runner, { image: src, readOnly: true, socketDir: join(dir, 'rsrc') });
    const to = await start(runner, { image: tgt, readOnly: false, socketDir: join(dir, 'rtgt') });
    const r = await connectNbd({ socket: from.socket, exportName: 'disk', contexts: ['base:allocation'] });
    const w = await connectNbd({ socket: to.socket, exportName: 'disk' });
    expect(w.readOnly).toBe(false);
    let zeroed = 0;
    try {
      const chunk = 4 * MiB;
      for (let off = 0; off < SIZE; off += chunk) {
        const ext = await r.blockStatus('base:allocation', off, chunk);
        if (ext.every((e) => e.flags & 2)) {
          await w.writeZeroes(off, chunk);
          zeroed++;
        } else await w.write(off, await r.read(off, chunk));
      }
      await w.flush();
    } finally {
      await Promise.all([r.close(), w.close()]);
    }
    expect(zeroed).toBeGreaterThan(8);
    await to.stop();
    await runner.run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'qcow2', src, tgt]); // throws unless identical
    // Zero ranges were punched, not written: the target stays sparse.
    const info = JSON.parse((await runner.run(['qemu-img', 'info', '--output=json', tgt])).stdout);
    expect(info['actual-size']).toBeLessThan(SIZE / 2);
  });

  it('serves a LUKS-encrypted qcow2 through --image-opts and a secret object', async () => {
    const enc = join(dir, 'enc.qcow2');
    const pass = join(dir, 'pass');
    const phrase = 'nbd test passphrase 7c1';
    await writeFile(pass, phrase, { mode: 0o600 });
    // As the agent makes one (qemu-img's key-derivation timing can read 0 ms and give up), with a short derivation.
    await createRetryingLuks(
      new FastLuksRunner(),
      ['qemu-img', 'create', '-q', '-f', 'qcow2', enc, String(16 * MiB)],
      Buffer.from(phrase).toString('base64'),
      enc,
    );
    const opts = `driver=qcow2,file.driver=file,file.filename=${enc},encrypt.key-secret=k0`;
    const s = await start(runner, {
      image: { imageOpts: opts },
      readOnly: false,
      socketDir: join(dir, 'luks'),
      secrets: [{ id: 'k0', file: pass }],
    });
    const c = await connectNbd({ socket: s.socket, exportName: 'disk' });
    const data = Buffer.alloc(MiB, 0x3c);
    try {
      await c.write(2 * MiB, data);
      await c.flush();
      expect((await c.read(2 * MiB, MiB)).equals(data)).toBe(true);
    } finally {
      await c.close();
    }
    await s.stop();
    // On disk it is ciphertext; through qemu-io with the key it is the data.
    const { readFile } = await import('node:fs/promises');
    expect((await readFile(enc)).includes(data.subarray(0, 4096))).toBe(false);
    const out = await runner.run([
      'qemu-io',
      '--object',
      `secret,id=k0,file=${pass}`,
      '--image-opts',
      '-c',
      `read -P 0x3c ${2 * MiB} ${MiB}`,
      opts,
    ]);
    expect(out.stdout).toMatch(/read 1048576\/1048576 bytes/);
    // A wrong passphrase: refused at start, quoting qemu-nbd.
    const wrong = join(dir, 'wrong');
    await writeFile(wrong, 'not it', { mode: 0o600 });
    await expect(
      start(runner, {
        image: { imageOpts: opts },
        readOnly: true,
        socketDir: join(dir, 'luks2'),
        secrets: [{ id: 'k0', file: wrong }],
      }),
    ).rejects.toThrow(/exited at once: .*(Invalid password|key)/i);
  });

  it('runs inside a network namespace when asked (a lab host), served on its socket, stopped there by identity', async () => {
    const ns = `vlt-nbd-${process.pid}`;
    const sd = join(dir, 'netns');
    await runner.run(['ip', 'netns', 'add', ns]);
    try {
      const s = await start(runner, { image: src, readOnly: true, socketDir: sd, netns: ns });
      const id = await readIdentityFile(join(sd, 'qemu-nbd-disk.id.json'));
      expect(id && (await inNetns(id.pid, ns))).toBe(true);
      const c = await connectNbd({ socket: s.socket, exportName: 'disk' });
      expect((await c.read(0, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true);
      await c.close();
      await s.stop();
      expect(await isRunning(id!)).toBe(false);
      expect(existsSync(s.socket)).toBe(false);
    } finally {
      // Stopped before the namespace goes: its identity check looks the namespace up by name.
      await stopQemuNbd(sd, 'disk', ns).catch(() => {});
      await runner.run(['ip', 'netns', 'del', ns], { allowFailure: true });
    }
  });

  it('stops by recorded identity: the process is gone, its socket removed; stopping again is a no-op', async () => {
    const sd = join(dir, 'stop');
    const s = await start(runner, { image: src, readOnly: true, socketDir: sd, exportName: 'vdb' });
    const id = await readIdentityFile(join(sd, 'qemu-nbd-vdb.id.json'));
    expect(id && (await isRunning(id))).toBe(true);
    // A second start on the same socket replaces the first (a leftover of an agent that died).
    const again = await start(runner, { image: src, readOnly: true, socketDir: sd, exportName: 'vdb' });
    expect(await isRunning(id!)).toBe(false);
    const c = await connectNbd({ socket: again.socket, exportName: 'vdb' });
    await c.close();
    await s.stop(); // the same files: stops the second one
    expect(existsSync(again.socket)).toBe(false);
    expect(await stopQemuNbd(sd, 'vdb')).toBe(false);
  });
});

function covers(extents: NbdExtent[], offset: number, length: number): boolean {
  let at = offset;
  for (const e of extents) {
    if (e.offset !== at || e.length <= 0) return false;
    at += e.length;
  }
  return at === offset + length;
}
