// The simulator's lease thread, seen from the main thread: it starts lease-worker.ts and hands each simulated host a
// `ClusterMembership` whose every call runs on that thread, in the host's real `EtcdMembership`. The agent asks it as
// it would ask its own; `status()` answers from the statuses the thread pushes (at most LEASE_STATUS_PUSH_MS old,
// plus this loop's own lag), and the owner check and the lease itself are decided on the thread.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { ClusterMembership, FenceVms } from '../agent/cluster/types.js';
import type { Fence } from '../agent/wire.js';
import type { LeaseStatus } from '../shared/cluster.js';
import { fromErrorBody, UnavailableError } from '../shared/errors.js';
import type { LeaseThreadData, ToMain, ToWorker } from './lease-protocol.js';

/** Distributes `Omit` over a union (each message keeps its own fields). */
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

/** The worker: compiled JS as is; under tsx or vitest (this file is .ts) through tsx's loader. */
function startWorker(data: LeaseThreadData): Worker {
  const here = import.meta.url;
  if (!here.endsWith('.ts')) return new Worker(new URL('./lease-worker.js', here), { workerData: data });
  const entry = new URL('./lease-worker.ts', here).href;
  const boot = `import(${JSON.stringify(tsxEsmApi(here))}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(boot, { eval: true, workerData: data });
}

/** tsx's ESM API (`register`) as a file URL, by its package's export map (a worker from an eval has no resolver). */
function tsxEsmApi(from: string): string {
  const pkgFile = createRequire(from).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as {
    exports: Record<string, { import: { default: string } }>;
  };
  return pathToFileURL(join(dirname(pkgFile), pkg.exports['./esm/api']!.import.default)).href;
}

/** The lease thread and the memberships it serves. */
export class LeaseThread {
  private readonly worker: Worker;
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly statuses = new Map<string, LeaseStatus>();
  private readonly fencers = new Map<string, FenceVms>();
  private readonly ready: Promise<void>;
  private dead: Error | undefined;

  constructor(readonly data: LeaseThreadData) {
    this.worker = startWorker(data);
    this.ready = new Promise<void>((resolve, reject) => {
      this.worker.once('message', (m: ToMain) =>
        m.kind === 'ready' ? resolve() : reject(new Error('the lease thread did not start')),
      );
      this.worker.once('error', reject);
    });
    this.worker.on('message', (m: ToMain) => this.onMessage(m));
    this.worker.on('error', (e) => this.fail(e));
    this.worker.on('exit', (code) => this.fail(new Error(`the lease thread exited (${code})`)));
  }

  /** Resolves once the thread runs. */
  started(): Promise<void> {
    return this.ready;
  }

  /** Host `host`'s membership, its lease kept on the thread. `own`: a connection of its own (to cut: power loss). */
  async membership(
    host: string,
    stateDir: string,
    fenceVms: FenceVms,
    own = false,
  ): Promise<ThreadMembership> {
    this.fencers.set(host, fenceVms);
    await this.call({ op: 'add', host, stateDir, own });
    return new ThreadMembership(this, host);
  }

  /** The status last pushed for `host`. */
  status(host: string): LeaseStatus | undefined {
    return this.statuses.get(host);
  }

  call(msg: WithoutId<ToWorker>): Promise<unknown> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id } as ToWorker);
    });
  }

  /** Closes the thread's etcd connections and ends it. */
  async close(): Promise<void> {
    if (!this.dead) await this.call({ op: 'close' }).catch(() => undefined);
    this.dead ??= new UnavailableError('the lease thread is closed');
    await this.worker.terminate();
  }

  private onMessage(m: ToMain): void {
    if (m.kind === 'reply') {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (m.error) w?.reject(fromErrorBody(m.error));
      else w?.resolve(m.value);
    } else if (m.kind === 'status') for (const s of m.statuses) this.statuses.set(s.host, s);
    else if (m.kind === 'fence') {
      const f = this.fencers.get(m.host);
      const answer = (r: { vms?: string[]; error?: string }) =>
        this.worker.postMessage({ op: 'fenced', id: m.id, ...r } satisfies ToWorker);
      if (!f) answer({ error: `no agent for host ${m.host}` });
      else
        f(m.reason).then(
          (vms) => answer({ vms }),
          (e: Error) => answer({ error: e.message }),
        );
    }
  }

  private fail(e: Error): void {
    this.dead ??= e;
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }
}

/** One simulated host's membership, kept on the lease thread. */
export class ThreadMembership implements ClusterMembership {
  constructor(
    private readonly thread: LeaseThread,
    readonly host: string,
  ) {}

  async start(): Promise<void> {
    await this.thread.call({ op: 'start', host: this.host });
  }

  async stop(): Promise<void> {
    await this.thread.call({ op: 'stop', host: this.host });
  }

  /** Power loss: the host's own etcd connection closes; its lease runs out in etcd. */
  async cut(): Promise<void> {
    await this.thread.call({ op: 'cut', host: this.host });
  }

  status(): LeaseStatus {
    return (
      this.thread.status(this.host) ?? {
        host: this.host,
        mode: 'renewing',
        etcd: 'unreachable',
        fencedVms: [],
        heartbeatSeconds: this.thread.data.heartbeatSeconds,
      }
    );
  }

  async verifiedStatus(boundMs: number): Promise<LeaseStatus> {
    return (await this.thread.call({ op: 'verified', host: this.host, boundMs })) as LeaseStatus;
  }

  async assertOwner(vm: string, fence: Fence | undefined): Promise<void> {
    await this.thread.call({ op: 'assertOwner', host: this.host, vm, fence });
  }

  async ownedElsewhere(vms: readonly string[]): Promise<string[]> {
    return (await this.thread.call({ op: 'ownedElsewhere', host: this.host, vms: [...vms] })) as string[];
  }
}
