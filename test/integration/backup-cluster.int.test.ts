// Restores in a cluster against a real etcd (one member on loopback): the etcd store and coordination as the cluster
// runs them, host leases held by the test, and fake backup agents (the agents' own jobs and token checks are
// backup.int's and agent-lease's). A copy made by `restore --as` or a restore test gets an owner record (reason
// `restore`, token = etcd revision) before it is created, its create and start carry that token, apply neither
// releases the record nor deletes the copy, and discarding the copy (or the restore test ending) releases it.
import type { Etcd3, Lease } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentAction } from '../../src/agent/wire.js';
import { FakeBackupFleet } from '../../src/controller/backup/fake-backup.test-util.js';
import { restoredKey } from '../../src/controller/backup/records.js';
import { EtcdCoordination } from '../../src/controller/cluster/etcd-coordination.js';
import { Controller } from '../../src/controller/controller.js';
import { OwnershipStore } from '../../src/controller/ownership.js';
import { EtcdStore } from '../../src/controller/store/etcd.js';
import { RecordingRunner } from '../../src/exec/runner.js';
import { clusterKeys, ETCD_PREFIX, maintenanceKey, ownerKey } from '../../src/shared/cluster.js';
import { etcdClient } from '../../src/shared/etcd.js';
import { task } from '../helpers/cluster-spec.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';

const spec = `version: 1
cluster: { store: etcd, heartbeatSeconds: 5, endpoints: ["https://10.0.0.9:2379"] }
hosts:
  - { name: h1, agent: "unix:///fake/h1.sock", address: 10.0.0.1 }
  - { name: h2, agent: "unix:///fake/h2.sock", address: 10.0.0.2 }
  - { name: h3, agent: "unix:///fake/h3.sock", address: 10.0.0.3 }
  - { name: b1, agent: "unix:///fake/b1.sock", address: 10.0.0.5, role: storage }
networks:
  - { name: ov, mode: vxlan, vni: 100, cidr: 10.20.0.0/24 }
  - { name: iso, host: h2, mode: isolated, cidr: 10.30.0.0/24 }
vms:
  - { name: web1, host: h1, memoryMiB: 2048, nics: [{ network: ov }], disks: [{ name: data, sizeMiB: 64 }] }
backupStores:
  - { name: site, host: b1 }
backups:
  - name: nightly
    vms: [web1]
    store: site
    schedule: "every 1d"
    retention: { last: 2 }
    encryption: { key: bk }
    restoreTest: { schedule: "every 1d", network: iso, host: h2 }
`;

let etcd: TestEtcd;
const clients: Etcd3[] = [];
const client = () => {
  const c = etcdClient({ endpoints: [etcd.endpoint] });
  clients.push(c);
  return c;
};
const fenceOf = (a: AgentAction) => (a as { fence?: { token: string } }).fence?.token;
const actionsOf = (fleet: FakeBackupFleet, host: string, vm: string) =>
  fleet
    .host(host)
    .actions.filter(
      (a) =>
        (a.kind === 'vm.create' && a.vm.name === vm) ||
        (a.kind === 'vm.start' && 'name' in a && a.name === vm),
    )
    .map((a) => `${a.kind} ${fenceOf(a) ?? 'no token'}`);

