// The agent's backup job registry: jobs answer at once and are polled; failures keep their error's kind; one job per
// object at a time; at most `kept` jobs, the oldest finished dropped first; an unknown id names the host.
import { describe, expect, it } from 'vitest';
import { KeyMismatchError } from '../../shared/errors.js';
import { BackupJobs } from './jobs.js';

const settle = () => new Promise((r) => setTimeout(r, 10));

describe('BackupJobs', () => {
  it('runs a job in the background and records its outcome, progress and notes', async () => {
    const jobs = new BackupJobs('host1');
    let go!: () => void;
    const gate = new Promise<void>((r) => {
      go = r;
    });
    const j = jobs.start('backup', 'backup of VM web', async (h) => {
      h.progress(5, 10);
      h.note('disk data was read whole: forced');
      await gate;
      return { restored: { disks: [], seconds: 1 } };
    });
    expect(j).toMatchObject({ kind: 'backup', state: 'running' });
    await settle();
    expect(jobs.get(j.id)).toMatchObject({ state: 'running', progress: { done: 5, total: 10 } });
    go();
    await settle();
    expect(jobs.get(j.id)).toMatchObject({
      state: 'succeeded',
      restored: { disks: [], seconds: 1 },
      notes: ['disk data was read whole: forced'],
      finishedAt: expect.any(String),
    });
  });

  it("keeps a failure's message and kind", async () => {
    const jobs = new BackupJobs('host1');
    const j = jobs.start('restore', 'restore of VM web', async () => {
      throw new KeyMismatchError('wrong key: nothing was written');
    });
    await settle();
    expect(jobs.get(j.id)).toMatchObject({
      state: 'failed',
      errorKind: 'key-mismatch',
      error: 'wrong key: nothing was written',
    });
  });

  it('refuses a second job on the same object while the first runs', async () => {
    const jobs = new BackupJobs('host1');
    const never = new Promise<never>(() => {});
    jobs.start('backup', 'backup of VM web', () => never);
    expect(() => jobs.start('backup', 'backup of VM web', () => never)).toThrow(
      /backup of VM web is already in progress on host host1/,
    );
    expect(jobs.start('backup', 'backup of VM db', () => never).state).toBe('running');
  });

  it('keeps at most `kept` jobs: the oldest finished go first, running ones never', async () => {
    const jobs = new BackupJobs('host1', 3);
    const never = new Promise<never>(() => {});
    const a = jobs.start('verify', 'a', async () => ({}));
    const b = jobs.start('verify', 'b', () => never);
    const c = jobs.start('verify', 'c', async () => ({}));
    await settle();
    const d = jobs.start('verify', 'd', () => never);
    expect(() => jobs.get(a.id)).toThrow(/backup job on host host1 .* not found/);
    expect(jobs.get(b.id).state).toBe('running');
    expect(jobs.get(c.id).state).toBe('succeeded');
    expect(jobs.get(d.id).state).toBe('running');
    const e = jobs.start('verify', 'e', () => never);
    expect(() => jobs.get(c.id)).toThrow(/not found/);
    expect(() => jobs.start('verify', 'f', () => never)).toThrow(/already runs 3 backup jobs/);
    expect(jobs.get(e.id).state).toBe('running');
  });
});
