import { describe, expect, it } from 'vitest';
import type { VmConfig } from '../../../shared/model.js';
import { vmPaths } from './cmdline.js';
import { assertEncryptionKept, attachEncryptedDisks, diskKeys } from './disk-keys.js';

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

  it('attaches every disk (key, nodes, device, key object removed), then continues the guest', async () => {
    const sent: string[] = [];
    const qmp = {
      execute: async (command: string, args?: unknown) => {
        sent.push(
          `${command} ${(args as { id?: string; 'node-name'?: string })?.id ?? (args as { 'node-name'?: string })?.['node-name'] ?? ''}`.trim(),
        );
        return undefined as never;
      },
    };
    await attachEncryptedDisks(
      qmp,
      cfg,
      vmPaths('/s', 'web1'),
      diskKeys(cfg, [
        { name: 'ka', value: 'YQ==' },
        { name: 'kb', value: 'Yg==' },
      ]),
    );
    expect(sent).toEqual([
      'object-add disk0-key',
      'blockdev-add disk0-file',
      'blockdev-add disk0',
      'device_add disk0',
      'object-del disk0-key',
      'object-add disk2-key',
      'blockdev-add disk2-file',
      'blockdev-add disk2',
      'device_add disk2',
      'object-del disk2-key',
      'cont',
    ]);
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
