import { type Socket, connect as unixConnect } from 'node:net';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { WebSocket } from 'ws';
import type { HypervisorMigrations, IncomingDisks, SecretValues } from '../../drivers/hypervisor/types.js';
import {
  ConflictError,
  ForbiddenError,
  InvalidRequestError,
  InvalidStateError,
  NotFoundError,
  TimeoutError,
  UnsupportedError,
} from '../../shared/errors.js';
import { log } from '../../shared/log.js';
import { benchTuning, type MigrationTuning } from '../../shared/migrate-tuning.js';
import type { OpContext } from '../../shared/op.js';
import type { TlsCredentials } from '../../shared/tls.js';
import type { Fence } from '../wire.js';
import {
  type IncomingRequest,
  type MigrationJob,
  type OutgoingRequest,
  STREAM_ACK_EVERY_BYTES,
} from '../wire-migrate.js';
import { runOutgoing } from './outgoing.js';
import { migrationStamp } from './relay.js';
import { ByteBudget, tunnelFrom } from './tunnel.js';

/** An incoming VM waits this long for its stream before it is removed again (ms). */
export const INCOMING_WAIT_MS = 120_000;
/**
 * With a block migration the stream comes only after the disks' copy caught up: once its first NBD tunnel opened, an
 * incoming VM waits this long (the source's copy timeout, 30 min, and some) before it is removed.
 */
export const INCOMING_BLOCK_WAIT_MS = 35 * 60_000;
/** How long an armed target waits, once its stream ended, for QEMU to have loaded the state (ms). */
const ARRIVAL_WAIT_MS = 60_000;
/** Finished jobs kept for the controller to read. */
const JOBS_KEPT = 32;
/** A stream may carry at most this multiple of the VM's memory (pages resent while the guest dirties them). */
const STREAM_MEMORY_FACTOR = 16;

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
  /**
   * Target, as the guest runs (beside `cont`): this host's bridges forward the VM's MACs to its taps (they learned
   * them on the overlay while it ran on the source). Optional; a failure is logged, never fatal.
   */
  claimPorts?: (vm: string) => Promise<void>;
  /**
   * Whether this host still holds its cluster lease (undefined: no cluster). Checked again just before a guest resumes
   * on arrival: the owner check ran when it was armed, and a host that lost its lease since runs nothing.
   */
  leaseHeld?: () => boolean;
  /** This host's certificate (the relay to the target); undefined: no TLS, migrations refused. */
  tls: () => TlsCredentials | undefined;
  /** The bench's migration variant (default: shared/migrate-tuning.ts's file, absent outside the bench). */
  tuning?: () => Promise<MigrationTuning | undefined>;
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
  /** Settles when the stream ended: resolved only when its body ended cleanly (the source QEMU sent everything). */
  streamEnded: Promise<void>;
  endStream: (e?: Error) => void;
  /** Resume on arrival (armed): `resuming` from the moment `cont` may run; an abort is refused from then on. */
  arrival?: { state: 'armed' | 'resuming'; outcome: Promise<void>; claimFirst?: boolean };
}

/** How a migration's target ended, kept a while for the controller's second `resume` or a late `abort`. */
type Settled = { ran: true; outcome: Promise<void> } | { ran: false };

/** Both sides of this host's migrations. */
export class MigrationService {
  private readonly incoming = new Map<string, Incoming>();
  private readonly jobs = new Map<string, MigrationJob>();
  private readonly busy = new Set<string>();
  /** Incoming migrations that ended (resumed on arrival, or aborted), the last JOBS_KEPT. */
  private readonly settled = new Map<string, Settled>();

  constructor(private readonly d: MigrationServiceDeps) {}

