import { describe, expect, it } from 'vitest';
import type { AgentAction } from '../agent/wire.js';
import { AgentActionSchema } from '../agent/wire.js';
import type { OwnedVm } from '../shared/cluster.js';
import { FencedError, VmlinkError } from '../shared/errors.js';
import type { HostReport } from '../shared/model.js';
import type { ObservedPool } from '../shared/storage.js';
import { loadSpec } from '../spec/load.js';
import type { AgentFactory, AgentPort } from './hosts.js';
import { fenceVmVolumes, iscsiWriters, twoWriterVolumes, vmFenceTargets } from './storage-fence.js';

// Two compute hosts, one storage host with an iscsi and an nfs pool, one dir pool. web1 opens: an iscsi disk made
// for it, a named iscsi volume, an nfs disk, a read-only iscsi volume, and boots from an iscsi volume.
const SPEC = `version: 1
hosts:
  - { name: h1, agent: "unix:///fake/h1.sock", address: 192.168.50.11 }
  - { name: h2, agent: "unix:///fake/h2.sock", address: 192.168.50.12 }
  - { name: h3, agent: "unix:///fake/h3.sock" }
  - { name: san1, agent: "unix:///fake/san1.sock", role: storage, address: 192.168.50.9 }
networks: [{ name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }]
pools:
  - { name: local, type: dir, host: h1 }
  - { name: san, type: iscsi, host: san1, clients: [192.168.50.0/24], chap: { user: vmlink, secret: san-chap } }
  - { name: nas, type: nfs, host: san1 }
volumes:
  - { name: boot, pool: san, sizeMiB: 1024 }
  - { name: ref, pool: san, sizeMiB: 64 }
  - { name: shared, pool: san, sizeMiB: 64 }
vms:
  - name: web1
    host: h1
    image: { kind: volume, pool: san, volume: boot }
    nics: [{ network: natnet }]
    disks:
      - { name: data, pool: san, sizeMiB: 512 }
      - { name: logs, pool: nas, sizeMiB: 256 }
      - { name: ref, pool: san, volume: ref, readOnly: true }
      - { name: shared, pool: san, volume: shared }
  - name: plain
    host: h1
    nics: [{ network: natnet }]
    disks:
      - { name: d, pool: local, sizeMiB: 8 }
`;
const spec = loadSpec(SPEC, 'site.yaml');
const owner = (host: string, token: string, vm = 'web1'): OwnedVm => ({
  vm,
  host,
  reason: 'ha-restart',
  since: '2026-12-01T10:00:00.000Z',
  from: 'h1',
  token,
});

/** Agents that record what they are sent (checked against the wire schema) and fail where told. */
function agents(fail: (host: string, a: AgentAction) => Error | undefined = () => undefined) {
  const sent: string[] = [];
  const factory: AgentFactory = (_spec, host) =>
    ({
      act: async (a: AgentAction) => {
        AgentActionSchema.parse(a);
        sent.push(`${host}: ${JSON.stringify(a)}`);
        const e = fail(host, a);
        if (e) throw e;
      },
    }) as unknown as AgentPort;
  const events: string[] = [];
  const store = {
    appendEvent: async (kind: string, message: string) => void events.push(`${kind}: ${message}`),
  };
  return { factory, sent, events, store: store as never };
}

