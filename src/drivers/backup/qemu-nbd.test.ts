// qemu-nbd's command line: what it serves and how, and that nothing a caller passes can become another option.
import { describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../shared/errors.js';
import { qemuNbdArgv, qemuNbdFiles } from './qemu-nbd.js';

const dir = '/var/lib/vmlink/vms/web1/run';

describe('qemuNbdArgv', () => {
  it('serves a qcow2 read-only with its dirty bitmap on a socket of its own', () => {
    expect(
      qemuNbdArgv({
        image: '/var/lib/vmlink/vms/web1/root.qcow2',
        readOnly: true,
        bitmap: 'vmlink-nightly-20261201T120000Z',
        socketDir: dir,
        exportName: 'root',
      }),
    ).toEqual([
      'qemu-nbd',
      `--socket=${dir}/qemu-nbd-root.sock`,
      '--export-name=root',
      `--pid-file=${dir}/qemu-nbd-root.pid`,
      '--persistent',
      '--shared=1',
      '--cache=writeback',
      '--read-only',
      '--bitmap=vmlink-nightly-20261201T120000Z',
      '--format=qcow2',
      '--',
      '/var/lib/vmlink/vms/web1/root.qcow2',
    ]);
  });

  it('serves a LUKS image through image options and secrets, writable (write-zeroes punch holes)', () => {
    const argv = qemuNbdArgv({
      image: { imageOpts: 'driver=qcow2,file.driver=file,file.filename=/d/x.qcow2,encrypt.key-secret=luks0' },
      readOnly: false,
      socketDir: dir,
      secrets: [{ id: 'luks0', file: '/run/vmlink/keys/a,b' }],
      cache: 'none',
      aio: 'native',
    });
    expect(argv).toContain('--object');
    expect(argv[argv.indexOf('--object') + 1]).toBe('secret,id=luks0,file=/run/vmlink/keys/a,,b');
    expect(argv).toContain('--discard=unmap');
    expect(argv).not.toContain('--read-only');
    expect(argv).toContain('--cache=none');
    expect(argv).toContain('--aio=native');
    expect(argv.slice(-3)).toEqual([
      '--image-opts',
      '--',
      'driver=qcow2,file.driver=file,file.filename=/d/x.qcow2,encrypt.key-secret=luks0',
    ]);
  });

  it('takes iscsi:// and nfs:// URLs as images', () => {
    const argv = qemuNbdArgv({
      image: 'iscsi://10.0.0.2:3260/iqn.2026-12.vmlink:pool/1',
      format: 'raw',
      readOnly: true,
      socketDir: dir,
      netns: 'lab-h1',
    });
    expect(argv.slice(-3)).toEqual(['--format=raw', '--', 'iscsi://10.0.0.2:3260/iqn.2026-12.vmlink:pool/1']);
  });

  it('refuses what could turn into another option or leave its directory', () => {
    const base = { readOnly: true, socketDir: dir };
    const bad = [
      { ...base, image: '-f' },
      { ...base, image: 'relative.qcow2' },
      { ...base, image: '/x\n--object' },
      { ...base, image: 'http://example.com/x' },
      { ...base, image: '/x', exportName: '../x' },
      { ...base, image: '/x', exportName: 'a b' },
      { ...base, image: '/x', bitmap: 'a,b' },
      { ...base, image: '/x', bitmap: '' },
      { ...base, image: '/x', secrets: [{ id: 'a,file=/etc/shadow', file: '/k' }] },
      { ...base, image: '/x', secrets: [{ id: 's', file: 'k' }] },
      { ...base, image: '/x', shared: 0 },
      { ...base, image: '/x', aio: 'native' as const },
      { ...base, image: { imageOpts: 'file.filename=/x' } },
      { ...base, image: { imageOpts: 'driver=raw' }, format: 'raw' as const },
      { ...base, image: '/x', socketDir: 'run' },
      { ...base, image: '/x', socketDir: `/${'d'.repeat(100)}` },
    ];
    for (const opts of bad)
      expect(() => qemuNbdArgv(opts), JSON.stringify(opts)).toThrow(InvalidRequestError);
  });

  it('names its files after the export', () => {
    expect(qemuNbdFiles('/r', 'vdb')).toEqual({
      socket: '/r/qemu-nbd-vdb.sock',
      identity: '/r/qemu-nbd-vdb.id.json',
      pidfile: '/r/qemu-nbd-vdb.pid',
      log: '/r/qemu-nbd-vdb.log',
    });
  });
});
