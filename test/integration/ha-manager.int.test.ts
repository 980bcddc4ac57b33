// The HA manager against a real etcd (one member on loopback): the etcd store and coordination as the cluster runs
// them, host leases held by the test as agents hold theirs, and fake agents for the hosts (the agent's own token
// check and QEMU are agent-lease's and the drills' tests). A host whose lease runs out has its HA VMs reassigned
// with larger tokens (etcd revisions) and started on a live host with them; maintenance drains a host; a
// user-stopped VM stays down; a controller acting on a spent token changes nothing.
import type { Etcd3, Lease } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentAction } from '../../src/agent/wire.js';
import { EtcdCoordination } from '../../src/controller/cluster/etcd-coordination.js';
import { Controller } from '../../src/controller/controller.js';
import type { HaManager } from '../../src/controller/ha/manager.js';
import { parseHaTimes } from '../../src/controller/ha/manager.js';
import { OwnershipStore } from '../../src/controller/ownership.js';
import { EtcdStore } from '../../src/controller/store/etcd.js';
import { RecordingRunner } from '../../src/exec/runner.js';
import { clusterKeys, compareTokens, ETCD_PREFIX, ownerKey } from '../../src/shared/cluster.js';
import { etcdClient } from '../../src/shared/etcd.js';
import { clusterSpec, task, vm } from '../helpers/cluster-spec.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { FakeFleet } from '../helpers/fake-agents.js';

let etcd: TestEtcd;
const clients: Etcd3[] = [];
let admin: Etcd3;

function client(): Etcd3 {
  const c = etcdClient({ endpoints: [etcd.endpoint] });
  clients.push(c);
  return c;
}

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A host's agent as etcd sees it: its liveness key on a 2 s lease, kept alive until `die()`. */
async function hostLease(host: string): Promise<{ lease: Lease; die: () => void }> {
  const lease = admin.lease(2);
  const leaseId = await lease.grant();
  await lease
    .put(clusterKeys.hostLease(host))
    .value(JSON.stringify({ host, leaseId, since: new Date().toISOString(), heartbeatSeconds: 1 }));
  // Stop renewing: etcd deletes the key when the lease ends, as when the host dies.
  return { lease, die: () => lease.release() };
}

const fenceOf = (a: AgentAction) => (a as { fence?: { token: string } }).fence?.token;
const vmOf = (a: AgentAction) =>
  a.kind === 'vm.create' || a.kind === 'vm.hotplug' ? a.vm.name : 'name' in a ? String(a.name) : '';

beforeAll(async () => {
  etcd = await startTestEtcd();
  admin = client();
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await etcd?.close();
});

