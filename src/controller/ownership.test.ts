import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clusterSpec, task, vm } from '../../test/helpers/cluster-spec.js';
import { FakeFleet } from '../../test/helpers/fake-agents.js';
import { FakeCoordination } from '../../test/helpers/fake-coordination.js';
import type { AgentAction } from '../agent/wire.js';
import { RecordingRunner } from '../exec/runner.js';
import { compareTokens, ownerKey } from '../shared/cluster.js';
import { InvalidSpecError } from '../shared/errors.js';
import { Controller } from './controller.js';
import { OwnershipStore } from './ownership.js';
import { SqliteStore } from './store/sqlite.js';

const fenceOf = (a: AgentAction) => (a as { fence?: { token: string } }).fence?.token;

describe('OwnershipStore', () => {
  let store: SqliteStore;
  beforeEach(() => {
    store = new SqliteStore(':memory:');
  });
  afterEach(async () => store.close());

  it('assigns by compare-and-set: a stale token loses and writes nothing, every reassignment has a larger token', async () => {
    const own = new OwnershipStore(store);
    const a = await own.assign('web', 'h1', 'spec', null, 'h1');
    expect(a).toMatchObject({ vm: 'web', host: 'h1', reason: 'spec', specHost: 'h1' });
    expect(await own.assign('web', 'h2', 'scheduler', null)).toBeUndefined();
    const b = await own.assign('web', 'h2', 'ha-restart', a!.token, 'h1', 'h1');
    expect(b).toMatchObject({ host: 'h2', from: 'h1', reason: 'ha-restart' });
    expect(compareTokens(b!.token, a!.token)).toBe(1);
    // The first token is spent: a second controller acting on it changes nothing.
    expect(await own.assign('web', 'h3', 'ha-restart', a!.token)).toBeUndefined();
    expect((await own.get('web'))?.host).toBe('h2');
    expect(await own.list()).toEqual([{ ...b }]);
    expect(await own.release('web', a!.token)).toBe(false);
    expect(await own.release('web')).toBe(true);
    expect(await own.get('web')).toBeUndefined();
  });

  it('skips records that do not parse or sit under another VM name', async () => {
    const own = new OwnershipStore(store);
    await store.put(ownerKey('bad'), { vm: 'bad', host: 7 });
    await store.put(ownerKey('alias'), { vm: 'other', host: 'h1', reason: 'spec', since: 'x' });
    await own.assign('ok', 'h1', 'spec', null);
    expect((await own.list()).map((o) => o.vm)).toEqual(['ok']);
    await expect(own.get('bad')).rejects.toThrow(/owner record of vm bad does not parse/);
  });
});

