// (g) Store operations: the conformance suite's operations (put, get, list, putIf, appendEvent, appendAudit), N of
// each, on the embedded SQLite store (a file in WAL mode, as the daemon uses it) and on the etcd store against a
// local one-member etcd (loopback, plain HTTP, its data in /tmp), side by side. Each repeat runs both stores, the
// order flipping every repeat; per operation it reports ops/s (median over repeats) and the ratio sqlite/etcd, for
// one operation at a time (latency-bound, as one controller's apply mostly is) and for 16 in flight.
//
// Alone: `npx tsx bench/store.ts [--n 1000] [--repeat 3]` (no root needed); in `npm run bench` as (g).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { EtcdStore } from '../src/controller/store/etcd.js';
import { SqliteStore } from '../src/controller/store/sqlite.js';
import type { Store } from '../src/controller/store/types.js';
import { etcdClient } from '../src/shared/etcd.js';
import { startTestEtcd } from '../test/helpers/etcd.js';
import { load1, median, onCleanup, round, runCleanups } from './lib.js';

/** The operations measured, in the order they run (get/list/putIf read or replace what put wrote). */
export const STORE_OPS = ['put', 'get', 'list', 'putIf', 'appendEvent', 'appendAudit'] as const;
type Op = (typeof STORE_OPS)[number];
/** Concurrency of the "in flight" measurement. */
export const STORE_BENCH_CONCURRENCY = 16;
/** Keys per listed prefix (each list returns this many). */
const LIST_KEYS = 10;
/** Audit entries kept (so appendAudit prunes as it goes). */
const AUDIT_KEEP = 500;

/** Per store: ops/s per operation, each repeat and the median. */
export interface StoreSide {
  sequential: Record<Op, { opsPerS: number[]; median: number }>;
  concurrent: Record<Op, { opsPerS: number[]; median: number }>;
}

/** What (g) reports. */
export interface StoreBenchResult {
  n: number;
  repeat: number;
  concurrency: number;
  sqlite: StoreSide;
  etcd: StoreSide;
  /** sqlite ops/s / etcd ops/s per operation (medians): how many times faster the embedded store is. */
  ratio: { sequential: Record<Op, number>; concurrent: Record<Op, number> };
  etcdVersion: string;
}

/** Runs `n` calls of `f(i)` with at most `inFlight` at once; returns ops/s. */
async function rate(n: number, inFlight: number, f: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(inFlight, n) }, async () => {
      while (next < n) await f(next++);
    }),
  );
  return (n * 1000) / (performance.now() - t0);
}

/** One pass of every operation on `s` (a fresh, empty store); ops/s per operation. */
async function pass(s: Store, n: number, inFlight: number, tag: string): Promise<Record<Op, number>> {
  const value = { host: 'host1', reason: 'spec', since: new Date(0).toISOString(), vm: 'web' };
  const key = (i: number) =>
    `bench/${tag}/${String(Math.floor(i / LIST_KEYS)).padStart(5, '0')}/${i % LIST_KEYS}`;
  const out = {} as Record<Op, number>;
  out.put = await rate(n, inFlight, (i) => s.put(key(i), { ...value, i }));
  out.get = await rate(n, inFlight, (i) => s.get(key(i)));
  const groups = Math.ceil(n / LIST_KEYS);
  out.list = await rate(n, inFlight, (i) => s.list(`bench/${tag}/${String(i % groups).padStart(5, '0')}/`));
  // putIf: each key replaced at the version read beforehand (untimed), as an owner record's move is.
  const versions: string[] = [];
  await rate(n, inFlight, async (i) => {
    versions[i] = (await s.getVersioned(key(i)))!.version;
  });
  out.putIf = await rate(n, inFlight, async (i) => {
    if ((await s.putIf(key(i), { ...value, i, moved: true }, versions[i]!)) === undefined)
      throw new Error(`bench: putIf of ${key(i)} lost`);
  });
  out.appendEvent = await rate(n, inFlight, (i) => s.appendEvent('bench', `event ${i}`));
  out.appendAudit = await rate(n, inFlight, (i) =>
    s.appendAudit(new Date().toISOString(), { action: 'bench', i }, AUDIT_KEEP),
  );
  return out;
}

function summarize(runs: Array<Record<Op, number>>): Record<Op, { opsPerS: number[]; median: number }> {
  return Object.fromEntries(
    STORE_OPS.map((op) => {
      const xs = runs.map((r) => r[op]);
      return [op, { opsPerS: xs.map((x) => round(x, 0)), median: round(median(xs), 0) }];
    }),
  ) as Record<Op, { opsPerS: number[]; median: number }>;
}