describe('restores in a cluster (real etcd, fake backup agents)', () => {
  let admin: Etcd3;
  let fleet: FakeBackupFleet;
  let store: EtcdStore;
  let coordination: EtcdCoordination;
  let controller: Controller;
  const leases: Lease[] = [];

  beforeAll(async () => {
    etcd = await startTestEtcd();
    admin = client();
    await admin.delete().prefix(ETCD_PREFIX).exec();
    fleet = new FakeBackupFleet();
    const c = client();
    store = new EtcdStore(c);
    coordination = new EtcdCoordination(c, { heartbeatSeconds: 1 });
    controller = new Controller(store, new RecordingRunner(), {
      agents: fleet.backupAgents,
      coordination,
      etcdAuth: false,
      secretsKey: Buffer.alloc(32, 7),
      backup: { now: () => new Date(), poll: { pollMs: 1 } },
    });
    for (const host of ['h1', 'h2', 'h3', 'b1']) {
      const lease = admin.lease(30);
      const leaseId = await lease.grant();
      await lease
        .put(clusterKeys.hostLease(host))
        .value(JSON.stringify({ host, leaseId, since: new Date().toISOString(), heartbeatSeconds: 1 }));
      leases.push(lease);
    }
    await controller.backups.keyCreate('bk');
    await controller.apply(spec, 'cluster.yaml', task());
    await controller.backups.run({ vm: 'web1' }, task());
  }, 120_000);

  afterAll(async () => {
    for (const l of leases) await l.revoke().catch(() => {});
    await coordination?.close();
    fleet?.close();
    for (const c of clients) c.close();
    await etcd?.close();
  });

  const snapshot = async () => (await controller.backups.list({ vm: 'web1' })).snapshots[0]!.snapshot.id;
  const events = async (prefix: string) =>
    (await store.events(500)).filter((e) => e.kind.startsWith(prefix)).map((e) => `${e.kind} ${e.message}`);

  it('restore --as: the scheduler picks a live host out of maintenance, the owner record comes first and fences create and start; apply keeps both; discard releases', async () => {
    await store.put(maintenanceKey('h2'), { host: 'h2', since: new Date().toISOString(), by: 'test' });
    const t = task();
    const r = await controller.backups.restore(
      { snapshot: await snapshot(), target: { kind: 'new', name: 'copy1', start: true } },
      t,
    );
    await store.delete(maintenanceKey('h2'));
    // h1 runs web1 (2 GiB), h2 is in maintenance: h3 has the most room.
    expect(r.host).toBe('h3');
    expect(t.lines.join('\n')).toMatch(/copy1: placed by the scheduler on h3/);
    const owner = await controller.ownership.get('copy1');
    expect(owner).toMatchObject({ vm: 'copy1', host: 'h3', reason: 'restore' });
    // The token is the record's etcd mod revision, and the agent got it with the create and the start.
    const raw = await admin.get(clusterKeys.kv(ownerKey('copy1'))).exec();
    expect(owner!.token).toBe(raw.kvs[0]!.mod_revision);
    expect(actionsOf(fleet, 'h3', 'copy1')).toEqual([
      `vm.create ${owner!.token}`,
      `vm.start ${owner!.token}`,
    ]);
    // An apply neither releases the record (not a dropped owner) nor deletes the copy.
    await controller.apply(spec, 'cluster.yaml', task());
    expect((await controller.ownership.get('copy1'))?.token).toBe(owner!.token);
    expect(fleet.host('h3').vms.has('copy1')).toBe(true);
    expect(await events('ha.release')).toEqual([]);
    const d = task();
    await controller.backups.discard('copy1', d);
    expect(fleet.host('h3').vms.has('copy1')).toBe(false);
    expect(await controller.ownership.get('copy1')).toBeUndefined();
    expect(await store.get(restoredKey('copy1'))).toBeUndefined();
    expect(await events('ha.release')).toEqual([
      expect.stringMatching(/^ha.release vm copy1 \(a restored copy\) was discarded: .*\(h3, token /),
    ]);
  }, 60_000);

  it('restore --as --host: refused with nothing written when the name already has an owner record (compare-and-set)', async () => {
    // Another controller (or HA) wrote the name first.
    const other = new OwnershipStore(new EtcdStore(client()));
    const theirs = await other.assign('copy2', 'h1', 'user', null);
    await expect(
      controller.backups.restore(
        { snapshot: await snapshot(), target: { kind: 'new', name: 'copy2', host: 'h2', start: true } },
        task(),
      ),
    ).rejects.toMatchObject({
      kind: 'conflict',
      message: expect.stringMatching(
        /vm copy2 has an owner record already \(host h1, token \d+, reason user\)/,
      ),
    });
    expect(fleet.host('h2').vms.has('copy2')).toBe(false);
    expect(await store.get(restoredKey('copy2'))).toBeUndefined();
    expect(await controller.ownership.get('copy2')).toMatchObject({ host: 'h1', token: theirs!.token });
    expect(await other.release('copy2', theirs!.token)).toBe(true);
    // With --host: that host, fenced as well.
    const r = await controller.backups.restore(
      { snapshot: await snapshot(), target: { kind: 'new', name: 'copy2', host: 'h2', start: false } },
      task(),
    );
    expect(r.host).toBe('h2');
    const mine = await controller.ownership.get('copy2');
    expect(actionsOf(fleet, 'h2', 'copy2')).toEqual([`vm.create ${mine!.token}`]);
    await controller.backups.discard('copy2', task());
    expect(await controller.ownership.get('copy2')).toBeUndefined();
  }, 60_000);

  it('restore test: the throwaway VM is owned (fenced) on the isolated network’s host while it runs, released after', async () => {
    const res = await controller.backups.restoreTest('nightly', undefined, task());
    expect(res.results).toEqual([expect.objectContaining({ vm: 'web1', ok: true })]);
    const [create, start] = actionsOf(fleet, 'h2', 'rt-web1');
    expect(create).toMatch(/^vm.create \d+$/);
    expect(start).toBe(create!.replace('create', 'start'));
    expect(fleet.host('h2').vms.has('rt-web1')).toBe(false);
    expect(await controller.ownership.get('rt-web1')).toBeUndefined();
    expect(await store.get(restoredKey('rt-web1'))).toBeUndefined();
  }, 60_000);
});
