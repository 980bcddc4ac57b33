// Runs the real `restic forget --dry-run --json --keep-*` on snapshots made at chosen times (`restic backup --time`),
// for the retention comparison (src/shared/backup-retention.test.ts) and its golden file
// (scripts/retention-golden.ts). One throwaway repository per call, one restic host per case (restic groups by host
// and paths), TZ=UTC so restic's calendar buckets are UTC like ours.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { RetentionRules } from '../../src/shared/backup.js';
import { resticForgetArgs } from '../../src/shared/backup-retention.js';

const run = promisify(execFile);

/** One comparison case: snapshot times (ISO, whole seconds, UTC) and the rules. */
export interface RetentionCase {
  name: string;
  times: string[];
  rules: RetentionRules;
}

/** What restic kept (times, newest first, with its reasons) and removed (times, newest first). */
export interface ResticOutcome {
  keep: { at: string; reasons: string[] }[];
  remove: string[];
}

export async function resticAvailable(): Promise<boolean> {
  try {
    await run('restic', ['version']);
    return true;
  } catch {
    return false;
  }
}

/** Runs every case through real restic; `concurrency` backups at once (restic's backup lock is shared). */
export async function resticForget(cases: RetentionCase[], concurrency = 2): Promise<ResticOutcome[]> {
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-restic-'));
  const env = {
    ...process.env,
    TZ: 'UTC',
    RESTIC_PASSWORD: 'retention-test',
    RESTIC_REPOSITORY: join(dir, 'repo'),
  };
  const data = join(dir, 'data');
  try {
    await mkdir(data);
    await writeFile(join(data, 'f'), 'retention\n');
    await run('restic', ['init', '--quiet'], { env });
    const jobs = cases.flatMap((c, i) => c.times.map((t) => ({ host: `case${i}`, time: t })));
    let next = 0;
    const worker = async () => {
      while (next < jobs.length) {
        const job = jobs[next++] as { host: string; time: string };
        const time = job.time.replace('T', ' ').replace(/(\.\d+)?Z$/, '');
        await run('restic', ['backup', '--quiet', '--host', job.host, '--time', time, '.'], {
          env,
          cwd: data,
        });
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    const out: ResticOutcome[] = [];
    for (const [i, c] of cases.entries()) {
      const { stdout } = await run(
        'restic',
        ['forget', '--dry-run', '--json', '--host', `case${i}`, ...resticForgetArgs(c.rules)],
        { env, maxBuffer: 64 * 1024 * 1024 },
      );
      const groups = JSON.parse(stdout) as {
        keep: { time: string }[] | null;
        remove: { time: string }[] | null;
        reasons: { snapshot: { time: string }; matches: string[] }[] | null;
      }[];
      if (groups.length !== 1) throw new Error(`restic answered ${groups.length} groups for case ${c.name}`);
      const g = groups[0] as (typeof groups)[number];
      const iso = (t: string) => new Date(t).toISOString().replace('.000Z', 'Z');
      out.push({
        keep: (g.reasons ?? []).map((r) => ({ at: iso(r.snapshot.time), reasons: r.matches })),
        remove: (g.remove ?? []).map((s) => iso(s.time)),
      });
    }
    return out;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A small seeded generator (mulberry32): golden cases are reproducible. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A random case that crosses the buckets' edges: bursts of snapshots minutes apart, gaps of hours to months, around
 * year ends (ISO week 53/1), month ends and midnight; rules of small counts so they run out inside the list.
 */
export function randomCase(rand: () => number, name: string, size: number): RetentionCase {
  const starts = [Date.UTC(2020, 11, 27, 22), Date.UTC(2026, 1, 27, 23, 30), Date.UTC(2025, 11, 29, 0, 5)];
  let t = starts[Math.floor(rand() * starts.length)] as number;
  const gaps = [
    60_000,
    17 * 60_000,
    3_600_000,
    5 * 3_600_000,
    11 * 3_600_000,
    86_400_000,
    86_400_000,
    2 * 86_400_000,
    3 * 86_400_000,
    8 * 86_400_000,
    40 * 86_400_000,
  ];
  const times = new Set<string>();
  while (times.size < size) {
    times.add(new Date(t).toISOString().replace('.000Z', 'Z'));
    // Jitter up to 9 h, so times wander across the hours of the day (and across midnight in every zone).
    t += (gaps[Math.floor(rand() * gaps.length)] as number) + Math.floor(rand() * 9 * 3600) * 1000;
  }
  // Mostly one or two rules, so each rule alone decides some snapshots (a wrong bucket then changes the outcome).
  const rules: RetentionRules = {};
  const keys = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
  const picks = 1 + Math.floor(rand() * 3);
  for (let i = 0; i < picks; i++)
    rules[keys[Math.floor(rand() * keys.length)] as (typeof keys)[number]] = Math.floor(
      rand() * (2 + size / 2),
    );
  if (!Object.values(rules).some((n) => n !== undefined && n > 0)) rules.weekly = 1 + Math.floor(rand() * 4);
  return { name, times: [...times], rules };
}