  /** The bench's variant for this migration (shared/migrate-tuning.ts); undefined outside the bench. */
  private tuning(): Promise<MigrationTuning | undefined> {
    return (this.d.tuning ?? benchTuning)();
  }

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
      let endStream!: (e?: Error) => void;
      const streamEnded = new Promise<void>((resolve, reject) => {
        endStream = (e) => (e ? reject(e) : resolve());
      });
      streamEnded.catch(() => {});
      this.incoming.set(req.id, {
        req,
        socket,
        streamEnded,
        endStream,
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

  /** Throws unless migration `id` waits for its stream and `peer` is its source host (checked before an answer). */
  assertStream(id: string, peer: string | undefined): Incoming {
    const inc = this.incoming.get(id);
    if (!inc) throw new NotFoundError('migration', id);
    // Only the source host's agent (its certificate) may send; the local socket is root's own tooling.
    if (peer !== undefined && peer !== inc.req.from)
      throw new ForbiddenError(
        `migration ${id} of vm ${inc.req.vm.name} comes from ${inc.req.from}, not ${peer}`,
      );
    if (inc.receiving) throw new ConflictError(`migration ${id} is already receiving its stream`);
    return inc;
  }

  /**
   * Writes the stream `body` from host `peer` into the incoming QEMU; resolves with the bytes received. `onAck`: told
   * the bytes received every STREAM_ACK_EVERY_BYTES (an acked stream, relay.ts).
   */
  async receive(
    id: string,
    peer: string | undefined,
    body: Readable,
    onAck?: (receivedBytes: number) => void,
  ): Promise<number> {
    const inc = this.assertStream(id, peer);
    const max = inc.req.vm.memoryMiB * 1024 * 1024 * STREAM_MEMORY_FACTOR;
    let received = 0;
    let acked = 0;
    // The last byte in from the source (the relay's tail), apart from its way into QEMU (the stream written).
    body.once('end', () =>
      migrationStamp(id, inc.req.vm.name)('target-stream-received', { bytes: received }),
    );
    body.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (onAck && received - acked >= STREAM_ACK_EVERY_BYTES) {
        acked = received;
        onAck(received);
      }
      if (received > max)
        body.destroy(
          new InvalidRequestError(
            `migration ${id}: the stream passed ${STREAM_MEMORY_FACTOR}x the VM's memory; cut off`,
          ),
        );
    });
    inc.receiving = pipeline(body, inc.socket).then(
      () => {
        migrationStamp(id, inc.req.vm.name)('target-stream-written', { bytes: received });
        inc.endStream();
        return received;
      },
      (e: Error) => {
        inc.endStream(e);
        throw e;
      },
    );
    return inc.receiving;
  }

  /**
   * The state arrived: the owner check (cluster), then the guest runs here and announces itself. `onArrival`: the
   * owner check now, then the guest runs by itself once the state has arrived (armed; resolves at once); a later call
   * without it waits for that outcome.
   */
  async resume(id: string, fence: Fence | undefined, timeoutMs: number, onArrival = false): Promise<void> {
    const done = this.settled.get(id);
    if (done) {
      if (!done.ran) throw new InvalidStateError(`migration ${id} was rolled back here: its guest never ran`);
      return withTimeout(done.outcome, timeoutMs, `migration ${id}'s resume on arrival`);
    }
    const inc = this.incoming.get(id);
    if (!inc) throw new NotFoundError('migration', id);
    if (inc.arrival) {
      if (onArrival) return;
      return withTimeout(inc.arrival.outcome, timeoutMs, `migration ${id}'s resume on arrival`);
    }
    const m = this.halves();
    const vm = inc.req.vm.name;
    const stamp = migrationStamp(id, vm);
    if (onArrival) {
      await this.d.assertMayRun(vm, fence);
      // Read now, not inside the guest's pause.
      const claimFirst = (await this.tuning())?.claimBeforeCont === true;
      const arrival: NonNullable<Incoming['arrival']> = {
        state: 'armed',
        outcome: Promise.resolve(),
        claimFirst,
      };
      arrival.outcome = this.resumeOnArrival(id, inc, arrival);
      arrival.outcome.catch(() => {});
      inc.arrival = arrival;
      stamp('target-armed');
      return;
    }
    await m.awaitArrived(vm, timeoutMs);
    stamp('target-arrived');
    await this.d.assertMayRun(vm, fence);
    await this.cont(id, vm);
    stamp('target-resumed');
    this.finishIncoming(id);
  }

