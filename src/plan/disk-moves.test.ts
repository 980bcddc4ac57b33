import { describe, expect, it } from 'vitest';
import { ConflictError } from '../shared/errors.js';
import type { HostReport, ObservedVm } from '../shared/model.js';
import { planChanges } from './diff.js';
import { vmConfigHash } from './hash.js';
import { resolveSpec } from './resolve.js';
import { stepTarget } from './steps.js';
import { realised, storageSpec } from './storage.test-util.js';

// The fixture's web1 (host1) has `scratch` in its directory, `logs` in dir pool `local`, `data` a named san volume.
// Every spec here adds a second dir pool `fast` on host1.
// biome-ignore lint/suspicious/noExplicitAny: raw documents are edited freely by the tests.
const withFast = (edit?: (doc: any) => void) =>
  storageSpec((s) => {
    s.pools.push({ name: 'fast', type: 'dir', host: 'host1' });
    edit?.(s);
  });
const before = resolveSpec(withFast());
const logsInFast = resolveSpec(
  withFast((s) => {
    s.vms[0].disks[1].pool = 'fast';
  }),
);

/** The error `fn` throws. */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a refusal');
}

/** `reports` with VM `name` recorded under `hash` (a live disk move rewrites the config, not the hash). */
function keepHash(reports: HostReport[], name: string, hash: string, state?: ObservedVm['state']) {
  for (const r of reports)
    for (const v of r.vms)
      if (v.name === name) Object.assign(v, { configHash: hash }, state ? { state } : {});
  return reports;
}

const web1 = (d: typeof before) => d.host1!.vms.find((v) => v.name === 'web1')!;

describe('disks moved by vm move-disk', () => {
  it('refuses to restart a running VM onto an empty volume in the spec’s new pool, naming vm move-disk', () => {
    const e = thrown(() => planChanges(logsInFast, realised(before)));
    expect(e).toBeInstanceOf(ConflictError);
    expect(e.message).toContain('the plan is refused, nothing was changed');
    expect(e.message).toContain(
      'vm web1 on host1: disk logs sits in pool local but the spec puts it in pool fast',
    );
    expect(e.message).toContain('`vmlink vm move-disk web1 logs --to-pool fast`, then apply');
    expect((e as ConflictError).subject).toBe('vm/web1');
  });

  it('plans nothing once the disk sits where the spec says, though the host keeps the old hash', () => {
    // After the move: the VM records the new source under its old hash; the volume is in fast, gone from local.
    const seen = keepHash(realised(logsInFast), 'web1', vmConfigHash(web1(before)));
    expect(seen[0]!.vms[0]!.configHash).not.toBe(vmConfigHash(web1(logsInFast)));
    const plan = planChanges(logsInFast, seen);
    expect(plan.steps.map((s) => `${s.kind} ${s.host}/${stepTarget(s)}`)).toEqual([]);
    expect(plan.unchanged).toContain('vm web1 on host1');
    expect(plan.unchanged).toContain('volume fast/web1-logs on host1');
  });

  it('still plans the other changes of a moved VM, and no disk change', () => {
    const more = resolveSpec(
      withFast((s) => {
        s.vms[0].disks[1].pool = 'fast';
        s.vms[0].memoryMiB = 640;
      }),
    );
    const seen = keepHash(realised(logsInFast), 'web1', vmConfigHash(web1(before)));
    const plan = planChanges(more, seen);
    const update = plan.steps.find((s) => s.kind === 'vm.update');
    expect(update?.kind === 'vm.update' && update.changes).toEqual(['memoryMiB 256 -> 640 (restart)']);
  });

  it('refuses an apply of the old spec after a move made without editing it', () => {
    const seen = keepHash(realised(logsInFast), 'web1', vmConfigHash(web1(before)));
    const e = thrown(() => planChanges(before, seen));
    expect(e.message).toContain('disk logs sits in pool fast but the spec puts it in pool local');
    expect(e.message).toContain(
      '`vmlink vm move-disk web1 logs --to-pool local`, then apply (or keep pool fast',
    );
  });

  it('refuses a VM-directory disk going to a pool, and a move into a pool that is not a dir pool', () => {
    const scratchInFast = resolveSpec(
      withFast((s) => {
        s.vms[0].disks[0].pool = 'fast';
      }),
    );
    expect(thrown(() => planChanges(scratchInFast, realised(before))).message).toContain(
      "disk scratch sits in the VM's directory but the spec puts it in pool fast; applying would restart the VM onto an empty disk. Move it: `vmlink vm move-disk web1 scratch --to-pool fast`",
    );
    const logsOnNfs = resolveSpec(
      withFast((s) => {
        s.vms[0].disks[1].pool = 'nas';
      }),
    );
    expect(thrown(() => planChanges(logsOnNfs, realised(before))).message).toContain(
      "`vmlink vm move-disk` moves a disk only into a dir pool of the VM's host: keep pool local in the spec, or set the VM's state to stopped first",
    );
  });

  it('refuses the old spec for a stopped VM whose disk was moved, and for one the spec stops after a move', () => {
    const seen = keepHash(realised(logsInFast, 'stopped'), 'web1', vmConfigHash(web1(before)));
    const e = thrown(() => planChanges(before, seen));
    expect(e.message).toContain(
      'disk logs sits in pool fast but the spec puts it in pool local; applying would put the VM onto an empty disk. Move it: `vmlink vm move-disk web1 logs --to-pool local`',
    );
    const stopBefore = resolveSpec(
      withFast((s) => {
        s.vms[0].state = 'stopped';
      }),
    );
    const moved = keepHash(realised(logsInFast), 'web1', vmConfigHash(web1(before)));
    expect(thrown(() => planChanges(stopBefore, moved)).message).toContain('disk logs sits in pool fast');
  });

  it('lets a stopped VM, or one the spec stops, switch pools (the old volume is kept)', () => {
    const stopped = planChanges(logsInFast, realised(before, 'stopped'));
    expect(stopped.steps.some((s) => s.kind === 'vm.update' && s.host === 'host1')).toBe(true);
    const toStop = resolveSpec(
      withFast((s) => {
        s.vms[0].disks[1].pool = 'fast';
        s.vms[0].state = 'stopped';
      }),
    );
    const kinds = planChanges(toStop, realised(before))
      .steps.filter((s) => stepTarget(s) === 'web1')
      .map((s) => s.kind);
    expect(kinds).toEqual(['vm.stop', 'vm.update']);
  });

  it('lets a running VM attach another named volume (not a move)', () => {
    const other = resolveSpec(
      withFast((s) => {
        s.volumes.push({ name: 'data2', pool: 'fast', sizeMiB: 64 });
        s.vms[0].disks[2] = { name: 'data', pool: 'fast', volume: 'data2' };
      }),
    );
    const plan = planChanges(other, realised(before));
    expect(plan.steps.some((s) => s.kind === 'vm.stop' && s.host === 'host1')).toBe(true);
  });
});
