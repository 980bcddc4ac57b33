// Wire types of the agent's probes (`POST /v1/probe`, `/v1/probes`) and guest access (`exec`, interfaces, the
// console's tail): requests strict, answers bounded where they are lists. Shared by agent and controller.
import { z } from 'zod';
import {
  GUEST_EXEC_ARG_MAX,
  GUEST_EXEC_ARGS_MAX,
  GUEST_EXEC_INPUT_MAX,
  PROBE_BATCH_MAX,
} from '../shared/limits.js';
import type { GuestExecResult, GuestInterface, ProbeResult } from '../shared/results.js';
import { Ipv4Schema, NAME_PATTERN } from '../spec/schema.js';

/** A probe's outcome (defined in shared/, where exec's parsers produce it). */
export type { GuestExecResult, GuestInterface, ProbeResult } from '../shared/results.js';

const name = z.string().regex(NAME_PATTERN);
const ip = Ipv4Schema;

/** Where a probe starts: the host itself or one of its VMs (through the guest agent). */
export const ProbeSourceSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('host') }).strict(),
  z
    .object({
      kind: z.literal('vm'),
      name,
      /** The guest interface the probe must leave through (a VM on several networks); absent: the guest's routes. */
      nic: z
        .string()
        .regex(/^[a-zA-Z0-9_.-]{1,15}$/, 'must be a guest interface name (1-15 characters)')
        .optional(),
    })
    .strict(),
]);

/** What a probe asks for, wherever it starts: ICMP echo, an HTTP GET that must answer, or a TCP connect. */
const probeFields = {
  kind: z.enum(['ping', 'http', 'tcp']),
  target: ip,
  port: z.number().int().min(1).max(65535).optional(),
  timeoutMs: z.number().int().min(100).max(30_000).default(2_000),
};

/** A tcp probe names the port it connects to. */
const tcpHasPort = (p: { kind: string; port?: number | undefined }) =>
  p.kind !== 'tcp' || p.port !== undefined;
const TCP_PORT_NEEDED = { message: 'a tcp probe needs a port', path: ['port'] };

/** A reachability probe: ICMP echo, an HTTP GET that must answer, or a TCP connect. */
export const ProbeRequestSchema = z
  .object({ from: ProbeSourceSchema, ...probeFields })
  .strict()
  .refine(tcpHasPort, TCP_PORT_NEEDED);
/** A probe request. */
export type ProbeRequest = z.infer<typeof ProbeRequestSchema>;

/** Probes from one source, run at once (`POST /v1/probes`); their results come back in the same order. */
export const ProbeBatchRequestSchema = z
  .object({
    from: ProbeSourceSchema,
    probes: z
      .array(z.object(probeFields).strict().refine(tcpHasPort, TCP_PORT_NEEDED))
      .min(1)
      .max(PROBE_BATCH_MAX),
  })
  .strict();
/** A batch of probes from one source. */
export type ProbeBatchRequest = z.infer<typeof ProbeBatchRequestSchema>;

/** Command to run in a guest. */
export const GuestExecRequestSchema = z
  .object({
    argv: z.array(z.string().max(GUEST_EXEC_ARG_MAX)).min(1).max(GUEST_EXEC_ARGS_MAX),
    timeoutMs: z.number().int().min(100).max(600_000).default(30_000),
    input: z.string().max(GUEST_EXEC_INPUT_MAX).optional(),
  })
  .strict();

// Answers.

/** A probe's outcome (`POST /v1/probe`). */
export const ProbeResultSchema = z.object({
  reachable: z.boolean(),
  rttMs: z.number().min(0).optional(),
  detail: z.string(),
  unmeasured: z.boolean().optional(),
}) satisfies z.ZodType<ProbeResult>;

/** The outcomes of a probe batch, one per probe in request order (`POST /v1/probes`). */
export const ProbeBatchResultSchema = z.object({ results: z.array(ProbeResultSchema).max(PROBE_BATCH_MAX) });

/** Output of a command run in a guest (`POST /v1/vms/:name/exec`). */
export const GuestExecResultSchema = z.object({
  exitCode: z.number().int(),
  stdout: z.string(),
  stderr: z.string(),
}) satisfies z.ZodType<GuestExecResult>;

/** A guest's NICs (`GET /v1/vms/:name/interfaces`). */
export const GuestInterfacesSchema = z.array(
  z.object({
    name: z.string(),
    mac: z.string(),
    addresses: z.array(z.string()),
  }) satisfies z.ZodType<GuestInterface>,
);

/** The tail of a VM's serial console log. */
export const ConsoleTailSchema = z.object({ log: z.string() });
