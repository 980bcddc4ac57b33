// The serial console stream's wire, shared by the agent (which holds the VM's serial socket), the controller (which
// relays it to browsers and the CLI) and the CLI: binary frames are console bytes (output one way, keys the other),
// text frames are small JSON control messages. Every bound of the relay lives here.
import { z } from 'zod';
import { errorStatus, toErrorBody } from './errors.js';

/** Largest keys frame a client may send (a paste is split by the client; a bigger frame is refused). */
export const CONSOLE_KEYS_FRAME_MAX_BYTES = 4096;
/** Largest control (text) frame a client may send. */
export const CONSOLE_CONTROL_FRAME_MAX_BYTES = 1024;
/** Output queued to one client beyond which its output is dropped (with a notice) instead of growing memory. */
export const CONSOLE_CLIENT_BUFFER_MAX_BYTES = 256 * 1024;
/** Keys queued to the guest's serial port (it is not reading) beyond which further keys are dropped. */
export const CONSOLE_PENDING_KEYS_MAX_BYTES = 64 * 1024;
/** Clients attached to one VM's console at once on one agent. */
export const CONSOLE_CLIENTS_PER_VM_MAX = 16;
/** Most of the console log a client may ask to be replayed before live output. */
export const CONSOLE_TAIL_MAX_BYTES = 65_536;
/** How long connecting to a console (the serial socket, or the agent) may take. */
export const CONSOLE_CONNECT_TIMEOUT_MS = 10_000;
/** Largest websocket message any console or event endpoint accepts (keys and control are far below). */
export const STREAM_MAX_PAYLOAD_BYTES = 64 * 1024;
/** The byte that detaches `vmlink vm console` (Ctrl-], as virsh). */
export const CONSOLE_DETACH_BYTE = 0x1d;

/** A writer's keys reach the guest; a reader gets output only. */
export const ConsoleModeSchema = z.enum(['read', 'write']);
export type ConsoleMode = z.infer<typeof ConsoleModeSchema>;

/** Control messages from the server (text frames). */
export const ConsoleServerMessageSchema = z.discriminatedUnion('type', [
  /** First frame: what this client is attached to and how. */
  z
    .object({
      type: z.literal('hello'),
      vm: z.string().max(64),
      host: z.string().max(64),
      mode: ConsoleModeSchema,
    })
    .strict(),
  /** The client's mode changed (another writer took over, or this one did). */
  z.object({ type: z.literal('mode'), mode: ConsoleModeSchema }).strict(),
  /** Something the operator should read: output dropped, keys refused, ... */
  z.object({ type: z.literal('notice'), message: z.string().max(1000) }).strict(),
]);
export type ConsoleServerMessage = z.infer<typeof ConsoleServerMessageSchema>;

/** Control messages from a client (text frames): a reader allowed to write asks to become the writer. */
export const ConsoleClientMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('takeover') }).strict(),
]);
export type ConsoleClientMessage = z.infer<typeof ConsoleClientMessageSchema>;

/** Query of the controller's `GET /v1/vms/:name/console/stream`. */
export const ConsoleStreamQuerySchema = z
  .object({
    /** Bytes of the console log replayed first. */
    tail: z.coerce.number().int().min(0).max(CONSOLE_TAIL_MAX_BYTES).default(0),
    /** `read`: attach as a reader even where the role may write (default: write when the role allows). */
    mode: ConsoleModeSchema.optional(),
  })
  .strict();

/** Query of the agent's `GET /v1/vms/:name/console/stream` (the controller decided the mode). */
export const AgentConsoleQuerySchema = z
  .object({
    tail: z.coerce.number().int().min(0).max(CONSOLE_TAIL_MAX_BYTES).default(0),
    mode: ConsoleModeSchema,
  })
  .strict();

/** Parses a client's control frame, or undefined when it is not one (too long, not JSON, unknown type). */
export function parseClientControl(text: string): ConsoleClientMessage | undefined {
  if (text.length > CONSOLE_CONTROL_FRAME_MAX_BYTES) return undefined;
  try {
    const r = ConsoleClientMessageSchema.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

/** Parses a server's control frame, or undefined when it is not one. */
export function parseServerControl(text: string): ConsoleServerMessage | undefined {
  if (text.length > 4 * CONSOLE_CONTROL_FRAME_MAX_BYTES) return undefined;
  try {
    const r = ConsoleServerMessageSchema.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The websocket close of a failure after the upgrade: code 4000 + the HTTP status of its error kind (4404: no such
 * VM, 4409: too many clients, 4503: unreachable), and its message cut to the 123 bytes a close reason may hold.
 */
export function closeFor(err: unknown): { code: number; reason: string } {
  const body = toErrorBody(err);
  return { code: 4000 + errorStatus[body.error.kind].http, reason: cutReason(body.error.message) };
}

/** `text` cut to fit a websocket close reason (123 bytes of UTF-8). */
export function cutReason(text: string): string {
  if (Buffer.byteLength(text) <= 123) return text;
  let s = text.slice(0, 120);
  while (Buffer.byteLength(s) > 120) s = s.slice(0, -1);
  return `${s}...`;
}

/**
 * What a relay does with output for a client that reads slowly: sends while its queue is under the bound, drops
 * (counting) beyond it, and says how much was dropped once it reads again, so memory never grows with a slow reader.
 */
export class DropGate {
  private dropped = 0;

  constructor(private readonly maxQueued = CONSOLE_CLIENT_BUFFER_MAX_BYTES) {}

  /**
   * Whether `bytes` more may be queued behind `queued`; when they may and some were dropped before, `notice` is
   * the count to report first.
   */
  admit(queued: number, bytes: number): { send: boolean; dropped?: number } {
    if (queued + bytes > this.maxQueued) {
      this.dropped += bytes;
      return { send: false };
    }
    if (this.dropped === 0) return { send: true };
    const dropped = this.dropped;
    this.dropped = 0;
    return { send: true, dropped };
  }
}
