// Acting on storage now (issue 10): volumes of the applied spec's pools (create, grow, clone, delete, snapshots),
// image import, and whole-VM snapshots. Each change goes to the host that holds the pool (or runs the VM) as one
// agent action; secrets ride along only as the action leaves (secrets/delivery.ts). The checks that need more than
// one host (who uses a volume, whether it runs) are made here, from the hosts' reports.
import type { AgentAction } from '../agent/wire.js';
import {
  ConflictError,
  InvalidRequestError,
  NotFoundError,
  UnavailableError,
  UnsupportedError,
} from '../shared/errors.js';
import {
  type ObservedSnapshot,
  type ObservedVolume,
  POOL_FEATURE_REASONS,
  POOL_FEATURES,
  type PoolFeatures,
  type VolumeConfig,
} from '../shared/storage.js';
import type { Spec } from '../spec/schema.js';
import { type AgentFactory, REPORT_TIMEOUT_MS } from './hosts.js';
import { volumeKeySecret } from './secrets/usage.js';
import type { SpecStore } from './spec-store.js';
import {
  capacityReport,
  declaredAt,
  type HostReports,
  observedPool,
  type PoolPlace,
  poolPlaces,
  poolViews,
  specSizeMiB,
  type VolumeUser,
  volumeUsers,
  volumeViews,
} from './storage-views.js';
import type { Store } from './store/types.js';
import type { TaskContext } from './tasks.js';
import type { CapacityReport, PoolView, VolumeChange, VolumeView } from './wire-storage.js';

/** A volume as a request names it, with its pool's place and what its host reports. */
interface Located {
  spec: Spec;
  reports: HostReports;
  place: PoolPlace;
  volume: ObservedVolume | undefined;
}

/** Storage requests of the API. */
export class StorageControl {
  constructor(
    private readonly store: Store,
    private readonly specs: SpecStore,
    private readonly agents: AgentFactory,
  ) {}

  /** `GET /v1/pools`. */
  async pools(): Promise<PoolView[]> {
    const spec = await this.spec();
    return poolViews(spec, await this.reports(spec));
  }

  /** `GET /v1/volumes`. */
  async volumes(pool?: string): Promise<VolumeView[]> {
    const spec = await this.spec();
    const reports = await this.reports(spec);
    if (pool !== undefined && !poolPlaces(spec, reports).some((p) => p.name === pool))
      throw new NotFoundError('pool', pool);
    return volumeViews(spec, reports, pool);
  }

  /** `GET /v1/capacity`. */
  async capacity(): Promise<CapacityReport> {
    const spec = await this.spec();
    return capacityReport(spec, await this.reports(spec));
  }

  /** Creates an empty volume in a pool of the applied spec. */
  async create(body: {
    pool: string;
    name: string;
    sizeMiB: number;
    encryption?: { secret: string } | undefined;
  }): Promise<VolumeChange> {
    const at = await this.locate(body.pool, body.name);
    if (at.volume) throw exists(body.pool, body.name);
    if (body.encryption) this.need(at.place, 'encryption');
    const volume: VolumeConfig = {
      pool: body.pool,
      name: body.name,
      sizeMiB: body.sizeMiB,
      format: at.place.type === 'iscsi' ? 'raw' : 'qcow2',
      ...(body.encryption ? { encryption: { secret: body.encryption.secret } } : {}),
    };
    await this.act(at, { kind: 'volume.ensure', volume });
    if (body.encryption) await this.recordKey(body.pool, body.name, body.encryption.secret);
    await this.event(
      'volume.created',
      `${body.pool}/${body.name} ${body.sizeMiB} MiB${body.encryption ? ' (encrypted)' : ''}`,
    );
    return { pool: body.pool, name: body.name };
  }

