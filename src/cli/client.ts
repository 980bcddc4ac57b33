import { readFileSync } from 'node:fs';
import type { PeerCertificate } from 'node:tls';
import type { z } from 'zod';
import { TaskAcceptedSchema, TaskViewSchema } from '../controller/wire.js';
import {
  BadResponseError,
  fromErrorBody,
  NotActiveError,
  UnavailableError,
  VmlinkError,
} from '../shared/errors.js';
import { type ClientTls, HttpClient } from '../shared/http/client.js';
import { sleep } from '../shared/time.js';
import { CONTROLLER_NAME, peerMismatch } from '../shared/tls.js';

/** The longest pause between two looks at a running task. */
const TASK_POLL_MAX_MS = 250;

/**
 * The addresses in a `--socket` / `VMLINK_SOCKET` value: one, or a comma-separated list of cluster controllers
 * (unix socket paths, or `https://addr:port` TCP listeners), in the order to try them.
 */
export function controllerAddresses(value: string): string[] {
  const list = [...new Set(value.split(',').map((a) => a.trim()))].filter((a) => a !== '');
  if (list.length === 0) throw new VmlinkError('invalid', `--socket names no controller: "${value}"`);
  for (const a of list)
    if (a.startsWith('http://'))
      throw new VmlinkError(
        'invalid',
        `the controller's TCP API speaks only TLS: use https://${a.slice('http://'.length)} with VMLINK_CA`,
      );
  return list;
}

/**
 * Where a standby's 421 answer (`pointer`, the active controller's address) may send a client that asked `from`,
 * or undefined when it may not. The kind never changes: from a unix socket only to a unix socket path
 * (`unix:///abs/path`), from an https listener only to an https listener (still checked against VMLINK_CA and the
 * controller's name, so the token never leaves TLS with a vmlink controller of this CA). Standbys are trusted as
 * much as the active one (both are the cluster's controllers: only they may write the election), but a pointer is
 * followed once per call and never across kinds: a user of the local socket is never sent over the network.
 */
export function followPointer(from: string, pointer: string | undefined): string | undefined {
  if (!pointer) return undefined;
  if (from.startsWith('https://')) {
    if (!pointer.startsWith('https://')) return undefined;
    try {
      const u = new URL(pointer);
      return u.protocol === 'https:' && u.port !== '' && u.pathname === '/' && !u.username && !u.password
        ? `https://${u.host}`
        : undefined;
    } catch {
      return undefined;
    }
  }
  if (!pointer.startsWith('unix:///')) return undefined;
  const path = pointer.slice('unix://'.length);
  // An absolute path of ordinary characters; no `..` steps.
  return /^\/[\w./@+-]{1,1000}$/.test(path) && !path.split('/').includes('..') ? path : undefined;
}

