// GET /v1/devices and the inventory in the host report, over a fixture machine's sysfs.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../controller/agents.js';
import { consumerBoard } from '../drivers/devices/fixtures/hosts.js';
import { writeSysfsTree } from '../drivers/devices/fixtures/sysfs-tree.js';
import { readDeviceInventory } from '../drivers/devices/sysfs.js';
import { RecordingRunner } from '../exec/runner.js';
import { listen } from '../shared/http/server.js';
import { Agent } from './agent.js';
import { createAgentServer } from './server.js';
import { DeviceInventorySchema } from './wire-storage.js';

let dir: string;
let sys: string;
let reads = 0;
let app: FastifyInstance;
let agent: Agent;
let bare: FastifyInstance;

function makeAgent(devices?: () => ReturnType<typeof readDeviceInventory>) {
  return new Agent({
    host: 'host1',
    runner: new RecordingRunner(),
    networks: {},
    hypervisor: {
      accelerator: async () => ({ accelerator: 'tcg' as const, kvm: false }),
      list: async () => [],
      adopt: async () => undefined,
    } as unknown as ConstructorParameters<typeof Agent>[0]['hypervisor'],
    stateDir: dir,
    ...(devices ? { devices } : {}),
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-agent-devices-'));
  sys = join(dir, 'sys');
  await writeSysfsTree(sys, consumerBoard());
  agent = makeAgent(() => {
    reads++;
    return readDeviceInventory({ sysRoot: sys });
  });
  await agent.start();
  app = await createAgentServer(agent, { prerequisites: async () => [] });
  const none = makeAgent();
  await none.start();
  bare = await createAgentServer(none, { prerequisites: async () => [] });
});
afterAll(async () => {
  await app.close();
  await bare.close();
  agent.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('agent devices', () => {
  it('reads them once at start; reports reuse that reading', async () => {
    expect(reads).toBe(1);
    const report = await agent.report();
    expect(reads).toBe(1);
    expect(report.devices?.pci.find((d) => d.address === '0000:01:00.0')?.driver).toBe('nouveau');
  });

  it('GET /v1/devices reads afresh: a rebind shows at once, and the next report has it', async () => {
    const gpu = join(sys, 'devices/pci0000:00/0000:00:01.0/0000:01:00.0');
    await rm(join(gpu, 'driver'));
    const res = await app.inject({ method: 'GET', url: '/v1/devices' });
    expect(res.statusCode).toBe(200);
    const inv = DeviceInventorySchema.parse(res.json());
    expect(inv.pci.find((d) => d.address === '0000:01:00.0')?.driver).toBeUndefined();
    expect(inv.usb.map((u) => `${u.vendorId}:${u.productId}`)).toContain('046d:c52b');
    expect(reads).toBe(2);
    expect(
      (await agent.report()).devices?.pci.find((d) => d.address === '0000:01:00.0')?.driver,
    ).toBeUndefined();
  });

  it('an agent without a reader answers unsupported (422)', async () => {
    const res = await bare.inject({ method: 'GET', url: '/v1/devices' });
    expect(res.statusCode).toBe(422);
    expect(res.json().error.message).toContain('cannot read its devices');
  });

  it('a reading that fails leaves the report without devices, and the agent up', async () => {
    const broken = makeAgent(async () => {
      throw new Error('EIO');
    });
    await broken.start();
    expect((await broken.report()).devices).toBeUndefined();
    broken.stop();
  });

  it('the wire types and bounds every field of an inventory', async () => {
    const inv = DeviceInventorySchema.parse(await readDeviceInventory({ sysRoot: sys }));
    const gpu = inv.pci.find((d) => d.address === '0000:01:00.0')!;
    const bad = (patch: object) =>
      DeviceInventorySchema.safeParse({ ...inv, pci: [{ ...gpu, ...patch }] }).success;
    expect(bad({})).toBe(true);
    expect(bad({ address: '0000:01:00.0,x=y' })).toBe(false);
    expect(bad({ vendorId: '10DE' })).toBe(false);
    expect(bad({ deviceName: 'x'.repeat(201) })).toBe(false);
    expect(bad({ sriov: { totalVfs: 1e6, numVfs: 0, vfs: [] } })).toBe(false);
    expect(bad({ physfn: '../../etc' })).toBe(false);
    expect(DeviceInventorySchema.safeParse({ ...inv, usb: [{ ...inv.usb[0], path: 'usb1' }] }).success).toBe(
      false,
    );
  });

  it('reaches the controller’s agent client over a socket, validated by the wire schema', async () => {
    const wired = await createAgentServer(agent, { prerequisites: async () => [] });
    const socket = join(dir, 'agent.sock');
    await listen(wired, `unix://${socket}`);
    try {
      const inv = await new AgentClient('host1', `unix://${socket}`).devices();
      expect(inv.pci.filter((d) => d.iommuGroup === 1).map((d) => d.address)).toEqual([
        '0000:00:01.0',
        '0000:01:00.0',
        '0000:01:00.1',
      ]);
    } finally {
      await wired.close();
    }
  });
});