  /**
   * Grows a volume: through the running VM that has it open (QMP, the guest sees it at once) when the backend can,
   * else on the pool's host; refused while a running VM has it and the backend cannot grow it online.
   */
  async resize(pool: string, name: string, sizeMiB: number): Promise<VolumeChange> {
    const at = await this.locate(pool, name);
    const v = this.existing(at, pool, name);
    if (sizeMiB <= v.sizeMiB)
      throw new InvalidRequestError(
        `volume ${pool}/${name} is ${v.sizeMiB} MiB; a resize only grows it (asked ${sizeMiB} MiB), so nothing was changed`,
        `volume/${pool}/${name}`,
      );
    const running = this.runningUsers(at, pool, name);
    let via: string | undefined;
    if (running.length) {
      const vm = running[0]!;
      if (!POOL_FEATURES[at.place.type].onlineResize)
        throw new ConflictError(
          `volume ${pool}/${name} is open in running VM ${vm.vm} and ${POOL_FEATURE_REASONS[at.place.type]?.onlineResize ?? `${at.place.type} pools cannot grow a volume online`}`,
          `volume/${pool}/${name}`,
        );
      if (running.length > 1)
        throw new ConflictError(
          `volume ${pool}/${name} is open in several running VMs (${running.map((u) => u.vm).join(', ')}): stop all but one first`,
          `volume/${pool}/${name}`,
        );
      await this.agents(at.spec, vm.host).act({ kind: 'vm.resizeDisk', name: vm.vm, disk: vm.disk, sizeMiB });
      via = vm.vm;
    } else {
      await this.act(at, { kind: 'volume.resize', pool, name, sizeMiB, ...(await this.keyOf(pool, name)) });
    }
    await this.event(
      'volume.resized',
      `${pool}/${name} ${v.sizeMiB} -> ${sizeMiB} MiB${via ? ` (online through VM ${via})` : ''}`,
    );
    const specSize = specSizeMiB(at.spec, pool, name);
    const where = declaredAt(at.spec, pool, name);
    return {
      pool,
      name,
      ...(via ? { via } : {}),
      ...(specSize !== undefined && specSize < sizeMiB && where
        ? {
            note: `the spec still says ${specSize} MiB at ${where}: set its sizeMiB to ${sizeMiB} before the next apply (a plan refuses to shrink it)`,
          }
        : {}),
    };
  }

  /** A new volume `target` of the same pool from `pool/name`: a linked clone (qcow2 overlay) or a full copy. */
  async clone(
    pool: string,
    name: string,
    target: string,
    linked: boolean,
    ctx?: TaskContext,
  ): Promise<VolumeChange> {
    const at = await this.locate(pool, name);
    const src = this.existing(at, pool, name);
    if (linked) this.need(at.place, 'linkedClones');
    if (observedPool(at.reports, at.place)?.volumes.some((v) => v.name === target))
      throw exists(pool, target);
    ctx?.progress(
      `${linked ? 'linked clone' : 'copying'} ${pool}/${name} -> ${pool}/${target} on ${at.place.host}`,
    );
    // A clone of an encrypted volume keeps its key (one key opens the clone and, for a linked one, its base).
    const key = await this.keyOf(pool, name);
    await this.act(at, {
      kind: 'volume.ensure',
      volume: {
        pool,
        name: target,
        sizeMiB: Math.max(1, Math.ceil(src.sizeMiB)),
        format: src.format,
        from: { volume: name, linked },
        ...key,
      },
    });
    if (key.encryption) await this.recordKey(pool, target, key.encryption.secret);
    await this.event('volume.cloned', `${pool}/${name} -> ${pool}/${target}${linked ? ' (linked)' : ''}`);
    return { pool, name: target };
  }

  /**
   * Deletes a volume: refused while any VM's config uses it (naming the VM) and for a volume the spec declares
   * (apply would make it again: remove it from the spec first). Every host must answer: a VM on a silent host
   * could be using it.
   */
  async delete(pool: string, name: string): Promise<VolumeChange> {
    const at = await this.locate(pool, name);
    const silent = [...at.reports].filter(([, r]) => 'error' in r).map(([h]) => h);
    if (silent.length)
      throw new UnavailableError(
        `cannot tell whether a VM uses volume ${pool}/${name}: host(s) ${silent.join(', ')} did not answer; nothing was deleted`,
        `volume/${pool}/${name}`,
      );
    this.existing(at, pool, name);
    const where = declaredAt(at.spec, pool, name);
    const users = volumeUsers(at.spec, at.reports, pool, name);
    if (users.length)
      throw new ConflictError(
        `volume ${pool}/${name} is used by VM ${users.map((u) => `${u.vm} (disk ${u.disk}${u.running ? ', running' : ''})`).join(', ')}: detach it (remove it from the VM in the spec and apply) first`,
        `volume/${pool}/${name}`,
      );
    if (where)
      throw new ConflictError(
        `volume ${pool}/${name} is declared in the spec at ${where}: remove it from the spec and apply first (apply would make it again)`,
        where,
      );
    await this.act(at, { kind: 'volume.delete', pool, name });
    await this.store.delete(keyRecord(pool, name));
    await this.event('volume.deleted', `${pool}/${name}`);
    return { pool, name };
  }

