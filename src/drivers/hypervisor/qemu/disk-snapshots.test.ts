import { describe, expect, it } from 'vitest';
import type { VmConfig } from '../../../shared/model.js';
import { POOL_FEATURE_REASONS } from '../../../shared/storage.js';
import { vmPaths } from './cmdline.js';
import {
  commonSnapshots,
  internalSnapshotTransaction,
  snapshotDisks,
  snapshotJobArgs,
} from './disk-snapshots.js';

const base: VmConfig = {
  name: 'db1',
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'qcow2', path: '/images/base.qcow2', cloudInit: { sshAuthorizedKeys: [] } },
  disks: [
    { name: 'data', sizeMiB: 64 },
    {
      name: 'logs',
      source: {
        kind: 'nfs',
        pool: 'nas',
        volume: 'logs',
        server: '10.0.0.5',
        export: '/vmlink/nas',
        file: 'logs.qcow2',
        format: 'qcow2',
      },
    },
    {
      name: 'iso',
      media: 'cdrom',
      source: { kind: 'file', pool: 'p', volume: 'iso', path: '/p/iso.iso', format: 'iso' },
    },
  ],
  nics: [],
  state: 'running',
};
const paths = vmPaths('/s', 'db1');

describe('VM snapshots', () => {
  it('cover the qcow2 root and every writable disk (not CD-ROMs), by node and by image', () => {
    const disks = snapshotDisks(base, paths, [4, 0, 1]);
    expect(disks).toEqual([
      { disk: 'root', node: 'root', image: '/s/vms/db1/root.qcow2', encrypted: false },
      { disk: 'data', node: 'disk4', image: '/s/vms/db1/disk-data.qcow2', encrypted: false },
      { disk: 'logs', node: 'disk0', image: 'nfs://10.0.0.5/vmlink/nas/logs.qcow2', encrypted: false },
    ]);
    expect(internalSnapshotTransaction(disks, 's1')).toEqual({
      actions: [
        { type: 'blockdev-snapshot-internal-sync', data: { device: 'root', name: 's1' } },
        { type: 'blockdev-snapshot-internal-sync', data: { device: 'disk4', name: 's1' } },
        { type: 'blockdev-snapshot-internal-sync', data: { device: 'disk0', name: 's1' } },
      ],
    });
    expect(snapshotJobArgs(disks, 's2')).toEqual({
      'job-id': 'vmlink-snapshot',
      tag: 's2',
      vmstate: 'root',
      devices: ['root', 'disk4', 'disk0'],
    });
  });

  it('refuse a VM with a raw iSCSI disk, naming it and the reason', () => {
    const cfg: VmConfig = {
      ...base,
      disks: [
        {
          name: 'lun',
          source: {
            kind: 'iscsi',
            pool: 'san',
            volume: 'v',
            portal: '10.0.0.5:3260',
            iqn: 'iqn.2026-12.io.vmlink:s.san.v',
            lun: 1,
          },
        },
      ],
    };
    expect(() => snapshotDisks(cfg, paths, undefined)).toThrow(
      `VM db1: disk lun is an iSCSI LUN, which cannot snapshot: ${POOL_FEATURE_REASONS.iscsi?.snapshots}`,
    );
    expect(() =>
      snapshotDisks({ ...base, image: { kind: 'test-guest' }, disks: [] }, paths, undefined),
    ).toThrow(/no writable qcow2 disk/);
  });

  it('lists only snapshots every disk has, with the RAM saved and the earliest time', () => {
    const got = commonSnapshots([
      [
        { name: 'a', 'date-sec': 200, 'vm-state-size': 0 },
        { name: 'b', 'date-sec': 300, 'vm-state-size': 1234 },
        { name: 'only-here', 'date-sec': 1 },
      ],
      [{ name: 'b', 'date-sec': 301, 'vm-state-size': 0 }, { name: 'a', 'date-sec': 199 }, { name: 42 }],
    ]);
    expect(got).toEqual([
      { name: 'a', createdAt: new Date(199_000).toISOString() },
      { name: 'b', createdAt: new Date(300_000).toISOString(), vmStateBytes: 1234 },
    ]);
    expect(commonSnapshots([])).toEqual([]);
  });
});
