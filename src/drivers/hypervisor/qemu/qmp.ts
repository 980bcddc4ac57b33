// QMP and qemu-guest-agent JSON clients over unix sockets.
import { randomInt } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import { BadResponseError, TimeoutError, UnavailableError, VmlinkError } from '../../../shared/errors.js';
import { GUEST_AGENT_MESSAGE_MAX_BYTES, QMP_MESSAGE_MAX_BYTES } from '../../../shared/limits.js';
import { log } from '../../../shared/log.js';
import { sleep } from '../../../shared/time.js';

type Json = Record<string, unknown>;

/** A QMP or guest-agent command answered with an error object. */
export class QmpCommandError extends VmlinkError {
  readonly errorClass: string;
  constructor(command: string, errorClass: string, desc: string, subject?: string) {
    super('exec', `${command} failed: ${errorClass}: ${desc}`, subject === undefined ? {} : { subject });
    this.errorClass = errorClass;
  }
}

/** A QMP asynchronous event. */
export interface QmpEvent {
  event: string;
  data?: Json;
  timestamp?: { seconds: number; microseconds: number };
}

/** A peer sent a message larger than its limit: the connection is closed and nothing of the message is used. */
export class MessageTooLargeError extends BadResponseError {
  constructor(what: string, maxBytes: number, subject?: string) {
    super(`${what}: a message exceeds ${maxBytes} bytes; connection closed`, subject);
  }
}

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * Splits a byte stream into top-level JSON objects. Skips bytes between objects (the guest agent may
 * send 0xff sync bytes or stale partial output), and does not rely on newlines. Scans each byte once and keeps
 * only the object in progress, which may not grow past `maxBytes` (`MessageTooLargeError`).
 */
export class JsonObjectSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  private depth = 0;
  private inString = false;
  private escaped = false;

  constructor(
    private readonly maxBytes = Number.POSITIVE_INFINITY,
    private readonly what = 'JSON stream',
  ) {}

  /** Feeds bytes (or text); returns every object completed by them (unparseable ones are dropped). */
  push(chunk: Buffer | string): Json[] {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    const out: Json[] = [];
    let start = this.depth > 0 ? 0 : -1;
    for (let i = 0; i < b.length; i++) {
      const c = b[i];
      if (this.depth === 0) {
        if (c === OPEN_BRACE) {
          this.depth = 1;
          start = i;
        }
        continue;
      }
      // UTF-8 continuation bytes are never ASCII, so structure is found byte by byte.
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === BACKSLASH) this.escaped = true;
        else if (c === QUOTE) this.inString = false;
        continue;
      }
      if (c === QUOTE) this.inString = true;
      else if (c === OPEN_BRACE || c === OPEN_BRACKET) this.depth++;
      else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
        this.depth--;
        if (this.depth === 0) {
          const tail = b.subarray(start, i + 1);
          this.check(this.size + tail.length);
          const text = (this.parts.length ? Buffer.concat([...this.parts, tail]) : tail).toString('utf8');
          this.parts = [];
          this.size = 0;
          start = -1;
          try {
            const v: unknown = JSON.parse(text);
            if (v && typeof v === 'object' && !Array.isArray(v)) out.push(v as Json);
          } catch {
            // not JSON after all: drop it
          }
        }
      }
    }
    if (this.depth > 0) {
      const rest = b.subarray(start);
      this.check(this.size + rest.length);
      this.parts.push(rest);
      this.size += rest.length;
    }
    return out;
  }

  private check(size: number): void {
    if (size > this.maxBytes) {
      this.parts = [];
      this.size = 0;
      throw new MessageTooLargeError(this.what, this.maxBytes);
    }
  }
}

