// `vmlink vm move-disk NAME DISK --to-pool POOL` (docs/mobility.md "Moving a running disk"): a VM's disk moves
// into a dir pool of its own host, as the volume the plan expects there (`<vm>-<disk>`), through the agent action
// `vm.moveDisk` (live: mirror, pivot; a stopped VM's: a copy). Every refusal is checked here first, from the
// applied spec and the host's report, so nothing starts that the agent would have to undo. The spec stays the
// source of truth: the next apply is `no changes` when the spec puts the disk in that pool, and refuses (never
// restarts onto an empty disk) when it does not (plan/disk-moves.ts).
import {
  ConflictError,
  InvalidRequestError,
  InvalidStateError,
  NotFoundError,
  UnavailableError,
  UnsupportedError,
  VmlinkError,
} from '../shared/errors.js';
import type { HostReport } from '../shared/model.js';
import { vmVolumeName } from '../shared/storage.js';
import type { Spec } from '../spec/schema.js';
import { type AgentFactory, REPORT_TIMEOUT_MS } from './hosts.js';
import type { OwnershipStore } from './ownership.js';
import type { MoveDiskReport } from './wire-move-disk.js';

/** How long the controller waits for the agent's move (the QEMU side gives up after 30 minutes of copying). */
export const MOVE_DISK_ACTION_TIMEOUT_MS = 31 * 60_000;

/** What a move needs from the controller. */
export interface MoveDiskDeps {
  agents: AgentFactory;
  /** The applied spec, or undefined before the first apply. */
  spec: () => Promise<Spec | undefined>;
  /** Owner records: where a VM runs after a migration or an HA restart (a spec with `cluster:`). */
  ownership?: OwnershipStore;
  /** Records the event `vm.disk.moved`. */
  event?: (kind: string, message: string) => Promise<unknown>;
  progress?: (note: string) => void;
}

/** What a move was asked: the VM, its disk and the target pool. */
export interface MoveDiskRequest {
  vm: string;
  disk: string;
  pool: string;
}

