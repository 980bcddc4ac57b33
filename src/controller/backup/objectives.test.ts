import { describe, expect, it } from 'vitest';
import { ObjectiveStatusSchema, type SnapshotSummary, snapshotId } from '../../shared/backup.js';
import {
  evaluateObjectives,
  type ObjectiveInput,
  type ObjectiveStoreInput,
  storesOfPolicy,
} from './objectives.js';

const NOW = new Date('2026-12-01T12:00:00Z');
const minutesAgo = (m: number) => new Date(NOW.getTime() - m * 60_000);

function snap(vm: string, at: Date, verify?: { ok: boolean; problems?: string[] }): SnapshotSummary {
  const s: SnapshotSummary = {
    id: snapshotId(vm, at),
    vm,
    host: 'host1',
    policy: 'nightly',
    createdAt: at.toISOString(),
    finishedAt: at.toISOString(),
    consistency: 'frozen',
    keyFingerprint: '0'.repeat(32),
    disks: [],
  };
  if (verify) s.verify = { ok: verify.ok, at: NOW.toISOString(), problems: verify.problems ?? [] };
  return s;
}

const policy = { name: 'nightly', store: 'site', rpoMinutes: 15, rtoMinutes: 30, rule: '3-2-1' as const };

function input(
  over: Partial<ObjectiveInput> & { site?: SnapshotSummary[]; vault?: SnapshotSummary[] },
): ObjectiveInput {
  const stores: ObjectiveStoreInput[] = [
    { name: 'site', host: 'backup1', offsite: false, snapshots: over.site ?? [] },
    { name: 'vault', host: 'backup2', offsite: true, pullFrom: 'site', snapshots: over.vault ?? [] },
  ];
  const { site: _s, vault: _v, ...rest } = over;
  return { policy, vm: 'web1', vmHost: 'host1', stores, now: NOW, ...rest };
}

const test = { at: minutesAgo(60), ok: true, seconds: 20 * 60 };

