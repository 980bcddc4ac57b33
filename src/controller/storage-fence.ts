// Storage-side fencing from the controller (issue 11, docs/ha.md "Storage fencing"): before the HA manager starts a
// VM on a new host it fences the VM's iscsi volumes to that host: each volume's target then lets only the owner's
// address in, every other initiator's session is closed, and a stale token (an old active controller acting late)
// is refused at the storage host. Volumes of pools that cannot be fenced (nfs, dir: POOL_FEATURES.fence) are skipped
// with an event saying why; what protects them is the owner check at the VM's host and its self-fencing.
//
// Also here, for the drills' "no disk with two writers": which iscsi volumes have sessions from more than one
// address, from the storage hosts' reports.
import type { OwnedVm } from '../shared/cluster.js';
import { InvalidRequestError, VmlinkError } from '../shared/errors.js';
import type { HostReport } from '../shared/model.js';
import { POOL_FEATURE_REASONS, POOL_FEATURES } from '../shared/storage.js';
import type { Spec, VmSpec } from '../spec/schema.js';
import { vmVolumeUses } from '../spec/storage.js';
import { hostAddress } from '../spec/topology.js';
import type { AgentFactory } from './hosts.js';
import type { Store } from './store/types.js';

/** What `fenceVmVolumes` needs: the agents, and a store for its events (none: no events). */
export interface StorageFenceDeps {
  agents: AgentFactory;
  store?: Pick<Store, 'appendEvent'>;
}

/** A volume to fence: where its pool lives. */
export interface FenceTarget {
  pool: string;
  volume: string;
  /** The storage host holding the pool (where `volume.fence` goes). */
  storageHost: string;
}

/** A volume left unfenced, and why. */
export interface FenceSkip {
  pool: string;
  volume: string;
  reason: string;
}

/** What `fenceVmVolumes` did. */
export interface VolumeFenceOutcome {
  vm: string;
  owner: { host: string; address?: string; token: string };
  /** A live migration's target let in beside the owner (`peer`). */
  peer?: { host: string; address: string };
  fenced: FenceTarget[];
  skipped: FenceSkip[];
}

/**
 * The volumes of `vm` to fence, and those to leave (pure): every writable volume the VM opens (its disks from pools
 * and the volume it boots from; a linked clone's template is read through the clone, never written), fenced when
 * its pool can be (iscsi), skipped with the reason otherwise. Validation lets one VM attach a volume (a read-only
 * CD-ROM ISO aside, skipped here), so fencing a volume to the VM's owner never cuts another VM off.
 */
