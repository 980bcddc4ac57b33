// Live migration of one VM's QEMU (docs/mobility.md). QEMU runs jailed in an empty network namespace, so it never
// opens a TCP connection itself: the source QEMU sends to a unix socket its agent listens on in the VM's run
// directory, the target QEMU (started with `-incoming defer`) listens on one its agent connects to, and the two agents
// relay the stream over their mutual TLS (host certificates from the cluster CA). Pre-copy is one-way, so a plain
// byte stream is all it needs. Local disks are copied first (block migration, migrate-block.ts): each NBD connection
// the source QEMU opens on a second socket is carried by its agent to the target QEMU's NBD export.
import { chmod, chown, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket, connect as unixConnect } from 'node:net';
import { getPriority, setPriority } from 'node:os';
import { InvalidStateError, TimeoutError } from '../../../shared/errors.js';
import { log } from '../../../shared/log.js';
import type { OpContext } from '../../../shared/op.js';
import type { HypervisorMigrations, IncomingDisks, SecretValues } from '../types.js';
import type { MirrorProgress, MirrorSpec } from './block-mirror.js';
import type { VmPaths } from './cmdline.js';
import { queryVcpuThreads } from './cpu-pinning.js';
import { dropSecrets } from './disk-attach.js';
import type { VmIdentity } from './identity.js';
import {
  awaitIncoming,
  awaitMigration,
  cancelOutgoing,
  downtimeRamp,
  MIGRATION_DOWNTIME_START_MS,
  type MigrationProgress,
  measureDirtyRate,
  prepareOutgoing,
  resumeSource,
  resumeTarget,
  settleOutgoing,
  startIncoming,
  startOutgoing,
} from './migrate.js';
import {
  copyDisks,
  dropCopies,
  exportDisks,
  finishCopies,
  type LocalDisk,
  localDisks,
  NBD_CONNECTIONS_PER_DISK,
  nbdInSocket,
  nbdOutSocket,
  stopExports,
} from './migrate-block.js';
import type { QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

/** Extra QEMU arguments of an incoming VM: paused after the stream arrived (the controller's go), stream deferred. */
export const INCOMING_ARGS = ['-S', '-incoming', 'defer'] as const;
/** How often `query-migrate` is polled while a migration runs (ms). */
export const MIGRATION_POLL_MS = 100;
/** How long QEMU has to connect to the source's relay socket after `migrate` (ms). */
const CONNECT_WAIT_MS = 10_000;
/** How long the local disks' copy may take to catch up before the migration is given up (ms). */
export const BLOCK_COPY_TIMEOUT_MS = 30 * 60_000;
/** QEMU's final migration states in which the end of the state was never sent (the guest runs, or may run, here). */
export const NEVER_SENT: ReadonlySet<string> = new Set(['cancelled', 'failed', 'none']);
/** How long ending the mirrors at the switch-over may take (ms): the guest is paused meanwhile. */
const FINISH_COPY_TIMEOUT_MS = 60_000;

/** Options of the source side. */
export interface MigrateOutOptions {
  downtimeLimitMs: number;
  /** Where the downtime limit starts (see `downtimeRamp`); default MIGRATION_DOWNTIME_START_MS. */
  downtimeStartMs?: number;
  onProgress?: (p: MigrationProgress) => void;
  signal?: AbortSignal;
  /** Carries one NBD connection of QEMU's to the target's export; needed when the VM has local disks. */
  nbdTunnel?: (conn: Socket) => void;
  /** Bounds the disks' copy (ms); default BLOCK_COPY_TIMEOUT_MS. */
  blockCopyTimeoutMs?: number;
  /** QEMU's bandwidth cap (bytes/s); absent: lifted. */
  maxBandwidthBytes?: number;
  /** Nice value of the vCPU threads while the migration runs (restored after); absent: left alone. */
  vcpuNice?: number;
  /** The target resumes on arrival: once QEMU completed, a failure leaves the guest paused (HypervisorMigrations). */
  holdOnceSent?: boolean;
}

/** What the migration side needs from its driver. */
export interface VmMigrationDeps {
  paths: (name: string) => VmPaths;
  identity: (name: string) => Promise<VmIdentity>;
  running: (name: string) => Promise<boolean>;
  qmp: (name: string) => Promise<QmpClient>;
  mustStored: (name: string) => Promise<StoredVm>;
  /**
   * Starts created VM `name`'s QEMU paused with `-incoming defer` (the driver's start, under its lock); `secrets`:
   * what its disks need to open (CHAP passwords, LUKS keys), as for a start.
   */
  launchIncoming: (name: string, ctx?: OpContext, secrets?: SecretValues) => Promise<void>;
  locked: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
  /** The pid of VM `name`'s live QEMU (undefined: none); for the vCPU threads' nice value. */
  livePid?: (name: string) => Promise<number | undefined>;
}

/** Socket paths in the VM's run directory (QEMU sees it at the same path). */
const outSocket = (p: VmPaths) => `${p.runDir}/migrate-out.sock`;
const inSocket = (p: VmPaths) => `${p.runDir}/migrate-in.sock`;

/** The source and target halves of a live migration, per VM. */
export class VmMigrations implements HypervisorMigrations {
  /** Incoming VMs whose QEMU exports disks (block migration): only they stop an NBD server before `cont`. */
  private readonly exported = new Set<string>();

  constructor(private readonly d: VmMigrationDeps) {}

  /**
   * Source: sends running VM `name`'s state through `relay` (called once with the socket QEMU connected to; it must
   * carry every byte to the target and end when the stream does). Resolves with QEMU's last progress (`completed`:
   * the guest is paused here, `postmigrate`); on failure QEMU's migration is cancelled and the guest runs on here.
   */
  async migrateOut(
    name: string,
    opts: MigrateOutOptions,
    relay: (qemu: Socket) => Promise<void>,
  ): Promise<MigrationProgress> {
    if (!(await this.d.running(name)))
      throw new InvalidStateError(`migration requires running: VM ${name} is not running`, `vm/${name}`);
    const p = this.d.paths(name);
    const path = outSocket(p);
    const id = await this.d.identity(name);
    const disks = localDisks(await this.d.mustStored(name));
    if (disks.length && !opts.nbdTunnel)
      throw new InvalidStateError(`VM ${name} has local disks and no way to copy them`, `vm/${name}`);
    await rm(path, { force: true });
    const server: Server = createServer();
    let relayed: Promise<void> | undefined;
    const connected = new Promise<void>((resolve) => {
      server.once('connection', (sock: Socket) => {
        // One connection only: whoever else might reach the socket gets nothing.
        server.close();
        relayed = relay(sock);
        resolve();
      });
    });
    await listenOwned(server, path, id);
    const nbd = disks.length ? await this.nbdRelay(p.runDir, disks, id, opts.nbdTunnel!) : undefined;
    const qmp = await this.d.qmp(name);
    let copies: MirrorSpec[] = [];
    let restoreNice: (() => void) | undefined;
    let disk: Pick<MigrationProgress, 'diskDoneBytes' | 'diskTotalBytes'> = {};
    const onCopy = (c: MirrorProgress) => {
      disk = { diskDoneBytes: c.doneBytes, diskTotalBytes: c.totalBytes };
      opts.onProgress?.({ status: 'disks', transferredBytes: 0, remainingBytes: 0, totalBytes: 0, ...disk });
    };
    try {
      if (nbd) {
        copies = await copyDisks(qmp, nbd.path, disks, {
          vm: name,
          timeoutMs: opts.blockCopyTimeoutMs ?? BLOCK_COPY_TIMEOUT_MS,
          onProgress: onCopy,
        });
      }
      const ramp = downtimeRamp(opts.downtimeStartMs ?? MIGRATION_DOWNTIME_START_MS, opts.downtimeLimitMs);
      await prepareOutgoing(qmp, {
        downtimeLimitMs: ramp.startMs,
        pauseBeforeSwitchover: !!nbd,
        ...(opts.maxBandwidthBytes ? { maxBandwidthBytes: opts.maxBandwidthBytes } : {}),
      });
      if (opts.vcpuNice !== undefined) restoreNice = await reniceVcpus(qmp, this.d, name, opts.vcpuNice);
      await startOutgoing(qmp, `unix:${path}`);
      await Promise.race([
        connected,
        new Promise((_, reject) =>
          setTimeout(
            () => reject(new TimeoutError(`QEMU of VM ${name} did not connect to its migration socket`)),
            CONNECT_WAIT_MS,
          ).unref(),
        ),
      ]);
      const last = await awaitMigration(qmp, {
        pollMs: MIGRATION_POLL_MS,
        vm: name,
        downtime: ramp,
        ...(opts.onProgress
          ? { onProgress: (m: MigrationProgress) => opts.onProgress?.({ ...m, ...disk }) }
          : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        // Paused, disks still active: the mirrors end as exact copies before QEMU lets go of the disks.
        ...(nbd
          ? {
              onPreSwitchover: async () => {
                await finishCopies(qmp, copies, name, FINISH_COPY_TIMEOUT_MS);
                copies = [];
              },
            }
          : {}),
      });
      await relayed;
      return { ...last, ...disk };
    } catch (e) {
      if (opts.holdOnceSent) {
        // The target may run the guest once it has the whole state: the source stays paused if QEMU sent it all (or
        // cannot tell), and says so with a last progress `held`; the controller decides after asking the target.
        const final = await settleOutgoing(qmp).catch(() => undefined);
        if (!final || !NEVER_SENT.has(final.status)) {
          log.warn(
            { vm: name, qemu: final?.status ?? 'unknown' },
            'migration failed once sent: the guest stays paused',
          );
          opts.onProgress?.({
            ...(final ?? { transferredBytes: 0, remainingBytes: 0, totalBytes: 0 }),
            ...disk,
            status: 'held',
          });
          if (copies.length) await dropCopies(qmp, copies, name).catch(() => {});
          throw e;
        }
      }
      await cancelOutgoing(qmp).catch(() => {});
      if (copies.length) await dropCopies(qmp, copies, name).catch(() => {});
      await resumeSource(qmp).catch(() => {});
      throw e;
    } finally {
      restoreNice?.();
      server.close();
      nbd?.server.close();
      await rm(path, { force: true });
      if (nbd) await rm(nbd.path, { force: true });
    }
  }

  /**
   * Source: listens where QEMU opens its NBD connections (only the VM's uid may connect, and at most
   * NBD_CONNECTIONS_PER_DISK per disk); each is handed to `tunnel`.
   */
  private async nbdRelay(
    runDir: string,
    disks: readonly LocalDisk[],
    id: VmIdentity,
    tunnel: (conn: Socket) => void,
  ): Promise<{ server: Server; path: string }> {
    const path = nbdOutSocket(runDir);
    await rm(path, { force: true });
    let left = disks.length * NBD_CONNECTIONS_PER_DISK;
    const server = createServer((conn) => {
      if (left-- <= 0) return void conn.destroy();
      tunnel(conn);
    });
    await listenOwned(server, path, id);
    return { server, path };
  }

  /** Source, after a completed migration the target could not take over: the guest runs here again. */
  async resumeHere(name: string): Promise<void> {
    await resumeSource(await this.d.qmp(name));
  }

  /**
   * Target: starts created VM `name` paused, listening for the stream; resolves with a connected socket to write it
   * into (the caller pipes the source's bytes there).
   */
  async migrateIn(
    name: string,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<{ stream: Socket; disks?: IncomingDisks }> {
    if (await this.d.running(name))
      throw new InvalidStateError(
        `an incoming migration requires VM ${name} stopped here, and it runs`,
        `vm/${name}`,
      );
    const local = localDisks(await this.d.mustStored(name));
    await this.d.launchIncoming(name, ctx, secrets);
    const p = this.d.paths(name);
    const path = inSocket(p);
    const qmp = await this.d.qmp(name);
    let disks: IncomingDisks | undefined;
    if (local.length) {
      const nbd = nbdInSocket(p.runDir);
      await rm(nbd, { force: true });
      disks = {
        path: nbd,
        maxBytes: await exportDisks(qmp, nbd, local, name),
        maxConnections: local.length * NBD_CONNECTIONS_PER_DISK,
      };
      this.exported.add(name);
    }
    await startIncoming(qmp, `unix:${path}`);
    const stream = await new Promise<Socket>((resolve, reject) => {
      const s = unixConnect(path);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    return { stream, ...(disks ? { disks } : {}) };
  }

  /** Target: waits until the whole state arrived (QEMU paused, `-S`), bounded by `timeoutMs`. */
  async awaitArrived(name: string, timeoutMs: number): Promise<void> {
    await awaitIncoming(await this.d.qmp(name), { timeoutMs, pollMs: MIGRATION_POLL_MS, vm: name });
  }

  /** Source: QEMU's own dirty-rate measurement (page sampling, any accelerator) over `seconds`. */
  async dirtyRate(name: string, seconds: number): Promise<number | undefined> {
    return measureDirtyRate(await this.d.qmp(name), seconds);
  }

  /** Target: the NBD exports of a block migration go (the source ended its copies), then the guest runs here. */
  async resumeTarget(name: string): Promise<void> {
    const qmp = await this.d.qmp(name);
    // Without exports, no QMP round trip more inside the guest's pause.
    if (this.exported.delete(name)) await stopExports(qmp);
    await resumeTarget(qmp);
    // The disks are active now: the keys kept for their activation go (outside the guest's pause).
    await dropSecrets(qmp).catch((e: unknown) =>
      log.warn({ vm: name, err: (e as Error).message }, 'could not drop the disk secrets after the arrival'),
    );
  }
}

/**
 * Sets the nice value of VM `name`'s vCPU threads (each checked to be a thread of its QEMU) to `nice`; returns how to
 * put back what they had. A thread that is gone by then is skipped.
 */
async function reniceVcpus(
  qmp: QmpClient,
  d: Pick<VmMigrationDeps, 'livePid'>,
  name: string,
  nice: number,
): Promise<() => void> {
  const pid = await d.livePid?.(name);
  if (pid === undefined) return () => {};
  const threads = await queryVcpuThreads(qmp, pid, name);
  const before = threads.map((t) => ({ tid: t.thread, nice: getPriority(t.thread) }));
  for (const t of threads) setPriority(t.thread, nice);
  return () => {
    for (const t of before)
      try {
        setPriority(t.tid, t.nice);
      } catch {}
  };
}

/** Listens on unix socket `path` that only `id` (the VM's QEMU) may connect to. */
async function listenOwned(server: Server, path: string, id: VmIdentity): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  try {
    await chown(path, id.uid, id.gid);
    await chmod(path, 0o600);
  } catch (e) {
    server.close();
    throw e;
  }
}