describe('evaluateObjectives', () => {
  it('all ok: a fresh snapshot on site and vault, a fast restore test', () => {
    const s = snap('web1', minutesAgo(5));
    const out = evaluateObjectives(input({ site: [s], vault: [s], lastRestoreTest: test }));
    expect(ObjectiveStatusSchema.parse(out)).toEqual(out);
    expect(out.rpo).toEqual({ state: 'ok', objectiveMinutes: 15, newest: s.id, newestAgeMinutes: 5 });
    expect(out.rto).toEqual({
      state: 'ok',
      objectiveMinutes: 30,
      measuredMinutes: 20,
      measuredAt: test.at.toISOString(),
    });
    expect(out.rule).toEqual({
      state: 'ok',
      rule: '3-2-1',
      copies: 3,
      machines: 3,
      offsite: 1,
      stores: ['site', 'vault'],
    });
    expect(out.problems).toEqual([]);
    expect(out.verifyProblem).toBeUndefined();
  });

  describe('RPO', () => {
    it('drifts when the newest good snapshot is as old as the objective', () => {
      const s = snap('web1', minutesAgo(15));
      const out = evaluateObjectives(input({ site: [s], vault: [s], lastRestoreTest: test }));
      expect(out.rpo.state).toBe('drift');
      expect(out.problems).toEqual([`RPO 15 min: the newest good snapshot of web1 (${s.id}) is 15 min old`]);
    });
    it('is ok just under the objective', () => {
      const s = snap('web1', new Date(NOW.getTime() - 15 * 60_000 + 1000));
      expect(evaluateObjectives(input({ site: [s], vault: [s] })).rpo.state).toBe('ok');
    });
    it('skips a snapshot whose last verify failed (the older good one counts)', () => {
      const bad = snap('web1', minutesAgo(2), { ok: false, problems: ['chunk abc: checksum mismatch'] });
      const old = snap('web1', minutesAgo(40), { ok: true });
      const out = evaluateObjectives(input({ site: [bad, old], vault: [old] }));
      expect(out.rpo).toMatchObject({ state: 'drift', newest: old.id, newestAgeMinutes: 40 });
      expect(out.verifyProblem).toBe(
        `${bad.id} failed verify on store site at ${NOW.toISOString()}: chunk abc: checksum mismatch`,
      );
      expect(out.problems).toContain(out.verifyProblem);
    });
    it('a good copy elsewhere keeps the snapshot good (copies are verified where they are)', () => {
      const bad = snap('web1', minutesAgo(2), { ok: false });
      const goodCopy = snap('web1', minutesAgo(2), { ok: true });
      const out = evaluateObjectives(input({ site: [bad], vault: [goodCopy] }));
      expect(out.rpo.state).toBe('ok');
      expect(out.rule).toMatchObject({ state: 'drift', copies: 2, stores: ['vault'] });
      expect(out.verifyProblem).toContain('failed verify on store site');
    });
    it('drifts with no snapshot at all, saying how to make one', () => {
      const out = evaluateObjectives(input({}));
      expect(out.rpo).toEqual({ state: 'drift', objectiveMinutes: 15 });
      expect(out.problems[0]).toBe('RPO 15 min: no good snapshot of web1 yet (vmlink backup run web1)');
    });
    it('only counts this VM', () => {
      const out = evaluateObjectives(input({ site: [snap('db', minutesAgo(1))] }));
      expect(out.rpo.state).toBe('drift');
    });
    it('is unknown when not declared, still reporting the newest', () => {
      const s = snap('web1', minutesAgo(500));
      const out = evaluateObjectives(input({ policy: { name: 'p', store: 'site' }, site: [s] }));
      expect(out.rpo).toEqual({ state: 'unknown', newest: s.id, newestAgeMinutes: 500 });
      expect(out.rule.state).toBe('unknown');
      expect(out.rule.rule).toBe('none');
      expect(out.problems).toEqual([]);
    });
    it('is unknown when every store is unreachable, and says which', () => {
      const out = evaluateObjectives({
        ...input({}),
        stores: [
          { name: 'site', host: 'backup1', offsite: false, unreachable: 'host backup1 is unreachable' },
          { name: 'vault', host: 'backup2', offsite: true, pullFrom: 'site' },
        ],
      });
      expect(out.rpo.state).toBe('unknown');
      expect(out.rule.state).toBe('unknown');
      expect(out.problems).toEqual([
        'store site on backup1 did not answer: host backup1 is unreachable',
        'store vault on backup2 did not answer',
      ]);
    });
    it('uses the reachable stores when one is down', () => {
      const s = snap('web1', minutesAgo(3));
      const out = evaluateObjectives({
        ...input({}),
        stores: [
          { name: 'site', host: 'backup1', offsite: false, unreachable: 'down' },
          { name: 'vault', host: 'backup2', offsite: true, pullFrom: 'site', snapshots: [s] },
        ],
      });
      expect(out.rpo.state).toBe('ok');
      expect(out.rule).toMatchObject({ state: 'drift', copies: 2, machines: 2, offsite: 1 });
    });
  });

  describe('RTO', () => {
    it('is unknown before the first restore test', () => {
      const s = snap('web1', minutesAgo(1));
      expect(evaluateObjectives(input({ site: [s], vault: [s] })).rto).toEqual({
        state: 'unknown',
        objectiveMinutes: 30,
      });
    });
    it('drifts when the test took as long as the objective', () => {
      const out = evaluateObjectives(
        input({ lastRestoreTest: { at: minutesAgo(5), ok: true, seconds: 1800 } }),
      );
      expect(out.rto).toMatchObject({ state: 'drift', measuredMinutes: 30 });
      expect(out.problems).toContain(
        `RTO 30 min: the restore test at ${minutesAgo(5).toISOString()} took 30 min`,
      );
    });
    it('drifts when the test failed, with its error', () => {
      const out = evaluateObjectives(
        input({ lastRestoreTest: { at: minutesAgo(5), ok: false, error: 'guest agent did not answer' } }),
      );
      expect(out.rto).toEqual({
        state: 'drift',
        objectiveMinutes: 30,
        measuredAt: minutesAgo(5).toISOString(),
      });
      expect(out.problems).toContain(
        `RTO 30 min: the restore test at ${minutesAgo(5).toISOString()} failed: guest agent did not answer`,
      );
    });
    it('reports a measurement without an objective as unknown', () => {
      const out = evaluateObjectives(input({ policy: { name: 'p', store: 'site' }, lastRestoreTest: test }));
      expect(out.rto).toEqual({ state: 'unknown', measuredMinutes: 20, measuredAt: test.at.toISOString() });
    });
  });

  describe('3-2-1', () => {
    it('an unsynced newest snapshot: 2 copies, no offsite; says to sync', () => {
      const s = snap('web1', minutesAgo(1));
      const older = snap('web1', minutesAgo(60));
      const out = evaluateObjectives(input({ site: [s, older], vault: [older] }));
      expect(out.rule).toEqual({
        state: 'drift',
        rule: '3-2-1',
        copies: 2,
        machines: 2,
        offsite: 0,
        stores: ['site'],
      });
      expect(out.problems).toEqual([
        `3-2-1: ${s.id} has 2 copies (needs 3), no offsite copy (needs 1): vmlink backup sync (offsite vault lacks it)`,
      ]);
    });
    it('no offsite store at all: says to add one pulling from the policy store', () => {
      const s = snap('web1', minutesAgo(1));
      const out = evaluateObjectives({
        ...input({}),
        stores: [
          { name: 'site', host: 'backup1', offsite: false, snapshots: [s] },
          { name: 'site2', host: 'backup3', offsite: false, snapshots: [s] },
        ],
      });
      expect(out.rule).toMatchObject({ state: 'drift', copies: 2, stores: ['site'] });
      expect(out.problems).toEqual([
        `3-2-1: ${s.id} has 2 copies (needs 3), no offsite copy (needs 1): add an offsite store with pullFrom: site`,
      ]);
    });
    it('stores on the VM host itself: copies but one machine', () => {
      const s = snap('web1', minutesAgo(1));
      const out = evaluateObjectives({
        ...input({}),
        stores: [
          { name: 'site', host: 'host1', offsite: false, snapshots: [s] },
          { name: 'vault', host: 'host1', offsite: true, pullFrom: 'site', snapshots: [s] },
        ],
      });
      expect(out.rule).toMatchObject({ state: 'drift', copies: 3, machines: 1, offsite: 1 });
      expect(out.problems[0]).toContain('1 machine (needs 2)');
    });
    it('a VM not placed: its live copy does not count', () => {
      const s = snap('web1', minutesAgo(1));
      const { vmHost: _h, ...noHost } = input({ site: [s], vault: [s] });
      expect(evaluateObjectives(noHost).rule).toMatchObject({ state: 'drift', copies: 2, machines: 2 });
    });
    it('offsite stores pulling through another offsite count; unrelated stores do not', () => {
      const s = snap('web1', minutesAgo(1));
      const out = evaluateObjectives({
        ...input({}),
        stores: [
          { name: 'site', host: 'backup1', offsite: false, snapshots: [s] },
          { name: 'other', host: 'backup9', offsite: true, snapshots: [s] },
          { name: 'far', host: 'backup3', offsite: true, pullFrom: 'vault', snapshots: [s] },
          { name: 'vault', host: 'backup2', offsite: true, pullFrom: 'site', snapshots: [] },
        ],
      });
      expect(out.rule).toMatchObject({
        state: 'ok',
        copies: 3,
        machines: 3,
        offsite: 1,
        stores: ['site', 'far'],
      });
    });
  });

  it('storesOfPolicy survives a cycle', () => {
    const stores = [
      { name: 'a', host: 'h', offsite: false, pullFrom: 'b' },
      { name: 'b', host: 'h', offsite: true, pullFrom: 'a' },
    ];
    expect(storesOfPolicy('a', stores).map((s) => s.name)).toEqual(['a', 'b']);
    expect(storesOfPolicy('zz', stores)).toEqual([]);
  });
  it('names an unknown policy store', () => {
    expect(evaluateObjectives({ ...input({}), stores: [] }).problems).toContain(
      'store site of policy nightly is not known',
    );
  });
});
