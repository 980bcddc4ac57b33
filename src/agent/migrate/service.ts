// The agent's side of live migrations (docs/mobility.md; routes in agent/wire-migrate.ts). As the target it prepares
// the incoming VM (ports, directory, QEMU paused with `-incoming defer`), takes the stream from the source host's
// agent only, and runs the guest on the controller's go (the owner check of a start). As the source it runs QEMU's
// migration into a relay to the target's agent over mutual TLS, and keeps the job's progress for the controller.
// A block migration's NBD connections travel the same way, each in its own tunnel (tunnel.ts).
import { request as httpsRequest } from 'node:https';
import { type Socket, connect as unixConnect } from 'node:net';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { WebSocket } from 'ws';
import type {
  HypervisorMigrations,
  IncomingDisks,
  MigrationProgress,
  SecretValues,
} from '../../drivers/hypervisor/types.js';
import {
  BadResponseError,
  ConflictError,
  ForbiddenError,
  InvalidRequestError,
  InvalidStateError,
  NotFoundError,
  UnsupportedError,
} from '../../shared/errors.js';
import { log } from '../../shared/log.js';
import type { OpContext } from '../../shared/op.js';
import { peerMismatch, type TlsCredentials } from '../../shared/tls.js';
import { formatVersionHeader, localVersion, VERSION_HEADER } from '../../shared/version.js';
import type { Fence } from '../wire.js';
import {
  type IncomingRequest,
  MIGRATION_STREAM_TYPE,
  type MigrationJob,
  type OutgoingRequest,
  StreamAnswerSchema,
} from '../wire-migrate.js';
import { ByteBudget, tunnelFrom, tunnelTo } from './tunnel.js';

/** An incoming VM waits this long for its stream before it is removed again (ms). */
export const INCOMING_WAIT_MS = 120_000;
/**
 * With a block migration the stream comes only after the disks' copy caught up: once its first NBD tunnel opened, an
 * incoming VM waits this long (the source's copy timeout, 30 min, and some) before it is removed.
 */
export const INCOMING_BLOCK_WAIT_MS = 35 * 60_000;
/** Finished jobs kept for the controller to read. */
const JOBS_KEPT = 32;
/** A stream may carry at most this multiple of the VM's memory (pages resent while the guest dirties them). */
const STREAM_MEMORY_FACTOR = 16;
/** The target's answer to a stream is one small JSON object. */
const ANSWER_MAX_BYTES = 4096;

/** What the migration side needs from the agent. */
export interface MigrationServiceDeps {
  host: string;
  /** The hypervisor's migration halves; undefined: this host's hypervisor has none. */
  migrations: () => HypervisorMigrations | undefined;
  prepareIncoming: (
    vm: IncomingRequest['vm'],
    configHash: string,
    ctx?: OpContext,
    secrets?: SecretValues,
  ) => Promise<void>;
  assertMayRun: (name: string, fence: Fence | undefined) => Promise<void>;
  /** Removes a VM and its ports (the `vm.delete` action). */
  deleteVm: (name: string) => Promise<void>;
  /** This host's certificate (the relay to the target); undefined: no TLS, migrations refused. */
  tls: () => TlsCredentials | undefined;
}

interface Incoming {
  req: IncomingRequest;
  socket: Socket;
  timer: NodeJS.Timeout;
  /** Block migration: the incoming QEMU's NBD export, the bytes its tunnels may carry, the tunnels open. */
  disks?: IncomingDisks;
  budget?: ByteBudget;
  tunnels: Set<{ destroy: () => void }>;
  tunnelsOpened: number;
  /** Set while (or once) the stream is being received. */
  receiving?: Promise<number>;
}

/** Both sides of this host's migrations. */
export class MigrationService {
  private readonly incoming = new Map<string, Incoming>();
  private readonly jobs = new Map<string, MigrationJob>();
  private readonly busy = new Set<string>();

  constructor(private readonly d: MigrationServiceDeps) {}

  private halves(): HypervisorMigrations {
    const m = this.d.migrations();
    if (!m) throw new UnsupportedError(`the hypervisor of ${this.d.host} cannot live-migrate VMs`);
    return m;
  }

  private claim(vm: string, what: string): () => void {
    if (this.busy.has(vm))
      throw new ConflictError(`vm ${vm} is already migrating on ${this.d.host}`, `vm/${vm}`);
    this.busy.add(vm);
    void what;
    return () => this.busy.delete(vm);
  }

  // Target.

  /** Prepares the incoming VM and its QEMU, listening for the stream from `req.from`'s agent. */
  async prepare(req: IncomingRequest): Promise<void> {
    const m = this.halves();
    if (this.incoming.has(req.id)) throw new ConflictError(`migration ${req.id} is already prepared here`);
    const release = this.claim(req.vm.name, 'incoming');
    try {
      await this.d.prepareIncoming(req.vm, req.configHash, {}, req.secrets);
      // The secrets (CHAP passwords, disk keys) reach QEMU as it opens the disks; the request keeps none of them.
      const { stream: socket, disks } = await m.migrateIn(req.vm.name, {}, req.secrets);
      delete req.secrets;
      socket.on('error', () => {});
      this.incoming.set(req.id, {
        req,
        socket,
        timer: this.expiry(req.id, INCOMING_WAIT_MS),
        tunnels: new Set(),
        tunnelsOpened: 0,
        ...(disks
          ? { disks, budget: new ByteBudget(disks.maxBytes, `the disk tunnels of migration ${req.id}`) }
          : {}),
      });
    } catch (e) {
      release();
      await this.d.deleteVm(req.vm.name).catch(() => {});
      throw e;
    }
  }

