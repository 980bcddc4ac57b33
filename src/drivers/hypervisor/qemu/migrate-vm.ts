// Live migration of one VM's QEMU (docs/mobility.md). QEMU runs jailed in an empty network namespace, so it never
// opens a TCP connection itself: the source QEMU sends to a unix socket its agent listens on in the VM's run
// directory, the target QEMU (started with `-incoming defer`) listens on one its agent connects to, and the two agents
// relay the stream over their mutual TLS (host certificates from the cluster CA). Pre-copy is one-way, so a plain
// byte stream is all it needs.
import { chmod, chown, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket, connect as unixConnect } from 'node:net';
import { InvalidStateError, TimeoutError } from '../../../shared/errors.js';
import type { OpContext } from '../../../shared/op.js';
import type { HypervisorMigrations } from '../types.js';
import type { VmPaths } from './cmdline.js';
import type { VmIdentity } from './identity.js';
import {
  awaitIncoming,
  awaitMigration,
  cancelOutgoing,
  type MigrationProgress,
  prepareOutgoing,
  resumeSource,
  resumeTarget,
  startIncoming,
  startOutgoing,
} from './migrate.js';
import type { QmpClient } from './qmp.js';

/** Extra QEMU arguments of an incoming VM: paused after the stream arrived (the controller's go), stream deferred. */
export const INCOMING_ARGS = ['-S', '-incoming', 'defer'] as const;
/** How often `query-migrate` is polled while a migration runs (ms). */
export const MIGRATION_POLL_MS = 100;
/** How long QEMU has to connect to the source's relay socket after `migrate` (ms). */
const CONNECT_WAIT_MS = 10_000;

/** Options of the source side. */
export interface MigrateOutOptions {
  downtimeLimitMs: number;
  onProgress?: (p: MigrationProgress) => void;
  signal?: AbortSignal;
}

/** What the migration side needs from its driver. */
export interface VmMigrationDeps {
  paths: (name: string) => VmPaths;
  identity: (name: string) => Promise<VmIdentity>;
  running: (name: string) => Promise<boolean>;
  qmp: (name: string) => Promise<QmpClient>;
  /** Starts created VM `name`'s QEMU paused with `-incoming defer` (the driver's start, under its lock). */
  launchIncoming: (name: string, ctx?: OpContext) => Promise<void>;
  locked: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
}

/** Socket paths in the VM's run directory (QEMU sees it at the same path). */
const outSocket = (p: VmPaths) => `${p.runDir}/migrate-out.sock`;
const inSocket = (p: VmPaths) => `${p.runDir}/migrate-in.sock`;

/** The source and target halves of a live migration, per VM. */
export class VmMigrations implements HypervisorMigrations {
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
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    const qmp = await this.d.qmp(name);
    try {
      // Only the VM's own uid (its QEMU) may connect.
      await chown(path, id.uid, id.gid);
      await chmod(path, 0o600);
      await prepareOutgoing(qmp, { downtimeLimitMs: opts.downtimeLimitMs });
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
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      await relayed;
      return last;
    } catch (e) {
      await cancelOutgoing(qmp).catch(() => {});
      await resumeSource(qmp).catch(() => {});
      throw e;
    } finally {
      server.close();
      await rm(path, { force: true });
    }
  }

  /** Source, after a completed migration the target could not take over: the guest runs here again. */
  async resumeHere(name: string): Promise<void> {
    await resumeSource(await this.d.qmp(name));
  }

  /**
   * Target: starts created VM `name` paused, listening for the stream; resolves with a connected socket to write it
   * into (the caller pipes the source's bytes there).
   */
  async migrateIn(name: string, ctx?: OpContext): Promise<Socket> {
    if (await this.d.running(name))
      throw new InvalidStateError(
        `an incoming migration requires VM ${name} stopped here, and it runs`,
        `vm/${name}`,
      );
    await this.d.launchIncoming(name, ctx);
    const path = inSocket(this.d.paths(name));
    await startIncoming(await this.d.qmp(name), `unix:${path}`);
    return new Promise<Socket>((resolve, reject) => {
      const s = unixConnect(path);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  }

  /** Target: waits until the whole state arrived (QEMU paused, `-S`), bounded by `timeoutMs`. */
  async awaitArrived(name: string, timeoutMs: number): Promise<void> {
    await awaitIncoming(await this.d.qmp(name), { timeoutMs, pollMs: MIGRATION_POLL_MS, vm: name });
  }

  /** Target: the guest runs here and announces itself. */
  async resumeTarget(name: string): Promise<void> {
    await resumeTarget(await this.d.qmp(name));
  }
}
