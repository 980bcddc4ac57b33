import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfirmManager, type Undo } from './confirm.js';

const undo: Undo = { kind: 'network', name: 'lan' };

describe('commit-confirm', () => {
  let dir: string;
  let reverted: Undo[];
  let fail: Error | undefined;
  const make = () =>
    new ConfirmManager({
      dir,
      revert: async (u) => {
        if (fail) throw fail;
        reverted.push(u);
      },
    });

  beforeEach(() => {
    vi.useFakeTimers();
    dir = mkdtempSync(join(tmpdir(), 'vmlink-confirm-'));
    reverted = [];
    fail = undefined;
  });
  afterEach(() => {
    vi.useRealTimers();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps a change confirmed within its window', async () => {
    const m = make();
    const id = randomUUID();
    expect(m.arm(id, 5_000, 'network lan', undo).state).toBe('pending');
    await vi.advanceTimersByTimeAsync(4_999);
    expect(m.get(id).state).toBe('pending');
    expect(m.confirm(id).state).toBe('confirmed');
    expect(m.confirm(id).state).toBe('confirmed');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(reverted).toEqual([]);
    expect(m.get(id).state).toBe('confirmed');
  });

  it('rolls back by itself when the window ends, and then refuses the late confirmation (409)', async () => {
    const m = make();
    const id = randomUUID();
    m.arm(id, 5_000, 'uplink eth0', undo);
    expect(() => m.assertNonePending()).toThrow(/still pending/);
    await vi.advanceTimersByTimeAsync(5_000);
    await m.settle(id);
    expect(reverted).toEqual([undo]);
    expect(m.get(id)).toMatchObject({ state: 'rolled-back', detail: expect.stringContaining('uplink eth0') });
    expect(() => m.confirm(id)).toThrow(expect.objectContaining({ kind: 'conflict' }));
    expect(() => m.assertNonePending()).not.toThrow();
  });

  it('answers 404 for an unknown id and refuses a reused one', () => {
    const m = make();
    expect(() => m.get(randomUUID())).toThrow(expect.objectContaining({ kind: 'not-found' }));
    expect(() => m.confirm(randomUUID())).toThrow(expect.objectContaining({ kind: 'not-found' }));
    const id = randomUUID();
    m.arm(id, 5_000, 'network lan', undo);
    expect(() => m.arm(id, 5_000, 'network lan', undo)).toThrow(/already used/);
    m.close();
  });

  it('reports a failed rollback', async () => {
    const m = make();
    const id = randomUUID();
    fail = new Error('uplink eth0 vanished');
    m.arm(id, 2_000, 'uplink eth0', undo);
    await vi.advanceTimersByTimeAsync(2_000);
    await m.settle(id);
    expect(m.get(id)).toMatchObject({
      state: 'rollback-failed',
      detail: expect.stringContaining('uplink eth0 vanished'),
    });
  });

  it('survives an agent restart mid-window: the new process rolls back at the original deadline', async () => {
    const first = make();
    const id = randomUUID();
    const kept = randomUUID();
    first.arm(kept, 10_000, 'network a', undo);
    first.confirm(kept);
    first.arm(id, 10_000, 'uplink eth0', { kind: 'uplink', device: 'eth0', snapshot: { addrs: ['x'] } });
    await vi.advanceTimersByTimeAsync(6_000);
    first.close(); // the agent dies

    const second = make();
    second.resume();
    expect(second.get(kept).state).toBe('confirmed');
    expect(second.get(id).state).toBe('pending');
    await vi.advanceTimersByTimeAsync(3_999);
    expect(reverted).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    await second.settle(id);
    expect(reverted).toEqual([{ kind: 'uplink', device: 'eth0', snapshot: { addrs: ['x'] } }]);
    expect(second.get(id).state).toBe('rolled-back');

    // A third start finds the finished record and does nothing more.
    const third = make();
    third.resume();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(third.get(id).state).toBe('rolled-back');
    expect(reverted).toHaveLength(1);
  });

  it('rolls back at once when it restarts after the deadline', async () => {
    const first = make();
    const id = randomUUID();
    first.arm(id, 1_000, 'network lan', undo);
    first.close();
    vi.setSystemTime(Date.now() + 30_000);
    const second = make();
    second.resume();
    await vi.advanceTimersByTimeAsync(0);
    await second.settle(id);
    expect(second.get(id).state).toBe('rolled-back');
  });

  it('skips records that are corrupt, of the wrong shape or planted as links, and re-arms the good ones', async () => {
    const first = make();
    const good = randomUUID();
    first.arm(good, 5_000, 'network lan', undo);
    first.close();
    const bad = [randomUUID(), randomUUID(), randomUUID()];
    writeFileSync(join(dir, `${bad[0]}.json`), '{"id":');
    writeFileSync(
      join(dir, `${bad[1]}.json`),
      JSON.stringify({ id: bad[1], state: 'pending', undo: { kind: 'rm -rf' } }),
    );
    symlinkSync(join(dir, `${good}.json`), join(dir, `${bad[2]}.json`));

    const second = make();
    second.resume();
    for (const id of bad)
      expect(() => second.get(id)).toThrow(expect.objectContaining({ kind: 'not-found' }));
    expect(second.get(good).state).toBe('pending');
    await vi.advanceTimersByTimeAsync(5_000);
    await second.settle(good);
    expect(reverted).toEqual([undo]);
    // Records are written whole (atomically) and stay private to root.
    expect(JSON.parse(readFileSync(join(dir, `${good}.json`), 'utf8'))).toMatchObject({
      state: 'rolled-back',
    });
    expect(statSync(join(dir, `${good}.json`)).mode & 0o777).toBe(0o600);
  });

  // The disk refusing writes is reproduced without a mock: the records' directory is a plain file, so every
  // write fails (ENOTDIR/EEXIST) as it does on a full or read-only disk; the tmpfs case is in commit-confirm.int.
  it('fails closed when no record can be written: the rollback is armed in memory, and the state says so', async () => {
    rmSync(dir, { recursive: true, force: true });
    writeFileSync(dir, 'not a directory');
    const m = make();
    m.resume(); // an unreadable records directory does not stop the agent
    const id = randomUUID();
    const st = m.arm(id, 5_000, 'uplink eth0', undo);
    expect(st.state).toBe('pending');
    expect(st.detail).toMatch(/record could not be written: .*armed in memory only/);
    await vi.advanceTimersByTimeAsync(5_000);
    await m.settle(id);
    expect(reverted).toEqual([undo]);
    expect(m.get(id)).toMatchObject({
      state: 'rolled-back',
      detail: expect.stringMatching(/could not be written/),
    });
  });

  it('survives a disk that fails during the rollback', async () => {
    const m = make();
    const id = randomUUID();
    m.arm(id, 5_000, 'uplink eth0', undo);
    expect(readFileSync(join(dir, `${id}.json`), 'utf8')).toContain('"pending"');
    // The disk fails after arming: nothing under the records' directory can be written or removed any more.
    renameSync(dir, `${dir}.moved`);
    writeFileSync(dir, 'not a directory');
    try {
      await vi.advanceTimersByTimeAsync(5_000);
      await m.settle(id);
      expect(reverted).toEqual([undo]);
      expect(m.get(id)).toMatchObject({
        state: 'rolled-back',
        detail: expect.stringMatching(/rolled back.*record could not be written/),
      });
    } finally {
      rmSync(dir, { force: true });
      renameSync(`${dir}.moved`, dir);
    }
  });

  it('survives a revert that throws at once', async () => {
    const m = new ConfirmManager({
      dir,
      revert: () => {
        throw new Error('no uplink manager');
      },
    });
    const id = randomUUID();
    m.arm(id, 1_000, 'uplink eth0', undo);
    await vi.advanceTimersByTimeAsync(1_000);
    await m.settle(id);
    expect(m.get(id)).toMatchObject({
      state: 'rollback-failed',
      detail: expect.stringContaining('no uplink manager'),
    });
  });
});
