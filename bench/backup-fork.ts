// What a child process costs a backup that follows it (docs/backup.md, "Measured"): fork write-protects every page
// of the parent, so each page the next backup writes takes a copy-on-write fault (~50 us in this VM). Seals rounds of
// 25 chunks (a 1 % round at 2 GiB) through the agent's sealing threads and pooled buffers, each round after a child
// (`true`) or not, alternating, and prints CPU time and page faults of each kind side by side.
//   npx tsx bench/backup-fork.ts [--rounds 6]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { BACKUP_CHUNKS_IN_FLIGHT, BufferPool } from '../src/agent/backup/pipeline-send.js';
import { SealThreads } from '../src/agent/backup/seal-workers.js';
import { BACKUP_BLOB_MAX_BYTES, BACKUP_CHUNK_BYTES } from '../src/shared/backup.js';
import { BackupKeySet, newBackupKey } from '../src/shared/backup-crypto.js';
import { cpuMs } from './backup-tools.js';
import { load1 } from './lib.js';

/** Minor page faults of this process so far (all threads). */
function minorFaults(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
}

const CHUNKS = 25;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '6' } } });
  const rounds = Number(values.rounds);
  // The bench image's kind of data: 64 KiB blocks, half random, half 4 bits per byte.
  const src = Buffer.alloc(BACKUP_CHUNK_BYTES);
  for (let o = 0; o < src.length; o += 65536) {
    const r = randomBytes(65536);
    if ((o >> 16) % 2) for (let i = 0; i < r.length; i++) r[i] = 0x61 + (r[i]! & 15);
    r.copy(src, o);
  }
  const keys = BackupKeySet.fromKey(newBackupKey(), 'bench key');
  const threads = new SealThreads();
  const plains = new BufferPool(BACKUP_CHUNK_BYTES, BACKUP_CHUNKS_IN_FLIGHT);
  const blobs = new BufferPool(BACKUP_BLOB_MAX_BYTES, BACKUP_CHUNKS_IN_FLIGHT);
  const codec = await threads.codecFor(keys);
  const sum = { fork: { cpu: 0, faults: 0 }, none: { cpu: 0, faults: 0 } };
  try {
    // Round 0 warms up (threads, pools); then with and without a child before, alternating.
    for (let r = 0; r <= 2 * rounds; r++) {
      const kind = r % 2 === 1 ? 'fork' : 'none';
      if (kind === 'fork') execFileSync('true');
      const f0 = minorFaults();
      const c0 = cpuMs();
      let next = 0;
      await Promise.all(
        Array.from({ length: BACKUP_CHUNKS_IN_FLIGHT }, async () => {
          while (next < CHUNKS) {
            const n = next++;
            const p = plains.take();
            src.copy(p);
            p.writeUInt32LE(n, 0); // every chunk differs
            const { id, plain } = await codec.identify(p);
            const s = await codec.sealInto(id, plain, blobs.take());
            plains.give(s.plain);
            blobs.give(s.blob);
          }
        }),
      );
      if (r === 0) continue;
      sum[kind].cpu += cpuMs() - c0;
      sum[kind].faults += minorFaults() - f0;
    }
  } finally {
    await codec.close();
    await threads.close();
  }
  const per = (k: 'fork' | 'none') =>
    `${(sum[k].cpu / rounds).toFixed(0)} ms CPU, ${Math.round(sum[k].faults / rounds)} page faults`;
  console.log(
    `${CHUNKS} chunks sealed, ${BACKUP_CHUNKS_IN_FLIGHT} in flight, per round (${rounds} rounds each):`,
  );
  console.log(`  after a child process: ${per('fork')}`);
  console.log(`  without:               ${per('none')}`);
  console.log(`  ratio: ${(sum.fork.cpu / Math.max(1, sum.none.cpu)).toFixed(2)}x CPU; load ${load1()}`);
}

main().catch((e: unknown) => {
  console.error((e as Error).stack ?? String(e));
  process.exit(1);
});
