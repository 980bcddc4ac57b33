// Backup crypto and chunk store throughput: per kind of 4 MiB chunk (random, compressible text-like data, zeros),
// MB/s of the chunk id (HMAC-SHA256), seal (zstd level 3 + AES-256-GCM + SHA-256), open (checksum + GCM + zstd +
// id re-derived), and DirChunkStore.putChunk (tmp file, fsync, rename, fsync of the directory) into a temp dir;
// plus the stored size. One thread, as the agent's pipeline runs one chunk after another per disk job. The pure
// CPU steps are reported per second of this process's CPU time (user + system: what a busy shared machine does not
// distort much) and per second of wall time; putChunk (I/O) per second of wall time only.
//
//   npx tsx bench/backup-crypto.ts [--chunks 32] [--repeat 3]
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { DirChunkStore } from '../src/drivers/backup/chunk-store.js';
import { BACKUP_CHUNK_BYTES } from '../src/shared/backup.js';
import { BackupKeySet, newBackupKey } from '../src/shared/backup-crypto.js';
import { hostInfo, load1, median, round } from './lib.js';

const { values } = parseArgs({
  options: { chunks: { type: 'string', default: '32' }, repeat: { type: 'string', default: '3' } },
});
const N = Number(values.chunks);
const REPEAT = Number(values.repeat);

/** Text-like data: words from a small vocabulary in random order (zstd -3 takes it to about a third). */
function textLike(n: number): Buffer {
  const words =
    'the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three'.split(
      ' ',
    );
  const parts: string[] = [];
  let len = 0;
  const rnd = randomBytes(n / 4);
  for (let i = 0; len < n; i++) {
    const w = words[rnd[i % rnd.length]! % words.length]!;
    parts.push(w);
    len += w.length + 1;
  }
  return Buffer.from(parts.join(' ')).subarray(0, n);
}

const KINDS = {
  random: () => randomBytes(BACKUP_CHUNK_BYTES),
  compressible: () => textLike(BACKUP_CHUNK_BYTES),
  zeros: () => Buffer.alloc(BACKUP_CHUNK_BYTES),
} as const;
type Kind = keyof typeof KINDS;

const mbps = (bytes: number, ms: number) => round(bytes / 1e6 / (ms / 1000), 0);

/** Runs `fn`, returning its result and the wall and CPU milliseconds it took. */
function timed<T>(fn: () => T): { v: T; wallMs: number; cpuMs: number } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const v = fn();
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { v, wallMs, cpuMs: (c.user + c.system) / 1000 };
}

async function main(): Promise<void> {
  const keys = BackupKeySet.fromKey(newBackupKey(), 'bench');
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-crypto-'));
  const out: Record<string, unknown> = {};
  try {
    for (const kind of Object.keys(KINDS) as Kind[]) {
      const plains = Array.from({ length: N }, KINDS[kind]);
      const bytes = N * BACKUP_CHUNK_BYTES;
      const runs = {
        id: [] as number[],
        seal: [] as number[],
        open: [] as number[],
        idWall: [] as number[],
        sealWall: [] as number[],
        openWall: [] as number[],
        put: [] as number[],
      };
      let stored = 0;
      for (let r = 0; r < REPEAT; r++) {
        const id = timed(() => plains.map((p) => keys.chunkId(p)));
        const ids = id.v;
        // As the pipeline does: each blob is dropped once sent (keeping them all would time the heap's growth).
        let sealedBytes = 0;
        const seal = timed(() => {
          for (let i = 0; i < N; i++) sealedBytes += keys.sealChunk(ids[i]!, plains[i]!).length;
        });
        const blobs = plains.map((p, i) => keys.sealChunk(ids[i]!, p));
        if (blobs.reduce((a, b) => a + b.length, 0) !== sealedBytes) throw new Error('sealed sizes differ');
        const open = timed(() => {
          for (let i = 0; i < N; i++) keys.openChunk(ids[i]!, blobs[i]!);
        });
        for (const [k, t] of [
          ['id', id],
          ['seal', seal],
          ['open', open],
        ] as const) {
          runs[k].push(mbps(bytes, t.cpuMs));
          runs[`${k}Wall`].push(mbps(bytes, t.wallMs));
        }
        stored = blobs.reduce((a, b) => a + b.length, 0);
        const store = await DirChunkStore.open({
          name: 'bench',
          path: join(dir, `s-${kind}-${r}`),
          offsite: false,
        });
        // Distinct ids per blob even for zeros (the store would keep equal ids once).
        const put = blobs.map((b, i) => ({
          id: keys.chunkId(Buffer.concat([plains[i]!.subarray(0, 64), Buffer.from([r, i])])),
          b,
        }));
        const t = performance.now();
        for (const p of put) await store.putChunk(p.id, p.b);
        runs.put.push(mbps(stored, performance.now() - t));
      }
      const res = {
        chunkIdMBps: median(runs.id),
        sealMBps: median(runs.seal),
        openMBps: median(runs.open),
        wall: {
          chunkIdMBps: median(runs.idWall),
          sealMBps: median(runs.sealWall),
          openMBps: median(runs.openWall),
        },
        putChunkMBpsOfStored: median(runs.put),
        storedRatio: round(stored / bytes, 3),
        runs,
      };
      out[kind] = res;
      const f = (x: number) => String(x).padStart(5);
      console.log(
        `${kind.padEnd(13)} per CPU-second: id ${f(res.chunkIdMBps)}  seal ${f(res.sealMBps)}  open ${f(res.openMBps)} MB/s | wall: id ${f(res.wall.chunkIdMBps)}  seal ${f(res.wall.sealMBps)}  open ${f(res.wall.openMBps)} MB/s | putChunk ${f(res.putChunkMBpsOfStored)} MB/s stored | stored/plain ${res.storedRatio}`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const h = hostInfo();
  console.log(`(${N} chunks of 4 MiB per kind, median of ${REPEAT}; load ${load1()}; ${JSON.stringify(h)})`);
  console.log(JSON.stringify(out));
}

await main();
