import { describe, expect, it } from 'vitest';
import { nfsExportId } from '../shared/storage.js';
import { resolveSpec } from './resolve.js';
import { storageSpec } from './storage.test-util.js';

describe('storage resolution', () => {
  const d = resolveSpec(storageSpec());
  const web1 = d.host1!.vms.find((v) => v.name === 'web1')!;
  const db1 = d.host2!.vms.find((v) => v.name === 'db1')!;

  it('puts each pool on its host with its defaults, nfs export and the lab machine’s tgtd port', () => {
    expect(d.host1!.pools).toEqual([{ name: 'local', type: 'dir', path: '/var/lib/vmlink/pools/local' }]);
    expect(d.san1!.pools).toEqual([
      {
        name: 'san',
        type: 'iscsi',
        path: '/var/lib/vmlink/pools/san',
        chap: { user: 'vmlink', secret: 'san-chap' },
        iscsi: { tgtControlPort: 1 },
      },
      {
        name: 'nas',
        type: 'nfs',
        path: '/var/lib/vmlink/pools/nas',
        nfs: { exportId: nfsExportId('nas'), pseudoPath: '/vmlink/nas' },
      },
    ]);
    expect(d.host2!.pools).toEqual([]);
  });

  it('lists spec volumes, VM-made volumes and linked-clone roots on the pool’s host', () => {
    expect(d.san1!.volumes).toEqual([
      { config: { pool: 'nas', name: 'tmpl', sizeMiB: 2048, format: 'qcow2' }, path: 'volumes[0]' },
      { config: { pool: 'san', name: 'data', sizeMiB: 512, format: 'raw' }, path: 'volumes[1]' },
      {
        config: {
          pool: 'nas',
          name: 'web1-root',
          sizeMiB: 2048,
          format: 'qcow2',
          from: { volume: 'tmpl', linked: true },
        },
        path: 'vms[0].image',
        madeFor: 'web1',
      },
      {
        config: { pool: 'nas', name: 'db1-db', sizeMiB: 1024, format: 'qcow2' },
        path: 'vms[1].disks[0]',
        madeFor: 'db1',
      },
    ]);
    expect(d.host1!.volumes).toEqual([
      {
        config: { pool: 'local', name: 'web1-logs', sizeMiB: 128, format: 'qcow2' },
        path: 'vms[0].disks[1]',
        madeFor: 'web1',
      },
    ]);
  });

  it('gives each pool disk how its host opens it: a file, an iSCSI LUN with CHAP (secret named), an NFS file', () => {
    expect(web1.disks).toEqual([
      { name: 'scratch', sizeMiB: 64 },
      {
        name: 'logs',
        sizeMiB: 128,
        source: {
          kind: 'file',
          pool: 'local',
          volume: 'web1-logs',
          path: '/var/lib/vmlink/pools/local/web1-logs.qcow2',
          format: 'qcow2',
        },
      },
      {
        name: 'data',
        source: {
          kind: 'iscsi',
          pool: 'san',
          volume: 'data',
          portal: '192.168.50.20:3260',
          iqn: 'iqn.2026-12.io.vmlink:san1.san.data',
          lun: 1,
          chap: { user: 'vmlink', secret: 'san-chap' },
        },
      },
    ]);
    expect(db1.disks[0]!.source).toEqual({
      kind: 'nfs',
      pool: 'nas',
      volume: 'db1-db',
      server: '192.168.50.20',
      export: '/vmlink/nas',
      file: 'db1-db.qcow2',
      format: 'qcow2',
    });
    expect(web1.rootSource).toEqual({
      kind: 'nfs',
      pool: 'nas',
      volume: 'web1-root',
      server: '192.168.50.20',
      export: '/vmlink/nas',
      file: 'web1-root.qcow2',
      format: 'qcow2',
    });
  });

  it('carries no secret value anywhere: only secret names', () => {
    expect(JSON.stringify(d)).not.toMatch(/password|passwd/i);
  });

  it('a pool address overrides the storage host’s; hosts[].address serves outside a lab', () => {
    const a = resolveSpec(
      storageSpec((s) => {
        s.pools[1].address = '192.168.50.99';
      }),
    );
    expect(a.host1!.vms[0]!.disks[2]!.source).toMatchObject({ portal: '192.168.50.99:3260' });
    const b = resolveSpec(
      storageSpec((s) => {
        delete s.lab;
        s.hosts[2].address = '10.9.9.9';
      }),
    );
    expect(b.san1!.pools![0]!.iscsi).toEqual({ tgtControlPort: 0 });
    expect(b.host2!.vms[0]!.disks[0]!.source).toMatchObject({ server: '10.9.9.9' });
  });

  it('an ISO in a CD-ROM is read-only, an imported volume gets its pool’s format, devices pass through', () => {
    const r = resolveSpec(
      storageSpec((s) => {
        s.vms[1].disks.push({ name: 'cd', pool: 'nas', volume: 'debian', media: 'cdrom' });
        s.vms[1].image = { kind: 'volume', pool: 'san', volume: 'golden' };
        s.vms[1].devices = [{ pci: '0000:65:00.0' }];
      }),
    );
    const vm = r.host2!.vms[0]!;
    expect(vm.disks[1]).toEqual({
      name: 'cd',
      media: 'cdrom',
      readOnly: true,
      source: expect.objectContaining({ kind: 'nfs', file: 'debian.iso', format: 'iso' }),
    });
    expect(vm.rootSource).toMatchObject({
      kind: 'iscsi',
      volume: 'golden',
      iqn: 'iqn.2026-12.io.vmlink:san1.san.golden',
    });
    expect(vm.devices).toEqual([{ pci: '0000:65:00.0' }]);
  });

  it('a clone is keyed like its template', () => {
    const r = resolveSpec(
      storageSpec((s) => {
        s.volumes.push(
          { name: 'sec', pool: 'nas', sizeMiB: 10, encryption: { secret: 'k' } },
          { name: 'sec2', pool: 'nas', from: { volume: 'sec' } },
        );
        s.vms[1].disks.push({ name: 'x', pool: 'nas', volume: 'sec2' });
      }),
    );
    expect(r.san1!.volumes!.find((v) => v.config.name === 'sec2')!.config).toMatchObject({
      sizeMiB: 10,
      encryption: { secret: 'k' },
    });
    expect(r.host2!.vms[0]!.disks[1]).toMatchObject({ name: 'x', encryption: { secret: 'k' } });
  });

  it('a clone of a template the spec does not size is sized by the plan from the observed template', () => {
    const r = resolveSpec(
      storageSpec((s) => {
        s.vms[0].image = { kind: 'volume', pool: 'nas', volume: 'imported', clone: true };
      }),
    );
    expect(r.san1!.volumes!.find((v) => v.config.name === 'web1-root')).toMatchObject({
      sizeFromTemplate: true,
      config: { from: { volume: 'imported', linked: true } },
    });
  });

  it('leaves VMs without pools exactly as before: no new fields, so their config hash stays', () => {
    const r = resolveSpec(
      storageSpec((s) => {
        s.vms[1].disks = [{ name: 'x', sizeMiB: 5, encryption: { secret: 'k' } }];
      }),
    );
    const vm = r.host2!.vms[0]!;
    expect(Object.keys(vm).sort()).toEqual(['cpus', 'disks', 'image', 'memoryMiB', 'name', 'nics', 'state']);
    expect(vm.disks).toEqual([{ name: 'x', sizeMiB: 5, encryption: { secret: 'k' } }]);
  });
});
