// The agent's backup job registry: jobs answer at once and are polled; failures keep their error's kind; one job per
// object at a time; at most `kept` jobs, the oldest finished dropped first; an unknown id names the host.
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KeyMismatchError } from '../../shared/errors.js';
import { AGENT_RESTARTED, BackupJobs } from './jobs.js';

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

describe('BackupJobs records (an agent killed mid-job)', () => {
  it('a job running when its process is SIGKILLed reads `failed: agent restarted` after the restart; finished ones stay', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmlink-jobs-'));
    try {
      // The "agent": a real process holding a finished verify and a restore that never ends, killed with SIGKILL.
      const script = join(dir, 'agent.mts');
      await writeFile(
        script,
        `import { BackupJobs } from ${JSON.stringify(resolve('src/agent/backup/jobs.ts'))};
const jobs = new BackupJobs('host1', 64, ${JSON.stringify(join(dir, 'jobs'))});
const done = jobs.start('verify', 'verify of store site', async (h) => { h.note('checked'); return {}; });
const running = jobs.start('restore', 'restore of VM web', (h) => { h.progress(3, 10); return new Promise(() => {}); });
await new Promise((r) => setTimeout(r, 50));
await jobs.flush();
console.log(JSON.stringify({ done: done.id, running: running.id }));
setInterval(() => {}, 1000);
`,
      );
      const child = spawn(process.execPath, ['--import', 'tsx', script], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const ids = await new Promise<{ done: string; running: string }>((res, rej) => {
        let out = '';
        child.stdout.on('data', (b: Buffer) => {
          out += b.toString();
          if (out.includes('\n')) res(JSON.parse(out.split('\n')[0]!));
        });
        child.once('exit', (code) => rej(new Error(`the agent process exited (${code}) before it answered`)));
      });
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      // Leftovers of a torn write and foreign or corrupt records go at load.
      await writeFile(join(dir, 'jobs', 'verify-zz-0000aaaa.json.123.tmp'), '{');
      await writeFile(join(dir, 'jobs', 'verify-zz-0000bbbb.json'), '{"id":');
      await writeFile(join(dir, 'jobs', 'not-a-job.json'), '{}');

      const after = new BackupJobs('host1', 64, join(dir, 'jobs'));
      const cut = await after.load();
      expect(cut.map((j) => j.id)).toEqual([ids.running]);
      const r = after.get(ids.running);
      expect(r).toMatchObject({
        kind: 'restore',
        state: 'failed',
        errorKind: 'unavailable',
        finishedAt: expect.any(String),
      });
      expect(r.error).toMatch(
        new RegExp(`^${AGENT_RESTARTED}: the agent of host host1 stopped while this restore job ran`),
      );
      expect(r.error).toMatch(/partly written: restore again/);
      expect(after.get(ids.done)).toMatchObject({ state: 'succeeded', notes: ['checked'] });
      expect((await readdir(join(dir, 'jobs'))).sort()).toEqual(
        [`${ids.done}.json`, `${ids.running}.json`].sort(),
      );
      expect((await stat(join(dir, 'jobs', `${ids.running}.json`))).mode & 0o777).toBe(0o600);
      // The same object takes a new job at once (nothing holds it), and a third start reads the failure as recorded.
      expect(after.start('restore', 'restore of VM web', async () => ({})).state).toBe('running');
      await settle();
      await after.flush();
      const again = new BackupJobs('host1', 64, join(dir, 'jobs'));
      expect(await again.load()).toEqual([]);
      expect(again.get(ids.running).error).toBe(r.error);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('refuses a job it cannot record, before it starts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmlink-jobs-'));
    try {
      // The records' directory would be below a regular file: no record, so no job.
      await writeFile(join(dir, 'file'), '');
      const jobs = new BackupJobs('host1', 4, join(dir, 'file', 'jobs'));
      let ran = false;
      expect(() =>
        jobs.start('backup', 'backup of VM web', async () => {
          ran = true;
          return {};
        }),
      ).toThrow(/host host1 cannot record a new backup job .*nothing was started/);
      await new Promise((r) => setTimeout(r, 10));
      expect(ran).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
