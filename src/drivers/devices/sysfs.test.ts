import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DeviceInventorySchema } from '../../agent/wire-storage.js';
import { DEVICE_TEXT_MAX, type DeviceInventory, PCI_DEVICES_MAX } from '../../shared/devices.js';
import {
  consumerBoard,
  MULTI_GPU_ADDRESSES,
  multiGpuServer,
  noIommuBoard,
  PCI_IDS_EXCERPT,
  sriovHost,
  usbBootServer,
} from './fixtures/hosts.js';
import { type FakeHost, writeSysfsTree } from './fixtures/sysfs-tree.js';
import { className, loadPciIds, parsePciIds } from './pci-ids.js';
import { type HostNeed, readDeviceInventory } from './sysfs.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function tree(host: FakeHost): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'vmlink-sysfs-'));
  dirs.push(d);
  const sys = join(d, 'sys');
  await writeSysfsTree(sys, host);
  return sys;
}

async function inventory(host: FakeHost, hostNeeds: HostNeed[] = []): Promise<DeviceInventory> {
  const inv = await readDeviceInventory({
    sysRoot: await tree(host),
    pciIds: parsePciIds(PCI_IDS_EXCERPT),
    hostNeeds,
  });
  // Whatever the reader makes, the agent's wire accepts.
  expect(DeviceInventorySchema.parse(inv)).toEqual(inv);
  return inv;
}

const pci = (inv: DeviceInventory, address: string) => {
  const d = inv.pci.find((p) => p.address === address);
  if (!d) throw new Error(`${address} not in the inventory`);
  return d;
};

describe('readDeviceInventory: multi-GPU server', () => {
  const needs: HostNeed[] = [
    { kind: 'block', name: '259:2', why: 'root disk nvme0n1p2 (/)' },
    { kind: 'block', name: 'nvme0n1p1', why: 'boot disk nvme0n1p1 (/boot/efi)' },
    { kind: 'net', name: 'eno1', why: 'uplink eno1' },
  ];

  it('lists every function with IDs, names, class, driver, IOMMU group and NUMA node, sorted by address', async () => {
    const inv = await inventory(multiGpuServer(), needs);
    expect(inv.iommu).toBe(true);
    expect(inv.pci.map((d) => d.address)).toEqual([...inv.pci.map((d) => d.address)].sort());
    expect(inv.pci).toHaveLength(6 + 16);
    const gpus = inv.pci.filter((d) => d.classCode === '030200');
    expect(gpus.map((g) => g.address)).toEqual(MULTI_GPU_ADDRESSES);
    expect(new Set(gpus.map((g) => g.iommuGroup)).size).toBe(8);
    expect(gpus.filter((g) => g.numaNode === 0)).toHaveLength(4);
    expect(gpus.filter((g) => g.numaNode === 1)).toHaveLength(4);
    expect(pci(inv, '0000:18:00.0')).toEqual({
      address: '0000:18:00.0',
      vendorId: '10de',
      deviceId: '2330',
      vendorName: 'NVIDIA Corporation',
      deviceName: 'GH100 [H100 SXM5 80GB]',
      classCode: '030200',
      className: '3D controller',
      driver: 'vfio-pci',
      iommuGroup: 21,
      numaNode: 0,
    });
    expect(pci(inv, '0000:9a:00.0').driver).toBe('nvidia');
    expect(inv.usb).toEqual([]);
  });

  it('marks the boot disk controller, the uplink NIC and the bridges above them as the host’s', async () => {
    const inv = await inventory(multiGpuServer(), needs);
    expect(pci(inv, '0000:02:00.0').hostUse).toBe('root disk nvme0n1p2 (/); boot disk nvme0n1p1 (/boot/efi)');
    expect(pci(inv, '0000:00:1d.0').hostUse).toBe(
      'bridge to root disk nvme0n1p2 (/); bridge to boot disk nvme0n1p1 (/boot/efi)',
    );
    expect(pci(inv, '0000:03:00.0').hostUse).toBe('uplink eno1');
    expect(pci(inv, '0000:00:1c.0').hostUse).toBe('bridge to uplink eno1');
    // The NIC's second port and every GPU are free.
    expect(pci(inv, '0000:03:00.1').hostUse).toBeUndefined();
    expect(inv.pci.filter((d) => d.classCode === '030200' && d.hostUse)).toEqual([]);
  });
});