describe('apply in a cluster', () => {
  let fleet: FakeFleet;
  let store: SqliteStore;
  let coord: FakeCoordination;
  let controller: Controller;
  beforeEach(() => {
    fleet = new FakeFleet();
    store = new SqliteStore(':memory:');
    coord = new FakeCoordination();
    coord.setLive(['h1', 'h2', 'h3']);
    controller = new Controller(store, new RecordingRunner(), { agents: fleet.agents, coordination: coord });
  });
  afterEach(async () => {
    fleet.close();
    await store.close();
  });
  const events = async (kind: string) =>
    (await store.events(200)).filter((e) => e.kind === kind).map((e) => e.message);

  it('writes owner records (spec host, else the scheduler), shows placement, and sends each VM start its token', async () => {
    const text = clusterSpec(vm('web', ', host: h1, ha: { state: started }') + vm('db', ', memoryMiB: 512'));
    const r = await controller.apply(text, 'c.yaml', task());
    const owners = await controller.ownership.list();
    expect(owners.map((o) => [o.vm, o.host, o.reason, o.specHost])).toEqual([
      ['db', 'h2', 'scheduler', undefined],
      ['web', 'h1', 'spec', 'h1'],
    ]);
    expect(r.text).toMatch(
      /@ vm db on h2 \(placed by the scheduler: the spec names no host: h2 has the most room/,
    );
    expect(await events('ha.place')).toEqual([
      `vm web on h1 (spec), token ${owners[1]!.token}`,
      `vm db on h2 (scheduler), token ${owners[0]!.token}`,
    ]);
    const starts = [...fleet.hosts.values()].flatMap((h) =>
      h.actions
        .filter((a) => a.kind === 'vm.create' || a.kind === 'vm.start')
        .map((a) => [h.name, a.kind, fenceOf(a)]),
    );
    expect(starts).toEqual([
      ['h1', 'vm.create', owners[1]!.token],
      ['h1', 'vm.start', owners[1]!.token],
      ['h2', 'vm.create', owners[0]!.token],
      ['h2', 'vm.start', owners[0]!.token],
    ]);
    // Applied again: the records stay (same tokens), nothing changes.
    fleet.clearSent();
    const again = await controller.apply(text, 'c.yaml', task());
    expect(again.applied).toBe(0);
    expect(await controller.ownership.list()).toEqual(owners);
    // The placed spec is what views see.
    expect((await controller.currentSpec())?.spec.vms.map((v) => [v.name, v.host, v.placedBy])).toEqual([
      ['web', 'h1', 'owner'],
      ['db', 'h2', 'owner'],
    ]);
  });

  it('follows a spec host change (a new token on the new host) and releases the records of VMs the spec drops', async () => {
    await controller.apply(clusterSpec(vm('web', ', host: h1') + vm('db', ', host: h2')), 'c.yaml', task());
    const before = await controller.ownership.get('web');
    const r = await controller.apply(clusterSpec(vm('web', ', host: h3')), 'c.yaml', task(), {
      allowDestroy: true,
    });
    expect(r.text).toContain('@ vm web on h3 (the spec moves it from h1)');
    const after = await controller.ownership.get('web');
    expect(after).toMatchObject({ host: 'h3', from: 'h1', reason: 'spec', specHost: 'h3' });
    expect(compareTokens(after!.token, before!.token)).toBe(1);
    expect(await controller.ownership.get('db')).toBeUndefined();
    expect(await events('ha.release')).toEqual(['vm db left the spec: its owner record (h2) is released']);
    expect(fleet.host('h3').actions.find((a) => a.kind === 'vm.start')).toMatchObject({
      fence: { token: after!.token },
    });
  });

  it('refuses to send a VM start to a host its owner record does not name', async () => {
    const text = clusterSpec(vm('web', ', host: h1'));
    await controller.apply(text, 'c.yaml', task());
    const spec = (await controller.currentSpec())!.spec;
    const agents = (controller as unknown as { agents: typeof fleet.agents }).agents;
    await expect(agents(spec, 'h2').act({ kind: 'vm.start', name: 'web' })).rejects.toThrow(
      /vm web is owned by h1 \(token \d+, spec\), not h2/,
    );
    expect(fleet.host('h2').actions.filter((a) => a.kind.startsWith('vm.'))).toEqual([]);
    await store.delete(ownerKey('web'));
    await expect(agents(spec, 'h1').act({ kind: 'vm.start', name: 'web' })).rejects.toThrow(
      /has no owner record/,
    );
  });

  it('skips a failed host: it is not asked, its steps are dropped and named, the rest applies', async () => {
    coord.setLive(['h1', 'h2']);
    fleet.host('h3').down = true;
    const r = await controller.apply(
      clusterSpec(vm('web', ', host: h1') + vm('db', ', host: h3')),
      'c.yaml',
      task(),
    );
    expect(r.text).toContain('! host h3 is failed (no live lease): skipped');
    expect(fleet.sent()).toEqual(
      expect.arrayContaining(['h1: network.ensure ov', 'h1: vm.create web', 'h1: vm.start web']),
    );
    expect(fleet.host('h3').actions).toEqual([]);
    // db is owned by h3 anyway: HA moves it when its policy asks.
    expect((await controller.ownership.get('db'))?.host).toBe('h3');
  });

  it('keeps a user-stopped VM stopped at apply until a user starts it', async () => {
    const text = clusterSpec(vm('web', ', host: h1, ha: { state: started }'));
    await controller.apply(text, 'c.yaml', task());
    await controller.vmPower('web', 'stop', false, 'alice');
    expect(await store.get('ha/user-stopped/web')).toMatchObject({ vm: 'web', by: 'alice' });
    fleet.clearSent();
    const r = await controller.apply(text, 'c.yaml', task());
    expect(r.text).toMatch(
      /@ vm web stays stopped \(stopped by alice at .*`vmlink vm start web` starts it\)/,
    );
    expect(fleet.sent()).toEqual([]);
    await controller.vmPower('web', 'start', false, 'alice');
    expect(await store.get('ha/user-stopped/web')).toBeUndefined();
    expect(fleet.host('h1').vms.get('web')?.state).toBe('running');
  });

  it('refuses before any change a placement that admission control rejects, and a VM the scheduler has no room for', async () => {
    const capped = (t: string) =>
      t
        .replace('heartbeatSeconds: 5,', 'heartbeatSeconds: 5, admission: { hostFailures: 1 },')
        .replace(/address: (10\.0\.0\.\d) \}/g, 'address: $1, capacity: { cpus: 4, memoryMiB: 1024 } }');
    const text = capped(
      clusterSpec(
        vm('a', ', host: h1, memoryMiB: 600, ha: { state: started }') +
          vm('b', ', host: h2, memoryMiB: 600, ha: { state: started }') +
          vm('c', ', host: h3, memoryMiB: 600, ha: { state: started }'),
      ),
    );
    const refused = await controller.apply(text, 'c.yaml', task()).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(InvalidSpecError);
    expect(String((refused as Error).message)).toMatch(/vms\[\d\]/);
    expect(fleet.sent()).toEqual([]);
    expect(await controller.ownership.list()).toEqual([]);
    expect(await events('apply.refused')).toHaveLength(1);
    // Without admission control a VM too big for every host is refused by the scheduler.
    const big = clusterSpec(vm('huge', ', memoryMiB: 65536'));
    await expect(controller.apply(big, 'c.yaml', task())).rejects.toBeInstanceOf(InvalidSpecError);
    expect(fleet.sent()).toEqual([]);
  });

  it('leaves specs without a cluster as they were: no owner records, no tokens', async () => {
    const text = `version: 1
hosts:
  - { name: h1, agent: "unix:///fake/h1.sock" }
networks:
  - { name: n, host: h1, mode: nat, cidr: 10.10.0.0/24 }
vms:
  - { name: web, host: h1, nics: [{ network: n }] }
`;
    await controller.apply(text, 's.yaml', task());
    expect(await controller.ownership.list()).toEqual([]);
    expect(fleet.host('h1').actions.every((a) => fenceOf(a) === undefined)).toBe(true);
    await controller.vmPower('web', 'stop');
    expect(await store.get('ha/user-stopped/web')).toBeUndefined();
  });
});
