// A controller's place in the cluster: with etcd it campaigns for the active role and, while it holds it, runs the
// active-only services (heartbeats, the HA manager); when it loses the role it stops them, cancels its running
// tasks, writes nothing more, and stays a candidate (the campaign goes on). With SQLite it is the only controller: always active.
import { randomBytes } from 'node:crypto';
import { NotActiveError } from '../../shared/errors.js';
import { ETCD_REQUEST_TIMEOUT_MS } from '../../shared/limits.js';
import { log } from '../../shared/log.js';
import type { Listener } from '../auth/access.js';
import type { TaskManager } from '../tasks.js';
import type { ClusterView, ControllerRole, ControllerView } from '../wire-cluster.js';
import type { ActiveGate } from './active.js';
import type { ActiveService, Campaign, ControllerInfo, Coordination } from './types.js';

/** The active controller's record is read at most this often for 421 answers (a busy standby asks etcd little). */
const ACTIVE_CACHE_MS = 500;

/** Options of a `ClusterRuntime`. */
export interface ClusterRuntimeOptions {
  /** This controller process. */
  self: ControllerInfo;
  /** etcd's coordination (election, leases, members); absent with SQLite: the one controller, always active. */
  coordination?: Coordination;
  /** The tasks to cancel when the role is lost. */
  tasks: TaskManager;
}

/** `ControllerInfo` for this process: `<name>/<pid>/<random>` as its id. */
export function controllerIdentity(name: string, address: string, tcp?: string): ControllerInfo {
  return {
    id: `${name}/${process.pid}/${randomBytes(4).toString('hex')}`,
    name,
    address,
    ...(tcp ? { tcp } : {}),
    since: new Date().toISOString(),
  };
}