  /**
   * The guest runs here, this host's bridges pointed at its taps beside `cont` (a frame for it then reaches its tap,
   * not the overlay). Both at once: the claim (`bridge fdb replace`, a process) took 20-200 ms on a loaded host and
   * held `cont` back; a frame that comes before it is lost as one before `cont` would be, and the guest's own frames
   * and QEMU's announce teach the bridges the same port. `claimFirst`: the claim, then `cont` (bench variant).
   */
  private async cont(id: string, vm: string, claimFirst = false): Promise<void> {
    if (!claimFirst) {
      await Promise.all([this.claimPortsOf(id, vm), this.halves().resumeTarget(vm)]);
      return;
    }
    await this.claimPortsOf(id, vm);
    await this.halves().resumeTarget(vm);
  }

  /** This host's bridges point at the VM's taps; a failure is logged, never fatal. */
  private async claimPortsOf(id: string, vm: string): Promise<void> {
    await this.d
      .claimPorts?.(vm)
      .catch((e: Error) =>
        log.warn({ migration: id, vm, err: e.message }, 'could not point the bridges at the arrived VM'),
      );
  }

  /**
   * Armed: the guest runs here once its stream ended cleanly (the source's relay passed on QEMU's end: the source QEMU
   * sent everything, so it completed and stays paused; a source agent that died or a relay that failed ends it with
   * an error instead) and QEMU loaded the whole state. Anything else: it never runs here, and waits for the
   * controller's abort (or its expiry).
   */
  private async resumeOnArrival(
    id: string,
    inc: Incoming,
    arrival: NonNullable<Incoming['arrival']>,
  ): Promise<void> {
    const vm = inc.req.vm.name;
    const stamp = migrationStamp(id, vm);
    await inc.streamEnded;
    await this.halves().awaitArrived(vm, ARRIVAL_WAIT_MS);
    stamp('target-arrived');
    if (this.incoming.get(id) !== inc)
      throw new InvalidStateError(`migration ${id} was rolled back before its state arrived`);
    if (this.d.leaseHeld && !this.d.leaseHeld())
      throw new InvalidStateError(
        `vm ${vm} arrived on ${this.d.host}, which no longer holds its cluster lease: it does not run here`,
      );
    // From here an abort is refused: the guest may be running.
    arrival.state = 'resuming';
    this.settle(id, { ran: true, outcome: arrival.outcome });
    try {
      // The bridges are claimed only now, beside `cont` after the arrival: claimed at the stream's end (tried), a frame
      // of the source's still on the overlay could teach them the old port again (an 8.7 s outage in migrate.int once).
      await this.cont(id, vm, arrival.claimFirst);
      stamp('target-resumed', { onArrival: true });
    } finally {
      this.finishIncoming(id);
    }
  }

  private settle(id: string, s: Settled): void {
    this.settled.set(id, s);
    for (const k of this.settled.keys()) {
      if (this.settled.size <= JOBS_KEPT) break;
      this.settled.delete(k);
    }
  }

  /**
   * Removes a prepared incoming VM (rollback, or its stream never came). Resolves `ran: true`, removing nothing, when
   * the guest resumed here on arrival (or is resuming): then it runs here, and only here.
   */
  async abortIncoming(id: string, why: string): Promise<{ removed: boolean; ran: boolean }> {
    const inc = this.incoming.get(id);
    if (!inc || inc.arrival?.state === 'resuming') {
      const s = this.settled.get(id);
      return { removed: false, ran: s?.ran === true };
    }
    log.warn({ migration: id, vm: inc.req.vm.name, why }, 'incoming migration removed');
    this.settle(id, { ran: false });
    inc.socket.destroy();
    this.finishIncoming(id);
    await this.d.deleteVm(inc.req.vm.name);
    return { removed: true, ran: false };
  }

  private finishIncoming(id: string): void {
    const inc = this.incoming.get(id);
    if (!inc) return;
    clearTimeout(inc.timer);
    inc.endStream(new InvalidStateError(`migration ${id} ended here`));
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
    void runOutgoing(m, req, tls, job, this.tuning()).finally(release);
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

/** `p`, or a TimeoutError naming `what` after `ms`. */
function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`${what} did not end in ${ms} ms`)), ms);
      timer.unref();
    }),
  ]).finally(() => clearTimeout(timer));
}