/** Checks `req` against the applied spec and the VM's host; the refusals name the fix. */
async function check(deps: MoveDiskDeps, req: MoveDiskRequest) {
  const spec = await deps.spec();
  if (!spec) throw new InvalidRequestError('no spec has been applied yet: apply one first');
  const vm = spec.vms.find((v) => v.name === req.vm);
  if (!vm) throw new NotFoundError('vm', req.vm);
  const subject = `vm/${req.vm}`;
  const disk = vm.disks.find((d) => d.name === req.disk);
  if (!disk)
    throw new VmlinkError(
      'not-found',
      `VM ${req.vm} has no disk ${req.disk} in the applied spec (its disks: ${vm.disks.map((d) => d.name).join(', ') || 'none'})`,
      { subject },
    );
  if (disk.media === 'cdrom')
    throw new InvalidRequestError(`VM ${req.vm}: disk ${req.disk} is a CD-ROM; nothing to move`, subject);
  if (disk.volume !== undefined)
    throw new UnsupportedError(
      `VM ${req.vm}: disk ${req.disk} is volume ${disk.pool}/${disk.volume} of \`volumes:\`, kept apart from the VM; \`vm move-disk\` moves the VM's own disks (in its directory, or its volume ${vmVolumeName(req.vm, req.disk)})`,
      subject,
    );
  const owner = spec.cluster ? await deps.ownership?.get(req.vm) : undefined;
  const host = owner?.host ?? vm.host;
  const pool = spec.pools.find((p) => p.name === req.pool);
  if (!pool) throw new NotFoundError('pool', req.pool);
  if (pool.type !== 'dir')
    throw new UnsupportedError(
      `pool ${pool.name} is ${pool.type}: a disk moves only into a dir pool of its VM's host for now`,
      `pool/${pool.name}`,
    );
  if (pool.host !== host)
    throw new InvalidRequestError(
      `pool ${pool.name} is on ${pool.host} but VM ${req.vm} runs on ${host}: a disk moves only into a dir pool of its VM's own host`,
      `pool/${pool.name}`,
    );
  let report: HostReport;
  try {
    report = await deps.agents(spec, host).report(REPORT_TIMEOUT_MS);
  } catch (e) {
    throw new UnavailableError(
      `the agent of ${host}, where VM ${req.vm} runs, did not answer: ${(e as Error).message}; nothing was changed`,
      subject,
      e,
    );
  }
  const seen = report.vms.find((v) => v.name === req.vm);
  if (!seen?.config)
    throw new InvalidStateError(`VM ${req.vm} is not on ${host}: apply the spec first`, subject);
  if (seen.state === 'crashed')
    throw new InvalidStateError(
      `VM ${req.vm} is crashed on ${host}: stop it (\`vmlink vm stop ${req.vm}\`) or start it, then move its disk`,
      subject,
    );
  const now = seen.config.disks.find((d) => d.name === req.disk);
  if (!now)
    throw new InvalidStateError(
      `VM ${req.vm} on ${host} has no disk ${req.disk} yet: apply the spec that adds it first`,
      subject,
    );
  if (now.source?.pool === req.pool)
    throw new ConflictError(`VM ${req.vm}: disk ${req.disk} is in pool ${req.pool} already`, subject);
  const seenPool = report.pools?.find((p) => p.name === req.pool);
  if (!seenPool)
    throw new ConflictError(
      `pool ${req.pool} is not realised on ${host} yet: apply the spec that declares it first`,
      `pool/${req.pool}`,
    );
  const volume = vmVolumeName(req.vm, req.disk);
  if (seenPool.volumes.some((v) => v.name === volume))
    throw new ConflictError(
      `volume ${req.pool}/${volume} exists already: the move would need that name; delete it first (\`vmlink volume delete ${req.pool}/${volume}\`) if it holds nothing you need`,
      `volume/${req.pool}/${volume}`,
    );
  return {
    spec,
    host,
    volume,
    from: now.source ? `pool ${now.source.pool}` : 'the VM directory',
    disk,
    running: seen.state !== 'stopped',
  };
}

/** Moves the disk (see the file's comment); the report says where, how long, and what the spec must say next. */
export async function moveDisk(deps: MoveDiskDeps, req: MoveDiskRequest): Promise<MoveDiskReport> {
  const started = Date.now();
  const { spec, host, volume, from, disk, running } = await check(deps, req);
  deps.progress?.(
    `copying disk ${req.disk} of ${running ? '' : 'stopped '}VM ${req.vm} from ${from} to pool ${req.pool} on ${host}`,
  );
  await deps
    .agents(spec, host)
    .act(
      { kind: 'vm.moveDisk', name: req.vm, disk: req.disk, pool: req.pool, volume },
      MOVE_DISK_ACTION_TIMEOUT_MS,
    );
  const ms = Date.now() - started;
  // What the new volume holds now, from the host's report (best effort: the move is done either way).
  const after = await deps
    .agents(spec, host)
    .report(REPORT_TIMEOUT_MS)
    .catch(() => undefined);
  const made = after?.pools?.find((p) => p.name === req.pool)?.volumes.find((v) => v.name === volume);
  await deps.event?.('vm.disk.moved', `${req.vm}/${req.disk}: ${from} -> pool ${req.pool} on ${host}`);
  const specSays = disk.pool === req.pool;
  return {
    vm: req.vm,
    disk: req.disk,
    host,
    from,
    pool: req.pool,
    volume,
    ms,
    ...(made ? { allocatedMiB: made.allocatedMiB } : {}),
    specSays,
    next: specSays
      ? 'the applied spec already puts the disk there: nothing more to do'
      : `edit the spec (vms ${req.vm} disks ${req.disk} pool: ${req.pool}) before the next apply, which refuses otherwise (it would put the VM onto an empty disk in ${disk.pool ? `pool ${disk.pool}` : 'its directory'})`,
  };
}
