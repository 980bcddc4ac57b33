// Where a copy made by `restore --as` (or a restore test) goes, and, in a cluster, its owner record. The record is
// written by compare-and-set before `vm.create` (withOwnership attaches its fencing token to create and start, and
// the agent checks it), with reason `restore`: apply never counts it among the owners of VMs the spec dropped, HA
// leaves it alone (no spec VM), and `restore discard` or the restore test's end releases it.
import { chooseHost, describeBlocks, describeRoom, emptyRoom, type Room } from '../../plan/scheduler.js';
import { type MaintenanceRecord, maintenanceKey, type OwnedVm } from '../../shared/cluster.js';
import {
  ConflictError,
  InvalidRequestError,
  InvalidStateError,
  NotFoundError,
  UnavailableError,
} from '../../shared/errors.js';
import type { VmConfig } from '../../shared/model.js';
import type { Spec } from '../../spec/schema.js';
import type { TaskContext } from '../tasks.js';
import type { BackupDeps } from './deps.js';
import type { FoundSnapshot } from './restore.js';

/** Most milliseconds the scheduler waits for one host's report. */
const REPORT_TIMEOUT_MS = 10_000;

/**
 * The host a copy of `f` goes to. `host` when given. Outside a cluster: the snapshot's host when the spec still has
 * it, else the original VM's. In a cluster: the scheduler's choice among the live compute hosts out of maintenance
 * whose agents answer (every such host reaches the store's agent over the underlay), by the rules of apply's
 * scheduler, counting what runs there now; a network bound to one host (an isolated one) allows only that host.
 */
export async function restoreHost(
  d: BackupDeps,
  spec: Spec,
  f: FoundSnapshot,
  config: Pick<VmConfig, 'cpus' | 'memoryMiB'>,
  t: { name: string; host?: string | undefined; network?: string | undefined },
): Promise<{ host: string; why?: string }> {
  const compute = spec.hosts.filter((h) => h.role !== 'storage');
  if (t.host !== undefined) {
    if (!spec.hosts.some((h) => h.name === t.host)) throw new NotFoundError('host', t.host);
    if (!compute.some((h) => h.name === t.host))
      throw new InvalidRequestError(`host ${t.host} is a storage host: a restored VM needs a compute host`);
    return { host: t.host };
  }
  if (!spec.cluster) {
    const host = compute.some((h) => h.name === f.summary.host)
      ? f.summary.host
      : spec.vms.find((v) => v.name === f.summary.vm)?.host;
    if (!host)
      throw new InvalidRequestError(
        `snapshot ${f.summary.id}: its host ${f.summary.host} is not in the spec: pass --host`,
      );
    return { host };
  }
  const net = t.network ? spec.networks.find((n) => n.name === t.network) : undefined;
  if (t.network && !net) throw new NotFoundError('network', t.network);
  const bound = net && 'host' in net && typeof net.host === 'string' ? net.host : undefined;
  const candidates = compute.filter((h) => bound === undefined || h.name === bound);
  const failed = (await d.hosts.failedHosts?.()) ?? new Set<string>();
  const maintenance = new Set(
    (await d.store.list<MaintenanceRecord>(maintenanceKey(''))).map((r) => r.value.host),
  );
  const unavailable = new Map<string, { host: string; code: 'failed' | 'maintenance'; text: string }>();
  const rooms: Room[] = await Promise.all(
    candidates.map(async (h) => {
      if (failed.has(h.name)) {
        unavailable.set(h.name, { host: h.name, code: 'failed', text: 'failed (no lease)' });
        return emptyRoom(h.name, h.capacity);
      }
      if (maintenance.has(h.name))
        unavailable.set(h.name, { host: h.name, code: 'maintenance', text: 'in maintenance' });
      try {
        const r = await d.agents(spec, h.name).report(REPORT_TIMEOUT_MS);
        const room = emptyRoom(h.name, h.capacity ?? r.capabilities);
        for (const v of r.vms)
          if (v.state !== 'stopped' && v.config) {
            room.memoryMiB += v.config.memoryMiB;
            room.cpus += v.config.cpus;
          }
        return room;
      } catch (e) {
        unavailable.set(h.name, {
          host: h.name,
          code: 'failed',
          text: `its agent does not answer (${(e as Error).message.split('\n')[0]})`,
        });
        return emptyRoom(h.name, h.capacity);
      }
    }),
  );
  const choice = chooseHost(
    { name: t.name, cpus: config.cpus, memoryMiB: config.memoryMiB, needsRoom: true },
    rooms,
    unavailable,
    true,
  );
  if ('room' in choice)
    return {
      host: choice.room.name,
      why: `placed by the scheduler on ${choice.room.name}: the most room (${describeRoom(choice.room)})`,
    };
  throw new UnavailableError(
    `no host can take vm ${t.name} (${config.memoryMiB} MiB, ${config.cpus} CPUs${bound ? `, on network ${t.network} of ${bound}` : ''}): ${describeBlocks(choice.blocks) || 'no compute host'}; pass --host or free room; nothing was written`,
    `vm/${t.name}`,
  );
}

/**
 * In a cluster, gives the copy `name` to `host` (reason `restore`) if no record names it yet: compare-and-set on
 * "absent", so a VM of the cluster, another restore or HA writing it meanwhile wins and nothing is created. Outside a
 * cluster: nothing (no fencing).
 */
export async function claimRestoredOwner(
  d: BackupDeps,
  spec: Spec,
  name: string,
  host: string,
  ctx: TaskContext,
): Promise<OwnedVm | undefined> {
  if (!spec.cluster) return undefined;
  if (!d.ownership)
    throw new InvalidStateError(
      `this controller keeps no owner records, so no host of the cluster may start vm ${name}`,
      `vm/${name}`,
    );
  const cur = await d.ownership.get(name);
  if (cur)
    throw new ConflictError(
      `vm ${name} has an owner record already (host ${cur.host}, token ${cur.token}, reason ${cur.reason}): restore --as needs a name no VM of the cluster holds; nothing was written`,
      `vm/${name}`,
    );
  const owned = await d.ownership.assign(name, host, 'restore', null);
  if (!owned)
    throw new ConflictError(
      `the owner record of vm ${name} was written by someone else while this restore ran; nothing was created`,
      `vm/${name}`,
    );
  await d.store.appendEvent('ha.place', `vm ${name} on ${host} (restore), token ${owned.token}`);
  ctx.progress(`${name}: owner record on ${host}, fencing token ${owned.token}`);
  return owned;
}

/**
 * Releases the owner record of restored copy `name` (at the token read), once the copy is gone. A record of another
 * reason stays: the name belongs to a VM of the spec (or HA's decision) by then. Returns whether one was released.
 */
export async function releaseRestoredOwner(d: BackupDeps, name: string): Promise<boolean> {
  const ownership = d.ownership;
  const cur = await ownership?.get(name);
  if (!ownership || cur?.reason !== 'restore') return false;
  if (!(await ownership.release(name, cur.token))) return false;
  await d.store.appendEvent(
    'ha.release',
    `vm ${name} (a restored copy) was discarded: its owner record (${cur.host}, token ${cur.token}) is released`,
  );
  return true;
}
