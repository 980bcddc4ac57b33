// `GET /v1/devices` and `GET /v1/hosts/:name/devices` through the controller API, over fake agents whose
// inventories come from the fixture machines' sysfs trees.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeFleet } from '../../test/helpers/fake-agents.js';
import { consumerBoard, multiGpuServer } from '../drivers/devices/fixtures/hosts.js';
import { writeSysfsTree } from '../drivers/devices/fixtures/sysfs-tree.js';
import { readDeviceInventory } from '../drivers/devices/sysfs.js';
import { RecordingRunner } from '../exec/runner.js';
import type { DeviceInventory } from '../shared/devices.js';
import { createControllerApi } from './api.js';
import { Controller } from './controller.js';
import { SqliteStore } from './store/sqlite.js';
import { TaskManager } from './tasks.js';
import { HostDevicesListSchema } from './wire-devices.js';

const SPEC = `version: 1
hosts:
  - { name: gpu1, agent: "unix:///fake/gpu1.sock" }
  - { name: desk, agent: "unix:///fake/desk.sock" }
  - { name: old, agent: "unix:///fake/old.sock" }
  - { name: gone, agent: "unix:///fake/gone.sock" }
networks: [{ name: natnet, host: gpu1, mode: nat, cidr: 10.10.0.0/24 }]
vms: []
`;

let tmp: string;
let fleet: FakeFleet;
let store: SqliteStore;
let app: FastifyInstance;
let fresh = 0;

async function inventoryOf(
  name: string,
  host: Parameters<typeof writeSysfsTree>[1],
): Promise<DeviceInventory> {
  await writeSysfsTree(join(tmp, name), host);
  return readDeviceInventory({ sysRoot: join(tmp, name) });
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'vmlink-device-views-'));
  fleet = new FakeFleet();
  fleet.host('gpu1').devices = await inventoryOf('gpu1', multiGpuServer());
  const desk = await inventoryOf('desk', consumerBoard());
  // desk's client reads afresh, as the real agent client does; the others fall back to their reports.
  const agents: typeof fleet.agents = (spec, host) => {
    const c = fleet.agents(spec, host);
    return host === 'desk'
      ? {
          ...c,
          devices: async () => {
            fresh++;
            return desk;
          },
        }
      : c;
  };
  store = new SqliteStore(':memory:');
  const controller = new Controller(store, new RecordingRunner(), { agents });
  await controller.apply(SPEC, 'site.yaml', {
    progress: () => undefined,
    signal: new AbortController().signal,
  });
  fleet.host('gone').down = true;
  app = await createControllerApi(controller, new TaskManager());
});
afterAll(async () => {
  await app.close();
  fleet.close();
  await store.close();
  await rm(tmp, { recursive: true, force: true });
});

const get = async (url: string) => {
  const r = await app.inject({ method: 'GET', url });
  return { status: r.statusCode, body: r.json() };
};

describe('host devices through the controller', () => {
  it('lists every host: inventories, and a reason for the host without one and the host that is down', async () => {
    const { status, body } = await get('/v1/devices');
    expect(status).toBe(200);
    const list = HostDevicesListSchema.parse(body);
    expect(list.hosts.map((h) => h.host)).toEqual(['gpu1', 'desk', 'old', 'gone']);
    expect(list.hosts[0]?.devices?.pci.filter((d) => d.classCode === '030200')).toHaveLength(8);
    expect(list.hosts[1]?.devices?.usb).toHaveLength(4);
    expect(fresh).toBe(1);
    expect(list.hosts[2]).toEqual({ host: 'old', error: 'its agent does not report devices (upgrade it)' });
    expect(list.hosts[3]?.error).toContain('cannot reach the agent of gone');
  });

  it('answers for one host', async () => {
    const { status, body } = await get('/v1/hosts/desk/devices');
    expect(status).toBe(200);
    expect(HostDevicesListSchema.parse(body).hosts.map((h) => h.host)).toEqual(['desk']);
  });

  it('refuses a host not in the spec with 404, and a bad name with 422', async () => {
    expect((await get('/v1/hosts/nope/devices')).status).toBe(404);
    expect((await get('/v1/hosts/..%2Fx/devices')).status).toBe(422);
  });
});