export function vmFenceTargets(spec: Spec, vm: VmSpec): { fence: FenceTarget[]; skip: FenceSkip[] } {
  const fence: FenceTarget[] = [];
  const skip: FenceSkip[] = [];
  const seen = new Set<string>();
  const vi = spec.vms.indexOf(vm);
  for (const u of vmVolumeUses(vm, Math.max(vi, 0))) {
    if (u.kind === 'template') continue;
    const key = `${u.pool}/${u.volume}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const pool = spec.pools.find((p) => p.name === u.pool);
    if (!pool)
      throw new InvalidRequestError(`VM ${vm.name}: pool ${u.pool} of volume ${key} is not in the spec`);
    const at = { pool: u.pool, volume: u.volume };
    if (u.disk?.readOnly || u.disk?.media === 'cdrom') {
      skip.push({ ...at, reason: 'read-only for the VM: it never writes it' });
      continue;
    }
    if (!POOL_FEATURES[pool.type].fence) {
      skip.push({
        ...at,
        reason: `${pool.type} pool: ${POOL_FEATURE_REASONS[pool.type]?.fence ?? `${pool.type} pools cannot fence`}`,
      });
      continue;
    }
    fence.push({ ...at, storageHost: pool.host });
  }
  return { fence, skip };
}

/**
 * Fences the iscsi volumes of `vm` to its owner `owner` (host, token): sends `volume.fence` to each pool's storage
 * host with the owner host's underlay address (all at once), and records an event per volume fenced or skipped.
 * Throws when any fence fails (after the others were tried): a `VmlinkError` of the first failure's kind (`fenced`
 * for a stale token) naming the VM, each volume and pool, and why; the VM must not start then. `peer`: a live
 * migration's target host, let in beside the owner while the VM's state streams to it (controller/migrate/).
 */
export async function fenceVmVolumes(
  spec: Spec,
  vm: string | VmSpec,
  owner: OwnedVm,
  deps: StorageFenceDeps,
  peer?: string,
): Promise<VolumeFenceOutcome> {
  const v = typeof vm === 'string' ? spec.vms.find((x) => x.name === vm) : vm;
  const name = typeof vm === 'string' ? vm : vm.name;
  if (!v) throw new InvalidRequestError(`VM ${name} is not in the spec: nothing to fence`, `vm/${name}`);
  if (owner.vm !== v.name)
    throw new InvalidRequestError(
      `owner record of VM ${owner.vm} given to fence VM ${v.name}`,
      `vm/${v.name}`,
    );
  const { fence, skip } = vmFenceTargets(spec, v);
  const event = (kind: string, message: string) => deps.store?.appendEvent(kind, message);
  for (const s of skip)
    await event(
      'storage.fence-skipped',
      `VM ${v.name}: volume ${s.pool}/${s.volume} not fenced to ${owner.host}: ${s.reason}`,
    );
  const outcome: VolumeFenceOutcome = {
    vm: v.name,
    owner: { host: owner.host, token: owner.token },
    fenced: [],
    skipped: skip,
  };
  if (!fence.length) return outcome;

  const host = spec.hosts.find((h) => h.name === owner.host);
  const address = host ? hostAddress(spec, host) : undefined;
  if (address === undefined)
    throw new InvalidRequestError(
      host
        ? `VM ${v.name}: owner host ${owner.host} has no underlay address (hosts[].address), which its iscsi volumes would be fenced to; nothing was fenced`
        : `VM ${v.name}: owner host ${owner.host} is not in the spec; nothing was fenced`,
      `vm/${v.name}`,
    );
  outcome.owner.address = address;
  if (peer !== undefined) {
    const ph = spec.hosts.find((h) => h.name === peer);
    const pa = ph ? hostAddress(spec, ph) : undefined;
    if (pa === undefined)
      throw new InvalidRequestError(
        `VM ${v.name}: migration target ${peer} ${ph ? 'has no underlay address (hosts[].address)' : 'is not in the spec'}, so its iscsi volumes cannot let it in; nothing was fenced`,
        `vm/${v.name}`,
      );
    outcome.peer = { host: peer, address: pa };
  }
  const to = `${owner.host}${outcome.peer ? ` and ${peer} (migrating)` : ''}`;
  const results = await Promise.allSettled(
    fence.map((t) =>
      deps.agents(spec, t.storageHost).act({
        kind: 'volume.fence',
        pool: t.pool,
        volume: t.volume,
        owner: {
          host: owner.host,
          address,
          token: owner.token,
          ...(outcome.peer ? { peer: outcome.peer } : {}),
        },
      }),
    ),
  );
  const failures: Array<{ t: FenceTarget; e: unknown }> = [];
  for (const [i, r] of results.entries()) {
    const t = fence[i]!;
    if (r.status === 'fulfilled') {
      outcome.fenced.push(t);
      await event(
        'storage.fenced',
        `VM ${v.name}: volume ${t.pool}/${t.volume} fenced to ${to} (${address}${outcome.peer ? `, ${outcome.peer.address}` : ''}), token ${owner.token}`,
      );
    } else {
      failures.push({ t, e: r.reason });
      await event(
        'storage.fence-failed',
        `VM ${v.name}: volume ${t.pool}/${t.volume} (pool ${t.pool} on ${t.storageHost}) not fenced to ${to}: ${(r.reason as Error).message}`,
      );
    }
  }
  if (!failures.length) return outcome;
  const first = failures[0]!;
  const kind = first.e instanceof VmlinkError ? first.e.kind : 'internal';
  const why = failures
    .map(
      ({ t, e }) =>
        `volume ${t.volume} of pool ${t.pool} (on ${t.storageHost}): ${(e as Error).message ?? String(e)}`,
    )
    .join('; ');
  throw new VmlinkError(
    kind,
    `VM ${v.name}: cannot fence its storage to ${to} (token ${owner.token}), so it must not ${outcome.peer ? 'migrate' : 'start there'}: ${why}`,
    { subject: `volume/${first.t.pool}/${first.t.volume}`, cause: first.e },
  );
}

/** An iscsi volume with open sessions, as its storage host reports it. */
export interface VolumeWriters {
  /** The storage host that reported it. */
  host: string;
  pool: string;
  volume: string;
  /** Distinct initiator addresses with a session to its target (sorted). */
  addresses: string[];
  initiators: string[];
  /** Whom it is fenced to, when it is. */
  fencedTo?: { host: string; address: string; token: string };
}

/**
 * Every iscsi volume with at least one open session, from hosts' reports (drills' "no disk with two writers": a
 * volume open from two addresses at one instant is two writers; one QEMU opens it over one session).
 */
export function iscsiWriters(reports: readonly HostReport[]): VolumeWriters[] {
  const out: VolumeWriters[] = [];
  for (const r of reports)
    for (const p of r.pools ?? []) {
      if (p.type !== 'iscsi') continue;
      for (const v of p.volumes) {
        if (!v.sessions?.length) continue;
        out.push({
          host: r.host,
          pool: p.name,
          volume: v.name,
          addresses: [...new Set(v.sessions.flatMap((s) => s.addresses))].sort(),
          initiators: [...new Set(v.sessions.map((s) => s.initiator))].sort(),
          ...(v.fence
            ? { fencedTo: { host: v.fence.host, address: v.fence.address, token: v.fence.token } }
            : {}),
        });
      }
    }
  return out;
}

/** The iscsi volumes open from more than one address now (empty: no disk has two writers). */
export function twoWriterVolumes(reports: readonly HostReport[]): VolumeWriters[] {
  return iscsiWriters(reports).filter((w) => w.addresses.length > 1);
}