describe('HA manager on etcd', () => {
  let fleet: FakeFleet;
  let store: EtcdStore;
  let coordination: EtcdCoordination;
  let controller: Controller;
  let ha: HaManager | undefined;
  const leases = new Map<string, { lease: Lease; die: () => void }>();

  beforeAll(async () => {
    await admin.delete().prefix(ETCD_PREFIX).exec();
    fleet = new FakeFleet();
    const c = client();
    store = new EtcdStore(c);
    coordination = new EtcdCoordination(c, { heartbeatSeconds: 1 });
    // etcd+http: no client certificates, so no etcd users (etcdAuth false); the membership is still written.
    controller = new Controller(store, new RecordingRunner(), {
      agents: fleet.agents,
      coordination,
      etcdAuth: false,
    });
    for (const h of ['h1', 'h2', 'h3']) leases.set(h, await hostLease(h));
  }, 60_000);

  afterAll(async () => {
    await ha?.stop();
    for (const l of leases.values()) l.die();
    await coordination?.close();
    fleet?.close();
  });

  const events = async (prefix: string) =>
    (await store.events(500)).filter((e) => e.kind.startsWith(prefix)).map((e) => `${e.kind} ${e.message}`);

  it('places VMs with owner records whose tokens are etcd revisions, and writes the agents’ membership', async () => {
    const text = clusterSpec(
      vm('web', ', host: h1, ha: { state: started, priority: 10 }') +
        vm('db', ', host: h1, ha: { state: started, group: g }') +
        vm('cache', ', ha: { state: started, group: g }') +
        vm('pet', ', host: h1') +
        vm('idle', ', host: h1, ha: { state: started }'),
    );
    await controller.apply(text, 'cluster.yaml', task());
    const owners = await controller.ownership.list();
    expect(owners.map((o) => o.vm).sort()).toEqual(['cache', 'db', 'idle', 'pet', 'web']);
    // The token is the key's mod revision in etcd.
    const raw = await admin.get(clusterKeys.kv(ownerKey('web'))).exec();
    expect(owners.find((o) => o.vm === 'web')!.token).toBe(raw.kvs[0]!.mod_revision);
    expect(await store.getClusterMembers()).toEqual({
      heartbeatSeconds: 5,
      hosts: [
        { name: 'h1', agent: 'https://10.0.0.1:7443' },
        { name: 'h2', agent: 'https://10.0.0.2:7443' },
        { name: 'h3', agent: 'https://10.0.0.3:7443' },
      ],
    });
    // Each start carried its owner's token.
    for (const o of owners) {
      const starts = fleet.host(o.host).actions.filter((a) => a.kind === 'vm.start' && vmOf(a) === o.vm);
      expect(starts.map(fenceOf)).toEqual([o.token]);
    }
    await controller.vmPower('idle', 'stop', false, 'alice');
  }, 60_000);

  it('restarts the HA VMs of a host whose lease ended elsewhere with larger tokens; not the unprotected one', async () => {
    ha = controller.haManager()!;
    ha.start();
    // Targets must have held their lease 3 s (as this controller sees them).
    await new Promise((r) => setTimeout(r, 3_200));
    const before = new Map((await controller.ownership.list()).map((o) => [o.vm, o]));
    fleet.clearSent();
    fleet.host('h1').down = true;
    const killedAt = Date.now();
    leases.get('h1')!.die();
    const started = await until('web and db restarted', async () => {
      const s = await events('ha.started');
      return s.length >= 2 && s;
    });
    const after = new Map((await controller.ownership.list()).map((o) => [o.vm, o]));
    for (const name of ['web', 'db']) {
      const o = after.get(name)!;
      expect(o.host).not.toBe('h1');
      expect(o).toMatchObject({ from: 'h1', reason: 'ha-restart' });
      expect(compareTokens(o.token, before.get(name)!.token)).toBe(1);
      const acts = fleet.host(o.host).actions.filter((a) => vmOf(a) === name);
      expect(acts.map((a) => [a.kind, fenceOf(a)])).toEqual([
        ['vm.create', o.token],
        ['vm.start', o.token],
      ]);
    }
    // Anti-affinity: db does not join cache.
    expect(after.get('db')!.host).not.toBe(after.get('cache')!.host);
    expect(after.get('pet')!.host).toBe('h1');
    expect(fleet.host('h1').actions).toEqual([]);
    const log = await events('ha.');
    expect(log.findIndex((l) => l.startsWith('ha.restart vm web'))).toBeLessThan(
      log.findIndex((l) => l.startsWith('ha.restart vm db')),
    );
    const t = parseHaTimes(started[0]!);
    console.log(
      `lease released -> detected ${t.detected! - killedAt} ms, -> assigned ${t.assigned! - killedAt} ms, -> started ${t.started! - killedAt} ms (TTL 2 s, fake agents)`,
    );
    expect(t.detected).toBeGreaterThanOrEqual(killedAt);
  }, 60_000);

  it('a second controller acting on a spent token changes nothing', async () => {
    const other = new OwnershipStore(new EtcdStore(client()));
    const web = await other.get('web');
    const stale = (await events('ha.assigned')).find((e) => e.includes('vm web'));
    expect(stale).toBeDefined();
    // The token before the restart is spent: its compare-and-set loses.
    expect(await other.assign('web', 'h1', 'ha-restart', '1', 'h1')).toBeUndefined();
    expect(await other.get('web')).toEqual(web);
  });

  it('drains a host in maintenance: its HA VMs stop there and start elsewhere', async () => {
    const busy = (await controller.ownership.get('web'))!.host;
    const rest = ['h2', 'h3'].find((h) => h !== busy)!;
    const n = (await events('ha.started')).length;
    const answer = await controller.ha.maintenance(busy, true, 'ops');
    expect(answer.moves).toContain('web');
    await until('web moved', async () =>
      (await events('ha.started')).slice(n).some((e) => e.includes('vm web on')),
    );
    expect(await controller.ownership.get('web')).toMatchObject({
      host: rest,
      from: busy,
      reason: 'maintenance',
    });
    const onBusy = fleet
      .host(busy)
      .actions.filter((a) => vmOf(a) === 'web')
      .map((a) => a.kind);
    expect(onBusy).toContain('vm.stop');
    expect(fleet.host(rest).vms.get('web')?.state).toBe('running');
    await controller.ha.maintenance(busy, false, 'ops');
  }, 60_000);

  it('never starts the user-stopped VM: its owner moves off a failed host, it stays down', async () => {
    const idle = await controller.ownership.get('idle');
    expect(idle).toMatchObject({ from: 'h1', reason: 'ha-restart' });
    expect(await events('ha.keep-stopped')).toContainEqual(
      expect.stringMatching(/^ha.keep-stopped vm idle: h1 -> h\d: h1 failed; a user stopped it/),
    );
    expect(fleet.sent().filter((s) => s.endsWith('vm.start idle'))).toEqual([]);
    const view = await controller.ha.view(100);
    expect(view.vms.find((v) => v.name === 'idle')).toMatchObject({
      owner: { host: idle!.host },
      desiredState: 'stopped',
      userStopped: { by: 'alice' },
    });
    expect(view.hosts.find((h) => h.name === 'h1')).toMatchObject({ live: false });
  });
});
