// `status` and `vm list` from the report cache, through the controller as the daemon wires it (fake agents).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeFleet } from '../../test/helpers/fake-agents.js';
import { RecordingRunner } from '../exec/runner.js';
import { createControllerApi } from './api.js';
import { Controller } from './controller.js';
import type { AgentFactory } from './hosts.js';
import { Monitor } from './monitor.js';
import { SqliteStore } from './store/sqlite.js';
import { TaskManager } from './tasks.js';
import { StatusSchema, VmListSchema } from './wire.js';

const SPEC = `version: 1
hosts:
  - { name: h1, agent: "unix:///fake/h1.sock" }
  - { name: h2, agent: "unix:///fake/h2.sock" }
networks:
  - { name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }
vms:
  - { name: web1, host: h1, nics: [{ network: natnet, mac: "52:54:00:10:00:05" }] }
`;
const task = () => ({ progress: () => {}, signal: new AbortController().signal });

describe('status and vm list from the report cache', () => {
  let fleet: FakeFleet;
  let store: SqliteStore;
  let controller: Controller;
  let monitor: Monitor;
  /** Reports and guest-agent calls each host answered. */
  let calls: string[];
  beforeEach(async () => {
    fleet = new FakeFleet();
    calls = [];
    const counted: AgentFactory = (spec, host) => {
      const a = fleet.agents(spec, host);
      return {
        ...a,
        report: (...x) => {
          calls.push(`${host} report`);
          return a.report(...x);
        },
        interfaces: (vm) => {
          calls.push(`${host} interfaces ${vm}`);
          return a.interfaces(vm);
        },
      };
    };
    store = new SqliteStore(':memory:');
    controller = new Controller(store, new RecordingRunner(), { agents: counted });
    await controller.apply(SPEC, 'site.yaml', task());
    fleet.host('h1').guests.set('web1', [
      {
        name: 'eth0',
        mac: '52:54:00:10:00:05',
        addresses: ['10.10.0.5/24'],
      },
    ]);
    monitor = new Monitor(store, async () => (await controller.currentSpec())?.spec, {
      client: fleet.agents,
    });
    await monitor.tick();
    calls = [];
  });
  afterEach(async () => {
    controller.reports.stop();
    fleet.close();
    await store.close();
  });

  /** Starts the refresher with a long period and waits for its first round. */
  async function warm() {
    controller.reports.start(3_600_000);
    for (let i = 0; i < 200 && !controller.reports.lastRound; i++) await new Promise((r) => setTimeout(r, 5));
    calls = [];
  }

  it('without a refresher running (a standby) every read asks the agents', async () => {
    const st = await controller.status();
    expect(st.hosts.map((h) => [h.name, h.reachable, h.reportAgeMs])).toEqual([
      ['h1', true, 0],
      ['h2', true, 0],
    ]);
    expect(calls.filter((c) => c.endsWith('report')).sort()).toEqual(['h1 report', 'h2 report']);
  });

  it('serves kept reports with their age; --live asks every agent', async () => {
    await warm();
    const st = await controller.status();
    expect(calls).toEqual([]);
    for (const h of st.hosts) {
      expect(h.reachable).toBe(true);
      expect(h.reportAgeMs).toBeGreaterThan(0);
    }
    const vms = await controller.vms();
    expect(calls).toEqual([]); // guest addresses kept too
    expect(vms.find((v) => v.name === 'web1')).toMatchObject({
      state: 'running',
      nics: [{ addresses: ['10.10.0.5/24'], addressSource: 'guest-agent' }],
    });
    expect(vms.find((v) => v.name === 'web1')?.reportAgeMs).toBeGreaterThan(0);
    const live = await controller.status({ live: true });
    expect(live.hosts.map((h) => h.reportAgeMs)).toEqual([0, 0]);
    expect(calls.sort()).toEqual(['h1 report', 'h2 report']);
  });

  it('a read right after an action asks that host again, and sees the action', async () => {
    await warm();
    await controller.vmPower('web1', 'stop');
    calls = [];
    const vms = await controller.vms();
    expect(vms.find((v) => v.name === 'web1')).toMatchObject({ state: 'stopped', reportAgeMs: 0 });
    expect(calls).toEqual(['h1 report']); // h2 still from the cache; no guest to ask on h1 now
  });

  it('a report fetched for a plan is kept: a change made behind vmlink’s back shows once anything asked', async () => {
    await warm();
    fleet.host('h1').vms.get('web1')!.state = 'crashed'; // QEMU killed outside vmlink
    expect((await controller.vms()).find((v) => v.name === 'web1')?.state).toBe('running'); // kept: not asked
    await controller.plan(SPEC, 'site.yaml');
    expect((await controller.vms()).find((v) => v.name === 'web1')?.state).toBe('crashed');
  });

  it('a host whose heartbeat missed is asked live, and shown unreachable when it does not answer', async () => {
    await warm();
    fleet.host('h2').down = true;
    await monitor.tick();
    const st = await controller.status();
    expect(st.hosts.find((h) => h.name === 'h2')).toMatchObject({ reachable: false, missed: 1 });
    expect(st.hosts.find((h) => h.name === 'h1')?.reportAgeMs).toBeGreaterThan(0);
  });

  it("answers a summary of each report unless full=true, and answers within the routes' schemas", async () => {
    await warm();
    Object.assign(fleet.host('h1').vms.get('web1')!, {
      pid: 4242,
      ports: [{ network: 'natnet', tap: 'tap-web1', bridge: 'br-natnet' }],
    });
    controller.reports.stop(); // asked live: the pid above shows
    const app = await createControllerApi(controller, new TaskManager());
    try {
      const get = async (url: string) => {
        const r = await app.inject({ method: 'GET', url });
        expect(r.statusCode, r.body).toBe(200);
        return r.json() as unknown;
      };
      const summary = StatusSchema.parse(await get('/v1/status'));
      const full = StatusSchema.parse(await get('/v1/status?full=true'));
      const web1 = (st: typeof summary) => st.hosts[0]!.report!.vms.find((v) => v.name === 'web1')!;
      expect(web1(summary)).toEqual({
        name: 'web1',
        state: 'running',
        pid: 4242,
        configHash: web1(full).configHash,
        problems: [],
      });
      expect(web1(full).config?.name).toBe('web1');
      expect(web1(full).ports?.length).toBe(1);
      const net = (st: typeof summary) => st.hosts[0]!.report!.networks.find((n) => n.name === 'natnet')!;
      expect(net(summary).config).toBeUndefined();
      expect(net(full).config?.name).toBe('natnet');
      expect(summary.hosts[0]!.report!.capabilities).toEqual(full.hosts[0]!.report!.capabilities);
      // Serialized without zod's pass: the answers must be exactly what their schemas let through, nothing else.
      for (const [url, schema] of [
        ['/v1/status', StatusSchema],
        ['/v1/status?full=true', StatusSchema],
        ['/v1/vms', VmListSchema],
      ] as const) {
        const body = await get(url);
        expect(schema.parse(body), url).toEqual(body);
      }
      expect((await app.inject({ method: 'GET', url: '/v1/status?full=yes' })).statusCode).toBe(422);
    } finally {
      await app.close();
    }
  });

  it('lists the VMs hosts report beyond the spec among its own, in name order', async () => {
    const web1 = fleet.host('h1').vms.get('web1')!;
    fleet.host('h2').vms.set('alpha', { ...structuredClone(web1), name: 'alpha', state: 'stopped' });
    fleet.host('h1').vms.set('zed', { ...structuredClone(web1), name: 'zed', state: 'stopped' });
    const vms = await controller.vms();
    expect(vms.map((v) => [v.name, v.host, v.desired])).toEqual([
      ['alpha', 'h2', 'absent'],
      ['web1', 'h1', 'running'],
      ['zed', 'h1', 'absent'],
    ]);
  });
});
