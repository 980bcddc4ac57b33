// The backup and restore data path against real qemu-nbd exports of real qcow2 images (with a persistent dirty bitmap
// written by qemu-io) and a real DirChunkStore: a full backup reads only allocated chunks, an incremental one only
// the chunks the bitmap marks, a restore writes the disk back byte for byte; a wrong key writes nothing, a damaged
// chunk is named, a chunk the store lost is read again. The first chain is cut in 4 MiB chunks (version-1
// manifests, as every snapshot before version 2); the next backup at 1 MiB reads whole once, then only what changed.

import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DirChunkStore } from '../../drivers/backup/chunk-store.js';
import { connectNbd } from '../../drivers/backup/nbd-client.js';
import { type QemuNbdServer, startQemuNbd } from '../../drivers/backup/qemu-nbd.js';
import type { BackupView, BackupViewDisk } from '../../drivers/hypervisor/types.js';
import { SystemRunner } from '../../exec/runner.js';
import {
  BACKUP_CHUNK_BYTES,
  type Manifest,
  type ManifestDisk,
  ManifestSchema,
  manifestVersionFor,
  snapshotId,
} from '../../shared/backup.js';
import { BackupKeySet, newBackupKey } from '../../shared/backup-crypto.js';
import { askBaseChunks, backupDisks, type ChunkSink, restoreDisks, restoreRange } from './pipeline.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const SIZE = 40 * MiB + 512 * 1024; // ten full chunks and a short last one
const runner = new SystemRunner();
let dir: string;
let store: DirChunkStore;
const keys = BackupKeySet.fromKey(newBackupKey(), 'test-key');
const servers: QemuNbdServer[] = [];

const qemuIo = (img: string, ...cmds: string[]) =>
  run('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), img]);

async function serve(img: string, name: string, o: { readOnly: boolean; bitmap?: string }) {
  const s = await startQemuNbd(runner, {
    image: img,
    format: 'qcow2',
    readOnly: o.readOnly,
    ...(o.bitmap ? { bitmap: o.bitmap } : {}),
    socketDir: join(dir, 'nbd'),
    exportName: name,
  });
  servers.push(s);
  return s;
}

async function stop(s: QemuNbdServer) {
  await s.stop();
  servers.splice(servers.indexOf(s), 1);
}

/** A view of one disk served by `s` (as a stopped VM's view would be). */
function viewOf(s: QemuNbdServer, changed: BackupViewDisk['changed']): BackupView & { ended: string[] } {
  const ended: string[] = [];
  return {
    consistency: 'stopped',
    at: new Date(),
    disks: [{ name: 'root', sizeBytes: SIZE, socket: s.socket, exportName: s.exportName, changed }],
    commit: async () => void ended.push('commit'),
    abort: async () => void ended.push('abort'),
    ended,
  };
}

async function manifestOf(id: string, disks: ManifestDisk[], base?: string): Promise<Manifest> {
  const now = new Date().toISOString();
  const unsigned = {
    version: manifestVersionFor(disks),
    id,
    vm: 'web',
    host: 'host1',
    policy: 'nightly',
    createdAt: now,
    finishedAt: now,
    ...(base ? { base } : {}),
    consistency: 'stopped' as const,
    keyFingerprint: keys.fingerprint,
    disks,
    config: keys.sealConfig({ name: 'web' }),
  };
  const m = { ...unsigned, signature: keys.signManifest(unsigned) };
  await store.putManifest(m);
  return m;
}

const img = () => join(dir, 'src.qcow2');
/** A backup of the version-1 chain: 4 MiB chunks. */
const backup4 = (view: BackupView, base: Manifest | undefined, progress?: (d: number, t: number) => void) =>
  backupDisks(view, base, keys, store, connectNbd, progress, undefined, undefined, BACKUP_CHUNK_BYTES);
let full: Manifest;
let incr: Manifest;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-pipeline-'));
  store = await DirChunkStore.open({ name: 'site', path: join(dir, 'store'), offsite: false });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', img(), String(SIZE)]);
  // Data in chunks 0, 3 and the short last one (10); the rest never written (holes).
  await qemuIo(img(), 'write -P 0x11 0 1M', 'write -P 0x33 12M 4M', `write -P 0x5a ${40 * MiB} 256k`);
});

afterAll(async () => {
  for (const s of [...servers]) await s.stop().catch(() => {});
  await rm(dir, { recursive: true, force: true });
});

