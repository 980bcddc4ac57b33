// The NBD client's read into a caller's buffer (the backup pipeline reuses its chunk buffers) against a real qemu-nbd:
// data and holes land in the given buffer, overwriting whatever it held; a buffer too small is refused.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SystemRunner } from '../../exec/runner.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { connectNbd } from './nbd-client.js';
import { type QemuNbdServer, startQemuNbd } from './qemu-nbd.js';
import type { NbdConnection } from './types.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
let dir: string;
let server: QemuNbdServer | undefined;
let nbd: NbdConnection | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-nbd-into-'));
  const img = join(dir, 'd.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', img, String(8 * MiB)]);
  // 1 MiB of 0x11 at 1 MiB and 64 KiB of 0x22 at 5 MiB; the rest never written (holes, read as zeroes).
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 1M 1M', '-c', 'write -P 0x22 5M 64k', img]);
  server = await startQemuNbd(new SystemRunner(), {
    image: img,
    format: 'qcow2',
    readOnly: true,
    socketDir: join(dir, 'run'),
    exportName: 'd',
  });
  nbd = await connectNbd({ socket: server.socket, exportName: 'd' });
}, 30_000);

afterAll(async () => {
  await nbd?.close().catch(() => {});
  await server?.stop().catch(() => {});
  await rm(dir, { recursive: true, force: true });
});

describe('NbdConnection.read into a given buffer', () => {
  it('fills the buffer with the data and the holes (stale bytes overwritten) and answers a view of it', async () => {
    const into = Buffer.alloc(6 * MiB, 0xee); // stale content, as a reused buffer holds
    const got = await nbd!.read(0, 6 * MiB, into);
    expect(got.buffer).toBe(into.buffer);
    expect(got.length).toBe(6 * MiB);
    const want = Buffer.alloc(6 * MiB);
    want.fill(0x11, MiB, 2 * MiB);
    want.fill(0x22, 5 * MiB, 5 * MiB + 64 * 1024);
    expect(got.equals(want)).toBe(true);
    // A shorter read uses the buffer's start; the same bytes as a read into a fresh buffer.
    const part = await nbd!.read(MiB + 4096, 8192, into);
    expect(part.byteOffset).toBe(into.byteOffset);
    expect(part.equals(await nbd!.read(MiB + 4096, 8192))).toBe(true);
  });

  it('refuses a buffer shorter than the read, before asking the server', async () => {
    const err = await nbd!.read(0, 2 * MiB, Buffer.alloc(MiB)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect((err as Error).message).toMatch(/a read of 2097152 bytes into a buffer of 1048576/);
    expect((await nbd!.read(MiB, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true); // the connection still serves
  });
});