/** Connects to a unix socket within `timeoutMs`; `UnavailableError` when nobody listens. */
export function connectUnix(path: string, timeoutMs: number, what: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ path });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new TimeoutError(`${what}: connecting to ${path} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      resolve(sock);
    });
    sock.once('error', (e) => {
      clearTimeout(timer);
      reject(new UnavailableError(`${what}: cannot connect to ${path}: ${e.message}`, undefined, e));
    });
  });
}

/** A JSON object stream over one socket: send objects, await objects matching a predicate. */
class JsonChannel {
  private readonly splitter: JsonObjectSplitter;
  private readonly queue: Json[] = [];
  private waiter:
    | { match: (m: Json) => boolean; resolve: (m: Json) => void; reject: (e: Error) => void }
    | undefined;
  private closedError: Error | undefined;
  /** Called for every object no waiter claimed. */
  onUnclaimed: ((m: Json) => void) | undefined;

  constructor(
    readonly sock: Socket,
    private readonly what: string,
    maxMessageBytes: number,
  ) {
    this.splitter = new JsonObjectSplitter(maxMessageBytes, what);
    // Nothing the peer sends may throw out of this handler: that would be an uncaught error in the agent.
    sock.on('data', (d: Buffer) => {
      let messages: Json[];
      try {
        messages = this.splitter.push(d);
      } catch (e) {
        this.fail(e as Error);
        return;
      }
      for (const m of messages) {
        try {
          this.deliver(m);
        } catch (e) {
          log.warn({ err: (e as Error).message, peer: what }, 'a message handler failed');
        }
      }
    });
    const onClose = (e?: Error) => {
      this.closedError ??= new UnavailableError(
        `${what}: connection closed${e ? `: ${e.message}` : ''}`,
        undefined,
        e,
      );
      this.waiter?.reject(this.closedError);
      this.waiter = undefined;
    };
    sock.on('error', onClose);
    sock.on('close', () => onClose());
  }

  /** Ends the channel with `e`: every wait rejects with it, and the socket is closed. */
  private fail(e: Error): void {
    this.closedError ??= e;
    this.waiter?.reject(this.closedError);
    this.waiter = undefined;
    this.sock.destroy();
  }

  private deliver(m: Json): void {
    if (this.waiter?.match(m)) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(m);
    } else if (this.onUnclaimed) {
      this.onUnclaimed(m);
    } else {
      this.queue.push(m);
    }
  }

  send(m: Json): void {
    if (this.closedError) throw this.closedError;
    this.sock.write(`${JSON.stringify(m)}\n`);
  }

  /** Resolves with the next object matching `match`; objects before it go to `onUnclaimed` or are dropped. */
  next(match: (m: Json) => boolean, timeoutMs: number, label: string): Promise<Json> {
    while (this.queue.length > 0) {
      const m = this.queue.shift()!;
      if (match(m)) return Promise.resolve(m);
      this.onUnclaimed?.(m);
    }
    if (this.closedError) return Promise.reject(this.closedError);
    if (this.waiter) return Promise.reject(new VmlinkError('internal', `${this.what}: concurrent wait`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new TimeoutError(`${this.what}: ${label} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        match,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

function unwrap(command: string, m: Json, subject?: string): unknown {
  const err = m.error as { class?: string; desc?: string } | undefined;
  if (err)
    throw new QmpCommandError(command, err.class ?? 'GenericError', err.desc ?? 'unknown error', subject);
  return m.return;
}

/** Options of a protocol client connection. */
export interface ClientOptions {
  /** Limit for each command (default 5 s), and for connecting unless `connectTimeoutMs` says otherwise. */
  timeoutMs?: number;
  /**
   * Limit for connecting and the greeting alone: a caller that only waits a moment for a socket (a VM starting)
   * must not make every later command on a shared connection that impatient.
   */
  connectTimeoutMs?: number;
  /** Names the VM in errors. */
  subject?: string;
}

/** A QMP connection: greeting, capabilities negotiation, commands with ids, events. */
export class QmpClient {
  private nextId = 1;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly listeners = new Set<(e: QmpEvent) => void>();
  /** The greeting's QEMU version (`major.minor.micro`). */
  version = '';

  private constructor(
    private readonly ch: JsonChannel,
    private readonly opts: Required<Pick<ClientOptions, 'timeoutMs'>> & ClientOptions,
  ) {
    ch.onUnclaimed = (m) => {
      if (typeof m.event === 'string') for (const l of this.listeners) l(m as unknown as QmpEvent);
    };
  }

  /** Connects, reads the greeting and leaves negotiation mode. */
  static async connect(path: string, opts: ClientOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const connectMs = opts.connectTimeoutMs ?? timeoutMs;
    const sock = await connectUnix(path, connectMs, 'QMP');
    const ch = new JsonChannel(sock, `QMP ${path}`, QMP_MESSAGE_MAX_BYTES);
    const client = new QmpClient(ch, { ...opts, timeoutMs });
    try {
      const greeting = await ch.next((m) => 'QMP' in m, connectMs, 'greeting');
      const v = (greeting.QMP as { version?: { qemu?: { major: number; minor: number; micro: number } } })
        .version?.qemu;
      if (v) client.version = `${v.major}.${v.minor}.${v.micro}`;
      await client.execute('qmp_capabilities', undefined, connectMs);
      return client;
    } catch (e) {
      ch.close();
      throw e;
    }
  }

  /** Runs one command and returns its `return` value; `QmpCommandError` on an error reply. */
  execute<T = unknown>(command: string, args?: Json, timeoutMs = this.opts.timeoutMs): Promise<T> {
    const run = async (): Promise<T> => {
      const id = `vmlink-${this.nextId++}`;
      this.ch.send({ execute: command, ...(args ? { arguments: args } : {}), id });
      const m = await this.ch.next((r) => r.id === id && ('return' in r || 'error' in r), timeoutMs, command);
      return unwrap(command, m, this.opts.subject) as T;
    };
    // One command in flight at a time keeps replies and the single waiter simple.
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => {});
    return p;
  }

  /** Calls `fn` for every event; returns a function that unsubscribes. */
  onEvent(fn: (e: QmpEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Resolves with the next event named `name`. */
  waitEvent(name: string, timeoutMs: number): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new TimeoutError(`QMP: no ${name} event within ${timeoutMs} ms`, this.opts.subject));
      }, timeoutMs);
      const off = this.onEvent((e) => {
        if (e.event === name) {
          clearTimeout(timer);
          off();
          resolve(e);
        }
      });
    });
  }

  /** Resolves when the connection closes (QEMU exited or closed it). */
  closed(): Promise<void> {
    if (this.ch.sock.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.ch.sock.once('close', () => resolve()));
  }

  /** Closes the connection. */
  close(): void {
    this.ch.close();
  }
}

