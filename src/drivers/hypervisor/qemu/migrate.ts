// The QMP sequences of a live migration (docs/mobility.md): the source's capabilities and parameters, `migrate` to a
// unix socket its agent relays, `query-migrate` progress, cancel; the target's `migrate-incoming` (QEMU started with
// `-incoming defer`), and `announce-self` once it runs. QEMU's answers are untrusted: parsed field by field.
import { z } from 'zod';
import { BadResponseError, VmlinkError } from '../../../shared/errors.js';
import { MIGRATION_QUERY_TIMEOUT_MS } from '../../../shared/limits.js';
import { sleep } from '../../../shared/time.js';
import type { MigrationProgress } from '../types.js';
import type { QmpClient } from './qmp.js';

type Qmp = Pick<QmpClient, 'execute'> & Partial<Pick<QmpClient, 'onEvent'>>;

/**
 * Waits `ms`, or less when QEMU reports a migration state change (event `MIGRATION`, capability `events`): the
 * switch-over's end is seen at once, not at the next poll, since the guest stays paused until the controller hears.
 */
function untilMigrationEvent(qmp: Qmp, ms: number): Promise<void> {
  if (!qmp.onEvent) return sleep(ms);
  const on = qmp.onEvent.bind(qmp);
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      off();
      resolve();
    };
    const timer = setTimeout(done, ms);
    const off = on((e) => {
      if (e.event === 'MIGRATION') done();
    });
  });
}

/** Capabilities set on both sides (they must match): events for progress, dirty bitmaps so backups stay incremental. */
export const MIGRATION_CAPABILITIES = [
  { capability: 'events', state: true },
  { capability: 'dirty-bitmaps', state: true },
] as const;

/** Migration states of `query-migrate` after which nothing more happens. */
const FINAL = new Set(['completed', 'failed', 'cancelled']);

const RamSchema = z
  .object({
    transferred: z.number().optional(),
    remaining: z.number().optional(),
    total: z.number().optional(),
    'dirty-pages-rate': z.number().optional(),
    mbps: z.number().optional(),
    'dirty-sync-count': z.number().optional(),
    'downtime-bytes': z.number().optional(),
  })
  .passthrough();

// QEMU adds fields across versions: known ones checked, the rest kept out.
const QueryMigrateSchema = z
  .object({
    status: z.string().max(64).optional(),
    ram: RamSchema.optional(),
    'total-time': z.number().optional(),
    'expected-downtime': z.number().optional(),
    downtime: z.number().optional(),
    'setup-time': z.number().optional(),
    'error-desc': z.string().max(4096).optional(),
  })
  .passthrough();

export type { MigrationProgress };

/** `query-migrate` as MigrationProgress. */
export async function queryMigration(qmp: Qmp, timeoutMs?: number): Promise<MigrationProgress> {
  const raw = await qmp.execute('query-migrate', undefined, timeoutMs);
  const parsed = QueryMigrateSchema.safeParse(raw);
  if (!parsed.success) throw new BadResponseError(`QEMU's query-migrate answer does not parse`);
  const m = parsed.data;
  const n = (v: number | undefined) => (v !== undefined && Number.isFinite(v) && v >= 0 ? v : undefined);
  const out: MigrationProgress = {
    status: m.status ?? 'none',
    transferredBytes: n(m.ram?.transferred) ?? 0,
    remainingBytes: n(m.ram?.remaining) ?? 0,
    totalBytes: n(m.ram?.total) ?? 0,
  };
  const opt = {
    mbps: n(m.ram?.mbps),
    dirtySyncCount: n(m.ram?.['dirty-sync-count']),
    downtimeBytes: n(m.ram?.['downtime-bytes']),
    downtimeMs: n(m.downtime),
    expectedDowntimeMs: n(m['expected-downtime']),
    totalTimeMs: n(m['total-time']),
  };
  for (const [k, v] of Object.entries(opt))
    if (v !== undefined) (out as unknown as Record<string, number>)[k] = v;
  if (m['error-desc']) out.error = m['error-desc'];
  return out;
}

/**
 * A downtime limit that starts low and doubles each pass up to the full one (as Nova's downtime steps and KubeVirt's
 * downtime tuning do): QEMU switches over once what is left fits the limit at the measured bandwidth, so an idle guest
 * pauses for a smaller last pass, and a busy one still converges as under the full limit a few passes later. Measured
 * (3 Dec 2026, TCG, three runs of 5 moves a network, alternating with the full limit): QEMU's downtime medians 6-34 ms
 * against 10-104 ms, ping gaps within 300 ms in 26 of 30 moves against 20 of 30 (docs/mobility.md). Its first trial
 * (2 Dec) lost guests: that was QEMU 7.2 losing TCG writes, which a short final pass exposes (tcg-ram.ts).
 */
