import { describe, expect, it } from 'vitest';
import type { DiskSource } from '../../../shared/storage.js';
import { diskSlotIds, ROOT_DISK_IDS } from './disk-slots.js';
import { type DiskAttachInput, diskAttachCommands, redactUrlCredentials } from './disk-sources.js';

const file: DiskSource = {
  kind: 'file',
  pool: 'local',
  volume: 'data',
  path: '/var/lib/vmlink/pools/local/data.qcow2',
  format: 'qcow2',
};
const iscsi: DiskSource = {
  kind: 'iscsi',
  pool: 'san',
  volume: 'db',
  portal: '10.10.0.50:3260',
  iqn: 'iqn.2026-12.io.vmlink:san1.san.db',
  lun: 1,
  chap: { user: 'vmlink', secret: 'san-chap' },
};
const nfs: DiskSource = {
  kind: 'nfs',
  pool: 'nas',
  volume: 'logs',
  server: '10.10.0.50',
  export: '/vmlink/nas',
  file: 'logs.qcow2',
  format: 'qcow2',
};

/** All commands of one attach, in the order they run, with the fd-passed file noted. */
function flat(input: DiskAttachInput) {
  const c = diskAttachCommands(input);
  return {
    ...(c.passFile ? { passFile: c.passFile } : {}),
    commands: [...c.secrets, c.protocol, ...c.rest],
  };
}

describe('disk blockdevs by source (golden)', () => {
  it('dir pool file: root passes the descriptor, the node opens /dev/fdset/N', async () => {
    const out = flat({
      disk: { name: 'data' },
      origin: { kind: 'source', source: file },
      ids: diskSlotIds(3),
    });
    await expect(`${JSON.stringify(out, null, 2)}\n`).toMatchFileSnapshot('./__golden__/disk-file.json');
  });

  it('iSCSI LUN with CHAP: the password as a secret object, deleted once the LUN is open', async () => {
    const out = flat({
      disk: { name: 'db' },
      origin: { kind: 'source', source: iscsi },
      ids: diskSlotIds(0),
      chapBase64: 'czNjcjN0',
    });
    await expect(`${JSON.stringify(out, null, 2)}\n`).toMatchFileSnapshot('./__golden__/disk-iscsi.json');
  });

  it('NFS volume, LUKS-encrypted, read-only', async () => {
    const out = flat({
      disk: { name: 'logs', encryption: { secret: 'k' }, readOnly: true },
      origin: { kind: 'source', source: nfs },
      ids: diskSlotIds(1),
      keyBase64: 'a2V5',
    });
    await expect(`${JSON.stringify(out, null, 2)}\n`).toMatchFileSnapshot('./__golden__/disk-nfs-luks.json');
  });

  it('CD-ROM from a dir pool ISO: scsi-cd, raw, read-only; root volume with boot index 0', async () => {
    const iso: DiskSource = { ...file, volume: 'installer', path: '/p/installer.iso', format: 'iso' };
    const cd = flat({
      disk: { name: 'cdrom', media: 'cdrom' },
      origin: { kind: 'source', source: iso },
      ids: diskSlotIds(2),
      scsiId: 2,
    });
    const root = flat({
      disk: { name: 'root' },
      origin: { kind: 'source', source: nfs },
      ids: ROOT_DISK_IDS,
      bootindex: 0,
    });
    await expect(`${JSON.stringify({ cd, root }, null, 2)}\n`).toMatchFileSnapshot(
      './__golden__/disk-cdrom-root.json',
    );
  });

  it('never puts a secret anywhere but the secret object, and refuses a disk whose secret is missing', () => {
    const c = diskAttachCommands({
      disk: { name: 'db', encryption: { secret: 'k' } },
      origin: { kind: 'source', source: { ...iscsi } },
      ids: diskSlotIds(0),
      chapBase64: 'Q0hBUFBX',
      keyBase64: 'TFVLU0tFWQ==',
    });
    const outside = JSON.stringify([c.protocol, ...c.rest]);
    expect(outside).not.toContain('Q0hBUFBX');
    expect(outside).not.toContain('TFVLU0tFWQ==');
    expect(c.secrets.map((s) => s.arguments.id)).toEqual(['disk0-key', 'disk0-chap']);
    expect(c.rest.slice(-2).map((s) => [s.execute, s.arguments.id])).toEqual([
      ['object-del', 'disk0-key'],
      ['object-del', 'disk0-chap'],
    ]);
    expect(() =>
      diskAttachCommands({
        disk: { name: 'db' },
        origin: { kind: 'source', source: iscsi },
        ids: diskSlotIds(0),
      }),
    ).toThrow(/CHAP password is missing/);
  });

  it('cuts credentials out of URLs in messages', () => {
    expect(redactUrlCredentials('iscsi://user%pw@10.0.0.1:3260/iqn/1 failed')).toBe(
      'iscsi://10.0.0.1:3260/iqn/1 failed',
    );
  });
});
