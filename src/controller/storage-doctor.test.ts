import { describe, expect, it } from 'vitest';
import type { HostReport, VmConfig } from '../shared/model.js';
import type { ObservedPool } from '../shared/storage.js';
import { placeSpec } from '../spec/placement.js';
import { SpecSchema } from '../spec/schema.js';
import { type StorageDoctorAgent, storageDoctor } from './storage-doctor.js';
import type { StoreEvent } from './store/types.js';

const spec = placeSpec(
  SpecSchema.parse({
    version: 1,
    hosts: [{ name: 'host1' }, { name: 'san1', role: 'storage' }],
    pools: [
      { name: 'san', type: 'iscsi', host: 'san1', chap: { user: 'vmlink', secret: 'san-chap' } },
      { name: 'nas', type: 'nfs', host: 'san1' },
    ],
  }),
);
const db: VmConfig = {
  name: 'db',
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  nics: [],
  state: 'running',
  disks: [
    {
      name: 'data',
      source: {
        kind: 'iscsi',
        pool: 'san',
        volume: 'db',
        portal: '192.168.50.30:3260',
        iqn: 'iqn.2026-12.io.vmlink:san1.san.db',
        lun: 1,
      },
    },
  ],
};
const pool = (name: string, type: 'iscsi' | 'nfs', problems: string[] = []): ObservedPool => ({
  name,
  type,
  configHash: 'x',
  problems,
  config: {
    name,
    type,
    path: `/p/${name}`,
    ...(type === 'nfs' ? { nfs: { exportId: 7, pseudoPath: `/vmlink/${name}` } } : {}),
  },
  capacityMiB: 1000,
  usedMiB: 10,
  freeMiB: 990,
  volumes: [],
});

function agents(opts: { portal: boolean; pools: ObservedPool[] }): Map<string, StorageDoctorAgent> {
  const a: StorageDoctorAgent = {
    probeBatch: async (req) =>
      req.probes.map(() =>
        opts.portal
          ? { reachable: true, rttMs: 1, detail: 'connected' }
          : { reachable: false, detail: "can't connect to remote host (192.168.50.30): Connection refused" },
      ),
    exec: async () => ({ exitCode: 0, stdout: '', stderr: '' }),
    report: async () => ({ pools: opts.pools }) as HostReport,
  };
  return new Map([
    ['host1', a],
    ['san1', a],
  ]);
}
const ev = (id: number, kind: string, message: string): StoreEvent => ({
  id,
  time: `2026-12-01T07:0${id}:00Z`,
  kind,
  message,
});

describe('doctor for storage paths', () => {
  it('explains a portal that does not answer: which host, which address:port, the error, the fix', async () => {
    const checks = await storageDoctor(
      spec,
      agents({ portal: false, pools: [pool('san', 'iscsi'), pool('nas', 'nfs')] }),
      [],
      {
        host1: { vms: [db] },
      },
    );
    const portal = checks.find((c) => c.name.startsWith('storage portal'))!;
    expect(portal).toEqual({
      name: 'storage portal 192.168.50.30:3260 (iscsi) from host1',
      ok: false,
      detail:
        "host1 cannot connect to 192.168.50.30:3260: can't connect to remote host (192.168.50.30): Connection refused",
      fix: expect.stringContaining(
        'on san1: is tgtd (the iSCSI target) running and listening on 192.168.50.30:3260?',
      ),
    });
    expect(checks.filter((c) => c.name.startsWith('storage pool')).every((c) => c.ok)).toBe(true);
  });

  it("shows a missing export with the server's export list", async () => {
    const checks = await storageDoctor(
      spec,
      agents({
        portal: true,
        pools: [pool('san', 'iscsi'), pool('nas', 'nfs', ['export /vmlink/nas missing'])],
      }),
      [],
      { host1: { vms: [db] } },
    );
    expect(checks.find((c) => c.name === 'storage pool nas (nfs) on san1')).toMatchObject({
      ok: false,
      detail: 'export /vmlink/nas missing (the server exports nothing)',
      fix: expect.stringContaining('re-exports it'),
    });
    const gone = await storageDoctor(spec, agents({ portal: true, pools: [pool('other', 'nfs')] }), [], {});
    expect(gone.find((c) => c.name === 'storage pool nas (nfs) on san1')?.detail).toBe(
      'san1 does not hold it; its NFS server exports /vmlink/other',
    );
  });

  it('explains a refused iSCSI login (CHAP) with QEMU’s error until an apply succeeds', async () => {
    const qemu =
      '> vm db start on host1: VM db: disk data could not be attached: blockdev-add failed: GenericError: iSCSI: Failed to connect to LUN : Failed to log in to target. Status: Authentication failure(513)';
    const events = [ev(1, 'apply', 'x: 3 change(s) applied'), ev(2, 'apply.failed', qemu)];
    const checks = await storageDoctor(spec, agents({ portal: true, pools: [] }), events, {});
    const login = checks.find((c) => c.name.startsWith('storage iSCSI login'))!;
    expect(login.name).toBe('storage iSCSI login to pool san on san1');
    expect(login.detail).toContain('Authentication failure');
    expect(login.fix).toContain('vmlink secret set san-chap');
    // With two CHAP pools, the one the failed VM's disk uses is named.
    const two = placeSpec(
      SpecSchema.parse({
        ...spec,
        pools: [
          ...spec.pools,
          { name: 'san2', type: 'iscsi', host: 'san1', chap: { user: 'u2', secret: 'chap2' } },
        ],
        vms: [
          {
            name: 'db',
            host: 'host1',
            nics: [{ network: 'app' }],
            disks: [{ name: 'data', pool: 'san2', volume: 'db-data' }],
          },
        ],
      }),
    );
    const named = await storageDoctor(two, agents({ portal: true, pools: [] }), events, {});
    expect(named.find((c) => c.name.startsWith('storage iSCSI login'))?.fix).toContain(
      'vmlink secret set chap2',
    );
    const fixed = await storageDoctor(
      spec,
      agents({ portal: true, pools: [] }),
      [...events, ev(3, 'apply', 'x')],
      {},
    );
    expect(fixed.some((c) => c.name.startsWith('storage iSCSI login'))).toBe(false);
  });
});
