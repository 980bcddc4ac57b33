import { describe, expect, it } from 'vitest';
import {
  awaitIncoming,
  awaitMigration,
  downtimeAt,
  downtimeRamp,
  measureDirtyRate,
  prepareOutgoing,
  queryMigration,
  resumeSource,
  resumeTarget,
  settleOutgoing,
  startIncoming,
  startOutgoing,
} from './migrate.js';

/** A QMP monitor that records each command and answers from a script (QEMU 7.2's replies, trimmed). */
function recorded(answers: Record<string, unknown[]>) {
  const sent: Array<{ cmd: string; args?: unknown }> = [];
  const qmp = {
    execute: async <T>(cmd: string, args?: unknown): Promise<T> => {
      sent.push(args === undefined ? { cmd } : { cmd, args });
      const q = answers[cmd];
      const a = q && q.length > 1 ? q.shift() : q?.[0];
      if (a instanceof Error) throw a;
      return (a ?? {}) as T;
    },
  };
  return { qmp, sent };
}

const active = (remaining: number) => ({
  status: 'active',
  'expected-downtime': 300,
  'total-time': 800,
  ram: { transferred: 200e6, remaining, total: 268e6, mbps: 900, 'dirty-sync-count': 1 },
});
const completed = {
  status: 'completed',
  'total-time': 2400,
  downtime: 41,
  'setup-time': 2,
  ram: { transferred: 280e6, remaining: 0, total: 268e6, mbps: 950, 'dirty-sync-count': 3 },
};

