import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BackupRunRequest } from '../../agent/wire-backup.js';
import { RecordingRunner } from '../../exec/runner.js';
import { parseRecoveryKey } from '../../shared/backup-crypto.js';
import type { MetricsSnapshot } from '../../shared/metrics.js';
import { derivedMac } from '../../spec/net.js';
import { AgentClient } from '../agents.js';
import { createControllerApi } from '../api.js';
import { Controller } from '../controller.js';
import { hostKey } from '../monitor.js';
import { SqliteStore } from '../store/sqlite.js';
import { type TaskContext, TaskManager } from '../tasks.js';
import { BACKUP_METHODS, type BackupAgent } from './agents.js';
import { FakeBackupFleet } from './fake-backup.test-util.js';
import { restoredKey, rtoKey, scheduleKey } from './records.js';

const text = (o: { schedule?: string; rpo?: number; extraVms?: string } = {}) => `version: 1
hosts:
  - { name: h1, agent: "unix:///fake/h1.sock", address: 10.0.0.1, confirmTimeoutSeconds: 5 }
  - { name: b1, agent: "unix:///fake/b1.sock", address: 10.0.0.2, confirmTimeoutSeconds: 5 }
  - { name: b2, agent: "https://192.0.2.7:7443", confirmTimeoutSeconds: 5 }
networks:
  - { name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }
  - { name: iso, host: h1, mode: isolated, cidr: 10.30.0.0/24 }
vms:
  - { name: web1, host: h1, nics: [{ network: natnet, ip: 10.10.0.5 }], disks: [{ name: data, sizeMiB: 64 }] }
${o.extraVms ?? ''}backupStores:
  - { name: site, host: b1 }
  - { name: vault, host: b2, offsite: true, pullFrom: site }
backups:
  - name: nightly
    vms: [web1]
    store: site
    schedule: "${o.schedule ?? 'every 10m'}"
    retention: { last: 2 }
    encryption: { key: bk }
    rpoMinutes: ${o.rpo ?? 15}
    rtoMinutes: 30
    rule: 3-2-1
    restoreTest: { schedule: "every 1d", network: iso }
`;

function task(): TaskContext & { lines: string[] } {
  const lines: string[] = [];
  return { lines, progress: (m) => lines.push(m), signal: new AbortController().signal };
}

const T0 = Date.parse('2026-12-01T02:00:00Z');
const MIN = 60_000;

describe('the agent client', () => {
  it('has every backup call the controller makes, with the signatures it uses', () => {
    // Type-checked: the real client is a BackupAgent.
    const asBackupAgent = (c: AgentClient): BackupAgent => c;
    expect(typeof asBackupAgent).toBe('function');
    for (const m of BACKUP_METHODS) expect(typeof AgentClient.prototype[m], m).toBe('function');
  });
});