/** Output of `guest-exec` once the process exited. */
export interface GuestExecOutput {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** The guest agent cut the output at its limit. */
  truncated: boolean;
}

/** A guest-agent interface as `guest-network-get-interfaces` returns it. */
export interface QgaInterface {
  name: string;
  'hardware-address'?: string;
  'ip-addresses'?: { 'ip-address-type': 'ipv4' | 'ipv6'; 'ip-address': string; prefix: number }[];
}

/** A qemu-guest-agent connection: `guest-sync` first, then one command at a time. */
export class GuestAgentClient {
  private constructor(
    private readonly ch: JsonChannel,
    private readonly opts: Required<Pick<ClientOptions, 'timeoutMs'>> & ClientOptions,
  ) {
    // Replies nobody waits for are stale (a former client's, or ones that arrived after a timeout): drop them.
    ch.onUnclaimed = () => {};
  }

  /** Connects and synchronises (discarding stale replies); `TimeoutError` when the agent does not answer. */
  static async connect(path: string, opts: ClientOptions = {}): Promise<GuestAgentClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const sock = await connectUnix(path, timeoutMs, 'guest agent');
    const ch = new JsonChannel(sock, `guest agent ${path}`, GUEST_AGENT_MESSAGE_MAX_BYTES);
    const client = new GuestAgentClient(ch, { ...opts, timeoutMs });
    try {
      await client.sync(timeoutMs);
      return client;
    } catch (e) {
      ch.close();
      throw e;
    }
  }

  /** Sends `guest-sync` with a random id and drops everything until its echo. */
  async sync(timeoutMs = this.opts.timeoutMs): Promise<void> {
    const id = randomInt(1, 2 ** 31 - 1);
    this.ch.send({ execute: 'guest-sync', arguments: { id } });
    await this.ch.next((m) => m.return === id, timeoutMs, 'guest-sync');
  }

  /** Runs one guest-agent command and returns its `return` value. */
  async execute<T = unknown>(command: string, args?: Json, timeoutMs = this.opts.timeoutMs): Promise<T> {
    this.ch.send({ execute: command, ...(args ? { arguments: args } : {}) });
    let m: Json;
    try {
      m = await this.ch.next((r) => 'return' in r || 'error' in r, timeoutMs, command);
    } catch (e) {
      // Replies carry no id here: after a timeout the next reply could be this one's, so the connection is done.
      this.ch.close();
      throw e;
    }
    return unwrap(command, m, this.opts.subject) as T;
  }

  /** Runs argv in the guest, feeds `input` to its stdin, and polls until it exits or `timeoutMs` passes. */
  async exec(
    argv: readonly string[],
    opts: { input?: string; timeoutMs?: number; pollMs?: number } = {},
  ): Promise<GuestExecOutput> {
    if (argv.length === 0) throw new VmlinkError('invalid', 'guest exec needs a command');
    const started = Date.now();
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const { pid } = await this.execute<{ pid: number }>('guest-exec', {
      path: argv[0],
      arg: argv.slice(1),
      'capture-output': true,
      ...(opts.input === undefined ? {} : { 'input-data': Buffer.from(opts.input).toString('base64') }),
    });
    let delay = opts.pollMs ?? 20;
    for (;;) {
      const st = await this.execute<{
        exited: boolean;
        exitcode?: number;
        signal?: number;
        'out-data'?: string;
        'err-data'?: string;
        'out-truncated'?: boolean;
        'err-truncated'?: boolean;
      }>('guest-exec-status', { pid });
      if (st.exited) {
        return {
          exitCode: st.signal === undefined ? (st.exitcode ?? 0) : 128 + st.signal,
          stdout: Buffer.from(st['out-data'] ?? '', 'base64').toString('utf8'),
          stderr: Buffer.from(st['err-data'] ?? '', 'base64').toString('utf8'),
          truncated: !!(st['out-truncated'] || st['err-truncated']),
        };
      }
      if (Date.now() - started > timeoutMs) {
        throw new TimeoutError(
          `guest exec ${argv.join(' ')} (guest pid ${pid}) still running after ${timeoutMs} ms`,
          this.opts.subject,
        );
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 250);
    }
  }

  /** The guest's interfaces. */
  interfaces(): Promise<QgaInterface[]> {
    return this.execute<QgaInterface[]>('guest-network-get-interfaces');
  }

  /** Closes the connection. */
  close(): void {
    this.ch.close();
  }
}
