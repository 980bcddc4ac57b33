import { describe, expect, it } from 'vitest';
import type { HostReport } from '../shared/model.js';
import { resolveSpec } from './resolve.js';
import { realised, storageSpec } from './storage.test-util.js';
import {
  checkDevicesAgainstHosts,
  checkNamedVolumes,
  checkPoolCapacity,
  type HostPassthroughCheck,
  poolProvisioning,
} from './storage-checks.js';

const base = storageSpec();
const reports = (): HostReport[] => realised(resolveSpec(base));
const nasOf = (r: HostReport[]) => r.find((x) => x.host === 'san1')!.pools!.find((p) => p.name === 'nas')!;

describe('named volumes against the pools', () => {
  const spec = storageSpec((s) => {
    s.vms[1].disks.push({ name: 'cd', pool: 'nas', volume: 'debian', media: 'cdrom' });
    s.vms[1].image = { kind: 'volume', pool: 'nas', volume: 'golden', clone: true };
  });

  it('refuses an imported volume its pool does not hold, naming the spec path and how to import it', () => {
    expect(checkNamedVolumes(spec, reports())).toEqual([
      {
        path: 'vms[1].disks[1].volume',
        message: expect.stringContaining(
          'volume "debian" is not in pool "nas" on host "san1" and volumes: does not declare it; import it first (`vmlink image import FILE --pool nas --name debian`)',
        ),
      },
      {
        path: 'vms[1].image.volume',
        message: expect.stringContaining('volume "golden" is not in pool "nas"'),
      },
    ]);
  });

  it('accepts them once imported; a CD-ROM needs an ISO and an ISO a CD-ROM', () => {
    const r = reports();
    const vol = (name: string, format: 'iso' | 'qcow2') => ({
      name,
      format,
      sizeMiB: 300,
      allocatedMiB: 300,
      encrypted: false,
      snapshots: [],
    });
    nasOf(r).volumes.push(vol('debian', 'iso'), vol('golden', 'qcow2'));
    expect(checkNamedVolumes(spec, r)).toEqual([]);
    nasOf(r).volumes = nasOf(r).volumes.map((v) => (v.name === 'debian' ? vol('debian', 'qcow2') : v));
    expect(checkNamedVolumes(spec, r)).toEqual([
      { path: 'vms[1].disks[1].media', message: expect.stringContaining('is qcow2, not an ISO') },
    ]);
  });

  it('does not judge a pool whose host did not answer', () => {
    expect(
      checkNamedVolumes(
        spec,
        reports().filter((x) => x.host !== 'san1'),
      ),
    ).toEqual([]);
  });
});

describe('pool capacity', () => {
  it('counts planned sizes, new volumes and kept ones', () => {
    const r = reports();
    nasOf(r).volumes.push({
      name: 'old',
      format: 'qcow2',
      sizeMiB: 100,
      allocatedMiB: 1,
      encrypted: false,
      snapshots: [],
    });
    const grown = resolveSpec(
      storageSpec((s) => {
        s.vms[1].disks[0].sizeMiB = 3000;
      }),
    );
    const nas = poolProvisioning(grown, r).find((p) => p.pool === 'nas');
    // tmpl 2048 + web1-root 2048 + db1-db 3000 (grown) + old 100 (kept).
    expect(nas).toEqual({ pool: 'nas', host: 'san1', provisionedMiB: 7196, capacityMiB: 10_000 });
  });

  it('refuses provisioning over maxOvercommit × capacity, naming the pool and the numbers', () => {
    const r = reports();
    nasOf(r).capacityMiB = 3000;
    // tmpl 2048 + web1-root 2048 + db1-db 1024 = 5120 MiB, within 2 × 3000.
    expect(checkPoolCapacity(base, resolveSpec(base), r)).toEqual([]);
    nasOf(r).capacityMiB = 2000;
    expect(checkPoolCapacity(base, resolveSpec(base), r)).toEqual([
      {
        path: 'pools[2].maxOvercommit',
        message:
          'pool "nas" on host "san1" would provision 5120 MiB of volumes, over its limit of 4000 MiB (maxOvercommit 2 × capacity 2000 MiB); shrink or drop volumes in the spec, free the pool\'s disk, or raise maxOvercommit',
      },
    ]);
  });

  it('leaves pools without a limit alone', () => {
    const r = reports();
    for (const h of r) for (const p of h.pools ?? []) p.capacityMiB = 1;
    expect(checkPoolCapacity(base, resolveSpec(base), r).map((i) => i.path)).toEqual([
      'pools[2].maxOvercommit',
    ]);
  });
});

describe('passthrough against the hosts', () => {
  const spec = storageSpec((s) => {
    s.hosts[0].passthrough = { usb: ['046d:*'] };
    s.vms[0].devices = [{ pci: '0000:65:00.0' }, { usb: '046d:c52b' }];
  });

  it('hands each host’s VMs, its inventory and its USB policy to the check, and reports its refusals', () => {
    const calls: unknown[] = [];
    const check: HostPassthroughCheck = (vms, inventory, policy) => {
      calls.push({ vms, inventory, policy });
      return [
        {
          path: 'vms[0].devices[0]',
          reason: 'host "host1" has no IOMMU',
          fix: 'boot it with intel_iommu=on',
        },
      ];
    };
    const r = reports();
    r[0]!.devices = { iommu: false, pci: [], usb: [] };
    expect(checkDevicesAgainstHosts(spec, r, check)).toEqual([
      { path: 'vms[0].devices[0]', message: 'host "host1" has no IOMMU; boot it with intel_iommu=on' },
    ]);
    expect(calls).toEqual([
      {
        vms: [{ vm: { name: 'web1', host: 'host1', index: 0 }, requests: spec.vms[0]!.devices }],
        inventory: { iommu: false, pci: [], usb: [] },
        policy: { usbAllow: ['046d:*'], usbAllowPath: 'hosts[0].passthrough.usb' },
      },
    ]);
  });

  it('without the check, refuses requests only where the host reports no inventory', () => {
    const r = reports();
    expect(checkDevicesAgainstHosts(spec, r).map((i) => i.path)).toEqual([
      'vms[0].devices[0]',
      'vms[0].devices[1]',
    ]);
    r[0]!.devices = { iommu: true, pci: [], usb: [] };
    expect(checkDevicesAgainstHosts(spec, r)).toEqual([]);
  });
});