describe('vmFenceTargets', () => {
  it('fences every writable iscsi volume the VM alone writes; skips the rest with the reason', () => {
    const web1 = spec.vms.find((v) => v.name === 'web1')!;
    const { fence, skip } = vmFenceTargets(spec, web1);
    expect(fence).toEqual([
      { pool: 'san', volume: 'web1-data', storageHost: 'san1' },
      { pool: 'san', volume: 'shared', storageHost: 'san1' },
      { pool: 'san', volume: 'boot', storageHost: 'san1' },
    ]);
    expect(skip).toEqual([
      {
        pool: 'nas',
        volume: 'web1-logs',
        reason: expect.stringMatching(/^nfs pool: an nfs pool is one ganesha export/),
      },
      { pool: 'san', volume: 'ref', reason: 'read-only for the VM: it never writes it' },
    ]);
    const plain = vmFenceTargets(spec, spec.vms.find((v) => v.name === 'plain')!);
    expect(plain.fence).toEqual([]);
    expect(plain.skip).toEqual([
      {
        pool: 'local',
        volume: 'plain-d',
        reason: expect.stringMatching(/^dir pool: a dir pool's volumes are files on the host/),
      },
    ]);
  });
});

describe('fenceVmVolumes', () => {
  it("sends volume.fence with the owner host's address and token to the pool's storage host, with events", async () => {
    const a = agents();
    const out = await fenceVmVolumes(spec, 'web1', owner('h2', '4711'), {
      agents: a.factory,
      store: a.store,
    });
    expect(a.sent).toEqual([
      'san1: {"kind":"volume.fence","pool":"san","volume":"web1-data","owner":{"host":"h2","address":"192.168.50.12","token":"4711"}}',
      'san1: {"kind":"volume.fence","pool":"san","volume":"shared","owner":{"host":"h2","address":"192.168.50.12","token":"4711"}}',
      'san1: {"kind":"volume.fence","pool":"san","volume":"boot","owner":{"host":"h2","address":"192.168.50.12","token":"4711"}}',
    ]);
    expect(out.fenced.map((f) => f.volume)).toEqual(['web1-data', 'shared', 'boot']);
    expect(out.owner).toEqual({ host: 'h2', address: '192.168.50.12', token: '4711' });
    expect(out.skipped.map((s) => s.volume)).toEqual(['web1-logs', 'ref']);
    expect(a.events).toEqual([
      expect.stringMatching(
        /^storage\.fence-skipped: VM web1: volume nas\/web1-logs not fenced to h2: nfs pool: /,
      ),
      'storage.fence-skipped: VM web1: volume san/ref not fenced to h2: read-only for the VM: it never writes it',
      'storage.fenced: VM web1: volume san/web1-data fenced to h2 (192.168.50.12), token 4711',
      'storage.fenced: VM web1: volume san/shared fenced to h2 (192.168.50.12), token 4711',
      'storage.fenced: VM web1: volume san/boot fenced to h2 (192.168.50.12), token 4711',
    ]);
  });

  it('sends nothing for a VM without fenceable volumes (and needs no address then)', async () => {
    const a = agents();
    const out = await fenceVmVolumes(spec, 'plain', owner('h3', '9', 'plain'), { agents: a.factory });
    expect(a.sent).toEqual([]);
    expect(out.fenced).toEqual([]);
  });

  it('refuses an owner host without an address or outside the spec, and a record of another VM', async () => {
    const a = agents();
    await expect(fenceVmVolumes(spec, 'web1', owner('h3', '9'), { agents: a.factory })).rejects.toThrow(
      'VM web1: owner host h3 has no underlay address (hosts[].address), which its iscsi volumes would be fenced to; nothing was fenced',
    );
    await expect(fenceVmVolumes(spec, 'web1', owner('h9', '9'), { agents: a.factory })).rejects.toThrow(
      /owner host h9 is not in the spec/,
    );
    await expect(
      fenceVmVolumes(spec, 'web1', owner('h2', '9', 'db1'), { agents: a.factory }),
    ).rejects.toThrow(/owner record of VM db1 given to fence VM web1/);
    await expect(
      fenceVmVolumes(spec, 'nope', owner('h2', '9', 'nope'), { agents: a.factory }),
    ).rejects.toThrow(/VM nope is not in the spec/);
    expect(a.sent).toEqual([]);
  });

  it('tries every volume, then fails naming the VM, each volume and pool, keeping a stale token a fenced error', async () => {
    const a = agents((_h, act) =>
      act.kind === 'volume.fence' && act.volume === 'boot'
        ? new FencedError(
            'volume san/boot: fencing token 4711 (for host h2) is older than token 5000, which fenced it to host h1 (192.168.50.11); refused, nothing changed',
          )
        : undefined,
    );
    const e = await fenceVmVolumes(spec, 'web1', owner('h2', '4711'), {
      agents: a.factory,
      store: a.store,
    }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(VmlinkError);
    expect(e).toMatchObject({ kind: 'fenced', subject: 'volume/san/boot' });
    expect((e as Error).message).toBe(
      'VM web1: cannot fence its storage to h2 (token 4711), so it must not start there: volume boot of pool san (on san1): volume san/boot: fencing token 4711 (for host h2) is older than token 5000, which fenced it to host h1 (192.168.50.11); refused, nothing changed',
    );
    expect(a.sent).toHaveLength(3);
    expect(a.events.filter((x) => x.startsWith('storage.fence'))).toEqual([
      expect.stringMatching(/^storage\.fence-skipped/),
      expect.stringMatching(/^storage\.fence-skipped/),
      'storage.fenced: VM web1: volume san/web1-data fenced to h2 (192.168.50.12), token 4711',
      'storage.fenced: VM web1: volume san/shared fenced to h2 (192.168.50.12), token 4711',
      expect.stringMatching(
        /^storage\.fence-failed: VM web1: volume san\/boot \(pool san on san1\) not fenced to h2: volume san\/boot: fencing token 4711/,
      ),
    ]);
  });
});

describe('iscsiWriters / twoWriterVolumes', () => {
  const report = (host: string, pools: ObservedPool[]): HostReport =>
    ({ host, agentVersion: 'x', capabilities: {}, networks: [], vms: [], pools }) as unknown as HostReport;
  const pool = (type: 'iscsi' | 'nfs', volumes: ObservedPool['volumes']): ObservedPool => ({
    name: type === 'iscsi' ? 'san' : 'nas',
    type,
    configHash: 'x',
    problems: [],
    capacityMiB: 1,
    usedMiB: 0,
    freeMiB: 1,
    volumes,
  });
  const vol = (name: string, sessions?: Array<{ initiator: string; addresses: string[] }>) => ({
    name,
    format: 'raw' as const,
    sizeMiB: 1,
    allocatedMiB: 0,
    encrypted: false,
    snapshots: [],
    ...(sessions ? { sessions } : {}),
  });

  it('lists iscsi volumes with sessions, and those open from two addresses', () => {
    const reports = [
      report('h1', []),
      report('san1', [
        pool('iscsi', [
          vol('idle'),
          vol('one', [{ initiator: 'iqn.a', addresses: ['192.168.50.11'] }]),
          {
            ...vol('two', [
              { initiator: 'iqn.a', addresses: ['192.168.50.11'] },
              { initiator: 'iqn.b', addresses: ['192.168.50.12'] },
            ]),
            fence: { host: 'h2', address: '192.168.50.12', token: '8', at: '2026-12-01T10:00:00Z' },
          },
          // Two sessions from one address (a reconnect in flight) are one writer host.
          vol('again', [
            { initiator: 'iqn.a', addresses: ['192.168.50.11'] },
            { initiator: 'iqn.a', addresses: ['192.168.50.11'] },
          ]),
        ]),
        pool('nfs', [vol('ignored', [{ initiator: 'x', addresses: ['1.2.3.4', '5.6.7.8'] }])]),
      ]),
    ];
    expect(iscsiWriters(reports).map((w) => `${w.pool}/${w.volume} ${w.addresses.join(',')}`)).toEqual([
      'san/one 192.168.50.11',
      'san/two 192.168.50.11,192.168.50.12',
      'san/again 192.168.50.11',
    ]);
    expect(twoWriterVolumes(reports)).toEqual([
      {
        host: 'san1',
        pool: 'san',
        volume: 'two',
        addresses: ['192.168.50.11', '192.168.50.12'],
        initiators: ['iqn.a', 'iqn.b'],
        fencedTo: { host: 'h2', address: '192.168.50.12', token: '8' },
      },
    ]);
  });
});
