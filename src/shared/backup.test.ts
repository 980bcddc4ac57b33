// The manifest schema across versions: version 1 (every disk in 4 MiB chunks, as every snapshot before version 2)
// stays readable as it was written; version 2 records each disk's chunk size; what does not add up is refused.
import { describe, expect, it } from 'vitest';
import {
  BACKUP_CHUNK_BYTES,
  BACKUP_CHUNK_BYTES_NEW,
  isChunkSize,
  type Manifest,
  ManifestSchema,
  manifestVersionFor,
} from './backup.js';

const MiB = 1024 * 1024;
const id = (n: number) => n.toString(16).padStart(64, '0');

/** A manifest of one disk of `sizeBytes` cut at `chunkBytes` (a signature's shape: the schema does not check it). */
function manifest(version: number, sizeBytes: number, chunkBytes: number, chunks?: number): unknown {
  const n = chunks ?? Math.ceil(sizeBytes / chunkBytes);
  return {
    version,
    id: 'web1@20261201T020000Z',
    vm: 'web1',
    host: 'host1',
    policy: 'nightly',
    createdAt: '2026-12-01T02:00:00Z',
    finishedAt: '2026-12-01T02:01:00Z',
    consistency: 'stopped',
    keyFingerprint: 'ab'.repeat(16),
    disks: [
      {
        name: 'root',
        sizeBytes,
        chunkBytes,
        chunks: Array.from({ length: n }, (_, i) => id(i)),
        mode: 'full',
        fullReason: 'first',
        readBytes: sizeBytes,
        newChunks: n,
        storedBytes: 100,
      },
    ],
    config: 'c2VhbGVk',
    signature: 'cd'.repeat(32),
  };
}

describe('manifests', () => {
  it('version 1 (4 MiB chunks) reads back unchanged', () => {
    const m = manifest(1, 10 * MiB + 512, BACKUP_CHUNK_BYTES);
    expect(ManifestSchema.parse(m)).toEqual(m);
    expect((ManifestSchema.parse(m) as Manifest).disks[0]!.chunks).toHaveLength(3);
  });

  it('version 2 records each disk’s chunk size', () => {
    const m = manifest(2, 10 * MiB + 512, MiB);
    expect(ManifestSchema.parse(m)).toEqual(m);
    expect(ManifestSchema.parse(manifest(2, 8 * MiB, BACKUP_CHUNK_BYTES)).version).toBe(2);
  });

  it('refuses a version 1 manifest with another chunk size, a size that is no chunk size, a wrong count', () => {
    const issue = (m: unknown) => {
      const r = ManifestSchema.safeParse(m);
      return r.success ? 'accepted' : `${r.error.issues[0]!.path.join('.')}: ${r.error.issues[0]!.message}`;
    };
    expect(issue(manifest(1, 8 * MiB, MiB))).toMatch(
      /^disks: a version 1 manifest cuts every disk at 4194304/,
    );
    expect(issue(manifest(2, 8 * MiB, 3 * MiB))).toMatch(/chunkBytes: must be a power of two from 262144/);
    expect(issue(manifest(2, 8 * MiB, 128 * 1024))).toMatch(/chunkBytes/);
    expect(issue(manifest(2, 8 * MiB, 8 * MiB))).toMatch(/chunkBytes/);
    expect(issue(manifest(2, 8 * MiB, MiB, 7))).toMatch(/chunks: must list one chunk per chunkBytes/);
    expect(issue(manifest(3, 8 * MiB, MiB))).toMatch(/^version/);
  });

  it('new manifests take the lowest version that describes their disks', () => {
    expect(manifestVersionFor([{ chunkBytes: BACKUP_CHUNK_BYTES }])).toBe(1);
    expect(manifestVersionFor([{ chunkBytes: BACKUP_CHUNK_BYTES }, { chunkBytes: MiB }])).toBe(2);
    expect(manifestVersionFor([])).toBe(1);
    expect(isChunkSize(BACKUP_CHUNK_BYTES_NEW)).toBe(true);
  });
});