describe('QMP sequences of a live migration', () => {
  it('source: capabilities (events, dirty bitmaps), downtime limit, migrate to the relay socket', async () => {
    const { qmp, sent } = recorded({});
    await prepareOutgoing(qmp, { downtimeLimitMs: 300 });
    await startOutgoing(qmp, 'unix:/run/vm/migrate-out.sock');
    expect(sent).toEqual([
      {
        cmd: 'migrate-set-capabilities',
        args: {
          capabilities: [
            { capability: 'events', state: true },
            { capability: 'dirty-bitmaps', state: true },
            // Off unless a block migration asks: a retry without local disks never stops in pre-switchover.
            { capability: 'pause-before-switchover', state: false },
          ],
        },
      },
      { cmd: 'migrate-set-parameters', args: { 'downtime-limit': 300, 'max-bandwidth': 10737418240 } },
      { cmd: 'migrate', args: { uri: 'unix:/run/vm/migrate-out.sock' } },
    ]);
  });

  it('polls query-migrate to completion, reporting progress and QEMU downtime', async () => {
    const { qmp } = recorded({ 'query-migrate': [active(68e6), active(2e6), completed] });
    const seen: string[] = [];
    const last = await awaitMigration(qmp, { pollMs: 1, vm: 'web', onProgress: (p) => seen.push(p.status) });
    expect(seen).toEqual(['active', 'active', 'completed']);
    expect(last).toEqual({
      status: 'completed',
      transferredBytes: 280e6,
      remainingBytes: 0,
      totalBytes: 268e6,
      mbps: 950,
      dirtySyncCount: 3,
      downtimeMs: 41,
      totalTimeMs: 2400,
    });
  });

  it('ramps the downtime limit pass by pass: the start for the bulk and first passes, doubled after, capped', async () => {
    const ramp = downtimeRamp(50, 300);
    expect([1, 2, 3, 4, 5, 9].map((n) => downtimeAt(ramp, n))).toEqual([50, 50, 100, 200, 300, 300]);
    expect(downtimeRamp(0, 300)).toEqual({ startMs: 300, limitMs: 300 });
    expect(downtimeRamp(500, 300)).toEqual({ startMs: 300, limitMs: 300 });
    expect(downtimeAt(ramp, undefined)).toBe(50);
    // QEMU reports passes 1, 2, 4 (a poll can miss one), then completes: the limit is set once per change only.
    const pass = (n: number) => ({ ...active(1e6), ram: { ...active(1e6).ram, 'dirty-sync-count': n } });
    const { qmp, sent } = recorded({ 'query-migrate': [pass(1), pass(2), pass(4), pass(4), completed] });
    await awaitMigration(qmp, { pollMs: 1, vm: 'web', downtime: ramp });
    expect(sent.filter((c) => c.cmd === 'migrate-set-parameters')).toEqual([
      { cmd: 'migrate-set-parameters', args: { 'downtime-limit': 200 } },
    ]);
  });

  it("sees QEMU's MIGRATION event at once, on either side, instead of waiting for the next poll", async () => {
    // Polls a minute apart: only the event can end these waits within the test's timeout.
    const withEvents = (answers: Record<string, unknown[]>) => {
      const r = recorded(answers);
      const listeners = new Set<(e: { event: string }) => void>();
      const qmp = {
        ...r.qmp,
        onEvent: (fn: (e: { event: string }) => void) => {
          listeners.add(fn);
          return () => listeners.delete(fn);
        },
      };
      const emit = (event: string) =>
        setTimeout(() => {
          for (const l of [...listeners]) l({ event });
        }, 5);
      return { qmp, sent: r.sent, emit, listeners };
    };
    const src = withEvents({ 'query-migrate': [active(2e6), completed] });
    const out = awaitMigration(src.qmp, { pollMs: 60_000, vm: 'web' });
    // Another event does not end the wait; QEMU's MIGRATION does.
    src.emit('RESUME');
    src.emit('MIGRATION');
    expect((await out).status).toBe('completed');
    expect(src.listeners.size).toBe(0);
    const dst = withEvents({ 'query-status': [{ status: 'inmigrate' }, { status: 'paused' }] });
    const arrived = awaitIncoming(dst.qmp, { timeoutMs: 120_000, pollMs: 60_000, vm: 'web' });
    dst.emit('MIGRATION');
    await arrived;
    expect(dst.sent.map((s) => s.cmd)).toEqual(['query-status', 'query-status']);
  });

  it("throws QEMU's reason when it fails, and cancels when aborted", async () => {
    const { qmp } = recorded({
      'query-migrate': [{ status: 'failed', 'error-desc': 'Unable to write to socket: Broken pipe' }],
    });
    await expect(awaitMigration(qmp, { pollMs: 1, vm: 'web' })).rejects.toThrow(
      'migration of vm web failed: Unable to write to socket: Broken pipe',
    );
    const ac = new AbortController();
    ac.abort();
    const c = recorded({});
    await expect(awaitMigration(c.qmp, { pollMs: 1, vm: 'web', signal: ac.signal })).rejects.toThrow(
      /cancelled/,
    );
    expect(c.sent).toEqual([{ cmd: 'migrate_cancel' }]);
  });

  it('refuses an answer that does not parse, and drops negative or absurd figures', async () => {
    await expect(queryMigration(recorded({ 'query-migrate': ['nope'] }).qmp)).rejects.toThrow(
      /does not parse/,
    );
    const p = await queryMigration(
      recorded({ 'query-migrate': [{ status: 'active', downtime: -5, ram: { total: -1 } }] }).qmp,
    );
    expect(p).toEqual({ status: 'active', transferredBytes: 0, remainingBytes: 0, totalBytes: 0 });
  });

  it('target: capabilities then migrate-incoming; arrival when paused; resume runs and announces', async () => {
    const { qmp, sent } = recorded({
      'query-status': [{ status: 'inmigrate' }, { status: 'paused' }],
    });
    await startIncoming(qmp, 'unix:/run/vm/migrate-in.sock');
    await awaitIncoming(qmp, { timeoutMs: 1000, pollMs: 1, vm: 'web' });
    await resumeTarget(qmp);
    expect(sent.map((s) => s.cmd)).toEqual([
      'migrate-set-capabilities',
      'migrate-incoming',
      'query-status',
      'query-status',
      'cont',
      'announce-self',
    ]);
    expect(sent[1]).toEqual({ cmd: 'migrate-incoming', args: { uri: 'unix:/run/vm/migrate-in.sock' } });
  });

  it('target: an incoming QEMU that leaves inmigrate otherwise is a failure', async () => {
    const { qmp } = recorded({ 'query-status': [{ status: 'shutdown' }] });
    await expect(awaitIncoming(qmp, { timeoutMs: 1000, pollMs: 1, vm: 'web' })).rejects.toThrow(
      'incoming migration of vm web ended in state shutdown',
    );
  });

  it('source rollback: cont only when the guest is not running', async () => {
    const paused = recorded({ 'query-status': [{ status: 'postmigrate' }] });
    await resumeSource(paused.qmp);
    expect(paused.sent.map((s) => s.cmd)).toEqual(['query-status', 'cont']);
    const running = recorded({ 'query-status': [{ status: 'running' }] });
    await resumeSource(running.qmp);
    expect(running.sent.map((s) => s.cmd)).toEqual(['query-status']);
  });

  it('measures the dirty rate, or says nothing where QEMU lacks calc-dirty-rate', async () => {
    const ok = recorded({
      'query-dirty-rate': [{ status: 'measuring' }, { status: 'measured', 'dirty-rate': 12 }],
    });
    expect(await measureDirtyRate(ok.qmp, 0)).toBe(12);
    const old = recorded({ 'calc-dirty-rate': [new Error('CommandNotFound')] });
    expect(await measureDirtyRate(old.qmp, 1)).toBeUndefined();
  });

  it('settling after a failure (target resumes on arrival): cancel, then the final state; completed means the state was sent', async () => {
    // A cancel that came while QEMU completed changes nothing: the state was sent whole, the guest stays paused.
    const done = recorded({ 'query-migrate': [{ status: 'device' }, completed] });
    expect((await settleOutgoing(done.qmp, 1)).status).toBe('completed');
    expect(done.sent.map((c) => c.cmd)).toEqual(['migrate_cancel', 'query-migrate', 'query-migrate']);
    // Cancelled before the end: QEMU never sent it (and resumes the guest itself).
    const cut = recorded({
      migrate_cancel: [new Error('no migration')],
      'query-migrate': [{ status: 'cancelling' }, { status: 'cancelled' }],
    });
    expect((await settleOutgoing(cut.qmp, 1)).status).toBe('cancelled');
    expect(cut.sent.filter((c) => c.cmd === 'cont')).toEqual([]);
  });
});
