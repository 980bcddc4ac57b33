// Wire of live migrations (issue 13, docs/mobility.md) between the controller and agents, and between the source
// host's agent and the target's. Strict and bounded like the rest of the wire. Routes and who may call them:
//
//   target host, controller only:
//     POST /v1/migrations/incoming        IncomingRequest   -> {ok}  (ports ready, QEMU paused with -incoming defer)
//     POST /v1/migrations/:id/resume      ResumeRequest     -> {ok}  (the state arrived: run, announce-self; or, with
//                                         `onArrival`, armed: it runs by itself the moment the state has arrived)
//     POST /v1/migrations/:id/abort                         -> AbortAnswer (rollback: the incoming VM removed, unless
//                                         it already resumed on arrival: `ran`)
//   target host, the source host's agent only (its host certificate names `from` of the incoming request):
//     PUT  /v1/migrations/:id/stream      MIGRATION_STREAM_TYPE body -> {receivedBytes} (or NDJSON acks: STREAM_ACKS_HEADER)
//     GET  /v1/migrations/:id/nbd         websocket: one NBD connection to the incoming QEMU's disk export (block
//                                         migration, agent/migrate/tunnel.ts)
//   source host, controller only:
//     POST /v1/migrations/outgoing        OutgoingRequest   -> MigrationJob  (QEMU migrates; progress in the job)
//     GET  /v1/migrations/:id                               -> MigrationJob
//     POST /v1/migrations/:id/rollback                      -> {ok}  (the guest runs here again)
//     POST /v1/migrations/dirty-rate      DirtyRateRequest  -> DirtyRate  (the explain's measured dirty rate)
import { z } from 'zod';
import { DIRTY_RATE_MIBPS_MAX, MIGRATION_DIRTY_RATE_MAX_S } from '../shared/limits.js';
import { NAME_PATTERN } from '../spec/schema.js';
import { FenceSchema, SecretValuesSchema, VmConfigSchema } from './wire.js';

const name = z.string().regex(NAME_PATTERN);
const hash = z.string().min(1).max(128);

/** The content type of a migration stream (raw bytes of QEMU's migration format). */
export const MIGRATION_STREAM_TYPE = 'application/vnd.vmlink.migration';

/** The peer route of the source agent's stream into the target. */
export const MIGRATION_PEER_ROUTE = 'PUT /v1/migrations/:id/stream';
/** The peer route of the source agent's NBD tunnels into the target (block migration). */
export const MIGRATION_NBD_ROUTE = 'GET /v1/migrations/:id/nbd';
/** The routes another host's agent may call (the service checks it is the migration's source). */
export const MIGRATION_PEER_ROUTES: ReadonlySet<string> = new Set([
  MIGRATION_PEER_ROUTE,
  MIGRATION_NBD_ROUTE,
]);

/** A migration's id (the controller's, one per run). */
export const MigrationIdSchema = z.string().uuid();

/** Target: prepare an incoming VM (taps, directory, QEMU paused waiting for the stream). */
export const IncomingRequestSchema = z
  .object({
    id: MigrationIdSchema,
    vm: VmConfigSchema,
    configHash: hash,
    /** The source host: only its agent's certificate may send the stream. */
    from: name,
    /**
     * The values the target's QEMU needs to open the VM's disks (iscsi CHAP passwords, LUKS keys), attached by the
     * controller as the request leaves (secrets/delivery.ts), like a `vm.create`'s; kept in memory for this step.
     */
    secrets: SecretValuesSchema,
  })
  .strict();
export type IncomingRequest = z.infer<typeof IncomingRequestSchema>;

/** Target: the switch-over's end (cluster: the VM's new owner record token, checked like a start's). */
export const ResumeRequestSchema = z
  .object({
    fence: FenceSchema.optional(),
    /** How long to wait for the whole state to have arrived (ms). */
    timeoutMs: z.number().int().min(1).max(600_000).default(60_000),
    /**
     * Resume on arrival (docs/mobility.md, "Switch-over"): the owner check runs now, the answer comes at once, and the
     * target resumes the guest by itself as soon as QEMU loaded the whole state and the stream ended cleanly, with no
     * controller round trip inside the pause. A later call without it waits for that resume's outcome.
     */
    onArrival: z.boolean().optional(),
  })
  .strict();
export type ResumeRequest = z.input<typeof ResumeRequestSchema>;

/** Target: a rollback's answer. `ran`: the guest already resumed here on arrival, so nothing was removed. */
export const AbortAnswerSchema = z.object({ ok: z.literal(true), ran: z.boolean().optional() }).strict();
export type AbortAnswer = z.infer<typeof AbortAnswerSchema>;

