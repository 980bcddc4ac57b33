// The passthrough checks over inventories read from the fixture machines' sysfs trees.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  consumerBoard,
  multiGpuServer,
  noIommuBoard,
  PCI_IDS_EXCERPT,
  sriovHost,
  usbBootServer,
} from '../drivers/devices/fixtures/hosts.js';
import { type FakeHost, writeSysfsTree } from '../drivers/devices/fixtures/sysfs-tree.js';
import { parsePciIds } from '../drivers/devices/pci-ids.js';
import { type HostNeed, readDeviceInventory } from '../drivers/devices/sysfs.js';
import type { DeviceInventory, DeviceRequest } from '../shared/devices.js';
import {
  checkHostPassthrough,
  checkPassthrough,
  type PassthroughPolicy,
  passthroughError,
} from './passthrough.js';

let tmp: string;
const inv: Record<string, DeviceInventory> = {};

async function read(name: string, host: FakeHost, hostNeeds: HostNeed[]): Promise<void> {
  const sys = join(tmp, name);
  await writeSysfsTree(sys, host);
  inv[name] = await readDeviceInventory({ sysRoot: sys, pciIds: parsePciIds(PCI_IDS_EXCERPT), hostNeeds });
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'vmlink-passthrough-'));
  await read('gpu', multiGpuServer(), [
    { kind: 'block', name: '259:2', why: 'root disk nvme0n1p2 (/)' },
    { kind: 'net', name: 'eno1', why: 'uplink eno1' },
  ]);
  await read('board', consumerBoard(), [
    { kind: 'block', name: 'sda2', why: 'root disk sda2 (/)' },
    { kind: 'net', name: 'br0', why: 'uplink br0' },
  ]);
  await read('noiommu', noIommuBoard(), []);
  await read('sriov', sriovHost(), [{ kind: 'net', name: 'bond0', why: 'uplink bond0' }]);
  await read('usbboot', usbBootServer(), [{ kind: 'block', name: 'sdb1', why: 'root disk sdb1 (/)' }]);
  // The board once its GPU and the GPU's audio function are bound to vfio-pci.
  const ready = consumerBoard();
  for (const d of ready.pci) if (d.address.startsWith('0000:01:00.')) d.driver = 'vfio-pci';
  await read('ready', ready, []);
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const vm = { name: 'vm1', host: 'h1', index: 2 };
const policy = (usbAllow: string[] = []): PassthroughPolicy => ({
  usbAllow,
  usbAllowPath: 'hosts[0].passthrough.usb',
});
const check = (name: string, requests: DeviceRequest[], p = policy()) =>
  checkPassthrough(vm, requests, inv[name], p);

