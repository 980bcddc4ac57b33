import { describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../../exec/runner.js';
import type { DiskConfig, VmConfig } from '../../../shared/model.js';
import { vmPaths } from './cmdline.js';
import { attachDisk, attachDisksAtStart, disksAtStart } from './disk-attach.js';
import { VmDiskOps } from './disk-ops.js';
import { diskSlotIds } from './disk-slots.js';
import type { QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

// The disk operations against a scripted QMP monitor and a recording runner; real QEMU runs them in
// test/integration/storage-qemu.int.test.ts.

const MiB = 1024 * 1024;
const paths = vmPaths('/s', 'db1');
const lun: DiskConfig = {
  name: 'lun',
  source: {
    kind: 'iscsi',
    pool: 'san',
    volume: 'v',
    portal: '10.0.0.5:3260',
    iqn: 'iqn.2026-12.io.vmlink:s.san.v',
    lun: 1,
    chap: { user: 'u', secret: 'san-chap' },
  },
};
const cfg = (disks: DiskConfig[]): VmConfig => ({
  name: 'db1',
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  disks,
  nics: [],
  state: 'running',
});

/** A QMP monitor that records commands and answers from `replies` (by command), `{}` otherwise. */
function fakeQmp(replies: Record<string, (args: Record<string, unknown>) => unknown> = {}) {
  const sent: Array<{ command: string; args?: Record<string, unknown> }> = [];
  const qmp = {
    execute: async (command: string, args?: Record<string, unknown>) => {
      sent.push({ command, ...(args ? { args } : {}) });
      const r = replies[command];
      return (r ? r(args ?? {}) : {}) as never;
    },
    onEvent: () => () => {},
  };
  return { qmp: qmp as unknown as QmpClient, sent };
}

function ops(vm: StoredVm, running: boolean, qmp: QmpClient, runner = new RecordingRunner()) {
  return new VmDiskOps({
    runner,
    paths: () => paths,
    mustStored: async () => vm,
    running: async () => running,
    qmp: async () => qmp,
    locked: (_n, fn) => fn(),
  });
}

const stored = (disks: DiskConfig[], diskSlots?: number[]): StoredVm => ({
  config: cfg(disks),
  configHash: 'h',
  accel: 'tcg',
  argv: ['qemu'],
  ...(diskSlots ? { diskSlots } : {}),
});

const block = (node: string, size: number, snapshots: unknown[] = []) => ({
  inserted: {
    'node-name': node,
    file: '/dev/fdset/200',
    ro: false,
    image: { 'virtual-size': size, snapshots },
  },
});

describe('resizeDisk', () => {
  it('grows a disk by its slot node, refuses a shrink, an iSCSI LUN and a stopped VM', async () => {
    const { qmp, sent } = fakeQmp({ 'query-block': () => [block('disk3', 16 * MiB)] });
    const vm = stored([{ name: 'data', sizeMiB: 16 }, lun], [3, 4]);
    await ops(vm, true, qmp).resizeDisk('db1', 'data', 32);
    expect(sent.at(-1)).toEqual({ command: 'block_resize', args: { 'node-name': 'disk3', size: 32 * MiB } });
    await expect(ops(vm, true, qmp).resizeDisk('db1', 'data', 8)).rejects.toThrow(
      'VM db1: disk data is 16 MiB; a resize can only grow it, not shrink it to 8 MiB',
    );
    await expect(ops(vm, true, qmp).resizeDisk('db1', 'lun', 64)).rejects.toThrow(
      /disk lun is an iSCSI LUN: tgtd cannot grow a LUN/,
    );
    await expect(ops(vm, false, qmp).resizeDisk('db1', 'data', 64)).rejects.toThrow(/requires running/);
    await expect(ops(vm, true, qmp).resizeDisk('db1', 'nope', 64)).rejects.toThrow('VM db1 has no disk nope');
  });
});

describe('VM snapshots', () => {
  it('running: one transaction over every disk; with RAM a snapshot-save job run to its end', async () => {
    const vm = stored(
      [
        { name: 'a', sizeMiB: 8 },
        { name: 'b', sizeMiB: 8 },
      ],
      [0, 5],
    );
    const { qmp, sent } = fakeQmp({
      'query-block': () => [block('disk0', 8 * MiB), block('disk5', 8 * MiB)],
      'query-jobs': () => [{ id: 'vmlink-snapshot', status: 'concluded' }],
    });
    await ops(vm, true, qmp).snapshot('db1', 's1', { memory: false });
    expect(sent.find((s) => s.command === 'transaction')?.args).toEqual({
      actions: [
        { type: 'blockdev-snapshot-internal-sync', data: { device: 'disk0', name: 's1' } },
        { type: 'blockdev-snapshot-internal-sync', data: { device: 'disk5', name: 's1' } },
      ],
    });
    sent.length = 0;
    await ops(vm, true, qmp).snapshot('db1', 's2', { memory: true });
    expect(sent.map((s) => s.command)).toEqual([
      'query-block',
      'job-dismiss',
      'snapshot-save',
      'query-jobs',
      'job-dismiss',
    ]);
    expect(sent[2]!.args).toEqual({
      'job-id': 'vmlink-snapshot',
      tag: 's2',
      vmstate: 'disk0',
      devices: ['disk0', 'disk5'],
    });
  });

  it('a failed job says why; a disks-only snapshot does not roll back under a running guest', async () => {
    const vm = stored([{ name: 'a', sizeMiB: 8 }]);
    const snaps = [{ name: 's1', 'vm-state-size': 0, 'date-sec': 1 }];
    const { qmp } = fakeQmp({
      'query-block': () => [block('disk0', 8 * MiB, snaps)],
      'query-jobs': () => [{ id: 'vmlink-snapshot', status: 'concluded', error: 'Device has no medium' }],
    });
    await expect(ops(vm, true, qmp).snapshot('db1', 's2', { memory: true })).rejects.toThrow(
      'VM db1: snapshot-save failed: Device has no medium',
    );
    await expect(ops(vm, true, qmp).snapshot('db1', 's1', { memory: false })).rejects.toThrow(
      /already has a snapshot s1/,
    );
    await expect(ops(vm, true, qmp).rollback('db1', 's1')).rejects.toThrow(/stop the VM first/);
    await expect(ops(vm, true, qmp).rollback('db1', 'gone')).rejects.toThrow('VM db1 has no snapshot gone');
    await expect(ops(vm, true, qmp).snapshot('db1', '../x', { memory: false })).rejects.toThrow(
      /must be 1-63/,
    );
  });

  it('stopped: qemu-img on each disk, all or none; an encrypted disk refused; a raw iSCSI disk named', async () => {
    const runner = new RecordingRunner()
      .on(['qemu-img', 'snapshot', '-c', 's1', '/s/vms/db1/disk-b.qcow2'], {
        code: 1,
        stderr: 'No space left',
      })
      .on(['qemu-img', 'info'], { stdout: '{"snapshots":[{"name":"s0","date-sec":5}]}' });
    const { qmp } = fakeQmp();
    const vm = stored([
      { name: 'a', sizeMiB: 8 },
      { name: 'b', sizeMiB: 8 },
    ]);
    await expect(ops(vm, false, qmp, runner).snapshot('db1', 's1', { memory: false })).rejects.toThrow(
      /No space/,
    );
    expect(runner.lines().filter((l) => l.startsWith('qemu-img snapshot'))).toEqual([
      'qemu-img snapshot -c s1 /s/vms/db1/disk-a.qcow2',
      'qemu-img snapshot -c s1 /s/vms/db1/disk-b.qcow2',
      'qemu-img snapshot -d s1 /s/vms/db1/disk-a.qcow2',
    ]);
    expect(await ops(vm, false, qmp, runner).snapshots('db1')).toEqual([
      { name: 's0', createdAt: new Date(5000).toISOString() },
    ]);
    const enc = stored([{ name: 'a', sizeMiB: 8, encryption: { secret: 'k' } }]);
    await expect(ops(enc, false, qmp, runner).snapshot('db1', 's1', { memory: false })).rejects.toThrow(
      /disk a is encrypted .* start the VM and snapshot it running/,
    );
    await expect(
      ops(stored([lun]), true, qmp, runner).snapshot('db1', 's1', { memory: false }),
    ).rejects.toThrow(/disk lun is an iSCSI LUN, which cannot snapshot/);
    expect(await ops(stored([lun]), true, qmp, runner).snapshots('db1')).toEqual([]);
  });
});

describe('openDisks', () => {
  it('names each open disk, a pool volume by its URL without credentials', async () => {
    const vm = stored([{ name: 'data', sizeMiB: 8 }, lun], [2, 7]);
    const { qmp } = fakeQmp({
      'query-block': () => [
        { inserted: { 'node-name': 'disk2', file: '/s/vms/db1/disk-data.qcow2', ro: false } },
        { inserted: { 'node-name': 'disk7', file: 'json:{"password-secret": "disk7-chap"}', ro: true } },
        { inserted: { 'node-name': 'stranger', file: '/x' } },
        { device: 'empty' },
      ],
    });
    expect(await ops(vm, true, qmp).openDisks('db1')).toEqual([
      { disk: 'data', target: '/s/vms/db1/disk-data.qcow2', readOnly: false },
      { disk: 'lun', target: 'iscsi://10.0.0.5:3260/iqn.2026-12.io.vmlink:s.san.v/1', readOnly: true },
    ]);
    expect(await ops(vm, false, qmp).openDisks('db1')).toEqual([]);
  });
});

describe('attaching disks', () => {
  const fd = { runner: new RecordingRunner(), helper: '/b/vmlink-qmp-fd', qmpFdSocket: '/s/qmp-fd.sock' };

  it('at start: root volume first (boot index 0), the pool file through the fd helper, a reset, then cont', async () => {
    const file = {
      kind: 'file' as const,
      pool: 'p',
      volume: 'data',
      path: '/pools/p/data.qcow2',
      format: 'qcow2' as const,
    };
    const c: VmConfig = {
      ...cfg([
        { name: 'plain', sizeMiB: 8 },
        { name: 'data', source: file },
      ]),
      image: { kind: 'volume', pool: 'p', volume: 'db1-root', clone: true },
      rootSource: { ...file, volume: 'db1-root', path: '/pools/p/db1-root.qcow2' },
    };
    const { qmp, sent } = fakeQmp();
    const runner = new RecordingRunner();
    await attachDisksAtStart(
      { vm: 'db1', qmp, fdChannel: { ...fd, runner }, paths },
      disksAtStart(c, paths, [0, 1], undefined),
    );
    expect(runner.lines()).toEqual([
      `/b/vmlink-qmp-fd --qmp /s/qmp-fd.sock --file /pools/p/db1-root.qcow2 --read-write --fdset 199 '{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"root-file","filename":"/dev/fdset/199"}}'`,
      `/b/vmlink-qmp-fd --qmp /s/qmp-fd.sock --file /pools/p/data.qcow2 --read-write --fdset 201 '{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"disk1-file","filename":"/dev/fdset/201"}}'`,
    ]);
    expect(
      sent.map((s) =>
        `${s.command} ${String(s.args?.['node-name'] ?? s.args?.id ?? s.args?.['fdset-id'] ?? '')}`.trim(),
      ),
    ).toEqual([
      'remove-fd 199',
      'blockdev-add root',
      'device_add root',
      'remove-fd 201',
      'blockdev-add disk1',
      'device_add disk1',
      'system_reset',
      'cont',
    ]);
  });

  it('a failed attach removes what it made and names the disk, never the secret', async () => {
    const { qmp, sent } = fakeQmp({
      'blockdev-add': () => {
        throw new Error('iSCSI: Failed to connect to LUN : Authentication failure(513)');
      },
    });
    const err = await attachDisk(
      { vm: 'db1', qmp, fdChannel: fd, paths },
      {
        disk: lun,
        origin: { kind: 'source', source: lun.source! },
        ids: diskSlotIds(4),
        secrets: [{ name: 'san-chap', value: 'UFdQVw==' }],
      },
    ).catch((e: unknown) => e as Error);
    expect((err as Error).message).toBe(
      'VM db1: disk lun could not be attached: iSCSI: Failed to connect to LUN : Authentication failure(513)',
    );
    expect(sent.map((s) => s.command)).toEqual([
      'object-add',
      'blockdev-add',
      'blockdev-del',
      'blockdev-del',
      'object-del',
      'object-del',
      'remove-fd',
    ]);
    await expect(
      attachDisk(
        { vm: 'db1', qmp, fdChannel: fd, paths },
        { disk: lun, origin: { kind: 'source', source: lun.source! }, ids: diskSlotIds(4), secrets: [] },
      ),
    ).rejects.toThrow(/CHAP password of secret san-chap, whose value the controller did not send/);
  });
});
