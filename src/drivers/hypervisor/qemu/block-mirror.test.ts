import { describe, expect, it } from 'vitest';
import {
  abortMirrors,
  awaitMirrorsReady,
  finishMirrorsAsCopies,
  type MirrorSpec,
  pivotMirror,
  startMirrors,
} from './block-mirror.js';
import { ALT_SLOT, assignDiskSlots, baseSlot, diskSlotIds, otherSlot } from './disk-slots.js';

/** A QMP fake of QEMU's block jobs: each job advances `step` bytes per poll until `len`, then is READY. */
function fakeQemu(opts: { len?: number; step?: number; failAt?: number } = {}) {
  const len = opts.len ?? 300;
  const step = opts.step ?? 100;
  const calls: Array<[string, unknown]> = [];
  const jobs = new Map<string, { offset: number; status: string; error?: string }>();
  let polls = 0;
  const qmp = {
    execute: async <T>(cmd: string, args?: unknown): Promise<T> => {
      calls.push([cmd, args]);
      const a = (args ?? {}) as Record<string, unknown>;
      switch (cmd) {
        case 'blockdev-mirror':
          jobs.set(a['job-id'] as string, { offset: 0, status: 'running' });
          return {} as T;
        case 'query-block-jobs': {
          polls++;
          const out = [];
          for (const [id, j] of jobs) {
            if (j.status === 'concluded') continue;
            if (opts.failAt !== undefined && polls >= opts.failAt) {
              j.status = 'concluded';
              j.error = 'No space left on device';
              continue;
            }
            j.offset = Math.min(len, j.offset + step);
            if (j.offset === len) j.status = 'ready';
            out.push({
              device: id,
              type: 'mirror',
              len,
              offset: j.offset,
              ready: j.status === 'ready',
              status: j.status,
            });
          }
          return out as T;
        }
        case 'query-jobs':
          return [...jobs].map(([id, j]) => ({
            id,
            status: j.status,
            ...(j.error ? { error: j.error } : {}),
          })) as T;
        case 'job-complete':
        case 'block-job-cancel': {
          const id = (a.id ?? a.device) as string;
          const j = jobs.get(id);
          if (!j) throw new Error(`Job '${id}' not found`);
          if (cmd === 'job-complete' && j.status !== 'ready') throw new Error('not ready');
          j.status = 'concluded';
          if (cmd === 'block-job-cancel' && a.force) j.error = 'Operation canceled';
          return {} as T;
        }
        case 'job-dismiss':
          jobs.delete(a.id as string);
          return {} as T;
        default:
          throw new Error(`unexpected ${cmd}`);
      }
    },
  };
  return { qmp, calls, jobs };
}

const spec: MirrorSpec = { job: 'vmlink-mirror-disk0', source: 'disk0', target: 'disk0m' };
const names = (calls: Array<[string, unknown]>) =>
  calls.map(([c]) => c).filter((c) => !c.startsWith('query-'));