/** Source: send running VM `vm` to the target's agent. */
export const OutgoingRequestSchema = z
  .object({
    id: MigrationIdSchema,
    vm: name,
    to: z
      .object({
        host: name,
        /** The target agent's `https://` address other hosts reach (its underlay address). */
        agent: z
          .string()
          .max(256)
          .regex(/^https:\/\/[\w.:[\]-]+(:\d{1,5})?$/, 'must be https://address:port'),
      })
      .strict(),
    downtimeLimitMs: z.number().int().min(10).max(60_000),
    /**
     * The target resumes on arrival: once QEMU completed (guest paused here, the whole state sent), this side never
     * resumes the guest by itself on a later failure; only the controller's rollback does, after the target proved it
     * never ran.
     */
    holdOnceSent: z.boolean().optional(),
  })
  .strict();
export type OutgoingRequest = z.infer<typeof OutgoingRequestSchema>;

/** Where QEMU's migration stands (`query-migrate`, source side). */
export const MigrationProgressSchema = z
  .object({
    status: z.string().max(64),
    transferredBytes: z.number().min(0),
    remainingBytes: z.number().min(0),
    totalBytes: z.number().min(0),
    mbps: z.number().min(0).optional(),
    dirtySyncCount: z.number().min(0).optional(),
    downtimeMs: z.number().min(0).optional(),
    expectedDowntimeMs: z.number().min(0).optional(),
    totalTimeMs: z.number().min(0).optional(),
    error: z.string().max(4096).optional(),
    /** Block migration: local disks' bytes copied, of those known to copy. */
    diskDoneBytes: z.number().min(0).optional(),
    diskTotalBytes: z.number().min(0).optional(),
  })
  .strict();
export type MigrationProgressWire = z.infer<typeof MigrationProgressSchema>;

/** A source agent's migration job. */
export const MigrationJobSchema = z
  .object({
    id: MigrationIdSchema,
    vm: name,
    state: z.enum(['running', 'completed', 'failed']),
    progress: MigrationProgressSchema.optional(),
    /** Why it failed (the guest runs on the source, unless `sourcePaused`). */
    error: z.string().max(4096).optional(),
    /**
     * Failed with `holdOnceSent` after QEMU completed: the guest stays paused here, and the target may have it (the
     * controller asks the target before anything resumes).
     */
    sourcePaused: z.boolean().optional(),
  })
  .strict();
export type MigrationJob = z.infer<typeof MigrationJobSchema>;

export const StreamAnswerSchema = z.object({ receivedBytes: z.number().int().min(0) }).strict();

/** Source, before a migration: measure how fast a running VM dirties its memory. */
export const DirtyRateRequestSchema = z
  .object({ vm: name, seconds: z.number().int().min(1).max(MIGRATION_DIRTY_RATE_MAX_S) })
  .strict();
export type DirtyRateRequest = z.infer<typeof DirtyRateRequestSchema>;

/** The measured rate (MiB/s); absent where the hypervisor cannot measure it. */
export const DirtyRateSchema = z
  .object({ dirtyRateMiBps: z.number().finite().min(0).max(DIRTY_RATE_MIBPS_MAX).optional() })
  .strict();
export type DirtyRate = z.infer<typeof DirtyRateSchema>;

/**
 * Acked stream (the relay's window): a source that sends this request header with value `1` asks the target to
 * answer at once, with the same header, as NDJSON lines (STREAM_ACK_TYPE): `{ack}` (bytes received so far) every
 * STREAM_ACK_EVERY_BYTES, then the StreamAnswer, or `{error}` when the stream failed after the answer began. The
 * source then keeps at most its window unacknowledged, so the bytes queued between the agents (the kernel's TCP
 * buffers grow to megabytes) no longer drain after QEMU stopped the guest. A target that does not answer with the
 * header (an older agent) answers as before, and the source sends without a window.
 */
export const STREAM_ACKS_HEADER = 'vmlink-stream-acks';
export const STREAM_ACK_TYPE = 'application/x-ndjson';
export const STREAM_ACK_EVERY_BYTES = 64 * 1024;
/** Longest line of an acked answer (an error's message included). */
export const STREAM_ACK_LINE_MAX = 8192;
export const StreamAckLineSchema = z.union([
  z.object({ ack: z.number().int().min(0) }).strict(),
  StreamAnswerSchema,
  z.object({ error: z.string().max(4096) }).strict(),
]);
