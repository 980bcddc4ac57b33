// A backup store on a really full filesystem (issue 12, "store full: the backup fails cleanly, earlier snapshots
// intact"): a 2 MiB tmpfs mounted in a private mount namespace (invisible to the machine, gone with the child), a
// DirChunkStore on it filled until the kernel says ENOSPC. The write fails with StoreFullError, tmp/ is empty (once the
// chunks stored before are flushed), the earlier snapshot still opens and verifies with its key, and after GC frees the
// unnamed chunks the next backup lands.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const src = (p: string) => fileURLToPath(new URL(`../../src/${p}`, import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'vmlink-itbs-'));

// Runs in the child, inside the namespace, with the tmpfs at argv's last entry.
const CHILD = `
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { DirChunkStore } from ${JSON.stringify(src('drivers/backup/chunk-store.ts'))};
import { signedManifest } from ${JSON.stringify(src('drivers/backup/conformance-store.ts'))};
import { BackupKeySet, newBackupKey } from ${JSON.stringify(src('shared/backup-crypto.ts'))};
const mnt = process.argv.at(-1);
const keys = BackupKeySet.fromKey(newBackupKey());
const s = await DirChunkStore.open({ name: 'tiny', path: mnt + '/store', offsite: false });
const chunk = () => { const p = randomBytes(256 * 1024); const id = keys.chunkId(p); return { id, blob: keys.sealChunk(id, p) }; };
const a = chunk();
await s.putChunk(a.id, a.blob);
const m1 = signedManifest(keys, 'web1', '2026-12-01T02:00:00Z', [a.id]);
await s.putManifest(m1);
const out = { stored: 0 };
for (;;) {
  const c = chunk();
  try { await s.putChunk(c.id, c.blob); out.stored++; }
  catch (e) { out.error = { kind: e.kind, message: e.message }; break; }
  if (out.stored > 100) break;
}
await s.flush(); // the chunks stored before wait in tmp/ for their batch; the failed one left nothing
out.tmpAfterFull = readdirSync(mnt + '/store/tmp');
out.m1Intact = JSON.stringify(await s.getManifest(m1.id)) === JSON.stringify(m1);
out.verifyProblems = (await s.verify(undefined, (id, blob) => keys.openChunk(id, blob))).problems;
out.gc = await s.gc(0);
const b = chunk();
await s.putChunk(b.id, b.blob);
await s.putManifest(signedManifest(keys, 'web1', '2026-12-01T03:00:00Z', [a.id, b.id]));
out.after = (await s.list()).map((x) => x.id);
console.log(JSON.stringify(out));
`;

describe.runIf(process.getuid?.() === 0)('backup store on a full filesystem (real tmpfs, as root)', () => {
  afterAll(() => {
    rmSync(work, { recursive: true, force: true });
  });

  it('fails the write with StoreFullError, leaves tmp/ empty and the earlier snapshot intact; GC makes room again', () => {
    const mnt = join(work, 'mnt');
    mkdirSync(mnt);
    const script = join(work, 'child.mts');
    writeFileSync(script, CHILD);
    const r = spawnSync(
      'unshare',
      [
        '-m',
        '--propagation',
        'private',
        'sh',
        '-c',
        'mount -t tmpfs -o size=2m,mode=0700 tmpfs "$1" && exec "$2" --import tsx "$3" "$1"',
        'sh',
        mnt,
        process.execPath,
        script,
      ],
      { encoding: 'utf8', timeout: 120_000, cwd: fileURLToPath(new URL('../..', import.meta.url)) },
    );
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
      stored: number;
      error?: { kind: string; message: string };
      tmpAfterFull: string[];
      m1Intact: boolean;
      verifyProblems: unknown[];
      gc: { chunksRemoved: number };
      after: string[];
    };
    expect(out.error?.kind).toBe('store-full');
    expect(out.error?.message).toMatch(
      /backup store tiny: its filesystem is full writing chunk [0-9a-f]{64}/,
    );
    expect(out.stored).toBeGreaterThanOrEqual(2);
    expect(out.stored).toBeLessThan(8); // 2 MiB of 256 KiB chunks: the kernel, not a loop bound, stopped it
    expect(out.tmpAfterFull).toEqual([]);
    expect(out.m1Intact).toBe(true);
    expect(out.verifyProblems).toEqual([]);
    expect(out.gc.chunksRemoved).toBe(out.stored);
    expect(out.after).toEqual(['web1@20261201T020000Z', 'web1@20261201T030000Z']);
  });
});