  /** Snapshots of a volume, as its pool's host reports them. */
  async snapshots(pool: string, name: string): Promise<ObservedSnapshot[]> {
    return this.existing(await this.locate(pool, name), pool, name).snapshots;
  }

  /**
   * Creates, rolls back or deletes a snapshot of a volume no running VM has open (a running VM's disks are
   * snapshotted together through QMP: `vmlink vm snapshot`).
   */
  async snapshot(
    op: 'create' | 'rollback' | 'delete',
    pool: string,
    name: string,
    snapshot: string,
  ): Promise<VolumeChange> {
    const at = await this.locate(pool, name);
    const v = this.existing(at, pool, name);
    this.need(at.place, 'snapshots');
    const running = this.runningUsers(at, pool, name);
    if (running.length)
      throw new ConflictError(
        `volume ${pool}/${name} is open in running VM ${running.map((u) => u.vm).join(', ')}: use \`vmlink vm snapshot\` / \`vm rollback\` on it, or stop it first`,
        `volume/${pool}/${name}`,
      );
    const has = v.snapshots.some((s) => s.name === snapshot);
    if (op === 'create' && has)
      throw new ConflictError(
        `volume ${pool}/${name} already has a snapshot ${snapshot}`,
        `volume/${pool}/${name}`,
      );
    if (op !== 'create' && !has) throw new NotFoundError('snapshot', `${pool}/${name}@${snapshot}`);
    const kind = (
      { create: 'volume.snapshot', rollback: 'volume.rollback', delete: 'volume.snapshotDelete' } as const
    )[op];
    await this.act(at, { kind, pool, name, snapshot, ...(await this.keyOf(pool, name)) });
    await this.event(`volume.snapshot.${op}`, `${pool}/${name}@${snapshot}`);
    return { pool, name };
  }

  /** Imports a file on the pool's host, or copies a volume of the same pool, as a new volume. */
  async importImage(
    body: {
      pool: string;
      name: string;
      sourcePath?: string | undefined;
      fromVolume?: { pool: string; volume: string } | undefined;
    },
    ctx?: TaskContext,
  ): Promise<VolumeChange> {
    if (body.fromVolume) {
      if (body.fromVolume.pool !== body.pool)
        throw new UnsupportedError(
          `volumes are copied within their pool only: ${body.fromVolume.pool}/${body.fromVolume.volume} is not in pool ${body.pool} (import a file instead)`,
          `volume/${body.pool}/${body.name}`,
        );
      return this.clone(body.pool, body.fromVolume.volume, body.name, false, ctx);
    }
    const at = await this.locate(body.pool, body.name);
    if (at.volume) throw exists(body.pool, body.name);
    ctx?.progress(`importing ${body.sourcePath} on ${at.place.host} into ${body.pool}/${body.name}`);
    await this.act(at, {
      kind: 'volume.import',
      pool: body.pool,
      name: body.name,
      sourcePath: body.sourcePath!,
    });
    await this.event('image.imported', `${body.sourcePath} on ${at.place.host} -> ${body.pool}/${body.name}`);
    return { pool: body.pool, name: body.name };
  }

  /** Snapshots all of a VM's disks at one instant (with its RAM and device state when `memory`). */
  async vmSnapshot(
    op: 'create' | 'rollback' | 'delete',
    vm: string,
    snapshot: string,
    memory = false,
    ctx?: TaskContext,
  ): Promise<{ vm: string; snapshot: string }> {
    const { spec, host } = await this.vmPlace(vm);
    ctx?.progress(
      `${op === 'create' ? `snapshot${memory ? ' with memory' : ''}` : op} ${vm}@${snapshot} on ${host}`,
    );
    const action: AgentAction =
      op === 'create'
        ? { kind: 'vm.snapshot', name: vm, snapshot, memory }
        : { kind: op === 'rollback' ? 'vm.rollback' : 'vm.snapshotDelete', name: vm, snapshot };
    await this.agents(spec, host).act(action);
    await this.event(`vm.snapshot.${op}`, `${vm}@${snapshot}${memory ? ' (with memory)' : ''}`);
    return { vm, snapshot };
  }

  /** A VM's whole-VM snapshots, from its host. */
  async vmSnapshots(vm: string): Promise<ObservedSnapshot[]> {
    const { spec, host } = await this.vmPlace(vm);
    const agent = this.agents(spec, host);
    if (!agent.vmSnapshots)
      throw new UnsupportedError(`the agent client of ${host} cannot list VM snapshots`, `vm/${vm}`);
    return agent.vmSnapshots(vm);
  }