/** Failures that mean nothing reached the controller at that address (so another one may be asked instead). */
const NOT_REACHED = new Set(['ENOENT', 'ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);
const notReached = (e: unknown): boolean =>
  e instanceof UnavailableError &&
  NOT_REACHED.has(((e.cause as NodeJS.ErrnoException)?.code ?? '') as string);

/** How one controller address is reached: its HttpClient address, and over TCP the token and TLS checks. */
export function controllerConnection(socket: string): { address: string; token?: string; tls?: ClientTls } {
  const tcp = socket.startsWith('https://');
  const caFile = process.env.VMLINK_CA;
  if (tcp && !caFile)
    throw new VmlinkError(
      'invalid',
      "set VMLINK_CA to the controller's CA certificate (pki/ca.pem beside its database) to reach it over TLS",
    );
  return {
    address: tcp ? socket : `unix://${socket}`,
    ...(process.env.VMLINK_TOKEN ? { token: process.env.VMLINK_TOKEN } : {}),
    ...(tcp
      ? {
          tls: {
            ca: readCa(caFile!),
            checkPeer: (c: PeerCertificate) => peerMismatch(c, { role: 'controller', name: CONTROLLER_NAME }),
          },
        }
      : {}),
  };
}

/** One controller address's client: a unix socket, or the TCP listener over TLS checked against VMLINK_CA. */
function singleClient(socket: string, timeoutMs?: number): HttpClient {
  const { address, ...rest } = controllerConnection(socket);
  return new HttpClient(address, {
    name: 'the controller',
    protocol: 'api',
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...rest,
  });
}

/** How long a call waits for a cluster to have an active controller again (election lease 3 s, and slack). */
const ELECTION_WAIT_MS = 10_000;
/** How often it asks again meanwhile. */
const ELECTION_RETRY_MS = 500;

/** Options of a `ControllerClient`. */
export interface ControllerClientOptions {
  /** How long a call asks again while standbys answer and no active controller does (default 10 s; 0: never). */
  electionWaitMs?: number;
}

/**
 * The CLI's client of the controller API over a list of controllers (see `controllerAddresses`): a call goes to
 * the first that can be reached; a standby's 421 is followed once to the active controller it names (see
 * `followPointer`). Once a controller has answered, this client stays with it (a task is polled where it runs).
 * While standbys answer and no active controller does (a takeover), a call is asked again for `electionWaitMs`.
 */
export class ControllerClient extends HttpClient {
  private pinned: { address: string; client: HttpClient } | undefined;
  private readonly clients = new Map<string, HttpClient>();

  private readonly electionWaitMs: number;

  constructor(
    readonly addresses: string[],
    private readonly make: (address: string) => HttpClient,
    opts: ControllerClientOptions = {},
  ) {
    super(addresses.join(','));
    this.electionWaitMs = opts.electionWaitMs ?? ELECTION_WAIT_MS;
  }

  /** The address that answered last (undefined before the first answer). */
  get answering(): string | undefined {
    return this.pinned?.address;
  }

  override get<S extends z.ZodType>(path: string, schema: S, timeoutMs?: number): Promise<z.output<S>> {
    return this.route((c) => c.get(path, schema, timeoutMs));
  }

  override post<S extends z.ZodType>(
    path: string,
    body: unknown,
    schema: S,
    timeoutMs?: number,
  ): Promise<z.output<S>> {
    return this.route((c) => c.post(path, body, schema, timeoutMs));
  }

  override delete<S extends z.ZodType>(path: string, schema: S, timeoutMs?: number): Promise<z.output<S>> {
    return this.route((c) => c.delete(path, schema, timeoutMs));
  }

  private client(address: string): HttpClient {
    let c = this.clients.get(address);
    if (!c) {
      c = this.make(address);
      this.clients.set(address, c);
    }
    return c;
  }

  /** Calls `address`, following a standby's pointer once; `tried` collects every address asked. */
  private async following<T>(
    address: string,
    call: (c: HttpClient) => Promise<T>,
    tried: Set<string>,
  ): Promise<T> {
    tried.add(address);
    try {
      const r = await call(this.client(address));
      this.pinned = { address, client: this.client(address) };
      return r;
    } catch (e) {
      const next = e instanceof NotActiveError ? followPointer(address, e.active) : undefined;
      if (next === undefined || tried.has(next)) throw e;
      tried.add(next);
      try {
        const r = await call(this.client(next));
        this.pinned = { address: next, client: this.client(next) };
        return r;
      } catch (f) {
        // The active controller it names does not answer (it just died): still a standby's answer.
        if (notReached(f))
          throw new NotActiveError(`${(e as Error).message}, which does not answer: ${(f as Error).message}`);
        throw f;
      }
    }
  }

  private async route<T>(call: (c: HttpClient) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.electionWaitMs;
    for (;;) {
      try {
        return await this.once(call);
      } catch (e) {
        // Standbys answered and no active controller could be reached: an election is under way, or the active one
        // just died and etcd still names it until its lease ends. Nothing was done anywhere: ask again, a while.
        if (!(e instanceof NotActiveError) || Date.now() + ELECTION_RETRY_MS > deadline) throw e;
        await sleep(ELECTION_RETRY_MS);
      }
    }
  }

  private async once<T>(call: (c: HttpClient) => Promise<T>): Promise<T> {
    const tried = new Set<string>();
    if (this.pinned) return this.following(this.pinned.address, call, tried);
    const failures: string[] = [];
    let standby: NotActiveError | undefined;
    let last: unknown;
    for (const address of this.addresses) {
      if (tried.has(address)) continue;
      try {
        return await this.following(address, call, tried);
      } catch (e) {
        if (e instanceof NotActiveError) standby ??= e;
        else if (!notReached(e)) throw e;
        last = e;
        failures.push(`${address}: ${(e as Error).message}`);
      }
    }
    // One address: its own error, as before lists existed.
    if (this.addresses.length === 1) throw last;
    const detail = failures.map((f) => `\n  ${f}`).join('');
    if (standby)
      throw new NotActiveError(
        `no controller in ${this.addresses.join(',')} is active or reachable:${detail}`,
        standby.active,
      );
    throw new UnavailableError(
      `no controller in ${this.addresses.join(',')} can be reached:${detail}`,
      'controller',
    );
  }
}

/**
 * The CLI's client of the controller API: a unix socket, a TCP listener over TLS (`https://`, whose certificate
 * must chain to the CA in `VMLINK_CA` and name the controller; `VMLINK_TOKEN` travels inside TLS only), or a
 * comma-separated list of them (cluster controllers; see `ControllerClient`).
 */
export function controllerClient(
  socket: string,
  timeoutMs?: number,
  opts: ControllerClientOptions = {},
): HttpClient {
  const addresses = controllerAddresses(socket);
  // Bad settings (no VMLINK_CA for an https address) are refused before any call.
  for (const a of addresses) singleClient(a, timeoutMs);
  return new ControllerClient(addresses, (a) => singleClient(a, timeoutMs), opts);
}

function readCa(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new VmlinkError('invalid', `cannot read VMLINK_CA ${file}: ${(e as Error).message}`);
  }
}

/** Explains how to start a controller that cannot be reached. */
export function explainUnavailable(e: unknown, socket: string): unknown {
  // A list of cluster controllers has its own message (each address and why).
  if (socket.includes(',')) return e;
  if (e instanceof UnavailableError && /ENOENT|ECONNREFUSED/.test(e.message)) {
    return new UnavailableError(
      `the controller is not running at ${socket}: start it with \`vmlink daemon --detach\` (npm run quickstart does)`,
    );
  }
  return e;
}

/**
 * Starts a task with POST `path`, prints its progress as it comes, and returns its result parsed with `schema`;
 * Ctrl-C cancels it.
 */
export async function runTask<S extends z.ZodType>(
  client: HttpClient,
  path: string,
  body: unknown,
  schema: S,
  print: (line: string) => void,
): Promise<z.output<S>> {
  const { taskId } = await client.post(path, body, TaskAcceptedSchema);
  return followTask(client, taskId, path, schema, print);
}

/** Follows a started task (`taskId`, from POST or DELETE `path`) like runTask: progress, result, Ctrl-C. */
export async function followTask<S extends z.ZodType>(
  client: HttpClient,
  taskId: string,
  path: string,
  schema: S,
  print: (line: string) => void,
): Promise<z.output<S>> {
  let since = 0;
  // Quick tasks (a no-op apply, a plan) end within tens of milliseconds: ask again soon, then back off to 250 ms.
  let pause = 10;
  const onInt = () => {
    print('cancelling (the task stops at its next step)...');
    void client.delete(`/v1/tasks/${taskId}`, TaskViewSchema).catch(() => {});
  };
  process.on('SIGINT', onInt);
  try {
    for (;;) {
      const t = await client.get(`/v1/tasks/${taskId}?since=${since}`, TaskViewSchema);
      for (const line of t.progress) print(line);
      since = t.progressFrom + t.progress.length;
      if (t.state === 'succeeded') {
        const r = schema.safeParse(t.result);
        if (r.success) return r.data;
        const issue = r.error.issues[0]!;
        throw new BadResponseError(
          `the controller's ${path} task returned a result that breaks the contract: ${issue.path.join('.') || '(result)'}: ${issue.message}`,
          path,
        );
      }
      if (t.state !== 'running') {
        throw fromErrorBody({ error: t.error ?? { kind: 'internal', message: `task ${t.state}` } });
      }
      await sleep(pause);
      pause = Math.min(TASK_POLL_MAX_MS, pause * 2);
    }
  } finally {
    process.off('SIGINT', onInt);
  }
}
