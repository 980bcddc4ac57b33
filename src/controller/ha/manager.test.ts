import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clusterSpec, task, vm } from '../../../test/helpers/cluster-spec.js';
import { FakeFleet } from '../../../test/helpers/fake-agents.js';
import { FakeCoordination } from '../../../test/helpers/fake-coordination.js';
import type { AgentAction } from '../../agent/wire.js';
import { RecordingRunner } from '../../exec/runner.js';
import { compareTokens } from '../../shared/cluster.js';
import { Controller } from '../controller.js';
import { claimMigration, releaseMigration } from '../migrate/in-flight.js';
import { SqliteStore } from '../store/sqlite.js';
import type { HaManager } from './manager.js';
import { parseHaTimes } from './manager.js';

const fenceOf = (a: AgentAction) => (a as { fence?: { token: string } }).fence?.token;

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('HA manager (fake agents, SQLite, fake leases)', () => {
  let fleet: FakeFleet;
  let store: SqliteStore;
  let coord: FakeCoordination;
  let controller: Controller;
  let ha: HaManager;
  beforeEach(() => {
    fleet = new FakeFleet();
    store = new SqliteStore(':memory:');
    coord = new FakeCoordination();
    coord.setLive(['h1', 'h2', 'h3']);
    controller = new Controller(store, new RecordingRunner(), { agents: fleet.agents, coordination: coord });
    ha = controller.haManager()!;
  });
  afterEach(async () => {
    await ha.stop();
    fleet.close();
    await store.close();
  });
  const events = async (prefix: string) =>
    (await store.events(500)).filter((e) => e.kind.startsWith(prefix)).map((e) => `${e.kind} ${e.message}`);

  it('restarts the HA VMs of a host whose lease ended on a live host, with a larger token; leaves the others', async () => {
    const text = clusterSpec(
      vm('web', ', host: h1, ha: { state: started }') +
        vm('db', ', host: h1, ha: { state: started, priority: 5, hosts: [h1, h3] }') +
        vm('tmp', ', host: h1'),
    );
    await controller.apply(text, 'c.yaml', task());
    const before = await controller.ownership.get('web');
    ha.start();
    await ha.settled();
    expect(await events('ha.')).toEqual([
      expect.stringMatching(/^ha.place /),
      expect.stringMatching(/^ha.place /),
      expect.stringMatching(/^ha.place /),
    ]);
    fleet.clearSent();
    fleet.host('h1').down = true;
    coord.setLive(['h2', 'h3']);
    const started = await until('both restarts', async () => {
      const s = await events('ha.started');
      return s.length === 2 && s;
    });
    const web = await controller.ownership.get('web');
    const db = await controller.ownership.get('db');
    expect(db).toMatchObject({ host: 'h3', from: 'h1', reason: 'ha-restart' });
    expect(web?.host).not.toBe('h1');
    expect(web).toMatchObject({ from: 'h1', reason: 'ha-restart', specHost: 'h1' });
    expect(compareTokens(web!.token, before!.token)).toBe(1);
    expect((await controller.ownership.get('tmp'))?.host).toBe('h1');
    // The targets got create and start with the new tokens; nothing went to the failed host.
    for (const o of [web!, db!]) {
      const acts = fleet.host(o.host).actions.filter((a) => a.kind === 'vm.create' || a.kind === 'vm.start');
      expect(
        acts
          .filter((a) => (a.kind === 'vm.start' ? a.name : (a as { vm: { name: string } }).vm.name) === o.vm)
          .map((a) => [a.kind, fenceOf(a)]),
      ).toEqual([
        ['vm.create', o.token],
        ['vm.start', o.token],
      ]);
      expect(fleet.host(o.host).vms.get(o.vm)?.state).toBe('running');
    }
    expect(fleet.host('h1').actions).toEqual([]);
    const log = await events('ha.');
    expect(log).toContainEqual(expect.stringMatching(/^ha.host-failed host h1: its lease ended/));
    // Priority first.
    expect(log.findIndex((l) => l.startsWith('ha.assigned vm db'))).toBeLessThan(
      log.findIndex((l) => l.startsWith('ha.assigned vm web')),
    );
    const t = parseHaTimes(started[0]!);
    expect(t.detected).toBeLessThanOrEqual(t.assigned!);
    expect(t.assigned).toBeLessThanOrEqual(t.started!);
    // Where the VMs are now is what plans and views see.
    const placed = (await controller.currentSpec())!.spec.vms.map((v) => [v.name, v.host]);
    expect(placed).toEqual([
      ['web', web!.host],
      ['db', 'h3'],
      ['tmp', 'h1'],
    ]);
  });

  it('removes the stale copy when the failed host returns, and starts nothing twice', async () => {
    await controller.apply(clusterSpec(vm('web', ', host: h1, ha: { state: started }')), 'c.yaml', task());
    ha.start();
    fleet.host('h1').down = true;
    coord.setLive(['h2', 'h3']);
    await until('restart', async () => (await events('ha.started')).length === 1);
    const owner = await controller.ownership.get('web');
    fleet.clearSent();
    // h1 fenced itself (its agent stopped web) and comes back.
    fleet.host('h1').vms.get('web')!.state = 'stopped';
    fleet.host('h1').down = false;
    coord.setLive(['h1', 'h2', 'h3']);
    await until('stale copy removed', async () => !fleet.host('h1').vms.has('web'));
    expect(await events('ha.host-recovered')).toEqual([
      expect.stringMatching(/^ha.host-recovered host h1: its lease is back/),
    ]);
    expect(fleet.host('h1').actions.map((a) => a.kind)).not.toContain('vm.start');
    expect(fleet.host(owner!.host).vms.get('web')?.state).toBe('running');
    // A user apply afterwards keeps it where HA put it, without --allow-destroy.
    const r = await controller.apply(
      clusterSpec(vm('web', ', host: h1, ha: { state: started }')),
      'c.yaml',
      task(),
    );
    expect(r.applied).toBe(0);
    expect(r.text).toContain(`@ vm web on ${owner!.host} (HA restarted it from h1)`);
  });

  it('drains a host in maintenance (stop, reassign, start) and places nothing there until it is off', async () => {
    await controller.apply(
      clusterSpec(vm('web', ', host: h2, ha: { state: started }') + vm('pet', ', host: h2')),
      'c.yaml',
      task(),
    );
    ha.start();
    await ha.settled();
    const answer = await controller.ha.maintenance('h2', true, 'ops');
    expect(answer).toEqual({ host: 'h2', on: true, moves: ['web'], stays: ['pet'] });
    await until('moved', async () => (await events('ha.started')).length === 1);
    const web = await controller.ownership.get('web');
    expect(web).toMatchObject({ from: 'h2', reason: 'maintenance' });
    expect(['h1', 'h3']).toContain(web!.host);
    expect(fleet.host('h2').actions.map((a) => `${a.kind}`)).toContain('vm.stop');
    expect(fleet.host(web!.host).vms.get('web')?.state).toBe('running');
    const view = await controller.ha.view(50);
    expect(view.hosts.find((h) => h.name === 'h2')).toMatchObject({ live: true, maintenance: { by: 'ops' } });
    expect(view.vms.find((v) => v.name === 'web')).toMatchObject({
      owner: { host: web!.host },
      policy: 'started',
    });
    expect(view.decisions.map((e) => e.kind)).toContain('ha.move');
    expect((await controller.ha.maintenance('h2', false, 'ops')).moves).toEqual([]);
  });

  it('leaves a migrating VM alone until its migration settled (its record may name a target not running it yet)', async () => {
    await controller.apply(clusterSpec(vm('web', ', host: h2, ha: { state: started }')), 'c.yaml', task());
    ha.start();
    await ha.settled();
    expect(claimMigration('web')).toBe(true);
    try {
      await controller.ha.maintenance('h2', true, 'ops');
      await until('skipped', async () => (await events('ha.wait-migration')).length > 0);
      expect(fleet.host('h2').actions.map((a) => a.kind)).not.toContain('vm.stop');
      expect((await controller.ownership.get('web'))?.host).toBe('h2');
    } finally {
      releaseMigration('web');
    }
    await until('moved once settled', async () => (await events('ha.started')).length === 1);
  });

  it('never starts a user-stopped VM: its owner moves, it stays down', async () => {
    await controller.apply(clusterSpec(vm('web', ', host: h1, ha: { state: started }')), 'c.yaml', task());
    await controller.vmPower('web', 'stop', false, 'alice');
    ha.start();
    fleet.clearSent();
    fleet.host('h1').down = true;
    coord.setLive(['h2', 'h3']);
    await until('reassigned', async () => (await controller.ownership.get('web'))?.host !== 'h1');
    await until(
      'reconciled',
      async () =>
        !(await events('ha.')).some((e) => e.startsWith('ha.reconcile-failed')) &&
        (await events('ha.assigned')).length === 1,
    );
    await ha.settled();
    expect(fleet.sent().filter((s) => s.includes('vm.start'))).toEqual([]);
    expect((await controller.ha.view(0)).vms[0]).toMatchObject({
      desiredState: 'stopped',
      userStopped: { by: 'alice' },
    });
  });

  it('waits for a target whose lease is younger than 3 s', async () => {
    await controller.apply(
      clusterSpec(vm('web', ', host: h1, ha: { state: started }'), ['h1', 'h2']),
      'c.yaml',
      task(),
    );
    ha.start();
    fleet.host('h1').down = true;
    coord.setLive([]);
    await until('h1 failed', async () => (await events('ha.host-failed')).length === 2);
    coord.setLive(['h2'], 0);
    await ha.settled();
    expect((await controller.ownership.get('web'))?.host).toBe('h1');
    expect((await events('ha.wait')).at(-1)).toMatch(
      /^ha.wait vm web: h1 failed; .*h2: lease 0.0s old, a target at 3.0s/,
    );
  });
});
