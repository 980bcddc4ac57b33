import { describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../../exec/runner.js';
import type { DiskConfig, VmConfig } from '../../../shared/model.js';
import type { StorageDriver } from '../../storage/types.js';
import { buildQemuArgv, vmPaths } from './cmdline.js';
import { disksAtStart } from './disk-attach.js';
import { diskChanges, onlyNicsAndDisksDiffer, plugDisks } from './disk-plug.js';
import { assignDiskSlots, DISK_SLOTS, hasDiskSlots } from './disk-slots.js';
import type { QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

const pool = (name: string): DiskConfig => ({
  name,
  source: { kind: 'file', pool: 'p', volume: name, path: `/pools/p/${name}.qcow2`, format: 'qcow2' },
});

const base: VmConfig = {
  name: 'web1',
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  disks: [],
  nics: [],
  state: 'running',
};

const argv = (cfg: VmConfig, diskSlots?: number[]) =>
  buildQemuArgv({
    config: cfg,
    accel: 'tcg',
    paths: vmPaths('/s', cfg.name),
    imagesDir: '/images',
    qemuBinary: '/usr/bin/qemu-system-x86_64',
    ...(diskSlots ? { diskSlots } : {}),
  });

describe('disk slots', () => {
  it('keeps each disk in its slot and gives a new one the lowest free slot', () => {
    const a = [{ name: 'a', sizeMiB: 8 }, pool('b'), pool('c')];
    const slots = assignDiskSlots(a);
    expect(slots).toEqual([0, 1, 2]);
    // b removed, d added: d takes b's freed slot, c stays in 2.
    expect(assignDiskSlots([a[0]!, a[2]!, pool('d')], { disks: a, slots })).toEqual([0, 2, 1]);
    expect(() => assignDiskSlots(Array.from({ length: DISK_SLOTS + 1 }, (_, i) => pool(`d${i}`)))).toThrow(
      /at most 16 disks/,
    );
  });

  it('starts paused only for disks over QMP; VM-directory disks sit in their slot on the command line', () => {
    const plain = argv({ ...base, disks: [{ name: 'a', sizeMiB: 8 }] }, [5]);
    expect(plain).not.toContain('-S');
    expect(plain.join(' ')).toContain('virtio-blk-pci,drive=disk5,id=disk5,bus=diskport5,serial=a');
    expect(hasDiskSlots(plain)).toBe(true);
    const ro = argv({ ...base, disks: [{ name: 'a', sizeMiB: 8, readOnly: true }] });
    expect(ro.join(' ')).toContain('driver=qcow2,node-name=disk0,file=disk0-file,read-only=on');
    const pooled = argv({ ...base, disks: [pool('b')] });
    expect(pooled).toContain('-S');
    expect(pooled.join(' ')).not.toContain('/pools/p/b.qcow2'); // the jailed QEMU gets a descriptor
    expect(pooled.join(' ')).not.toContain('virtio-scsi-pci');
    const cd = argv({ ...base, disks: [{ ...pool('iso'), media: 'cdrom' }] });
    expect(cd.join(' ')).toContain('virtio-scsi-pci,id=scsi0,addr=0x1b');
  });

  it('a VM booting from a volume has no kernel, no overlay, and its root port and boot disk first', async () => {
    const cfg: VmConfig = {
      ...base,
      image: { kind: 'volume', pool: 'p', volume: 'web1-root', clone: true },
      rootSource: {
        kind: 'file',
        pool: 'p',
        volume: 'web1-root',
        path: '/pools/p/web1-root.qcow2',
        format: 'qcow2',
      },
      disks: [pool('data')],
    };
    const a = argv(cfg);
    expect(a).toContain('-S');
    expect(a).not.toContain('-kernel');
    expect(a.join(' ')).not.toContain('root.qcow2');
    expect(a.join(' ')).toContain('pcie-root-port,id=rootport,bus=pcie.0,chassis=25,addr=0x1a');
    const at = disksAtStart(cfg, vmPaths('/s', 'web1'), undefined, undefined);
    expect(at.map((t) => [t.disk.name, t.ids.node, t.bootindex])).toEqual([
      ['root', 'root', 0],
      ['data', 'disk0', undefined],
    ]);
  });
});

describe('disk hot-plug changes', () => {
  it('finds removed and added disks, grows VM-directory disks, ignores pool-volume sizes', () => {
    const from = [{ name: 'a', sizeMiB: 8 }, pool('b'), pool('c')];
    const to = [{ name: 'a', sizeMiB: 16 }, { ...pool('c'), sizeMiB: 64 }, pool('d')];
    const ch = diskChanges('web1', from, to);
    expect(ch.removed.map((d) => d.name)).toEqual(['b']);
    expect(ch.added.map((d) => d.name)).toEqual(['d']);
    expect(ch.grown.map((d) => d.name)).toEqual(['a']);
  });

  it('refuses a shrink and a disk whose source or encryption changed', () => {
    expect(() => diskChanges('web1', [{ name: 'a', sizeMiB: 16 }], [{ name: 'a', sizeMiB: 8 }])).toThrow(
      'VM web1: disk a cannot shrink from 16 MiB to 8 MiB',
    );
    expect(() => diskChanges('web1', [pool('a')], [{ ...pool('a'), encryption: { secret: 'k' } }])).toThrow(
      /disk a changed while the VM runs/,
    );
  });

  it('lets only NICs and disks differ', () => {
    expect(onlyNicsAndDisksDiffer(base, { ...base, disks: [pool('x')], state: 'stopped' })).toBe(true);
    expect(onlyNicsAndDisksDiffer(base, { ...base, memoryMiB: 512 })).toBe(false);
  });
});

describe('plugDisks refusals (before anything changes)', () => {
  const deps = (sent: string[]) => ({
    vm: 'web1',
    qmp: {
      execute: async (c: string) => {
        sent.push(c);
        return [] as never;
      },
      onEvent: () => () => {},
    } as unknown as QmpClient,
    fdChannel: { runner: new RecordingRunner(), helper: '/h', qmpFdSocket: '/s' },
    paths: vmPaths('/s', 'web1'),
    storage: {} as StorageDriver,
    owner: { uid: 7000, gid: 7000 },
    unplugTimeoutMs: 1000,
  });
  const nfs: DiskConfig = {
    name: 'logs',
    source: {
      kind: 'nfs',
      pool: 'n',
      volume: 'logs',
      server: '10.0.0.5',
      export: '/vmlink/n',
      file: 'logs.qcow2',
      format: 'qcow2',
    },
  };
  const stored = (disks: DiskConfig[], extra: Partial<StoredVm> = {}): StoredVm => ({
    config: { ...base, disks },
    configHash: 'h',
    accel: 'tcg',
    argv: argv({ ...base, disks }),
    ...extra,
  });

  it('refuses what this QEMU cannot take, so that the agent restarts the VM instead', async () => {
    const sent: string[] = [];
    await expect(
      plugDisks(deps(sent), stored([], { argv: ['qemu'] }), { ...base, disks: [pool('a')] }, undefined),
    ).rejects.toThrow(/started without disk hot-plug slots/);
    await expect(
      plugDisks(deps(sent), stored([]), { ...base, disks: [{ ...pool('iso'), media: 'cdrom' }] }, undefined),
    ).rejects.toThrow(/has no CD-ROM controller/);
    await expect(plugDisks(deps(sent), stored([]), { ...base, disks: [nfs] }, undefined)).rejects.toThrow(
      /runs without network access .* cannot open disk logs: stop and start the VM/,
    );
    await expect(
      plugDisks(
        deps(sent),
        stored([]),
        { ...base, disks: [{ ...pool('k'), encryption: { secret: 'kk' } }] },
        undefined,
      ),
    ).rejects.toThrow(/disk k is encrypted with secret kk, whose value the controller did not send/);
    expect(sent).toEqual([]);
    // Unchanged disks: nothing to do, the slots as they were.
    expect(
      await plugDisks(
        deps(sent),
        stored([pool('a'), pool('b')], { diskSlots: [3, 1] }),
        { ...base, disks: [pool('a'), pool('b')] },
        undefined,
      ),
    ).toEqual([3, 1]);
    expect(sent).toEqual([]);
  });
});
