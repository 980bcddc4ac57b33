import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TimeoutError } from '../../../shared/errors.js';
import type { NicConfig } from '../../../shared/model.js';
import { assignNicSlots } from './cmdline.js';
import { addNicDevice, netdevAddCommand, nicSlotChanges, presentNicDevices, unplugNic } from './hotplug.js';
import { QmpClient, QmpCommandError } from './qmp.js';

const nic = (i: number, extra: Partial<NicConfig> = {}): NicConfig => ({
  network: `net${i}`,
  backend: 'linux',
  bridge: `vlb-${i}`,
  tap: `vlt-web1-${i}`,
  mac: `52:54:00:00:00:0${i}`,
  mtu: 1500,
  ...extra,
});

describe('NIC slots', () => {
  it('keeps every NIC in its slot; a new NIC takes the lowest free one', () => {
    expect(assignNicSlots([nic(0), nic(1)])).toEqual([0, 1]);
    // NIC 0 goes: NIC 1 stays in slot 1; a NIC added later fills slot 0.
    expect(assignNicSlots([nic(1)], { nics: [nic(0), nic(1)] })).toEqual([1]);
    expect(assignNicSlots([nic(1), nic(2)], { nics: [nic(1)], slots: [1] })).toEqual([1, 0]);
    expect(() => assignNicSlots([0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => nic(i)))).toThrow(/at most 8 NICs/);
  });

  it('touches only the slots whose NIC appears, goes or changes', () => {
    expect(nicSlotChanges([nic(0)], [0], [nic(0), nic(1)], [0, 1])).toEqual([
      { slot: 1, unplug: false, plug: nic(1) },
    ]);
    expect(nicSlotChanges([nic(0), nic(1)], [0, 1], [nic(1)], [1])).toEqual([{ slot: 0, unplug: true }]);
    expect(nicSlotChanges([nic(0), nic(1)], [0, 1], [nic(0), nic(1, { mtu: 9000 })], [0, 1])).toEqual([
      { slot: 1, unplug: true, plug: nic(1, { mtu: 9000 }) },
    ]);
    // Key order and absent members do not make a change.
    const reordered = JSON.parse(JSON.stringify({ ...nic(0), staticIp: undefined })) as NicConfig;
    expect(nicSlotChanges([nic(0)], [0], [reordered], [0])).toEqual([]);
    // The port's host-side filters are the agent's to change on the tap: the guest's device stays plugged.
    const filtered = nic(0, {
      securityGroups: ['web'],
      allowedAddresses: ['10.0.0.9'],
      reservedIp: '10.0.0.5',
    });
    expect(nicSlotChanges([nic(0)], [0], [filtered], [0])).toEqual([]);
    expect(nicSlotChanges([filtered], [0], [nic(0, { portSecurity: false })], [0])).toEqual([]);
  });

  it('builds the netdev_add the fd helper runs after getfd', () => {
    expect(JSON.parse(netdevAddCommand(2))).toEqual({
      execute: 'netdev_add',
      arguments: { type: 'tap', id: 'net2', fd: 'tap2', vhost: false },
    });
  });
});

type Msg = { execute: string; arguments?: Record<string, unknown>; id?: unknown };

describe('NIC hot-plug over QMP (fake QEMU monitor)', () => {
  let dir = '';
  let server: Server | undefined;
  let client: QmpClient | undefined;
  let seen: Msg[];
  /** Devices the fake QEMU has; device_del releases one after `releaseMs` unless the guest ignores it. */
  let devices: Set<string>;
  let guestReleases: boolean;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-hotplug-test-'));
    seen = [];
    devices = new Set(['nic0', 'nic1']);
    guestReleases = true;
    const path = join(dir, 'qmp.sock');
    const send = (s: Socket, m: unknown) => s.write(`${JSON.stringify(m)}\r\n`);
    server = createServer((s) => {
      let buf = '';
      s.setEncoding('utf8');
      s.on('error', () => {});
      send(s, { QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } });
      s.on('data', (d: string) => {
        buf += d;
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const m = JSON.parse(buf.slice(0, nl)) as Msg;
          buf = buf.slice(nl + 1);
          if (m.execute !== 'qmp_capabilities') seen.push(m);
          const id = m.arguments?.id as string | undefined;
          if (m.execute === 'qom-list') {
            send(s, {
              return: [
                { name: 'type', type: 'string' },
                ...[...devices].map((n) => ({ name: n, type: 'child<virtio-net-pci>' })),
                { name: 'nicport0', type: 'child<pcie-root-port>' },
              ],
              id: m.id,
            });
          } else if (m.execute === 'device_del' && id && devices.has(id)) {
            // QEMU answers at once; the guest releases the device later and QEMU says so with an event.
            send(s, { return: {}, id: m.id });
            if (guestReleases)
              setTimeout(() => {
                devices.delete(id);
                send(s, { event: 'DEVICE_DELETED', data: { device: 'other' } });
                send(s, { event: 'DEVICE_DELETED', data: { device: id, path: `/machine/peripheral/${id}` } });
              }, 20);
          } else if (m.execute === 'device_add' && m.arguments?.bus === 'nicport9') {
            send(s, { error: { class: 'GenericError', desc: "Bus 'nicport9' not found" }, id: m.id });
          } else if (m.execute === 'netdev_del' && id === 'net7') {
            send(s, { error: { class: 'GenericError', desc: "Device 'net7' not found" }, id: m.id });
          } else {
            send(s, { return: {}, id: m.id });
          }
        }
      });
    });
    await new Promise<void>((r) => server!.listen(path, r));
    client = await QmpClient.connect(path, { timeoutMs: 2000, subject: 'vm/web1' });
  });
  afterEach(async () => {
    client?.close();
    server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('lists the NIC devices QEMU has, not its root ports', async () => {
    expect([...(await presentNicDevices(client!))]).toEqual(['nic0', 'nic1']);
  });

  it('unplugs: device_del, waits for its DEVICE_DELETED, then removes the netdev', async () => {
    await unplugNic(client!, 1, true, 2000);
    expect(seen.map((m) => `${m.execute} ${m.arguments?.id}`)).toEqual([
      'device_del nic1',
      'netdev_del net1',
    ]);
    expect(devices.has('nic1')).toBe(false);
  });

  it('fails with the remedy when the guest never releases the device', async () => {
    guestReleases = false;
    const err = await unplugNic(client!, 1, true, 200).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as Error).message).toMatch(/nic1 was not released by the guest within 200 ms/);
    expect(seen.map((m) => m.execute)).toEqual(['device_del']);
  });

  it('clears a netdev left without device, and tolerates one that is gone', async () => {
    await unplugNic(client!, 7, false, 200);
    expect(seen.map((m) => `${m.execute} ${m.arguments?.id}`)).toEqual(['netdev_del net7']);
  });

  it('adds the device into its own root port at a fixed id, and drops the netdev when QEMU refuses', async () => {
    await addNicDevice(client!, nic(1, { mtu: 9000 }), 1);
    expect(seen.at(-1)).toMatchObject({
      execute: 'device_add',
      arguments: {
        driver: 'virtio-net-pci',
        id: 'nic1',
        netdev: 'net1',
        bus: 'nicport1',
        mac: '52:54:00:00:00:01',
        host_mtu: 9000,
      },
    });
    seen = [];
    await expect(addNicDevice(client!, nic(9), 9)).rejects.toBeInstanceOf(QmpCommandError);
    expect(seen.map((m) => `${m.execute} ${m.arguments?.id}`)).toEqual([
      'device_add nic9',
      'netdev_del net9',
    ]);
  });
});