export const MIGRATION_DOWNTIME_START_MS = 50;

/** The downtime limit over a migration's passes: `startMs` (at most `limitMs`) doubled each pass up to `limitMs`. */
export interface DowntimeRamp {
  startMs: number;
  limitMs: number;
}

/** The ramp from `startMs` to `limitMs` (a start above the limit, or 0, means the limit throughout). */
export function downtimeRamp(startMs: number, limitMs: number): DowntimeRamp {
  return { startMs: startMs > 0 ? Math.min(startMs, limitMs) : limitMs, limitMs };
}

/**
 * The limit for a migration at `dirtySyncCount` (QEMU counts a dirty-bitmap sync at the start of each pass: 1 in the
 * bulk copy, 2 in the first pass over what the guest dirtied meanwhile, ...): the start for the first two, doubled
 * for each pass after.
 */
export function downtimeAt(ramp: DowntimeRamp, dirtySyncCount: number | undefined): number {
  const extra = Math.max(0, (dirtySyncCount ?? 1) - 2);
  return Math.min(ramp.limitMs, ramp.startMs * 2 ** Math.min(extra, 16));
}

/** Options of the source side. */
export interface OutgoingOptions {
  /** QEMU's maximum pause of the guest at switch-over (ms). */
  downtimeLimitMs: number;
  /** Bandwidth cap (bytes/s); absent: QEMU's default is lifted (the relay is the limit). */
  maxBandwidthBytes?: number;
  /**
   * Stop in `pre-switchover` (guest paused, disks still active) until `migrate-continue`: a block migration ends its
   * mirrors there, before QEMU inactivates the disks. Always set, so a retry without it never stops there.
   */
  pauseBeforeSwitchover?: boolean;
}

/**
 * Source side, before `migrate`: the capabilities both sides share and the parameters (downtime limit, bandwidth).
 */
export async function prepareOutgoing(qmp: Qmp, o: OutgoingOptions): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [
      ...MIGRATION_CAPABILITIES,
      { capability: 'pause-before-switchover', state: o.pauseBeforeSwitchover === true },
    ],
  });
  await qmp.execute('migrate-set-parameters', {
    'downtime-limit': o.downtimeLimitMs,
    // QEMU's default (32 MiB/s) is for shared links; the agent relays on the underlay.
    'max-bandwidth': o.maxBandwidthBytes ?? 10 * 1024 * 1024 * 1024,
  });
}

/** Source side: starts sending to `uri` (`unix:<path>` the agent listens on). */
export async function startOutgoing(qmp: Qmp, uri: string): Promise<void> {
  await qmp.execute('migrate', { uri });
}

/**
 * Polls `query-migrate` until a final state, reporting each answer; resolves with the last one. Throws (naming
 * QEMU's reason) when it failed or was cancelled, or when `signal` aborts (after asking QEMU to cancel). In
 * `pre-switchover` (see `pauseBeforeSwitchover`) it runs `onPreSwitchover` once, then lets QEMU go on.
 */
export async function awaitMigration(
  qmp: Qmp,
  opts: {
    pollMs: number;
    onProgress?: (p: MigrationProgress) => void;
    onPreSwitchover?: () => Promise<void>;
    signal?: AbortSignal;
    vm: string;
    /** Raises the downtime limit pass by pass (`downtimeAt`); prepareOutgoing set its start. */
    downtime?: DowntimeRamp;
  },
): Promise<MigrationProgress> {
  let switched = false;
  let downtimeMs = opts.downtime?.startMs;
  for (;;) {
    if (opts.signal?.aborted) {
      await cancelOutgoing(qmp);
      throw new VmlinkError('exec', `migration of vm ${opts.vm} was cancelled`, { subject: `vm/${opts.vm}` });
    }
    const p = await queryMigration(qmp, MIGRATION_QUERY_TIMEOUT_MS);
    opts.onProgress?.(p);
    if (FINAL.has(p.status)) {
      if (p.status === 'completed') return p;
      throw new VmlinkError(
        'exec',
        `migration of vm ${opts.vm} ${p.status}${p.error ? `: ${p.error}` : ''}`,
        { subject: `vm/${opts.vm}` },
      );
    }
    if (opts.downtime && p.status === 'active') {
      const want = downtimeAt(opts.downtime, p.dirtySyncCount);
      if (want !== downtimeMs) {
        await qmp.execute('migrate-set-parameters', { 'downtime-limit': want });
        downtimeMs = want;
      }
    }
    if (p.status === 'pre-switchover' && !switched) {
      switched = true;
      await opts.onPreSwitchover?.();
      await qmp.execute('migrate-continue', { state: 'pre-switchover' });
      continue;
    }
    await untilMigrationEvent(qmp, opts.pollMs);
  }
}