  private async vmPlace(vm: string): Promise<{ spec: Spec; host: string }> {
    const spec = await this.spec();
    const found = spec?.vms.find((v) => v.name === vm);
    if (!spec || !found) throw new NotFoundError('vm', vm);
    return { spec, host: found.host };
  }

  /** The pool `pool` of the applied spec (or reported by a host), with its host's report of volume `name`. */
  private async locate(pool: string, name: string): Promise<Located> {
    const spec = await this.spec();
    if (!spec)
      throw new InvalidRequestError('no spec is applied: declare pools in a spec and apply it first');
    const reports = await this.reports(spec);
    const place = poolPlaces(spec, reports).find((p) => p.name === pool);
    if (!place) throw new NotFoundError('pool', pool);
    const r = reports.get(place.host);
    if (!r || 'error' in r)
      throw new UnavailableError(
        `the agent of ${place.host}, which holds pool ${pool}, did not answer${r ? `: ${r.error}` : ''}; nothing was changed`,
        `pool/${pool}`,
      );
    const seen = observedPool(reports, place);
    if (!seen)
      throw new ConflictError(
        `pool ${pool} is not realised on ${place.host} yet: apply the spec that declares it first`,
        `pool/${pool}`,
      );
    return { spec, reports, place, volume: seen.volumes.find((v) => v.name === name) };
  }

  /**
   * The VMs that have `pool/name` open now. A user whose host did not answer might be running it: refuse rather
   * than change a volume under a running QEMU.
   */
  private runningUsers(at: Located, pool: string, name: string): VolumeUser[] {
    const users = volumeUsers(at.spec, at.reports, pool, name);
    const unknown = users.filter((u) => {
      const r = at.reports.get(u.host);
      return !r || 'error' in r;
    });
    if (unknown.length)
      throw new UnavailableError(
        `cannot tell whether VM ${unknown.map((u) => `${u.vm} (host ${u.host})`).join(', ')} has volume ${pool}/${name} open: its host did not answer; nothing was changed`,
        `volume/${pool}/${name}`,
      );
    return users.filter((u) => u.running);
  }

  private existing(at: Located, pool: string, name: string): ObservedVolume {
    if (!at.volume) throw new NotFoundError('volume', `${pool}/${name}`);
    return at.volume;
  }

  /** Refuses a request for a feature the pool's backend lacks, quoting why. */
  private need(place: PoolPlace, feature: keyof PoolFeatures): void {
    if (POOL_FEATURES[place.type][feature]) return;
    throw new UnsupportedError(
      `pool ${place.name} (${place.type}) cannot do this: ${POOL_FEATURE_REASONS[place.type]?.[feature] ?? `${place.type} pools lack ${feature}`}`,
      `pool/${place.name}`,
    );
  }

  /**
   * The secret of an encrypted volume's key: recorded when the API made it, else as the spec declares it. The
   * controller keeps the name only; delivery attaches the value as the action leaves.
   */
  private async keyOf(pool: string, name: string): Promise<{ encryption?: { secret: string } }> {
    const spec = await this.spec();
    const secret =
      (await this.store.get<string>(keyRecord(pool, name))) ??
      (spec ? volumeKeySecret(spec, pool, name) : undefined);
    return secret ? { encryption: { secret } } : {};
  }

  private recordKey(pool: string, name: string, secret: string): Promise<void> {
    return this.store.put(keyRecord(pool, name), secret);
  }

  private act(at: Located, action: AgentAction): Promise<void> {
    return this.agents(at.spec, at.place.host).act(action);
  }

  private async spec(): Promise<Spec | undefined> {
    return (await this.specs.current())?.spec;
  }

  /** Every spec host's report (a host that does not answer in time is marked with its error). */
  private async reports(spec: Spec | undefined): Promise<HostReports> {
    const hosts = spec?.hosts.map((h) => h.name) ?? [];
    const results = await Promise.allSettled(
      hosts.map((h) => this.agents(spec!, h).report(REPORT_TIMEOUT_MS)),
    );
    return new Map(
      results.map((r, i) => [
        hosts[i]!,
        r.status === 'fulfilled' ? r.value : { error: (r.reason as Error).message },
      ]),
    );
  }

  private async event(kind: string, message: string): Promise<void> {
    await this.store.appendEvent(kind, message);
  }
}

/** Where the controller records which secret keys a volume the API made (its name only, never a value). */
const keyRecord = (pool: string, name: string) => `volume-key/${pool}/${name}`;

const exists = (pool: string, name: string) =>
  new ConflictError(`volume ${pool}/${name} already exists`, `volume/${pool}/${name}`);