describe('readDeviceInventory: consumer board', () => {
  it('shows the GPU, its audio function and their bridge in one IOMMU group', async () => {
    const inv = await inventory(consumerBoard());
    const group1 = inv.pci.filter((d) => d.iommuGroup === 1).map((d) => d.address);
    expect(group1).toEqual(['0000:00:01.0', '0000:01:00.0', '0000:01:00.1']);
    expect(pci(inv, '0000:01:00.1')).toMatchObject({ className: 'Audio device', driver: 'snd_hda_intel' });
    // No NUMA: numa_node reads -1 and is left out.
    expect(pci(inv, '0000:01:00.0').numaNode).toBeUndefined();
  });

  it('lists USB devices (not root hubs or interfaces) in bus/port order with their strings', async () => {
    const inv = await inventory(consumerBoard());
    expect(inv.usb).toEqual([
      {
        path: '1-2',
        busnum: 1,
        devnum: 2,
        vendorId: '046d',
        productId: 'c52b',
        manufacturer: 'Logitech',
        product: 'USB Receiver',
      },
      { path: '1-3', busnum: 1, devnum: 3, vendorId: '05e3', productId: '0610', product: 'USB2.0 Hub' },
      {
        path: '1-3.1',
        busnum: 1,
        devnum: 5,
        vendorId: '0781',
        productId: '5581',
        manufacturer: 'SanDisk',
        product: 'Ultra',
      },
      {
        path: '1-10',
        busnum: 1,
        devnum: 4,
        vendorId: '1050',
        productId: '0407',
        manufacturer: 'Yubico',
        product: 'YubiKey OTP+FIDO+CCID',
      },
    ]);
  });

  it('follows an uplink bridge to its port, and a SATA partition to its controller', async () => {
    const inv = await inventory(consumerBoard(), [
      { kind: 'net', name: 'br0', why: 'uplink br0' },
      { kind: 'block', name: 'sda2', why: 'root disk sda2 (/)' },
    ]);
    expect(pci(inv, '0000:03:00.0').hostUse).toBe('uplink br0');
    expect(pci(inv, '0000:00:17.0').hostUse).toBe('root disk sda2 (/)');
    expect(pci(inv, '0000:01:00.0').hostUse).toBeUndefined();
  });
});

describe('readDeviceInventory: booting from USB', () => {
  it('marks the USB stick the root file system is on, and its controller', async () => {
    const inv = await inventory(usbBootServer(), [
      { kind: 'block', name: '8:17', why: 'root disk sdb1 (/)' },
    ]);
    expect(inv.usb.map((u) => [u.path, u.hostUse])).toEqual([
      ['2-1', 'root disk sdb1 (/)'],
      ['2-2', undefined],
      ['2-3', undefined],
    ]);
    expect(pci(inv, '0000:00:14.0').hostUse).toBe('root disk sdb1 (/)');
  });
});

describe('readDeviceInventory: no IOMMU', () => {
  it('says so, and no function has a group', async () => {
    const inv = await inventory(noIommuBoard());
    expect(inv.iommu).toBe(false);
    expect(inv.pci.filter((d) => d.iommuGroup !== undefined)).toEqual([]);
  });
});

describe('readDeviceInventory: SR-IOV and mediated devices', () => {
  it('lists a PF’s VFs in order and each VF’s PF', async () => {
    const inv = await inventory(sriovHost());
    expect(pci(inv, '0000:3b:00.0').sriov).toEqual({
      totalVfs: 64,
      numVfs: 4,
      vfs: ['0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.2', '0000:3b:02.3'],
    });
    expect(pci(inv, '0000:3b:00.1').sriov).toEqual({ totalVfs: 64, numVfs: 0, vfs: [] });
    expect(pci(inv, '0000:3b:02.2')).toMatchObject({
      physfn: '0000:3b:00.0',
      driver: 'vfio-pci',
      deviceName: 'Ethernet Virtual Function 700 Series',
    });
    expect(pci(inv, '0000:3b:02.3').driver).toBeUndefined();
  });

  it('lists vGPU types with their names and free instances', async () => {
    const inv = await inventory(sriovHost());
    expect(pci(inv, '0000:5d:00.0').mdevTypes).toEqual([
      { id: 'nvidia-222', name: 'GRID T4-1B', available: 16 },
      { id: 'nvidia-223', name: 'GRID T4-2B', available: 8 },
      { id: 'nvidia-230', name: 'GRID T4-16Q', available: 0 },
    ]);
  });

  it('follows root on LVM (dm-0) to its NVMe and a bond to its port', async () => {
    const inv = await inventory(sriovHost(), [
      { kind: 'block', name: '253:0', why: 'root disk dm-0 (/)' },
      { kind: 'net', name: 'bond0', why: 'uplink bond0' },
    ]);
    expect(pci(inv, '0000:01:00.0').hostUse).toBe('root disk dm-0 (/)');
    expect(pci(inv, '0000:3b:00.0').hostUse).toBe('uplink bond0');
    expect(pci(inv, '0000:3a:00.0').hostUse).toBe('bridge to uplink bond0');
    expect(pci(inv, '0000:3b:00.1').hostUse).toBeUndefined();
  });
});