/** Source side: cancels a migration in flight (the guest keeps running there); a finished one is left alone. */
export async function cancelOutgoing(qmp: Qmp): Promise<void> {
  await qmp.execute('migrate_cancel');
}

/** How long a cancelled migration may take to reach a final state (ms). */
const SETTLE_MS = 10_000;

/**
 * Source side, after a failure where the target may resume on arrival: cancels, then waits until QEMU's migration is
 * final and resolves with that state. `completed` means the whole state (its end marker included) was sent and the
 * guest stays paused: a cancel that comes while QEMU completes runs after it (QMP waits for the same lock), so it can
 * no longer stop it. Any other final state: QEMU never sent the end, so no target can run the guest.
 */
export async function settleOutgoing(qmp: Qmp, pollMs = 50): Promise<MigrationProgress> {
  await cancelOutgoing(qmp).catch(() => {});
  const deadline = Date.now() + SETTLE_MS;
  for (;;) {
    const p = await queryMigration(qmp, MIGRATION_QUERY_TIMEOUT_MS);
    if (FINAL.has(p.status) || p.status === 'none' || Date.now() > deadline) return p;
    await sleep(pollMs);
  }
}

/**
 * Source side, after a completed migration that must be undone (the target failed to take over): the guest runs here
 * again (QEMU reactivates its disks on `cont`).
 */
export async function resumeSource(qmp: Qmp): Promise<void> {
  const st = await qmp.execute<{ status?: string }>('query-status');
  if (st?.status !== 'running') await qmp.execute('cont');
}

/** Target side: QEMU (started with `-incoming defer`) listens on `uri` (`unix:<path>`) for the stream. */
export async function startIncoming(qmp: Qmp, uri: string): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [...MIGRATION_CAPABILITIES] });
  await qmp.execute('migrate-incoming', { uri });
}

/**
 * Target side: waits until the incoming migration has arrived (status `paused`: started with `-S`, so it waits for
 * the controller's go after the owner record moved). Throws when QEMU leaves `inmigrate` any other way.
 */
export async function awaitIncoming(
  qmp: Qmp,
  opts: { timeoutMs: number; pollMs: number; vm: string },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const st = await qmp.execute<{ status?: string }>('query-status');
    if (st?.status === 'paused' || st?.status === 'running') return;
    if (st?.status !== 'inmigrate' && st?.status !== 'prelaunch')
      throw new VmlinkError('exec', `incoming migration of vm ${opts.vm} ended in state ${st?.status}`, {
        subject: `vm/${opts.vm}`,
      });
    if (Date.now() > deadline)
      throw new VmlinkError(
        'timeout',
        `incoming migration of vm ${opts.vm} did not arrive in ${opts.timeoutMs} ms`,
        {
          subject: `vm/${opts.vm}`,
        },
      );
    await untilMigrationEvent(qmp, opts.pollMs);
  }
}

/** Target side, the switch-over's end: the guest runs, and QEMU announces its MACs so LAN peers find it here. */
export async function resumeTarget(qmp: Qmp): Promise<void> {
  await qmp.execute('cont');
  // Gratuitous ARP / RARP rounds (QEMU's defaults spelled out): switches and peers learn the new port at once.
  await qmp.execute('announce-self', { initial: 50, max: 550, rounds: 5, step: 100 });
}

/** The guest's dirty rate (MiB/s) measured over `seconds` by QEMU (`calc-dirty-rate`), or undefined if unsupported. */
export async function measureDirtyRate(qmp: Qmp, seconds: number): Promise<number | undefined> {
  try {
    await qmp.execute('calc-dirty-rate', { 'calc-time': seconds });
  } catch {
    return undefined;
  }
  const deadline = Date.now() + seconds * 1000 + 5000;
  while (Date.now() < deadline) {
    await sleep(200);
    const r = await qmp.execute<{ status?: string; 'dirty-rate'?: number }>('query-dirty-rate');
    if (r?.status === 'measured' && typeof r['dirty-rate'] === 'number' && r['dirty-rate'] >= 0)
      return r['dirty-rate'];
  }
  return undefined;
}