describe('block mirrors (fake QMP)', () => {
  it('mirrors sync full, waits for READY with progress, then pivots and dismisses the job', async () => {
    const q = fakeQemu();
    const seen: number[] = [];
    await startMirrors(q.qmp, [spec]);
    expect(q.calls[0]).toEqual([
      'blockdev-mirror',
      {
        'job-id': spec.job,
        device: 'disk0',
        target: 'disk0m',
        sync: 'full',
        'auto-finalize': true,
        'auto-dismiss': false,
      },
    ]);
    const p = await awaitMirrorsReady(q.qmp, [spec], {
      vm: 'web',
      timeoutMs: 5000,
      pollMs: 1,
      onProgress: (x) => seen.push(x.doneBytes),
    });
    expect(seen).toEqual([100, 200, 300]);
    expect(p).toEqual({ doneBytes: 300, totalBytes: 300, ready: 1, jobs: 1 });
    await pivotMirror(q.qmp, spec, 'web', 5000);
    expect(names(q.calls)).toEqual(['blockdev-mirror', 'job-complete', 'job-dismiss']);
    expect(q.jobs.size).toBe(0);
  });

  it('ends READY mirrors as consistent copies (block-job-cancel, not forced) at a switch-over', async () => {
    const q = fakeQemu({ step: 300 });
    const two = [spec, { job: 'vmlink-mirror-disk1', source: 'disk1', target: 'disk1m' }];
    await startMirrors(q.qmp, two);
    expect((await awaitMirrorsReady(q.qmp, two, { vm: 'web', timeoutMs: 5000, pollMs: 1 })).ready).toBe(2);
    await finishMirrorsAsCopies(q.qmp, two, 'web', 5000);
    const cancels = q.calls.filter(([c]) => c === 'block-job-cancel').map(([, a]) => a);
    expect(cancels).toEqual([{ device: 'vmlink-mirror-disk0' }, { device: 'vmlink-mirror-disk1' }]);
    expect(q.jobs.size).toBe(0);
  });

  it("names the disk and QEMU's reason when a copy fails, and a rollback cancels with force", async () => {
    const q = fakeQemu({ failAt: 2 });
    await startMirrors(q.qmp, [spec]);
    await expect(awaitMirrorsReady(q.qmp, [spec], { vm: 'web', timeoutMs: 5000, pollMs: 1 })).rejects.toThrow(
      /VM web: the copy of disk0 stopped before it caught up: No space left on device/,
    );
    await abortMirrors(q.qmp, [spec], 'web');
    expect(q.calls.filter(([c]) => c === 'block-job-cancel')).toEqual([
      ['block-job-cancel', { device: spec.job, force: true }],
    ]);
    expect(q.jobs.size).toBe(0);
  });

  it('gives up at its timeout with the bytes copied so far; the pivot is refused before READY', async () => {
    const q = fakeQemu({ len: 1_000_000, step: 1 });
    await startMirrors(q.qmp, [spec]);
    await expect(awaitMirrorsReady(q.qmp, [spec], { vm: 'web', timeoutMs: 20, pollMs: 5 })).rejects.toThrow(
      /did not catch up within 20 ms \(\d+ of 1000000 bytes\)/,
    );
    await expect(pivotMirror(q.qmp, spec, 'web', 1000)).rejects.toThrow(/not ready/);
    await abortMirrors(q.qmp, [spec], 'web');
    expect(q.jobs.size).toBe(0);
  });

  it('refuses an answer that does not parse (untrusted QEMU)', async () => {
    const qmp = { execute: async <T>() => [{ device: 5 }] as T };
    await expect(awaitMirrorsReady(qmp, [spec], { vm: 'web', timeoutMs: 100, pollMs: 1 })).rejects.toThrow(
      /does not parse/,
    );
  });
});

describe('disk slots: the second set of node names a moved disk takes', () => {
  it('alternates names and fd sets on the same port', () => {
    expect(diskSlotIds(3)).toMatchObject({
      node: 'disk3',
      file: 'disk3-file',
      port: 'diskport3',
      fdset: 203,
    });
    expect(diskSlotIds(ALT_SLOT + 3)).toMatchObject({
      node: 'disk3m',
      file: 'disk3m-file',
      port: 'diskport3',
      fdset: 303,
    });
    expect(otherSlot(3)).toBe(ALT_SLOT + 3);
    expect(otherSlot(ALT_SLOT + 3)).toBe(3);
    expect(baseSlot(ALT_SLOT + 3)).toBe(3);
  });

  it('a new disk never takes the port of a moved one', () => {
    const disks = [{ name: 'a' }, { name: 'b' }];
    const slots = assignDiskSlots([...disks, { name: 'c' }], { disks, slots: [ALT_SLOT + 0, 1] });
    expect(slots).toEqual([ALT_SLOT + 0, 1, 2]);
  });
});