describe('backupDisks and restoreDisks over real qemu-nbd', () => {
  it('a full backup reads only the allocated chunks and names the others by the zero chunk', async () => {
    const s = await serve(img(), 'full', { readOnly: true });
    const view = viewOf(s, { fullReason: 'first' });
    const seen: Array<[number, number]> = [];
    const [d] = await backup4(view, undefined, (a, b) => seen.push([a, b]));
    await stop(s);
    expect(d).toMatchObject({ name: 'root', sizeBytes: SIZE, mode: 'full', fullReason: 'first' });
    expect(d!.chunks).toHaveLength(11);
    // Chunks 0, 3 and 10 read; the other eight are the zero chunk.
    expect(d!.readBytes).toBe(2 * BACKUP_CHUNK_BYTES + 512 * 1024);
    expect(new Set(d!.chunks.filter((_, i) => ![0, 3, 10].includes(i))).size).toBe(1);
    expect(d!.newChunks).toBe(3);
    expect(seen.at(-1)).toEqual([d!.readBytes, d!.readBytes]);
    full = await manifestOf(snapshotId('web', new Date('2026-12-01T02:00:00Z')), [d!]);
    expect(view.ended).toEqual([]); // the caller commits
  });

  it('an incremental backup reads only the chunks the dirty bitmap marks and takes the rest from the base', async () => {
    await run('qemu-img', ['bitmap', '--add', img(), 'b1']);
    // One write inside chunk 5 (a hole until now) and one across chunks 0 and 1.
    await qemuIo(img(), 'write -P 0x77 21M 64k', `write -P 0x99 ${4 * MiB - 64 * 1024} 128k`);
    const s = await serve(img(), 'incr', { readOnly: true, bitmap: 'b1' });
    const [d] = await backup4(viewOf(s, { context: 'qemu:dirty-bitmap:b1' }), full);
    await stop(s);
    expect(d!.mode).toBe('incremental');
    expect(d!.fullReason).toBeUndefined();
    expect(d!.readBytes).toBe(3 * BACKUP_CHUNK_BYTES);
    expect(d!.newChunks).toBe(3);
    const changed = d!.chunks.flatMap((id, i) => (id === full.disks[0]!.chunks[i] ? [] : [i]));
    expect(changed).toEqual([0, 1, 5]);
    incr = await manifestOf(snapshotId('web', new Date('2026-12-01T03:00:00Z')), [d!], full.id);
  });

  it('a restore writes the snapshot back byte for byte (zero chunks as write-zeroes)', async () => {
    const out = join(dir, 'restored.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', out, String(SIZE)]);
    // Old data where the snapshot has zeroes: write-zeroes must clear it.
    await qemuIo(out, 'write -P 0xee 8M 1M');
    const s = await serve(out, 'restore', { readOnly: false });
    const target = { disks: [{ name: 'root', sizeBytes: SIZE, socket: s.socket, exportName: s.exportName }] };
    const written = await restoreDisks(incr, keys, store, target, [{ from: 'root', to: 'root' }], connectNbd);
    await stop(s);
    expect(written).toEqual([{ name: 'root', bytesWritten: 4 * BACKUP_CHUNK_BYTES + 512 * 1024 }]);
    await run('qemu-img', ['compare', '-q', img(), out]); // exits non-zero when they differ
  });

  it('restoreRange writes one range of a disk into a file', async () => {
    const parts: Array<[number, Buffer]> = [];
    const n = await restoreRange(
      incr,
      'root',
      { offset: 21 * MiB, length: MiB },
      keys,
      store,
      async (at, d) => {
        parts.push([at, Buffer.from(d)]);
      },
    );
    expect(n).toBe(MiB);
    const buf = Buffer.alloc(MiB);
    for (const [at, d] of parts) d.copy(buf, at);
    expect(buf.subarray(0, 64 * 1024).every((b) => b === 0x77)).toBe(true);
    expect(buf.subarray(64 * 1024).every((b) => b === 0)).toBe(true);
  });

  it('a restore with another key fails before it writes anything', async () => {
    const other = BackupKeySet.fromKey(newBackupKey(), 'other-key');
    const target = { disks: [{ name: 'root', sizeBytes: SIZE, socket: '/nonexistent', exportName: 'x' }] };
    await expect(
      restoreDisks(incr, other, store, target, [{ from: 'root', to: 'root' }], async () => {
        throw new Error('must not connect');
      }),
    ).rejects.toMatchObject({
      kind: 'key-mismatch',
      message: expect.stringContaining('nothing was written'),
    });
  });

  it('a tampered manifest is refused before anything is written', async () => {
    const forged = { ...incr, disks: [{ ...incr.disks[0]!, chunks: [...incr.disks[0]!.chunks].reverse() }] };
    await expect(
      restoreDisks(forged, keys, store, { disks: [] }, [], async () => {
        throw new Error('must not connect');
      }),
    ).rejects.toMatchObject({ kind: 'corrupt' });
  });

  it('a target disk smaller than the snapshot is refused before anything is written', async () => {
    const target = { disks: [{ name: 'root', sizeBytes: SIZE - 1, socket: '/x', exportName: 'x' }] };
    await expect(
      restoreDisks(incr, keys, store, target, [{ from: 'root', to: 'root' }], async () => {
        throw new Error('must not connect');
      }),
    ).rejects.toThrow(/smaller than snapshot .* nothing was written/);
  });

  it('a damaged chunk fails the restore naming the snapshot, disk and chunk', async () => {
    const id = incr.disks[0]!.chunks[5]!;
    const file = join(dir, 'store', 'chunks', id.slice(0, 4), id);
    const good = await readFile(file);
    const bad = Buffer.from(good);
    bad[bad.length - 1]! ^= 0xff;
    await writeFile(file, bad);
    try {
      await expect(
        restoreRange(incr, 'root', { offset: 20 * MiB, length: 4 * MiB }, keys, store, async () => {}),
      ).rejects.toMatchObject({
        kind: 'corrupt',
        message: expect.stringContaining(`snapshot ${incr.id}, disk root, chunk 5 (${id})`),
      });
    } finally {
      await writeFile(file, good);
    }
  });

  it('a base chunk the store lost is read again by the next incremental backup', async () => {
    const lost = incr.disks[0]!.chunks[3]!; // unchanged since the full backup
    await rm(join(dir, 'store', 'chunks', lost.slice(0, 4), lost));
    await run('qemu-img', ['bitmap', '--add', img(), 'b2']);
    const s = await serve(img(), 'again', { readOnly: true, bitmap: 'b2' });
    const [d] = await backup4(viewOf(s, { context: 'qemu:dirty-bitmap:b2' }), incr);
    await stop(s);
    expect(d!.mode).toBe('incremental');
    expect(d!.readBytes).toBe(BACKUP_CHUNK_BYTES); // nothing dirty: only the lost chunk
    expect(d!.chunks).toEqual(incr.disks[0]!.chunks);
    expect(d!.newChunks).toBe(1);
    expect(await store.missing([lost])).toEqual([]);
  });

  it("the base's chunks asked beside the open are not asked again; one the store lost is read again", async () => {
    const lost = incr.disks[0]!.chunks[0]!; // unchanged since the full backup
    await rm(join(dir, 'store', 'chunks', lost.slice(0, 4), lost));
    const asked: string[] = [];
    const sink: ChunkSink = {
      missing: (ids) => {
        asked.push(...ids);
        return store.missing(ids);
      },
      putChunk: (id, blob) => store.putChunk(id, blob),
    };
    const ahead = askBaseChunks(sink, incr);
    await run('qemu-img', ['bitmap', '--add', img(), 'b2a']);
    const s = await serve(img(), 'ahead', { readOnly: true, bitmap: 'b2a' });
    const [d] = await backupDisks(
      viewOf(s, { context: 'qemu:dirty-bitmap:b2a' }),
      incr,
      keys,
      sink,
      connectNbd,
      undefined,
      undefined,
      undefined,
      BACKUP_CHUNK_BYTES,
      ahead,
    );
    await stop(s);
    expect(d!.mode).toBe('incremental');
    expect(d!.readBytes).toBe(BACKUP_CHUNK_BYTES); // nothing dirty: only the lost chunk
    expect(d!.chunks).toEqual(incr.disks[0]!.chunks);
    expect(d!.newChunks).toBe(1);
    // Each id asked once ahead; only the chunk read again is asked again (by the sender, before it is stored).
    expect(asked.filter((id) => id !== lost)).toHaveLength(new Set(asked).size - 1);
    expect(asked.filter((id) => id === lost)).toHaveLength(2);
    expect(new Set(asked)).toEqual(new Set(incr.disks[0]!.chunks));
    expect(await store.missing([lost])).toEqual([]);
  });

  it('a disk whose size differs from the base reads whole and says so', async () => {
    const s = await serve(img(), 'sized', { readOnly: true, bitmap: 'b2' });
    const base = {
      ...incr,
      disks: [
        { ...incr.disks[0]!, sizeBytes: SIZE - BACKUP_CHUNK_BYTES, chunks: incr.disks[0]!.chunks.slice(1) },
      ],
    };
    const [d] = await backup4(viewOf(s, { context: 'qemu:dirty-bitmap:b2' }), base);
    await stop(s);
    expect(d).toMatchObject({ mode: 'full', fullReason: 'size-changed', newChunks: 0 });
    await store.flush(); // chunks written wait in tmp/ for the next batch's fsync
    expect(await readdir(join(dir, 'store', 'tmp'))).toEqual([]);
  });

  let small: Manifest;
  it('a backup at 1 MiB on a 4 MiB base reads whole once and says so (a version 2 manifest)', async () => {
    await run('qemu-img', ['bitmap', '--add', img(), 'b3']);
    await qemuIo(img(), 'write -P 0x44 30M 64k');
    const s = await serve(img(), 'resized', { readOnly: true, bitmap: 'b3' });
    const [d] = await backupDisks(
      viewOf(s, { context: 'qemu:dirty-bitmap:b3' }),
      incr,
      keys,
      store,
      connectNbd,
    );
    await stop(s);
    expect(d).toMatchObject({ mode: 'full', fullReason: 'chunk-size-changed', chunkBytes: MiB });
    expect(d!.chunks).toHaveLength(41);
    // Allocated: 0-1 MiB, 4-5 MiB (the write across chunks 0 and 1 of 4 MiB), 12-16 MiB, 21, 30, 40: the rest zero.
    expect(d!.readBytes).toBe(9 * MiB + 512 * 1024);
    small = await manifestOf(snapshotId('web', new Date('2026-12-01T04:00:00Z')), [d!], incr.id);
    expect(small.version).toBe(2);
    expect(ManifestSchema.parse(small)).toEqual(small);
  });

  it('the next backup at 1 MiB reads only the 1 MiB chunks the bitmap marks', async () => {
    await run('qemu-img', ['bitmap', '--add', img(), 'b4']);
    await qemuIo(img(), 'write -P 0x66 33M 64k', `write -P 0x88 ${2 * MiB - 64 * 1024} 128k`);
    const s = await serve(img(), 'small', { readOnly: true, bitmap: 'b4' });
    const [d] = await backupDisks(
      viewOf(s, { context: 'qemu:dirty-bitmap:b4' }),
      small,
      keys,
      store,
      connectNbd,
    );
    await stop(s);
    expect(d).toMatchObject({ mode: 'incremental', chunkBytes: MiB, readBytes: 3 * MiB, newChunks: 3 });
    const changed = d!.chunks.flatMap((id, i) => (id === small.disks[0]!.chunks[i] ? [] : [i]));
    expect(changed).toEqual([1, 2, 33]);
    small = await manifestOf(snapshotId('web', new Date('2026-12-01T05:00:00Z')), [d!], small.id);
  });

  it('a version 2 snapshot restores byte for byte, whole and by range', async () => {
    const out = join(dir, 'restored2.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', out, String(SIZE)]);
    await qemuIo(out, 'write -P 0xee 8M 1M');
    const s = await serve(out, 'restore2', { readOnly: false });
    const target = { disks: [{ name: 'root', sizeBytes: SIZE, socket: s.socket, exportName: s.exportName }] };
    await restoreDisks(small, keys, store, target, [{ from: 'root', to: 'root' }], connectNbd);
    await stop(s);
    await run('qemu-img', ['compare', '-q', img(), out]);
    const parts: Buffer[] = [];
    const n = await restoreRange(
      small,
      'root',
      { offset: 33 * MiB, length: MiB },
      keys,
      store,
      async (_, d) => {
        parts.push(Buffer.from(d));
      },
    );
    expect(n).toBe(MiB);
    expect(
      Buffer.concat(parts)
        .subarray(0, 64 * 1024)
        .every((b) => b === 0x66),
    ).toBe(true);
  });
});
