// The agent's side of interactive serial consoles: one connection per VM to QEMU's serial socket (its chardev
// server takes one client at a time), shared by every attached client. Output goes to all of them, each behind a
// bounded queue (a slow one loses output, with a notice, rather than growing this process); keys come from the one
// writer. A writer attaching while another is attached takes over, and the previous one is told it is a reader now.
import type { Stats } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { dirname } from 'node:path';
import {
  CONSOLE_CLIENTS_PER_VM_MAX,
  CONSOLE_CONNECT_TIMEOUT_MS,
  CONSOLE_KEYS_FRAME_MAX_BYTES,
  CONSOLE_PENDING_KEYS_MAX_BYTES,
  type ConsoleMode,
  type ConsoleServerMessage,
  DropGate,
} from '../../shared/console-wire.js';
import { ConflictError, InvalidStateError, UnavailableError } from '../../shared/errors.js';
import { log } from '../../shared/log.js';

/** One attached client as the hub sees it (a websocket in the agent's route; anything alike in tests). */
export interface ConsolePeer {
  output(data: Buffer): void;
  control(msg: ConsoleServerMessage): void;
  /** Bytes queued to this client and not yet sent. */
  queued(): number;
  close(code: number, reason: string): void;
}

/** What the hub needs: where a VM's serial socket is, and this host's name (for the hello). */
export interface ConsoleHubOptions {
  host: string;
  socketPath(vm: string): string;
  maxClients?: number;
  connectTimeoutMs?: number;
}

/** A client attached to a VM's console. */
export class ConsoleAttachment {
  /** A reader attached with write rights that another writer displaced may take over again. */
  readonly mayWrite: boolean;
  mode: ConsoleMode;
  private readonly gate = new DropGate();
  private toldReadOnly = false;

  constructor(
    private readonly vmConsole: VmConsole,
    readonly peer: ConsolePeer,
    mode: ConsoleMode,
  ) {
    this.mayWrite = mode === 'write';
    this.mode = mode;
  }

  /** Keys from this client: written to the guest when it is the writer, refused with a notice otherwise. */
  keys(data: Buffer): void {
    this.vmConsole.keys(this, data);
  }

  /** Makes this client the writer (when it attached with write rights). */
  takeover(): void {
    this.vmConsole.takeover(this);
  }

  /** Detaches this client; the last one closes the serial connection. */
  detach(): void {
    this.vmConsole.detach(this);
  }

  /** Output for this client, unless its queue is full. */
  output(data: Buffer): void {
    const r = this.gate.admit(this.peer.queued(), data.length);
    if (!r.send) return;
    if (r.dropped)
      this.peer.control({
        type: 'notice',
        message: `${r.dropped} bytes of console output were dropped: this client reads too slowly`,
      });
    this.peer.output(data);
  }

  /** Tells a reader once (per mode) that its keys go nowhere. */
  refuseKeys(): void {
    if (this.toldReadOnly) return;
    this.toldReadOnly = true;
    this.peer.control({
      type: 'notice',
      message: this.mayWrite
        ? 'keys refused: another client holds the keyboard (send {"type":"takeover"} to take it)'
        : 'keys refused: this console is attached read-only (the operator role may type)',
    });
  }

  setMode(mode: ConsoleMode): void {
    this.mode = mode;
    this.toldReadOnly = false;
    this.peer.control({ type: 'mode', mode });
  }
}

/** One VM's serial connection and its clients. */
class VmConsole {
  readonly attached = new Set<ConsoleAttachment>();
  writer: ConsoleAttachment | undefined;
  closed = false;

  constructor(
    readonly vm: string,
    private readonly socket: Socket,
    private readonly maxClients: number,
    private readonly onClosed: () => void,
  ) {
    socket.on('data', (d: Buffer) => {
      for (const a of this.attached) a.output(d);
    });
    socket.on('error', (e) => log.warn({ vm, err: e.message }, 'serial console connection failed'));
    socket.on('close', () => this.end(1000, `the serial console of ${vm} closed (the VM stopped)`));
  }

  attach(peer: ConsolePeer, mode: ConsoleMode): ConsoleAttachment {
    if (this.attached.size >= this.maxClients)
      throw new ConflictError(
        `VM ${this.vm}'s console has ${this.maxClients} clients attached already; detach one first`,
        `vm/${this.vm}`,
      );
    const a = new ConsoleAttachment(this, peer, mode);
    this.attached.add(a);
    if (mode === 'write') this.giveKeyboard(a);
    return a;
  }

