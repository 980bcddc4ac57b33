import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { noIommuBoard, PCI_IDS_EXCERPT, sriovHost } from '../drivers/devices/fixtures/hosts.js';
import { type FakeHost, writeSysfsTree } from '../drivers/devices/fixtures/sysfs-tree.js';
import { parsePciIds } from '../drivers/devices/pci-ids.js';
import { readDeviceInventory } from '../drivers/devices/sysfs.js';
import { renderHostDevices, renderInventory } from './render-devices.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function inventory(host: FakeHost) {
  const d = await mkdtemp(join(tmpdir(), 'vmlink-render-devices-'));
  dirs.push(d);
  await writeSysfsTree(d, host);
  return readDeviceInventory({
    sysRoot: d,
    pciIds: parsePciIds(PCI_IDS_EXCERPT),
    hostNeeds: [{ kind: 'net', name: 'bond0', why: 'uplink bond0' }],
  });
}

describe('vmlink host devices', () => {
  it('shows each PCI function with IDs, names, class, driver, group, NUMA, SR-IOV, mdev and host use', async () => {
    const text = renderInventory(await inventory(sriovHost()));
    const lines = text.split('\n');
    expect(lines[0]).toBe('IOMMU: on');
    expect(lines[1]).toMatch(/^ADDRESS +ID +NAME +CLASS +DRIVER +IOMMU +NUMA +SR-IOV +MDEV +HOST USE$/);
    const row = (addr: string) => lines.find((l) => l.startsWith(addr))!.split(/ {2,}/);
    expect(row('0000:3b:00.0')).toEqual([
      '0000:3b:00.0',
      '8086:1572',
      'Intel Corporation Ethernet Controller X710 for …',
      'Ethernet controller',
      'i40e',
      '30',
      '0',
      'PF 4/64 VFs',
      '-',
      'uplink bond0',
    ]);
    expect(row('0000:3b:02.3')).toEqual([
      '0000:3b:02.3',
      '8086:154c',
      'Intel Corporation Ethernet Virtual Function 700…',
      'Ethernet controller',
      '-',
      '43',
      '0',
      'VF of 0000:3b:00.0',
      '-',
      '-',
    ]);
    expect(row('0000:5d:00.0')[8]).toBe('GRID T4-1B (16 free), GRID T4-2B (8 free), GRID T4-16Q (0 free)');
    expect(text).toContain('USB: none');
  });

  it('says when the IOMMU is off and how to turn it on; lists USB devices by bus and device number', async () => {
    const text = renderInventory(await inventory(noIommuBoard()));
    expect(text.split('\n')[0]).toContain('IOMMU: off');
    expect(text).toContain('intel_iommu=on');
    expect(text).toMatch(/^1-3\.1 +0781:5581 +001\/005 +SanDisk Ultra +-$/m);
  });

  it('heads each host, and says why a host has no inventory', async () => {
    const inv = await inventory(sriovHost());
    const text = renderHostDevices({
      hosts: [
        { host: 'h1', devices: inv },
        { host: 'h2', error: 'its agent does not report devices (upgrade it)' },
      ],
    });
    expect(text).toMatch(/^== h1\nIOMMU: on/);
    expect(text).toContain('== h2\nunavailable: its agent does not report devices (upgrade it)');
    expect(renderHostDevices({ hosts: [] })).toBe('no hosts (apply a spec first)');
  });
});