  private expiry(id: string, ms: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      void this.abortIncoming(id, 'no stream arrived in time');
    }, ms);
    timer.unref();
    return timer;
  }

  /**
   * Before a disk tunnel's upgrade: only the migration's source host (its certificate) may open one, only for a
   * migration that copies disks, and at most as many as the export takes.
   */
  assertTunnel(id: string, peer: string | undefined): void {
    const inc = this.incoming.get(id);
    if (!inc) throw new NotFoundError('migration', id);
    const vm = inc.req.vm.name;
    if (peer !== inc.req.from)
      throw new ForbiddenError(
        `migration ${id} of vm ${vm}: only the agent of ${inc.req.from} may open its disk tunnels${peer ? `, not ${peer}'s` : ''}`,
      );
    if (!inc.disks)
      throw new InvalidStateError(`migration ${id} of vm ${vm} copies no disks: it has no disk tunnel`);
    if (inc.tunnelsOpened >= inc.disks.maxConnections)
      throw new ConflictError(
        `migration ${id} of vm ${vm} has opened its ${inc.disks.maxConnections} disk tunnels already`,
      );
  }

  /** After the upgrade: carries websocket `ws` to the incoming QEMU's NBD export until either side ends. */
  async tunnel(id: string, peer: string | undefined, ws: WebSocket): Promise<void> {
    try {
      this.assertTunnel(id, peer);
    } catch {
      ws.terminate();
      return;
    }
    const inc = this.incoming.get(id)!;
    const disks = inc.disks!;
    inc.tunnelsOpened++;
    if (inc.tunnelsOpened === 1) {
      // The stream follows only once the copy caught up.
      clearTimeout(inc.timer);
      inc.timer = this.expiry(id, INCOMING_BLOCK_WAIT_MS);
    }
    const qemu = unixConnect(disks.path);
    const ends = {
      destroy: () => {
        ws.terminate();
        qemu.destroy();
      },
    };
    inc.tunnels.add(ends);
    try {
      await new Promise<void>((resolve, reject) => {
        qemu.once('connect', resolve);
        qemu.once('error', reject);
      });
      await tunnelFrom(ws, qemu, inc.budget!);
    } catch (e) {
      log.warn({ migration: id, err: (e as Error).message }, 'disk tunnel failed');
      ends.destroy();
    } finally {
      inc.tunnels.delete(ends);
    }
  }

  /** Writes the stream `body` from host `peer` into the incoming QEMU; resolves with the bytes received. */
  async receive(id: string, peer: string | undefined, body: Readable): Promise<number> {
    const inc = this.incoming.get(id);
    if (!inc) throw new NotFoundError('migration', id);
    // Only the source host's agent (its certificate) may send; the local socket is root's own tooling.
    if (peer !== undefined && peer !== inc.req.from)
      throw new ForbiddenError(
        `migration ${id} of vm ${inc.req.vm.name} comes from ${inc.req.from}, not ${peer}`,
      );
    if (inc.receiving) throw new ConflictError(`migration ${id} is already receiving its stream`);
    const max = inc.req.vm.memoryMiB * 1024 * 1024 * STREAM_MEMORY_FACTOR;
    let received = 0;
    body.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > max)
        body.destroy(
          new InvalidRequestError(
            `migration ${id}: the stream passed ${STREAM_MEMORY_FACTOR}x the VM's memory; cut off`,
          ),
        );
    });
    inc.receiving = pipeline(body, inc.socket).then(() => received);
    return inc.receiving;
  }

  /** The state arrived: the owner check (cluster), then the guest runs here and announces itself. */
  async resume(id: string, fence: Fence | undefined, timeoutMs: number): Promise<void> {
    const inc = this.incoming.get(id);
    if (!inc) throw new NotFoundError('migration', id);
    const m = this.halves();
    const vm = inc.req.vm.name;
    await m.awaitArrived(vm, timeoutMs);
    await this.d.assertMayRun(vm, fence);
    await m.resumeTarget(vm);
    this.finishIncoming(id);
  }

  /** Removes a prepared incoming VM (rollback, or its stream never came). */
  async abortIncoming(id: string, why: string): Promise<boolean> {
    const inc = this.incoming.get(id);
    if (!inc) return false;
    log.warn({ migration: id, vm: inc.req.vm.name, why }, 'incoming migration removed');
    inc.socket.destroy();
    this.finishIncoming(id);
    await this.d.deleteVm(inc.req.vm.name);
    return true;
  }

  private finishIncoming(id: string): void {
    const inc = this.incoming.get(id);
    if (!inc) return;
    clearTimeout(inc.timer);
    for (const t of inc.tunnels) t.destroy();
    this.incoming.delete(id);
    this.busy.delete(inc.req.vm.name);
  }

  // Source.

  /** Starts sending VM `req.vm` to `req.to`; the job's state tells how it goes. */
  start(req: OutgoingRequest): MigrationJob {
    const m = this.halves();
    const tls = this.d.tls();
    if (!tls)
      throw new UnsupportedError(
        `the agent of ${this.d.host} has no host certificate: migrations travel only over mutual TLS`,
      );
    if (this.jobs.has(req.id)) throw new ConflictError(`migration ${req.id} already exists here`);
    const release = this.claim(req.vm, 'outgoing');
    const job: MigrationJob = { id: req.id, vm: req.vm, state: 'running' };
    this.keep(job);
    const onProgress = (p: MigrationProgress) => {
      job.progress = p;
    };
    // QEMU's NBD connections (block migration), each carried to the target; all cut when the job ends.
    const tunnels = new Set<Socket>();
    const nbdTunnel = (conn: Socket) => {
      tunnels.add(conn);
      conn.once('close', () => tunnels.delete(conn));
      tunnelTo(conn, { id: req.id, to: req.to, tls }).catch((e: Error) =>
        log.warn({ migration: req.id, vm: req.vm, err: e.message }, 'disk tunnel failed'),
      );
    };
    void m
      .migrateOut(req.vm, { downtimeLimitMs: req.downtimeLimitMs, onProgress, nbdTunnel }, (stream) =>
        sendStream(stream, req, tls),
      )
      .then(
        (last) => {
          job.progress = last;
          job.state = 'completed';
        },
        (e: Error) => {
          job.state = 'failed';
          job.error = e.message.slice(0, 4000);
          log.warn({ migration: req.id, vm: req.vm, err: e.message }, 'outgoing migration failed');
        },
      )
      .finally(() => {
        for (const c of tunnels) c.destroy();
        release();
      });
    return job;
  }

  /** A job of this host's. */
  job(id: string): MigrationJob {
    const j = this.jobs.get(id);
    if (!j) throw new NotFoundError('migration', id);
    return j;
  }

  /**
   * Source, for the explain: how fast running VM `vm` dirties its memory (undefined where the hypervisor cannot
   * measure it). Not while it migrates: the measurement would compete with the copy.
   */
  async dirtyRate(vm: string, seconds: number): Promise<number | undefined> {
    const m = this.halves();
    if (!m.dirtyRate) return undefined;
    if (this.busy.has(vm)) throw new ConflictError(`vm ${vm} is migrating on ${this.d.host}`, `vm/${vm}`);
    return m.dirtyRate(vm, seconds);
  }

  /** After a completed migration the target could not take over: the guest runs here again. */
  async rollback(id: string): Promise<void> {
    const j = this.job(id);
    if (j.state === 'running')
      throw new InvalidStateError(`migration ${id} is still running; it cannot be rolled back now`);
    await this.halves().resumeHere(j.vm);
  }

  private keep(job: MigrationJob): void {
    this.jobs.set(job.id, job);
    for (const [id, j] of this.jobs) {
      if (this.jobs.size <= JOBS_KEPT) break;
      if (j.state !== 'running') this.jobs.delete(id);
    }
  }
}

