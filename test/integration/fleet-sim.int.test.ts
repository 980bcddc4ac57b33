// A simulated fleet of 50 hosts (src/fleet-sim/: the real agent, its API and its lease per host over the in-memory
// drivers) against a real etcd (one member on loopback) and a controller on the etcd store with its API: the
// controller sees every host, applies VMs under HA to them, answers status and vm list, and when one simulated host
// fails (its agent gone, its lease revoked) the HA manager starts its VMs on other hosts with new tokens.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createControllerApi } from '../../src/controller/api.js';
import { EtcdCoordination } from '../../src/controller/cluster/etcd-coordination.js';
import { Controller } from '../../src/controller/controller.js';
import type { HaManager } from '../../src/controller/ha/manager.js';
import { EtcdStore } from '../../src/controller/store/etcd.js';
import { TaskManager } from '../../src/controller/tasks.js';
import { RecordingRunner } from '../../src/exec/runner.js';
import { fleetSpecText, vmName } from '../../src/fleet-sim/fleet-spec.js';
import { FleetSim, hostNames } from '../../src/fleet-sim/sim.js';
import { compareTokens } from '../../src/shared/cluster.js';
import { etcdClient } from '../../src/shared/etcd.js';
import { AnyAnswerSchema, HttpClient } from '../../src/shared/http/client.js';
import { listen } from '../../src/shared/http/server.js';
import { task } from '../helpers/cluster-spec.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';

const HOSTS = hostNames(50, 'flt');
const VMS = 2;
const HEARTBEAT = 5;

let etcd: TestEtcd | undefined;
let sim: FleetSim | undefined;
let client: Etcd3 | undefined;
let coordination: EtcdCoordination | undefined;
let controller: Controller;
let api: FastifyInstance | undefined;
let http: HttpClient;
let ha: HaManager | undefined;
const dir = mkdtempSync(join(tmpdir(), 'vmlink-flt-int-'));

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  etcd = await startTestEtcd();
  sim = new FleetSim({
    hosts: HOSTS,
    dir: join(dir, 'sim'),
    etcd: [etcd.endpoint],
    heartbeatSeconds: HEARTBEAT,
    ownConnection: [HOSTS[9]!],
  });
  await sim.start();
  await until('every simulated host holds its lease', async () => sim!.held() === HOSTS.length);
  client = etcdClient({ endpoints: [etcd.endpoint] });
  const store = new EtcdStore(client);
  coordination = new EtcdCoordination(client, { heartbeatSeconds: HEARTBEAT });
  controller = new Controller(store, new RecordingRunner(), { coordination, etcdAuth: false });
  api = await createControllerApi(controller, new TaskManager());
  await listen(api, `unix://${join(dir, 'ctl.sock')}`);
  http = new HttpClient(`unix://${join(dir, 'ctl.sock')}`, { protocol: 'api' });
}, 180_000);

afterAll(async () => {
  await ha?.stop();
  await api?.close();
  await coordination?.close();
  client?.close();
  await sim?.close();
  await etcd?.close();
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('simulated fleet', () => {
  it('applies VMs under HA to 50 simulated hosts; status and vm list answer for all of them', async () => {
    const text = fleetSpecText({
      hosts: sim!.list().map((h) => ({ name: h.name, address: h.address })),
      vmsPerHost: VMS,
      heartbeatSeconds: HEARTBEAT,
      etcd: ['https://127.0.0.1:2379'],
    });
    await controller.apply(text, 'fleet.yaml', task());
    // Each simulated host's fake hypervisor runs its two VMs, created through the agent's real code path.
    for (const h of sim!.list())
      expect((await h.hypervisor.list()).map((v) => [v.name, v.state]).sort()).toEqual(
        [0, 1].map((i) => [vmName(h.name, i), 'running']),
      );
    const status = (await http.get('/v1/status', AnyAnswerSchema)) as {
      hosts: Array<{ name: string; reachable: boolean; report?: { vms: unknown[] } }>;
    };
    expect(status.hosts).toHaveLength(HOSTS.length);
    expect(status.hosts.filter((h) => h.reachable && h.report?.vms.length === VMS)).toHaveLength(
      HOSTS.length,
    );
    const vms = (await http.get('/v1/vms', AnyAnswerSchema)) as Array<{ name: string; state: string }>;
    expect(vms).toHaveLength(HOSTS.length * VMS);
    expect(vms.every((v) => v.state === 'running')).toBe(true);
  }, 180_000);

  it('a failed simulated host: HA starts its VMs on other hosts with larger tokens', async () => {
    ha = controller.haManager()!;
    ha.start();
    // Targets must have held their lease TARGET_LEASE_MIN_AGE_MS as this controller sees them.
    await new Promise((r) => setTimeout(r, 3_500));
    const victim = HOSTS[7]!;
    const names = [0, 1].map((i) => vmName(victim, i));
    const before = new Map((await controller.ownership.list()).map((o) => [o.vm, o]));
    await sim!.fail(victim, 'clean');
    const moved = await until('both VMs owned elsewhere and running there', async () => {
      const owners = (await controller.ownership.list()).filter((o) => names.includes(o.vm));
      if (owners.length !== names.length || owners.some((o) => o.host === victim)) return false;
      for (const o of owners) {
        const vm = (await sim!.host(o.host).hypervisor.list()).find((v) => v.name === o.vm);
        if (vm?.state !== 'running') return false;
      }
      return owners;
    });
    for (const o of moved) {
      expect(o).toMatchObject({ from: victim, reason: 'ha-restart' });
      expect(compareTokens(o.token, before.get(o.vm)!.token)).toBe(1);
    }
    // The failed host's own VMs stopped with it, and no VM runs twice.
    expect((await sim!.host(victim).hypervisor.list()).every((v) => v.state !== 'running')).toBe(true);
    const running = (await Promise.all(sim!.list().map((h) => h.hypervisor.list())))
      .flat()
      .filter((v) => v.state === 'running')
      .map((v) => v.name);
    expect(new Set(running).size).toBe(running.length);
    expect(running).toHaveLength(HOSTS.length * VMS);
    // The API reports the failed host unreachable and its VMs running where they moved.
    const status = (await http.get('/v1/status', AnyAnswerSchema)) as {
      hosts: Array<{ name: string; reachable: boolean }>;
    };
    expect(status.hosts.find((h) => h.name === victim)?.reachable).toBe(false);
  }, 120_000);

  it('a host that loses etcd fences itself: the lease thread has the agent stop its VMs', async () => {
    // Its etcd connection cut while its agent runs: the keeper (on the simulator's lease thread) finds no renewal
    // confirmed by the deadline, its peers all hold theirs (no etcd-wide outage), so it fences through the agent.
    const h = sim!.host(HOSTS[9]!);
    const names = [0, 1].map((i) => vmName(h.name, i));
    expect((await h.hypervisor.list()).filter((v) => v.state === 'running')).toHaveLength(names.length);
    await h.membership!.cut();
    const fenced = await until('the host fenced', async () => {
      const s = h.membership!.status();
      return s.mode === 'fenced' && s.fencedVms.length > 0 ? s : undefined;
    });
    expect(fenced.fencedVms.sort()).toEqual(names);
    expect((await h.hypervisor.list()).every((v) => v.state !== 'running')).toBe(true);
    // Every other host still holds its lease.
    expect(sim!.held()).toBe(HOSTS.length - 2);
  }, 60_000);
});