/** Runs (g). */
export async function benchStore(opts: {
  n?: number;
  repeat: number;
  say: (s: string) => void;
}): Promise<StoreBenchResult> {
  const n = opts.n ?? 1000;
  const say = opts.say;
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-store-'));
  const rmDir = onCleanup('store bench dir', () => rmSync(dir, { recursive: true, force: true }));
  const etcd = await startTestEtcd();
  const stopEtcd = onCleanup('store bench etcd', () => etcd.close());
  const client = etcdClient({ endpoints: [etcd.endpoint] });
  const closeClient = onCleanup('store bench etcd client', () => client.close());
  let etcdVersion = 'unknown';
  try {
    etcdVersion = (await client.maintenance.status()).version;
    const runs = { sqlite: { seq: [], conc: [] }, etcd: { seq: [], conc: [] } } as Record<
      'sqlite' | 'etcd',
      { seq: Array<Record<Op, number>>; conc: Array<Record<Op, number>> }
    >;
    let fresh = 0;
    const open = async (kind: 'sqlite' | 'etcd'): Promise<Store> => {
      fresh++;
      if (kind === 'sqlite') return new SqliteStore(join(dir, `s${fresh}.db`));
      await client.delete().prefix('/vmlink/').exec();
      return new EtcdStore(client);
    };
    for (let r = 0; r < opts.repeat; r++) {
      const order: Array<'sqlite' | 'etcd'> = r % 2 ? ['etcd', 'sqlite'] : ['sqlite', 'etcd'];
      for (const kind of order) {
        for (const [mode, inFlight] of [
          ['seq', 1],
          ['conc', STORE_BENCH_CONCURRENCY],
        ] as const) {
          const s = await open(kind);
          try {
            const res = await pass(s, n, inFlight, `${r}${mode}`);
            runs[kind][mode].push(res);
            say(
              `  repeat ${r + 1} ${kind.padEnd(6)} ${mode === 'seq' ? 'one at a time' : `${inFlight} in flight `}: ${STORE_OPS.map((op) => `${op} ${Math.round(res[op])}`).join(', ')} ops/s`,
            );
          } finally {
            await s.close();
          }
        }
      }
    }
    const sqlite = { sequential: summarize(runs.sqlite.seq), concurrent: summarize(runs.sqlite.conc) };
    const etcdSide = { sequential: summarize(runs.etcd.seq), concurrent: summarize(runs.etcd.conc) };
    const ratio = (m: 'sequential' | 'concurrent') =>
      Object.fromEntries(
        STORE_OPS.map((op) => [op, round(sqlite[m][op].median / etcdSide[m][op].median, 1)]),
      ) as Record<Op, number>;
    return {
      n,
      repeat: opts.repeat,
      concurrency: STORE_BENCH_CONCURRENCY,
      sqlite,
      etcd: etcdSide,
      ratio: { sequential: ratio('sequential'), concurrent: ratio('concurrent') },
      etcdVersion,
    };
  } finally {
    await closeClient();
    await stopEtcd();
    await rmDir();
  }
}

/** The table (g) prints: per operation, ops/s of each store and the ratio. */
export function printStore(g: StoreBenchResult, say: (s: string) => void): void {
  say(
    `  N=${g.n} per operation, medians of ${g.repeat}; etcd ${g.etcdVersion} (one member, loopback); sqlite: a WAL file`,
  );
  for (const m of ['sequential', 'concurrent'] as const) {
    say(`  ${m === 'sequential' ? 'one at a time' : `${g.concurrency} in flight`}:`);
    say(
      `    ${'operation'.padEnd(12)} ${'sqlite ops/s'.padStart(13)} ${'etcd ops/s'.padStart(11)} ${'sqlite/etcd'.padStart(12)}`,
    );
    for (const op of STORE_OPS)
      say(
        `    ${op.padEnd(12)} ${String(g.sqlite[m][op].median).padStart(13)} ${String(g.etcd[m][op].median).padStart(11)} ${String(g.ratio[m][op]).padStart(12)}`,
      );
  }
}

/** The summary line of (g). */
export const storeSummary = (g: StoreBenchResult): string =>
  `(g) store ops (N=${g.n}, one at a time, ops/s sqlite vs etcd): ${STORE_OPS.map((op) => `${op} ${g.sqlite.sequential[op].median} vs ${g.etcd.sequential[op].median}`).join('; ')}`;

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({
    options: { n: { type: 'string', default: '1000' }, repeat: { type: 'string', default: '3' } },
  });
  const say = (s: string) => console.log(s);
  try {
    say(`(g) store operations: sqlite vs etcd; load average ${load1()}`);
    const g = await benchStore({ n: Number(values.n), repeat: Number(values.repeat), say });
    printStore(g, say);
    say(`  ${storeSummary(g)}`);
    say(`  load average at end: ${load1()}`);
  } catch (e) {
    console.error(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exitCode = 1;
  } finally {
    await runCleanups();
  }
}