/**
 * Carries QEMU's stream to the target's agent: one PUT over mutual TLS whose answer counts only from the target
 * host's own certificate.
 */
function sendStream(stream: Socket, req: OutgoingRequest, tls: TlsCredentials): Promise<void> {
  const url = new URL(`${req.to.agent}/v1/migrations/${req.id}/stream`);
  return new Promise<void>((resolve, reject) => {
    const out = httpsRequest(
      {
        method: 'PUT',
        hostname: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port || 443,
        path: url.pathname,
        key: tls.key,
        cert: tls.cert,
        ca: tls.ca,
        checkServerIdentity: (_h, cert) => {
          const why = peerMismatch(cert, { role: 'host', name: req.to.host });
          return why ? new Error(`the agent at ${req.to.agent} is not ${req.to.host}'s: ${why}`) : undefined;
        },
        headers: {
          'content-type': MIGRATION_STREAM_TYPE,
          [VERSION_HEADER.wire]: formatVersionHeader(localVersion('wire')),
        },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
          if (body.length > ANSWER_MAX_BYTES) res.destroy(new BadResponseError('answer too large'));
        });
        res.on('error', reject);
        res.on('end', () => {
          if (res.statusCode !== 200)
            return reject(
              new BadResponseError(
                `the agent of ${req.to.host} refused the migration stream (HTTP ${res.statusCode}): ${body.slice(0, 500)}`,
              ),
            );
          try {
            StreamAnswerSchema.parse(JSON.parse(body));
            resolve();
          } catch {
            reject(
              new BadResponseError(
                `the agent of ${req.to.host} answered the stream with ${body.slice(0, 200)}`,
              ),
            );
          }
        });
      },
    );
    out.on('error', reject);
    stream.on('error', (e) => out.destroy(e));
    stream.pipe(out);
  });
}
