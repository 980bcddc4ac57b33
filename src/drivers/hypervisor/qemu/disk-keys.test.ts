import { describe, expect, it } from 'vitest';
import type { VmConfig } from '../../../shared/model.js';
import { assertEncryptionKept, diskKeys, diskSecrets } from './disk-keys.js';

const cfg: VmConfig = {
  name: 'web1',
  cpus: 1,
  memoryMiB: 128,
  image: { kind: 'test-guest' },
  disks: [
    { name: 'a', sizeMiB: 8, encryption: { secret: 'ka' } },
    { name: 'plain', sizeMiB: 8 },
    { name: 'b', sizeMiB: 8, encryption: { secret: 'kb' } },
  ],
  nics: [],
  state: 'running',
};

describe('encrypted disk keys', () => {
  it('maps each encrypted disk to its secret by index, and names disk and secret when one is missing', () => {
    const keys = diskKeys(cfg, [
      { name: 'kb', value: 'Yg==' },
      { name: 'ka', value: 'YQ==' },
      { name: 'unused', value: 'dQ==' },
    ]);
    expect([...keys]).toEqual([
      [0, 'YQ=='],
      [2, 'Yg=='],
    ]);
    expect(() => diskKeys(cfg, [{ name: 'ka', value: 'YQ==' }])).toThrow(
      'VM web1: disk b is encrypted with secret kb, whose value the controller did not send with this step',
    );
    expect(diskKeys({ ...cfg, disks: [] }, undefined).size).toBe(0);
  });

  it("finds a disk's LUKS key and iSCSI CHAP password, naming disk and secret (never a value) when one is missing", () => {
    const disk = {
      name: 'lun',
      source: {
        kind: 'iscsi' as const,
        pool: 'san',
        volume: 'v',
        portal: '10.0.0.9:3260',
        iqn: 'iqn.2026-12.io.vmlink:s1.san.v',
        lun: 1,
        chap: { user: 'u', secret: 'san-chap' },
      },
    };
    expect(diskSecrets('web1', disk, [{ name: 'san-chap', value: 'cHc=' }])).toEqual({ chapBase64: 'cHc=' });
    expect(() => diskSecrets('web1', disk, [{ name: 'other', value: 'cHc=' }])).toThrow(
      'VM web1: disk lun logs in to its iSCSI target with the CHAP password of secret san-chap, whose value the controller did not send with this step',
    );
    expect(diskSecrets('web1', { name: 'plain' }, undefined)).toEqual({});
  });

  it('refuses to change the encryption of a disk that exists, and allows new disks either way', () => {
    expect(() =>
      assertEncryptionKept(cfg, {
        ...cfg,
        disks: [{ name: 'a', sizeMiB: 8, encryption: { secret: 'other' } }],
      }),
    ).toThrow(/disk a exists encrypted with secret ka; encryption is fixed/);
    expect(() =>
      assertEncryptionKept(cfg, {
        ...cfg,
        disks: [{ name: 'plain', sizeMiB: 8, encryption: { secret: 'k' } }],
      }),
    ).toThrow(/disk plain exists unencrypted/);
    expect(() =>
      assertEncryptionKept(cfg, {
        ...cfg,
        disks: [...cfg.disks, { name: 'c', sizeMiB: 8, encryption: { secret: 'k' } }],
      }),
    ).not.toThrow();
  });
});