describe('controller backups (fake agents, fake clock)', () => {
  let fleet: FakeBackupFleet;
  let store: SqliteStore;
  let controller: Controller;
  let now: number;
  const secretsKey = randomBytes(32);
  const make = () =>
    new Controller(store, new RecordingRunner(), {
      agents: fleet.backupAgents,
      secretsKey,
      backup: { now: () => new Date(now), poll: { pollMs: 1 } },
    });
  let recovery: string;
  beforeEach(async () => {
    fleet = new FakeBackupFleet();
    store = new SqliteStore(':memory:');
    now = T0;
    controller = make();
    recovery = (await controller.backups.keyCreate('bk')).recoveryKey;
    await controller.apply(text(), 'b.yaml', task());
  });
  afterEach(async () => {
    fleet.close();
    await store.close();
  });
  const events = async (prefix: string) =>
    (await store.events(500)).filter((e) => e.kind.startsWith(prefix)).map((e) => `${e.kind} ${e.message}`);
  const backupCalls = () =>
    fleet.calls.filter((c) => c.method === 'startBackup').map((c) => c.req as BackupRunRequest);

  it('runs a backup through the VM host agent: store ensured, key attached, job polled; then retention, GC and the offsite sync', async () => {
    const t = task();
    const r = await controller.backups.run({ vm: 'web1' }, t);
    expect(r.store).toBe('site');
    expect(r.snapshot.id).toBe('web1@20261201T020000Z');
    const [req] = backupCalls();
    expect(req).toMatchObject({
      vm: 'web1',
      policy: 'nightly',
      snapshot: 'web1@20261201T020000Z',
      // Agents reach the store on the host's address, never through the controller's relay.
      store: { store: 'site', host: 'b1', agent: 'https://10.0.0.2:7443' },
      key: { name: 'bk' },
      full: false,
    });
    expect(req!.base).toBeUndefined();
    expect(fleet.calls.find((c) => c.method === 'backupStoreEnsure')).toMatchObject({ host: 'b1' });
    // The offsite store pulled it from the site store's https address.
    const pull = fleet.calls.find((c) => c.method === 'pull');
    expect(pull).toMatchObject({
      host: 'b2',
      req: { store: 'vault', req: { from: { store: 'site', agent: 'https://10.0.0.2:7443' } } },
    });
    expect(fleet.storeOf('b2', 'vault').manifests.has(r.snapshot.id)).toBe(true);
    expect(fleet.calls.some((c) => c.method === 'gc' && c.host === 'b1')).toBe(true);
    expect(await events('backup.succeeded')).toEqual([
      expect.stringContaining('policy nightly web1@20261201T020000Z in site'),
    ]);
    expect(t.lines.join('\n')).toMatch(/no earlier snapshot: full/);
  });

  it('builds on the newest snapshot whose verify did not fail, and keeps what retention says (last 2)', async () => {
    await controller.backups.run({ vm: 'web1' }, task());
    now += 60 * MIN;
    await controller.backups.run({ vm: 'web1' }, task());
    // The newest one's verify failed: the next backup builds on the one before.
    fleet.storeOf('b1', 'site').verify.set('web1@20261201T030000Z', {
      ok: false,
      at: new Date(now).toISOString(),
      problems: ['chunk missing'],
    });
    now += 60 * MIN;
    await controller.backups.run({ vm: 'web1' }, task());
    expect(backupCalls().map((c) => c.base)).toEqual([
      undefined,
      'web1@20261201T020000Z',
      'web1@20261201T020000Z',
    ]);
    expect([...fleet.storeOf('b1', 'site').manifests.keys()].sort()).toEqual([
      'web1@20261201T030000Z',
      'web1@20261201T040000Z',
    ]);
    expect(await events('backup.pruned')).toEqual([expect.stringContaining('deleted web1@20261201T020000Z')]);
    // --full reads everything again.
    now += 60 * MIN;
    await controller.backups.run({ vm: 'web1', full: true }, task());
    expect(backupCalls()[3]).toMatchObject({ full: true });
    expect(backupCalls()[3]!.base).toBeUndefined();
  });

  it('refuses a backup of a VM whose host is unreachable, naming its state, and asks no agent to start anything', async () => {
    await store.put(hostKey('h1'), {
      state: 'unreachable',
      since: '2026-12-01T01:50:00.000Z',
      lastSeen: '2026-12-01T01:49:55.000Z',
      missed: 3,
      error: 'ECONNREFUSED',
    });
    await expect(controller.backups.run({ vm: 'web1' }, task())).rejects.toThrow(
      /backup of vm web1: host h1 is unreachable \(since 2026-12-01T01:50:00.000Z, last seen 2026-12-01T01:49:55.000Z: ECONNREFUSED\)/,
    );
    expect(backupCalls()).toEqual([]);
    expect(await events('backup.failed')).toEqual([expect.stringContaining('host h1 is unreachable')]);
  });

  it('fails a backup whose agent job fails with the agent error, and the next one still works', async () => {
    fleet.failBackup = 'nbd: connection reset';
    await expect(controller.backups.run({ vm: 'web1' }, task())).rejects.toThrow(
      /backup of vm web1 failed on h1: nbd: connection reset/,
    );
    expect(await events('backup.failed')).toHaveLength(1);
    now += MIN;
    await expect(controller.backups.run({ vm: 'web1' }, task())).resolves.toMatchObject({ store: 'site' });
  });

  it('never puts the key in answers, events, progress or the recovery path: only in the requests that need it', async () => {
    const value = parseRecoveryKey(recovery).toString('base64');
    const t = task();
    const run = await controller.backups.run({ vm: 'web1' }, t);
    const answers = JSON.stringify([
      run,
      await controller.backups.list({}),
      await controller.backups.status(),
      await controller.backups.verify({ deep: true }, t),
      await controller.backups.prune({ dryRun: true, gc: true }, t),
      await store.events(500),
      t.lines,
      await controller.backups.keyImport('bk2', recovery),
    ]);
    expect(answers).not.toContain(value);
    expect(answers).not.toContain(recovery);
    expect(answers).not.toContain(recovery.replace(/-/g, ''));
    // The key went to the VM's host with the backup, and to the store's host for the deep verify only.
    const carrying = fleet.calls
      .filter((c) => JSON.stringify(c.req).includes(value))
      .map((c) => `${c.method}@${c.host}`);
    expect(carrying.sort()).toEqual(['startBackup@h1', 'verify@b1', 'verify@b2']);
    // Keys are never replaced.
    await expect(controller.backups.keyCreate('bk')).rejects.toThrow(/secret bk exists already/);
    await expect(controller.backups.keyImport('bk', recovery)).rejects.toThrow(/secret bk exists already/);
  });

  it('keeps schedule state in the store: a restarted manager neither repeats a run nor loses a due one', async () => {
    let m = controller.backupManager();
    await m.tick();
    await m.settled();
    expect(backupCalls()).toHaveLength(1);
    expect(await store.get(scheduleKey('nightly'))).toMatchObject({
      lastRunAt: new Date(T0).toISOString(),
      lastOutcome: 'succeeded',
    });
    await m.stop();
    // A new controller process on the same store, 5 minutes later: not due yet.
    now = T0 + 5 * MIN;
    controller = make();
    m = controller.backupManager();
    await m.tick();
    await m.settled();
    expect(backupCalls()).toHaveLength(1);
    // 10 minutes after the last run: due, runs once however many ticks come.
    now = T0 + 10 * MIN;
    await m.tick();
    await m.tick();
    await m.settled();
    await m.tick();
    await m.settled();
    expect(backupCalls().map((c) => c.snapshot)).toEqual(['web1@20261201T020000Z', 'web1@20261201T021000Z']);
    expect((await controller.backups.status()).policies[0]).toMatchObject({
      name: 'nightly',
      lastOutcome: 'succeeded',
      lastRunAt: new Date(T0 + 10 * MIN).toISOString(),
      nextRunAt: new Date(T0 + 20 * MIN).toISOString(),
    });
    await m.stop();
  });

  it('skips a VM that is busy with another backup and records the run as failed, naming it', async () => {
    const release = controller.backups.d.locks.acquire('web1', 'a test');
    const m = controller.backupManager();
    await m.tick();
    await m.settled();
    release();
    expect(backupCalls()).toEqual([]);
    expect(await store.get(scheduleKey('nightly'))).toMatchObject({
      lastOutcome: 'failed',
      lastError: expect.stringContaining('vm web1: busy'),
    });
    await m.stop();
  });

  it('writes an objective-drift event when the RPO is exceeded, and objective-ok when met again (once each)', async () => {
    const m = controller.backupManager();
    await m.tick();
    await m.settled();
    // Restore test not run yet: RTO unknown; the copies: live VM + site + vault on 3 machines, one offsite.
    const s = await controller.backups.status();
    expect(s.objectives[0]).toMatchObject({
      policy: 'nightly',
      vm: 'web1',
      rpo: { state: 'ok' },
      rule: { state: 'ok' },
    });
    expect(await events('backup.objective')).toEqual([]);
    now = T0 + 9 * MIN;
    await m.evaluate();
    now = T0 + 16 * MIN;
    await m.evaluate();
    await m.evaluate();
    expect(await events('backup.objective')).toEqual([
      expect.stringMatching(/^backup.objective-drift policy nightly vm web1: RPO in drift/),
    ]);
    // The same drift in the metrics snapshot alert rules read (RTO: no restore test yet, so no series).
    const gauge = (snap: MetricsSnapshot, objective: string) =>
      snap.series.find(
        (x) =>
          x.name === 'vmlink_backup_objective_ok' &&
          x.labels.objective === objective &&
          x.labels.vm === 'web1',
      )?.value;
    let snap = await controller.metrics.collectNow();
    expect([gauge(snap, 'rpo'), gauge(snap, 'rto'), gauge(snap, 'rule')]).toEqual([0, undefined, 1]);
    await controller.backups.run({ vm: 'web1' }, task());
    await m.evaluate();
    expect(await events('backup.objective')).toEqual([
      expect.stringMatching(/^backup.objective-drift/),
      'backup.objective-ok policy nightly vm web1: every objective met again',
    ]);
    snap = await controller.metrics.collectNow();
    expect(gauge(snap, 'rpo')).toBe(1);
    await m.stop();
    // A stopped manager (a standby) publishes no objective.
    snap = await controller.metrics.collectNow();
    expect(gauge(snap, 'rule')).toBeUndefined();
  });

  it('restores as a new VM: fresh MACs, no fixed address, on --network; recorded, and apply leaves it alone', async () => {
    const { snapshot } = await controller.backups.run({ vm: 'web1' }, task());
    const t = task();
    const r = await controller.backups.restore(
      { snapshot: snapshot.id, target: { kind: 'new', name: 'web1-copy', network: 'iso', start: true } },
      t,
    );
    expect(r).toMatchObject({
      snapshot: snapshot.id,
      store: 'site',
      vm: 'web1-copy',
      host: 'h1',
      bytesWritten: 4096,
    });
    const made = fleet.host('h1').vms.get('web1-copy');
    expect(made?.state).toBe('running');
    expect(made?.config?.nics).toEqual([
      expect.objectContaining({
        network: 'iso',
        mac: derivedMac('web1-copy', 0),
        tap: expect.stringContaining('web1-copy'),
      }),
    ]);
    expect(made?.config?.nics[0]?.staticIp).toBeUndefined();
    expect(await store.get(restoredKey('web1-copy'))).toMatchObject({
      host: 'h1',
      snapshot: snapshot.id,
      store: 'site',
    });
    expect((await controller.backups.restored()).restored.map((x) => x.name)).toEqual(['web1-copy']);
    // The planner does not delete it, and an apply keeps it.
    const plan = await controller.plan(text(), 'b.yaml');
    expect(plan.plan.steps.filter((s) => s.kind === 'vm.delete')).toEqual([]);
    await controller.apply(text(), 'b.yaml', task());
    expect(fleet.host('h1').vms.has('web1-copy')).toBe(true);
    // The name is taken now; discard removes VM and record, and then apply would not see it at all.
    await expect(
      controller.backups.restore(
        { snapshot: snapshot.id, target: { kind: 'new', name: 'web1-copy', start: true } },
        task(),
      ),
    ).rejects.toThrow(/discard it first/);
    await controller.backups.discard('web1-copy', task());
    expect(fleet.host('h1').vms.has('web1-copy')).toBe(false);
    expect(await store.get(restoredKey('web1-copy'))).toBeUndefined();
  });

  it('refuses an in-place restore while the VM runs, naming vm stop; restores once it is stopped', async () => {
    const { snapshot } = await controller.backups.run({ vm: 'web1' }, task());
    await expect(
      controller.backups.restore({ snapshot: snapshot.id, target: { kind: 'in-place' } }, task()),
    ).rejects.toThrow(/vm web1 is running on h1: .*vmlink vm stop web1/);
    expect(fleet.calls.filter((c) => c.method === 'startRestore')).toEqual([]);
    await controller.vmPower('web1', 'stop');
    const r = await controller.backups.restore(
      { snapshot: snapshot.id, target: { kind: 'in-place' } },
      task(),
    );
    expect(r).toMatchObject({ vm: 'web1', host: 'h1', bytesWritten: 4096 });
    expect(fleet.calls.find((c) => c.method === 'startRestore')?.req).toMatchObject({
      vm: 'web1',
      snapshot: snapshot.id,
    });
  });

  it('refuses a restore under a policy whose key does not match the snapshot, before anything is written', async () => {
    const { snapshot } = await controller.backups.run({ vm: 'web1' }, task());
    // Seal another key under the same name on a fresh controller state: the snapshot's fingerprint no longer matches.
    await store.delete('secret/bk');
    await controller.backups.keyCreate('bk');
    await expect(
      controller.backups.restore(
        { snapshot: snapshot.id, target: { kind: 'new', name: 'copy2', start: true } },
        task(),
      ),
    ).rejects.toThrow(/no policy's key opens snapshot web1@20261201T020000Z/);
    await expect(
      controller.backups.restore(
        { snapshot: snapshot.id, policy: 'nightly', target: { kind: 'in-place' } },
        task(),
      ),
    ).rejects.toMatchObject({ kind: 'key-mismatch' });
    expect(fleet.host('h1').vms.has('copy2')).toBe(false);
    expect(fleet.calls.filter((c) => c.method === 'startRestore')).toEqual([]);
  });

  it('restore test: restores on the isolated network, waits for the guest agent, records the RTO, deletes the VM', async () => {
    await controller.backups.run({ vm: 'web1' }, task());
    fleet.guestDelay.set('rt-web1', 2);
    const r = await controller.backups.restoreTest('nightly', undefined, task());
    expect(r.results).toEqual([
      expect.objectContaining({ vm: 'web1', ok: true, snapshot: 'web1@20261201T020000Z' }),
    ]);
    expect(fleet.host('h1').vms.has('rt-web1')).toBe(false);
    expect(await store.get(restoredKey('rt-web1'))).toBeUndefined();
    expect(await store.get(rtoKey('nightly', 'web1'))).toMatchObject({
      ok: true,
      seconds: expect.any(Number),
    });
    expect(await events('backup.restore-test')).toEqual([
      expect.stringMatching(/^backup.restore-tested policy nightly vm web1/),
    ]);
    const created = fleet.host('h1').actions.find((a) => a.kind === 'vm.create' && a.vm.name === 'rt-web1');
    expect(created).toMatchObject({ vm: { nics: [expect.objectContaining({ network: 'iso' })] } });
    expect((await controller.backups.status()).objectives[0]?.rto.state).toBe('ok');
  });

  it('lists snapshots of every store and names the stores whose host does not answer', async () => {
    await controller.backups.run({ vm: 'web1' }, task());
    fleet.host('b2').down = true;
    const l = await controller.backups.list({ vm: 'web1' });
    expect(l.snapshots.map((s) => `${s.store} ${s.snapshot.id}`)).toEqual(['site web1@20261201T020000Z']);
    expect(l.unreachable).toEqual([{ store: 'vault', reason: expect.stringContaining('ECONNREFUSED') }]);
  });

  it('serves the routes of wire-backup.ts: keys answered once and audited by name only, runs as backup tasks', async () => {
    const tasks = new TaskManager();
    const app = await createControllerApi(controller, tasks);
    try {
      const created = await app.inject({ method: 'POST', url: '/v1/backups/keys', payload: { name: 'bk3' } });
      expect(created.statusCode).toBe(200);
      const { recoveryKey, fingerprint } = created.json() as { recoveryKey: string; fingerprint: string };
      expect(fingerprint).toMatch(/^[0-9a-f]{32}$/);
      const accepted = await app.inject({ method: 'POST', url: '/v1/backups/run', payload: { vm: 'web1' } });
      expect(accepted.statusCode).toBe(202);
      const done = await tasks.wait((accepted.json() as { taskId: string }).taskId);
      expect(done).toMatchObject({
        kind: 'backup',
        state: 'succeeded',
        result: { store: 'site', snapshot: { vm: 'web1' } },
      });
      const status = await app.inject({ method: 'GET', url: '/v1/backups/status' });
      expect(status.statusCode).toBe(200);
      expect(status.json()).toMatchObject({ policies: [{ name: 'nightly', nextRunAt: expect.any(String) }] });
      const bad = await app.inject({
        method: 'POST',
        url: '/v1/restores',
        payload: { snapshot: 'web1', target: { kind: 'in-place' } },
      });
      expect(bad.statusCode).toBe(422);
      const audit = JSON.stringify(await store.auditEntries(undefined, 100));
      expect(audit).toContain('"object":"bk3"');
      expect(audit).not.toContain(recoveryKey);
    } finally {
      await app.close();
    }
  });
});