  keys(a: ConsoleAttachment, data: Buffer) {
    if (this.writer !== a) return a.refuseKeys();
    if (data.length > CONSOLE_KEYS_FRAME_MAX_BYTES)
      return a.peer.control({
        type: 'notice',
        message: `a keys frame of ${data.length} bytes was refused (at most ${CONSOLE_KEYS_FRAME_MAX_BYTES})`,
      });
    if (this.socket.writableLength + data.length > CONSOLE_PENDING_KEYS_MAX_BYTES)
      return a.peer.control({
        type: 'notice',
        message: `keys dropped: the guest is not reading its serial console (${this.socket.writableLength} bytes wait)`,
      });
    this.socket.write(data);
  }

  takeover(a: ConsoleAttachment) {
    if (!a.mayWrite) return a.refuseKeys();
    if (this.writer !== a) {
      this.giveKeyboard(a);
      a.setMode('write');
    }
  }

  detach(a: ConsoleAttachment): void {
    if (!this.attached.delete(a)) return;
    if (this.writer === a) this.writer = undefined;
    if (this.attached.size === 0) this.end(1000, 'detached');
  }

  /** Closes every client and the serial connection. */
  end(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.onClosed();
    for (const a of this.attached) a.peer.close(code, reason);
    this.attached.clear();
    this.socket.destroy();
  }

  private giveKeyboard(a: ConsoleAttachment): void {
    const previous = this.writer;
    this.writer = a;
    if (!previous || previous === a) return;
    previous.setMode('read');
    previous.peer.control({
      type: 'notice',
      message: 'another client took over the keyboard: this one is read-only now',
    });
  }
}

/** Every VM console this agent relays. */
export class ConsoleHub {
  private readonly consoles = new Map<string, Promise<VmConsole>>();

  constructor(private readonly o: ConsoleHubOptions) {}

  /** Attaches `peer` to VM `vm`'s console (connecting to its serial socket when it is the first client). */
  async attach(vm: string, peer: ConsolePeer, mode: ConsoleMode): Promise<ConsoleAttachment> {
    for (;;) {
      let pending = this.consoles.get(vm);
      if (!pending) {
        const opening: Promise<VmConsole> = this.open(vm, () => {
          if (this.consoles.get(vm) === opening) this.consoles.delete(vm);
        });
        pending = opening;
        this.consoles.set(vm, opening);
        opening.catch(() => {
          if (this.consoles.get(vm) === opening) this.consoles.delete(vm);
        });
      }
      const c = await pending;
      // It closed while this client waited (its last client left, the VM stopped): open it afresh.
      if (c.closed) continue;
      const a = c.attach(peer, mode);
      peer.control({ type: 'hello', vm, host: this.o.host, mode });
      return a;
    }
  }

  /** Closes every console (the agent stops). */
  async close(): Promise<void> {
    const all = await Promise.allSettled([...this.consoles.values()]);
    for (const r of all) if (r.status === 'fulfilled') r.value.end(1001, 'the agent is stopping');
  }

  private async open(vm: string, onClosed: () => void): Promise<VmConsole> {
    const path = this.o.socketPath(vm);
    await assertConsoleSocket(path, vm);
    const socket = await connectUnix(path, this.o.connectTimeoutMs ?? CONSOLE_CONNECT_TIMEOUT_MS, vm);
    return new VmConsole(vm, socket, this.o.maxClients ?? CONSOLE_CLIENTS_PER_VM_MAX, onClosed);
  }
}

/**
 * Refuses a serial socket path that is not what QEMU makes: a socket (a link is never followed), owned by root or by
 * the owner of its directory (the VM's own uid when jailed), in a directory others cannot write.
 */
export async function assertConsoleSocket(path: string, vm: string): Promise<void> {
  const st = await lstat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT')
      throw new InvalidStateError(
        `VM ${vm} has no serial console socket at ${path}: is it running?`,
        `vm/${vm}`,
      );
    throw e;
  });
  const dir: Stats = await lstat(dirname(path));
  const problem = st.isSymbolicLink()
    ? 'is a symbolic link'
    : !st.isSocket()
      ? 'is not a unix socket'
      : !dir.isDirectory()
        ? 'is not in a directory'
        : (dir.mode & 0o002) !== 0
          ? 'is in a directory anyone may write'
          : st.uid !== 0 && st.uid !== dir.uid
            ? `is owned by uid ${st.uid}, neither root nor its directory's owner`
            : undefined;
  if (problem)
    throw new InvalidStateError(`VM ${vm}'s serial console ${path} ${problem}: refused`, `vm/${vm}`);
}

function connectUnix(path: string, timeoutMs: number, vm: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new UnavailableError(`VM ${vm}'s serial console did not accept in ${timeoutMs} ms`, `vm/${vm}`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(
        new UnavailableError(`cannot connect to VM ${vm}'s serial console: ${e.message}`, `vm/${vm}`, e),
      );
    });
  });
}
