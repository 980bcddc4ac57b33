import { describe, expect, it } from 'vitest';
import type { DiskSource } from '../shared/storage.js';
import { storageChecksOf } from '../verify/storage.js';
import { runStorageChecks, type StorageAgent } from './storage-checks.js';

const lun: DiskSource = {
  kind: 'iscsi',
  pool: 'san',
  volume: 'db',
  portal: '192.168.50.30:3260',
  iqn: 'iqn.2026-12.io.vmlink:san1.san.db',
  lun: 1,
  chap: { user: 'vmlink', secret: 'san-chap' },
};
const plan = storageChecksOf(
  {
    host1: {
      vms: [
        {
          name: 'db',
          cpus: 1,
          memoryMiB: 256,
          image: { kind: 'test-guest' },
          disks: [{ name: 'data', source: lun }],
          nics: [],
          state: 'running',
        },
      ],
    },
  },
  () => true,
);

/** An agent whose answers the test sets; it records what it was asked. */
function fakeAgent(opts: {
  portal: boolean | Error;
  open?: Array<{ disk: string; target: string; readOnly: boolean }>;
  io: { exitCode: number; stdout: string; stderr: string };
}): StorageAgent & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    probeBatch: async (req) => {
      asked.push(`probes ${JSON.stringify(req.probes)}`);
      if (opts.portal instanceof Error) throw opts.portal;
      return req.probes.map(() =>
        opts.portal
          ? { reachable: true, rttMs: 1, detail: 'connected' }
          : { reachable: false, detail: "can't connect to remote host (192.168.50.30): Connection refused" },
      );
    },
    exec: async (vm, argv) => {
      asked.push(`exec ${vm} ${argv.slice(3).join(' ')}`);
      return opts.io;
    },
    ...(opts.open ? { openDisks: async () => ({ disks: opts.open! }) } : {}),
  };
}

const goodIo = {
  exitCode: 0,
  stdout: 'vmlink-disk-io ok vdb 2097152 0f343b0931126a20f133d67c2b018a3b write\n',
  stderr: '',
};

describe('running the storage checks through the agents', () => {
  it('turns a reached portal, an open LUN and a guest write into green cells', async () => {
    const agent = fakeAgent({
      portal: true,
      open: [
        {
          disk: 'data',
          target: 'iscsi://192.168.50.30:3260/iqn.2026-12.io.vmlink:san1.san.db/1',
          readOnly: false,
        },
      ],
      io: goodIo,
    });
    const cells = await runStorageChecks(plan.checks, new Map([['host1', agent]]));
    expect(cells.map((c) => [c.check, c.ok, c.target])).toEqual([
      ['portal', true, '192.168.50.30:3260 (iscsi)'],
      ['open', true, 'iscsi://192.168.50.30:3260/iqn.2026-12.io.vmlink:san1.san.db/1'],
      ['io', true, 'iscsi://192.168.50.30:3260/iqn.2026-12.io.vmlink:san1.san.db/1'],
    ]);
    expect(agent.asked).toContain('exec db vmlink-disk-io data write');
    expect(agent.asked[0]).toContain('"kind":"tcp"');
    // The CHAP secret's name is in the source, never a value: nothing in the cells names more than the user.
    expect(JSON.stringify(cells)).not.toContain('san-chap');
  });

  it('explains a refused portal, a disk QEMU does not have open and a failed guest write', async () => {
    const agent = fakeAgent({
      portal: false,
      open: [{ disk: 'root', target: '/dev/fdset/3', readOnly: false }],
      io: { exitCode: 7, stdout: 'write to /dev/vdb failed: dd: Input/output error\n', stderr: '' },
    });
    const cells = await runStorageChecks(plan.checks, new Map([['host1', agent]]));
    expect(cells.map((c) => c.ok)).toEqual([false, false, false]);
    expect(cells[0]!.detail).toBe(
      "host1 cannot connect to 192.168.50.30:3260: can't connect to remote host (192.168.50.30): Connection refused",
    );
    expect(cells[1]!.detail).toBe('QEMU of db does not have disk data open (open: root)');
    expect(cells[2]!.detail).toBe(
      'the guest of db cannot use disk data: write to /dev/vdb failed: dd: Input/output error',
    );
    expect(cells.some((c) => c.unmeasured)).toBe(false);
  });

  it('marks checks whose agent did not answer as unmeasured, never as passed', async () => {
    const agent = fakeAgent({ portal: new Error('agent of host1 unreachable'), io: goodIo });
    const cells = await runStorageChecks(plan.checks, new Map([['host1', agent]]));
    expect(cells.map((c) => [c.check, c.ok, c.unmeasured])).toEqual([
      ['portal', false, true],
      ['open', false, true],
      ['io', true, undefined],
    ]);
    expect(cells[0]!.detail).toContain('not measured: agent of host1 unreachable');
  });
});
