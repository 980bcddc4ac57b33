import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type { VmConfig } from '../shared/model.js';
import type { DiskSource } from '../shared/storage.js';
import { DISK_IO_SCRIPT, diskIoArgv, openMatches, parseDiskIo, storageChecksOf } from './storage.js';

const lun: DiskSource = {
  kind: 'iscsi',
  pool: 'san',
  volume: 'db',
  portal: '192.168.50.30:3260',
  iqn: 'iqn.2026-12.io.vmlink:san1.san.db',
  lun: 1,
  chap: { user: 'vmlink', secret: 'san-chap' },
};
const nfsFile: DiskSource = {
  kind: 'nfs',
  pool: 'nas',
  volume: 'data',
  server: '192.168.50.30',
  export: '/vmlink/nas',
  file: 'data.qcow2',
  format: 'qcow2',
};
const local: DiskSource = {
  kind: 'file',
  pool: 'local',
  volume: 'scratch',
  path: '/var/lib/vmlink/pools/local/scratch.qcow2',
  format: 'qcow2',
};

const vm = (name: string, disks: VmConfig['disks'], extra: Partial<VmConfig> = {}): VmConfig => ({
  name,
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  disks,
  nics: [],
  state: 'running',
  ...extra,
});

describe('storage checks from the spec', () => {
  it('probes each portal once per host, and opens, reads and writes each pool disk of a running VM', () => {
    const plan = storageChecksOf(
      {
        host1: {
          vms: [
            vm('db', [{ name: 'data', source: lun }], { rootSource: nfsFile }),
            vm('db2', [{ name: 'data', source: { ...lun, volume: 'db2' } }]),
          ],
        },
        host2: {
          vms: [
            vm('web', [
              { name: 'scratch', source: local },
              { name: 'ro', source: nfsFile, readOnly: true },
              { name: 'plain', sizeMiB: 64 },
            ]),
            vm('off', [{ name: 'data', source: lun }], { state: 'stopped' }),
          ],
        },
      },
      () => true,
    );
    const portals = plan.checks.filter((c) => c.check === 'portal');
    expect(portals.map((c) => `${c.host} ${c.address}:${c.port} ${c.service}`)).toEqual([
      'host1 192.168.50.30:111 portmapper',
      'host1 192.168.50.30:2049 nfs',
      'host1 192.168.50.30:3260 iscsi',
      'host2 192.168.50.30:111 portmapper',
      'host2 192.168.50.30:2049 nfs',
    ]);
    const disks = plan.checks.filter((c) => c.check !== 'portal');
    expect(disks.map((c) => `${c.check} ${c.vm}/${c.disk}${c.check === 'io' ? ` ${c.write}` : ''}`)).toEqual([
      'open db/root',
      'io db/root true',
      'open db/data',
      'io db/data true',
      'open db2/data',
      'io db2/data true',
      'open web/scratch',
      'io web/scratch true',
      'open web/ro',
      'io web/ro false',
    ]);
  });

  it('says which disks it cannot read in the guest', () => {
    const plan = storageChecksOf(
      {
        h: {
          vms: [
            vm('a', [{ name: 'iso', source: { ...local, format: 'iso' }, media: 'cdrom' }]),
            vm('b', [{ name: 'data', source: local }], {
              image: { kind: 'qcow2', path: '/x.qcow2' } as never,
            }),
          ],
        },
      },
      (v) => v === 'a',
    );
    expect(plan.checks.map((c) => c.check)).toEqual(['open', 'open']);
    expect(plan.notes).toEqual([
      'a/iso: a CD-ROM, not read or written in the guest',
      'b/data: not read or written in the guest (only the test guest runs the check)',
    ]);
  });

  it("recognises a volume in QEMU's open block devices", () => {
    expect(openMatches(lun, 'json:{"driver":"iscsi","target":"iqn.2026-12.io.vmlink:san1.san.db"}')).toBe(
      true,
    );
    expect(openMatches(lun, 'iscsi://192.168.50.30:3260/iqn.2026-12.io.vmlink:san1.san.other/1')).toBe(false);
    expect(openMatches(nfsFile, 'nfs://192.168.50.30/vmlink/nas/data.qcow2')).toBe(true);
    expect(openMatches(local, '/dev/fdset/3')).toBe(true);
  });
});

describe('the guest disk I/O check', () => {
  it('is a valid POSIX shell script with the serial as an argument, never in the script', () => {
    execFileSync('/bin/busybox', ['sh', '-n', '-c', DISK_IO_SCRIPT]);
    execFileSync('sh', ['-n', '-c', DISK_IO_SCRIPT]);
    const argv = diskIoArgv("x'; reboot #", true);
    expect(argv[2]).toBe(DISK_IO_SCRIPT);
    expect(argv.slice(3)).toEqual(['vmlink-disk-io', "x'; reboot #", 'write']);
  });

  it('reads success, failures, and a guest that could not run it', () => {
    expect(
      parseDiskIo(0, 'vmlink-disk-io ok vdb 2097152 0f343b0931126a20f133d67c2b018a3b write\n', ''),
    ).toEqual({ ok: true, detail: '/dev/vdb (1024 MiB): last 4 KiB read, written back and read again' });
    expect(parseDiskIo(7, 'write to /dev/vdb failed: dd: Input/output error\n', '')).toEqual({
      ok: false,
      detail: 'write to /dev/vdb failed: dd: Input/output error',
    });
    // A forged success line with a failing exit code is a failure.
    expect(parseDiskIo(3, 'vmlink-disk-io ok vdb 8 0f343b0931126a20f133d67c2b018a3b read\n', '').ok).toBe(
      false,
    );
    expect(parseDiskIo(127, '', 'sh: dd: not found')).toMatchObject({ ok: false, unmeasured: true });
  });
});