describe('checkPassthrough: PCI', () => {
  it('accepts a GPU bound to vfio-pci in its own group', () => {
    expect(check('gpu', [{ pci: '0000:18:00.0' }])).toEqual([]);
  });

  it('refuses every PCI request on a host without IOMMU, saying how to turn it on', () => {
    const r = check('noiommu', [{ pci: '0000:01:00.0' }]);
    expect(r).toEqual([
      {
        path: 'vms[2].devices[0]',
        device: 'pci 0000:01:00.0',
        reason: 'host "h1" runs without an IOMMU, so no PCI device can be passed through safely',
        fix: expect.stringContaining('intel_iommu=on (or amd_iommu=on)'),
      },
    ]);
  });

  it('refuses an address the host does not have', () => {
    const [r] = check('gpu', [{ pci: '0000:77:00.0' }]);
    expect(r?.reason).toBe('host "h1" has no PCI function 0000:77:00.0');
    expect(r?.fix).toContain('vmlink host devices h1');
  });

  it('refuses the boot disk controller and the uplink NIC, saying what the host uses them for', () => {
    const r = check('gpu', [{ pci: '0000:02:00.0' }, { pci: '0000:03:00.0' }]);
    expect(r.map((x) => [x.path, x.reason])).toEqual([
      [
        'vms[2].devices[0]',
        'the host needs 0000:02:00.0 (144d:a80a NVMe SSD Controller PM9A1/PM9A3/980PRO): root disk nvme0n1p2 (/)',
      ],
      ['vms[2].devices[1]', 'the host needs 0000:03:00.0 (8086:1563 Ethernet Controller X550): uplink eno1'],
    ]);
  });

  it('refuses the uplink NIC’s second port: its group holds the uplink', () => {
    const [r] = check('gpu', [{ pci: '0000:03:00.1' }]);
    expect(r?.reason).toBe(
      '0000:03:00.1 shares IOMMU group 13 with 0000:03:00.0 (8086:1563 Ethernet Controller X550), which the host needs: uplink eno1',
    );
    expect(r?.fix).toContain('own IOMMU group');
  });

  it('refuses a GPU bound to its host driver with the driverctl command', () => {
    const [r] = check('gpu', [{ pci: '0000:9a:00.0' }]);
    expect(r?.reason).toBe(
      '0000:9a:00.0 (10de:2330 GH100 [H100 SXM5 80GB]) is bound to nvidia, not vfio-pci',
    );
    expect(r?.fix).toBe('bind it to vfio-pci: driverctl set-override 0000:9a:00.0 vfio-pci');
  });

  it('refuses a bridge', () => {
    const [r] = check('gpu', [{ pci: '0000:17:01.0' }]);
    expect(r?.reason).toContain('is a PCI bridge');
  });

  it('shared group: the GPU alone is refused while its audio function has a host driver', () => {
    const [r] = check('ready', [{ pci: '0000:01:00.0' }]);
    expect(r).toBeUndefined();
    const board = check('board', [{ pci: '0000:01:00.0' }]);
    expect(board.map((x) => x.reason)).toEqual([
      '0000:01:00.0 shares IOMMU group 1 with 0000:01:00.1 (10de:10f0 GP104 High Definition Audio Controller), which is bound to snd_hda_intel',
    ]);
    expect(board[0]?.fix).toBe(
      'bind 0000:01:00.1 to vfio-pci (driverctl set-override 0000:01:00.1 vfio-pci) or pass it too',
    );
  });

  it('shared group: passing both functions leaves only their own drivers to fix (the bridge is no obstacle)', () => {
    const r = check('board', [{ pci: '0000:01:00.0' }, { pci: '0000:01:00.1' }]);
    expect(r.map((x) => x.reason)).toEqual([
      '0000:01:00.0 (10de:1b80 GP104 [GeForce GTX 1080]) is bound to nouveau, not vfio-pci',
      '0000:01:00.1 (10de:10f0 GP104 High Definition Audio Controller) is bound to snd_hda_intel, not vfio-pci',
    ]);
    expect(check('ready', [{ pci: '0000:01:00.0' }, { pci: '0000:01:00.1' }])).toEqual([]);
  });

  it('judges a PF without VFs as any device, the uplink PF as the host’s, and VFs each on their own', () => {
    const pf = check('sriov', [{ pci: '0000:3b:00.1' }]);
    expect(pf.map((x) => x.reason)).toEqual([
      '0000:3b:00.1 (8086:1572 Ethernet Controller X710 for 10GbE SFP+) is bound to i40e, not vfio-pci',
    ]);
    const uplinkPf = check('sriov', [{ pci: '0000:3b:00.0' }]);
    expect(uplinkPf[0]?.reason).toContain('uplink bond0');
    expect(check('sriov', [{ pci: '0000:3b:02.2' }])).toEqual([]);
    expect(check('sriov', [{ pci: '0000:3b:02.0' }])[0]?.reason).toContain('bound to iavf');
  });

  it('refuses a PF with VFs in use when the host does not otherwise need it', () => {
    const host = structuredClone(inv.sriov!);
    const pf = host.pci.find((d) => d.address === '0000:3b:00.0')!;
    delete pf.hostUse;
    pf.driver = 'vfio-pci';
    const [r] = checkPassthrough(vm, [{ pci: '0000:3b:00.0' }], host, policy());
    expect(r?.reason).toContain('SR-IOV physical function with 4 VFs enabled (0000:3b:02.0, 0000:3b:02.1');
    expect(r?.fix).toContain('/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs');
  });

  it('refuses every request when the host reported no inventory', () => {
    const r = checkPassthrough(vm, [{ pci: '0000:18:00.0' }], undefined, policy());
    expect(r[0]?.fix).toBe('upgrade the vmlink agent on that host');
  });
});

