import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { multiGpuServer, PCI_IDS_EXCERPT } from './fixtures/hosts.js';
import { writeSysfsTree } from './fixtures/sysfs-tree.js';
import { blockNeedsFromMountinfo, defaultRouteNics, readHostNeeds } from './host-needs.js';
import { deviceInventoryReader } from './inventory.js';

const MOUNTINFO = [
  '21 26 0:20 / /proc rw,relatime - proc proc rw',
  '26 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw',
  '27 26 259:1 / /boot/efi rw,relatime shared:2 - vfat /dev/nvme0n1p1 rw',
  '28 26 0:31 /@home /home rw - btrfs /dev/sdb1 rw',
  '29 26 0:32 /@var /var rw - btrfs /dev/mapper/vg-var rw',
  '30 26 0:33 / /usr ro - overlay overlay rw',
].join('\n');

const ROUTES = `Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eno1\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eno1\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
eno2\t000010AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
`;

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe('host needs', () => {
  it('takes the root and boot file systems by device number, a btrfs one by its source', async () => {
    const needs = await blockNeedsFromMountinfo(MOUNTINFO, async (p) =>
      p === '/dev/mapper/vg-var' ? 'dm-0' : undefined,
    );
    expect(needs).toEqual([
      { kind: 'block', name: '259:2', why: 'root disk nvme0n1p2 (/)' },
      { kind: 'block', name: '259:1', why: 'boot disk nvme0n1p1 (/boot/efi)' },
      { kind: 'block', name: 'dm-0', why: 'system disk vg-var (/var)' },
    ]);
  });

  it('finds the NICs of default routes only', () => {
    expect(defaultRouteNics(ROUTES)).toEqual(['eno1']);
    expect(defaultRouteNics('')).toEqual([]);
  });

  it('reads them from a proc tree, the uplink named once', async () => {
    const d = await mkdtemp(join(tmpdir(), 'vmlink-needs-'));
    dirs.push(d);
    await mkdir(join(d, 'self'));
    await mkdir(join(d, 'net'));
    await writeFile(join(d, 'self', 'mountinfo'), MOUNTINFO);
    await writeFile(join(d, 'net', 'route'), ROUTES);
    const needs = await readHostNeeds('eno1', d);
    expect(needs.filter((n) => n.kind === 'net')).toEqual([
      { kind: 'net', name: 'eno1', why: 'uplink eno1' },
    ]);
    const other = await readHostNeeds(undefined, d);
    expect(other.filter((n) => n.kind === 'net')).toEqual([
      { kind: 'net', name: 'eno1', why: 'management NIC eno1 (default route)' },
    ]);
  });

  it('the reader puts it together: names from pci.ids, the boot NVMe and uplink NIC marked', async () => {
    const d = await mkdtemp(join(tmpdir(), 'vmlink-reader-'));
    dirs.push(d);
    await writeSysfsTree(join(d, 'sys'), multiGpuServer());
    await mkdir(join(d, 'proc', 'self'), { recursive: true });
    await writeFile(join(d, 'proc', 'self', 'mountinfo'), MOUNTINFO);
    await writeFile(join(d, 'pci.ids'), PCI_IDS_EXCERPT);
    const read = deviceInventoryReader({
      uplink: 'eno1',
      sysRoot: join(d, 'sys'),
      procRoot: join(d, 'proc'),
      pciIdsPaths: [join(d, 'pci.ids')],
    });
    const inv = await read();
    const nvme = inv.pci.find((p) => p.address === '0000:02:00.0');
    expect(nvme?.hostUse).toBe('root disk nvme0n1p2 (/); boot disk nvme0n1p1 (/boot/efi)');
    expect(inv.pci.find((p) => p.address === '0000:03:00.0')?.hostUse).toBe('uplink eno1');
    expect(nvme?.vendorName).toBe('Samsung Electronics Co Ltd');
  });
});