describe('readDeviceInventory: untrusted layout', () => {
  it('never leaves the tree: links and attribute files pointing outside are not followed', async () => {
    const sys = await tree(consumerBoard());
    const outside = join(sys, '..', 'outside');
    await mkdir(join(outside, '0000:ee:00.0'), { recursive: true });
    await writeFile(join(outside, '0000:ee:00.0', 'vendor'), '0x1234\n');
    await writeFile(join(outside, 'secret'), '0x8086\n');
    // A function whose link leaves sysfs is not listed.
    await symlink(join(outside, '0000:ee:00.0'), join(sys, 'bus/pci/devices/0000:ee:00.0'));
    // A driver link to elsewhere names no driver; an attribute that is a link is not read.
    const gpu = join(sys, 'devices/pci0000:00/0000:00:01.0/0000:01:00.0');
    await rm(join(gpu, 'driver'));
    await symlink(outside, join(gpu, 'driver'));
    const audio = join(sys, 'devices/pci0000:00/0000:00:01.0/0000:01:00.1');
    await rm(join(audio, 'vendor'));
    await symlink(join(outside, 'secret'), join(audio, 'vendor'));
    const inv = await readDeviceInventory({
      sysRoot: sys,
      hostNeeds: [{ kind: 'block', name: '../../../outside', why: 'x' }],
    });
    expect(inv.pci.map((d) => d.address)).not.toContain('0000:ee:00.0');
    expect(pci(inv, '0000:01:00.0').driver).toBeUndefined();
    expect(inv.pci.map((d) => d.address)).not.toContain('0000:01:00.1');
    expect(inv.pci.filter((d) => d.hostUse)).toEqual([]);
  });

  it('skips a function with unreadable or malformed IDs and clips odd strings', async () => {
    const sys = await tree(consumerBoard());
    await writeFile(join(sys, 'devices/pci0000:00/0000:00:17.0/class'), 'x'.repeat(10_000));
    const stick = join(sys, 'devices/pci0000:00/0000:00:14.0/usb1/1-3/1-3.1');
    await writeFile(join(stick, 'product'), `Ultra\u001b[31m${'y'.repeat(500)}\n`);
    const inv = await readDeviceInventory({ sysRoot: sys });
    expect(inv.pci.map((d) => d.address)).not.toContain('0000:00:17.0');
    const p = inv.usb.find((u) => u.path === '1-3.1')?.product ?? '';
    expect(p.startsWith('Ultra[31m')).toBe(true);
    expect(p.length).toBe(DEVICE_TEXT_MAX);
  });

  it(`lists at most PCI_DEVICES_MAX (${PCI_DEVICES_MAX}) functions`, async () => {
    // In memory where the host has /dev/shm (as sysfs is), written synchronously and minimally: thousands of
    // functions through the fixture writer on a busy disk take many seconds.
    const base = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'vmlink-sysfs-'));
    dirs.push(base);
    const sys = join(base, 'sys');
    await writeSysfsTree(sys, { iommu: false, pci: [] });
    for (let i = 0; i < PCI_DEVICES_MAX + 20; i++) {
      const addr = `0000:${(i >> 5).toString(16).padStart(2, '0')}:${(i & 31).toString(16).padStart(2, '0')}.0`;
      const dir = join(sys, 'devices', 'pci0000:00', addr);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'vendor'), '0x8086\n');
      writeFileSync(join(dir, 'device'), '0x1234\n');
      writeFileSync(join(dir, 'class'), '0x020000\n');
      symlinkSync(`../../../devices/pci0000:00/${addr}`, join(sys, 'bus', 'pci', 'devices', addr));
    }
    const inv = await readDeviceInventory({ sysRoot: sys });
    expect(inv.pci).toHaveLength(PCI_DEVICES_MAX);
    expect(DeviceInventorySchema.safeParse(inv).success).toBe(true);
  });

  it('reads this machine’s own /sys into a valid inventory', async () => {
    const inv = await readDeviceInventory();
    expect(DeviceInventorySchema.parse(inv)).toEqual(inv);
  });
});

describe('pci.ids', () => {
  it('names vendors, devices and classes, most specific class first', () => {
    const ids = parsePciIds(PCI_IDS_EXCERPT);
    expect(ids.vendors.get('144d')).toBe('Samsung Electronics Co Ltd');
    expect(ids.devices.get('10de:1eb8')).toBe('TU104GL [Tesla T4]');
    // A subsystem line is not a device.
    expect(ids.devices.has('10de:10de')).toBe(false);
    expect(className(ids, '010802')).toBe('Non-Volatile memory controller');
    expect(className(ids, '0c0330')).toBe('USB controller');
    expect(className(ids, '028000')).toBe('Network controller');
    // Without pci.ids: the base class.
    expect(className(undefined, '030200')).toBe('Display controller');
    expect(className(undefined, '990000')).toBeUndefined();
  });

  it('loads the first file that exists, none when there is none', async () => {
    const d = await mkdtemp(join(tmpdir(), 'vmlink-pciids-'));
    dirs.push(d);
    await writeFile(join(d, 'pci.ids'), PCI_IDS_EXCERPT);
    expect((await loadPciIds([join(d, 'missing'), join(d, 'pci.ids')]))?.vendors.get('8086')).toBe(
      'Intel Corporation',
    );
    expect(await loadPciIds([join(d, 'missing')])).toBeUndefined();
  });
});