/** The pid inside a controller id (`<name>/<pid>/<random>`), if it has one. */
export function pidOf(id: string): number | undefined {
  const parts = id.split('/');
  const pid = Number(parts[parts.length - 2]);
  return parts.length >= 3 && Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

const view = (c: ControllerInfo): ControllerView => {
  const pid = pidOf(c.id);
  return {
    id: c.id,
    name: c.name,
    address: c.address,
    ...(c.tcp ? { tcp: c.tcp } : {}),
    since: c.since,
    ...(pid ? { pid } : {}),
  };
};

/** Rejects with a timeout error if `p` takes longer than `ms` (etcd calls answer a status view; never hang it). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Active or standby, and everything that changes with it. */
export class ClusterRuntime implements ActiveGate {
  readonly self: ControllerInfo;
  /** etcd's coordination, for the parts that need host leases too (the HA manager); undefined with SQLite. */
  readonly coordination: Coordination | undefined;
  private readonly tasks: TaskManager;
  private role: ControllerRole = 'standby';
  private roleSince = new Date().toISOString();
  private readonly services: ActiveService[] = [];
  private readonly listeners: Array<(role: ControllerRole) => void> = [];
  private campaign: Campaign | undefined;
  /** Counts campaigns: events of an older one (before a close) are ignored. */
  private generation = 0;
  private closed = false;
  /** Services start and stop one transition at a time, in order. */
  private transition: Promise<void> = Promise.resolve();
  private cachedActive: { at: number; value: Promise<ControllerInfo | undefined> } | undefined;

  constructor(opts: ClusterRuntimeOptions) {
    this.self = opts.self;
    this.coordination = opts.coordination;
    this.tasks = opts.tasks;
  }

  /** This controller's name. */
  get selfName(): string {
    return this.self.name;
  }

  /** The store this controller runs on. */
  get storeKind(): 'sqlite' | 'etcd' {
    return this.coordination ? 'etcd' : 'sqlite';
  }

  /** Whether this controller is the active one now. */
  isActive(): boolean {
    return this.role === 'active';
  }

  /** Throws `NotActiveError` unless this controller is the active one (the store's write guard). */
  assertActive(): void {
    if (this.role !== 'active')
      throw new NotActiveError(
        `controller ${this.self.name} is not the active controller: it writes nothing (apply again through the active one)`,
      );
  }

  /** Calls `cb` with the new role at every change. */
  onRoleChange(cb: (role: ControllerRole) => void): void {
    this.listeners.push(cb);
  }

  /** Registers a service that runs only while this controller is active (started at once if it is). */
  addActiveService(s: ActiveService): void {
    this.services.push(s);
    if (this.role === 'active') this.queue(async () => this.startService(s));
  }

  /** Takes the active role (SQLite) or starts campaigning for it (etcd). */
  start(): void {
    if (!this.coordination) this.becomeActive();
    else this.campaignNow();
  }

  /** Resolves once the role changes that are under way have started or stopped every service (tests). */
  settled(): Promise<void> {
    return this.transition;
  }

  /** The active controller, for clients of `listener`. */
  async activeFor(listener: Listener): Promise<{ name: string; address?: string } | undefined> {
    if (this.role === 'active') return this.addressFor(this.self, listener);
    const active = await this.activeController();
    // The election may still name this controller just after it lost: that is no one to send a client to.
    if (!active || active.id === this.self.id) return undefined;
    return this.addressFor(active, listener);
  }

  /** `GET /v1/cluster`: what this controller knows of the cluster; what it could not learn is in `problems`. */
  async view(): Promise<ClusterView> {
    const problems: string[] = [];
    const self = {
      ...view(this.self),
      pid: process.pid,
      role: this.role,
      roleSince: this.roleSince,
    };
    const c = this.coordination;
    if (!c) return { store: 'sqlite', self, active: view(this.self), members: [], hosts: [], problems };
    const timeout = ETCD_REQUEST_TIMEOUT_MS * 2;
    const failed = (what: string) => (e: unknown) => {
      problems.push(`${what}: ${(e as Error)?.message ?? String(e)}`);
      return undefined;
    };
    const [active, members, hosts] = await Promise.all([
      within(c.activeController(), timeout, 'the active controller').catch(failed('the active controller')),
      within(c.members(), timeout, "etcd's members").catch(failed("etcd's members")),
      within(c.liveHosts(), timeout, "the hosts' leases").catch(failed("the hosts' leases")),
    ]);
    const now = Date.now();
    return {
      store: 'etcd',
      self,
      ...(active ? { active: view(active) } : {}),
      members: (members ?? []).map((m) => ({ ...m })),
      hosts: (hosts ?? [])
        .map((h) => ({
          host: h.host,
          leaseId: h.value.leaseId,
          heartbeatSeconds: h.value.heartbeatSeconds,
          since: h.value.since,
          ageMs: Math.max(0, Math.round(now - h.seenAt)),
        }))
        .sort((a, b) => a.host.localeCompare(b.host)),
      problems,
    };
  }

  /** Stops the services, cancels running tasks, resigns (a standby takes over at once) and closes etcd. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.generation++;
    const wasActive = this.role === 'active';
    this.setRole('standby');
    const stopped = new NotActiveError(`controller ${this.self.name} is stopping`);
    this.queue(async () => {
      if (wasActive) await this.stopServices();
      await this.tasks.cancelAll(stopped);
    });
    await this.transition;
    const campaign = this.campaign;
    this.campaign = undefined;
    await within(campaign?.resign() ?? Promise.resolve(), ETCD_REQUEST_TIMEOUT_MS, 'resign').catch(
      (e: unknown) => log.warn({ err: (e as Error).message }, 'could not resign the active role'),
    );
    await this.coordination?.close();
  }

  private campaignNow(): void {
    if (this.closed || !this.coordination) return;
    const gen = ++this.generation;
    log.info({ controller: this.self.id }, 'campaigning for the active role');
    this.campaign = this.coordination.campaign(this.self, {
      elected: () => {
        if (gen === this.generation && !this.closed) this.becomeActive();
      },
      lost: (reason) => {
        if (gen === this.generation && !this.closed) this.loseRole(reason);
      },
    });
  }

  private becomeActive(): void {
    if (this.role === 'active') return;
    this.setRole('active');
    this.cachedActive = undefined;
    log.info({ controller: this.self.id }, 'this controller is now the active one');
    const services = [...this.services];
    this.queue(async () => {
      for (const s of services) this.startService(s);
    });
  }

  private loseRole(reason: string): void {
    const wasActive = this.role === 'active';
    // First of all: from here on this controller writes nothing (the store's guard reads the role).
    this.setRole('standby');
    this.cachedActive = undefined;
    log.warn({ controller: this.self.id, reason, wasActive }, 'lost the active role');
    const err = new NotActiveError(
      `controller ${this.self.name} lost the active role (${reason}); what this task did so far stays, and the next apply through the active controller converges`,
    );
    this.queue(async () => {
      if (wasActive) await this.stopServices();
      const cancelled = await this.tasks.cancelAll(err);
      if (cancelled.length) log.warn({ tasks: cancelled }, 'cancelled the running tasks: no longer active');
    });
    // The campaign goes on by itself (a new candidacy on a new lease): `elected` may come again.
  }

  private setRole(role: ControllerRole): void {
    if (this.role === role) return;
    this.role = role;
    this.roleSince = new Date().toISOString();
    for (const cb of this.listeners)
      try {
        cb(role);
      } catch (e) {
        log.warn({ err: (e as Error).message }, 'role change listener failed');
      }
  }

  private startService(s: ActiveService): void {
    // A service that fails to start is logged; the others still run.
    try {
      s.start();
      log.info({ service: s.name }, 'active service started');
    } catch (e) {
      log.error({ service: s.name, err: (e as Error).message }, 'active service failed to start');
    }
  }

  private async stopServices(): Promise<void> {
    await Promise.all(
      this.services.map((s) =>
        s.stop().then(
          () => log.info({ service: s.name }, 'active service stopped'),
          (e: unknown) =>
            log.error({ service: s.name, err: (e as Error).message }, 'active service failed to stop'),
        ),
      ),
    );
  }

  private queue(step: () => Promise<void>): void {
    this.transition = this.transition.then(step).catch((e: unknown) => {
      log.error({ err: (e as Error).message }, 'role transition failed');
    });
  }

  private activeController(): Promise<ControllerInfo | undefined> {
    const c = this.coordination;
    if (!c) return Promise.resolve(this.self);
    const now = Date.now();
    if (!this.cachedActive || now - this.cachedActive.at > ACTIVE_CACHE_MS) {
      const value = within(c.activeController(), ETCD_REQUEST_TIMEOUT_MS, 'the active controller');
      this.cachedActive = { at: now, value };
      // A failure is not cached.
      value.catch(() => {
        if (this.cachedActive?.value === value) this.cachedActive = undefined;
      });
    }
    return this.cachedActive.value;
  }

  private addressFor(c: ControllerInfo, listener: Listener): { name: string; address?: string } {
    const address = listener === 'tcp' ? c.tcp : c.address.startsWith('unix://') ? c.address : undefined;
    return { name: c.name, ...(address ? { address } : {}) };
  }
}

/** The runtime of a controller on SQLite: the only one, always active (tests and single-machine use). */
export function standaloneRuntime(
  tasks: TaskManager,
  name = 'controller',
  address = 'unix://',
): ClusterRuntime {
  const r = new ClusterRuntime({ self: controllerIdentity(name, address), tasks });
  r.start();
  return r;
}