describe('checkPassthrough: USB', () => {
  it('accepts a plugged-in device on the allow-list, by product or by vendor', () => {
    expect(check('board', [{ usb: '046d:c52b' }], policy(['046d:c52b']))).toEqual([]);
    expect(check('board', [{ usb: '1050:0407' }], policy(['1050:*']))).toEqual([]);
  });

  it('refuses one not on the allow-list, naming the list', () => {
    const [r] = check('board', [{ usb: '0781:5581' }], policy(['046d:*']));
    expect(r).toEqual({
      path: 'vms[2].devices[0]',
      device: 'usb 0781:5581',
      reason: 'USB device 0781:5581 is not in host "h1"\'s allow-list (hosts[0].passthrough.usb: 046d:*)',
      fix: 'add "0781:5581" (or "0781:*") to hosts[0].passthrough.usb to let VMs take it',
    });
  });

  it('refuses the stick the host boots from, and one of the same model, but not other devices', async () => {
    const r = check('usbboot', [{ usb: '0781:5583' }, { usb: '046d:c52b' }], policy(['0781:*', '046d:*']));
    expect(r).toEqual([
      {
        path: 'vms[2].devices[0]',
        device: 'usb 0781:5583',
        reason:
          'the host needs USB device 0781:5583 at 2-1 (root disk sdb1 (/)), and QEMU, matching by vendor:product, cannot tell it from the other 1',
        fix: 'pass another model of device; one the host runs on must stay with it',
      },
    ]);
    expect(check('usbboot', [{ pci: '0000:00:14.0' }])[0]?.reason).toContain('root disk sdb1 (/)');
  });

  it('refuses one that is not plugged in', () => {
    const [r] = check('board', [{ usb: '046d:c077' }], policy(['046d:*']));
    expect(r?.reason).toBe('host "h1" has no USB device 046d:c077 plugged in');
  });
});

describe('checkHostPassthrough', () => {
  it('gives a device, and any device of its IOMMU group, to the first VM asking', () => {
    const r = checkHostPassthrough(
      [
        {
          vm: { name: 'a', host: 'h1', index: 0 },
          requests: [{ pci: '0000:01:00.0' }, { usb: '046d:c52b' }],
        },
        {
          vm: { name: 'b', host: 'h1', index: 1 },
          requests: [{ pci: '0000:01:00.1' }, { usb: '046d:c52b' }],
        },
        { vm: { name: 'c', host: 'h1', index: 2 }, requests: [{ pci: '0000:01:00.0' }] },
      ],
      inv.ready,
      policy(['046d:*']),
    );
    expect(r.map((x) => [x.path, x.reason])).toEqual([
      ['vms[1].devices[0]', '0000:01:00.1 shares IOMMU group 1 with devices passed to VM "a"'],
      ['vms[1].devices[1]', 'usb 046d:c52b on host "h1" is already passed to VM "a"'],
      ['vms[2].devices[0]', 'pci 0000:01:00.0 on host "h1" is already passed to VM "a"'],
    ]);
  });

  it('makes one spec error with every refusal at its path', () => {
    const err = passthroughError(check('gpu', [{ pci: '0000:9a:00.0' }, { pci: '0000:02:00.0' }]));
    expect(err?.issues.map((i) => i.path)).toEqual(['vms[2].devices[0]', 'vms[2].devices[1]']);
    expect(err?.message).toContain('driverctl set-override 0000:9a:00.0 vfio-pci');
    expect(passthroughError([])).toBeUndefined();
  });
});
