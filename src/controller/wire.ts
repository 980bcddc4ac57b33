// Wire types of the controller's REST API, shared by the server, the CLI and (later) the web UI.

import { z } from 'zod';
import { HostReportSchema, ObservedNetworkSchema, VersionInfoSchema } from '../agent/wire.js';
import { DoctorCheckSchema } from '../agent/wire-doctor.js';
import { ObservedVcpusSchema } from '../agent/wire-resources.js';
import { ErrorBodySchema } from '../shared/errors.js';
import { GUEST_EXEC_ARG_MAX, GUEST_EXEC_ARGS_MAX, GUEST_EXEC_INPUT_MAX } from '../shared/limits.js';
import { NAME_PATTERN } from '../spec/schema.js';
import type { ThroughputResult as MeasuredThroughput } from '../verify/throughput.js';
import { LbCellSchema } from './wire-lb.js';
import { DiagnosisSchema } from './wire-observe.js';

/** A spec sent by a client: the YAML text and where it came from (for messages). */
export const SpecBodySchema = z
  .object({
    spec: z
      .string()
      .min(1)
      .max(4 * 1024 * 1024)
      .describe('the spec as YAML text'),
    source: z.string().max(4096).default('spec').describe('file name shown in messages'),
  })
  .strict();

/** Body of `apply`: a spec, and whether the apply may destroy data (VMs, their disks, networks VMs use). */
export const ApplyBodySchema = SpecBodySchema.extend({
  allowDestroy: z
    .boolean()
    .default(false)
    .describe(
      'go ahead although the plan deletes VMs, their disks or networks VMs use (never protected VMs)',
    ),
}).strict();

/** `subject` of the error (409) that refuses an apply destroying data without `allowDestroy`: clients may ask. */
export const DESTRUCTIVE_PLAN_SUBJECT = 'plan/destroy';

/** Body of `destroy`: a spec, or nothing for the last applied one. */
export const DestroyBodySchema = z
  .object({
    spec: z
      .string()
      .min(1)
      .max(4 * 1024 * 1024)
      .optional(),
    source: z.string().max(4096).default('spec'),
  })
  .strict();

/** A VM named in a path. */
export const VmParamsSchema = z.object({ name: z.string().regex(NAME_PATTERN) }).strict();

/** Body of `vm stop`. */
export const VmStopBodySchema = z.object({ force: z.boolean().default(false) }).strict();

/** Body of `vm exec`. */
export const VmExecBodySchema = z
  .object({
    argv: z.array(z.string().max(GUEST_EXEC_ARG_MAX)).min(1).max(GUEST_EXEC_ARGS_MAX),
    timeoutMs: z.number().int().min(100).max(600_000).default(30_000),
    input: z.string().max(GUEST_EXEC_INPUT_MAX).optional(),
  })
  .strict();

/** A task id in a path, and the progress index to read from. */
export const TaskParamsSchema = z.object({ id: z.string().uuid() }).strict();
/** Query of `GET /v1/tasks/:id`. */
export const TaskQuerySchema = z.object({ since: z.coerce.number().int().min(0).default(0) }).strict();

// Responses. Objects are not strict: a newer controller may add fields, which an older client drops unread. Deep
// structures the client only shows (plans, specs) are checked at their top and passed through below it.

const problems = z.array(z.string());

/** Answer of `GET /v1/health`. */
export const HealthSchema = z.object({
  ok: z.literal(true),
  version: z.string(),
  api: VersionInfoSchema.optional().describe("the controller's range of this API's versions"),
});

/** `202 Accepted` answer of a long operation. */
export const TaskAcceptedSchema = z.object({ taskId: z.string() });
/** `202 Accepted` answer of a long operation. */
export type TaskAccepted = z.infer<typeof TaskAcceptedSchema>;

/** A long operation's state (`GET /v1/tasks/:id`); `result` is the operation's own answer, checked by the caller. */
export const TaskViewSchema = z.object({
  id: z.string(),
  kind: z.string(),
  state: z.enum(['running', 'succeeded', 'failed', 'cancelled']),
  startedAt: z.string(),
  finishedAt: z.string().optional(),
  progress: z.array(z.string()),
  progressFrom: z.number().int().min(0),
  result: z.unknown().optional(),
  error: ErrorBodySchema.shape.error.optional(),
});
/** A long operation's state. */
export type TaskView = z.infer<typeof TaskViewSchema>;

/** A computed plan: its steps (checked at their top), the objects left alone, its text and counts. */
export const PlanResultSchema = z.object({
  plan: z.object({
    steps: z.array(z.looseObject({ kind: z.string(), host: z.string(), reason: z.string() })),
    unchanged: z.array(z.string()),
  }),
  text: z.string(),
  summary: z.object({
    create: z.number().int(),
    update: z.number().int(),
    delete: z.number().int(),
    start: z.number().int(),
    stop: z.number().int(),
  }),
  losses: z
    .array(
      z.discriminatedUnion('kind', [
        z.object({
          kind: z.literal('vm'),
          host: z.string(),
          name: z.string(),
          disks: z.array(z.string()).optional(),
          movedTo: z.string().optional(),
        }),
        z.object({
          kind: z.literal('network'),
          host: z.string(),
          name: z.string(),
          usedBy: z.array(z.string()),
        }),
      ]),
    )
    .describe('what the plan destroys: VMs with their disks, networks VMs that stay use'),
  protectedDeletions: z
    .array(z.object({ host: z.string(), name: z.string() }))
    .describe('protected VMs the plan would delete: apply refuses'),
  kept: z.array(z.string()).describe('data the plan detaches but keeps (disks removed from a VM)'),
});
/** A computed plan. */
export type PlanResult = z.infer<typeof PlanResultSchema>;

/** Result of an apply or destroy task: the plan and how many of its steps were applied. */
export const ApplyResultSchema = PlanResultSchema.extend({ applied: z.number().int().min(0) });
/** Result of an apply or destroy task. */
export type ApplyResult = z.infer<typeof ApplyResultSchema>;

/** Answer of `GET /v1/status`: the applied spec and each of its hosts. */
export const StatusSchema = z.object({
  spec: z.object({ source: z.string(), appliedAt: z.string() }).optional(),
  hosts: z.array(
    z.object({
      name: z.string(),
      address: z.string(),
      reachable: z.boolean(),
      reportAgeMs: z
        .number()
        .int()
        .min(0)
        .optional()
        .describe(
          "how old `report` is: 0 when asked for this answer, else the controller's cached copy's age",
        ),
      state: z.enum(['unknown', 'up', 'unreachable']),
      lastSeen: z.string().optional(),
      missed: z.number().int().optional(),
      error: z.string().optional(),
      report: HostReportSchema.optional(),
      tuningDrift: z.array(z.string()).optional(),
    }),
  ),
});
/** Answer of `GET /v1/status`. */
export type Status = z.infer<typeof StatusSchema>;

/** Answer of `GET /v1/events`. */
export const EventsSchema = z.array(
  z.object({ id: z.number().int(), time: z.string(), kind: z.string(), message: z.string() }),
);

/** Answer of `GET /v1/networks`. */
export const NetworkListSchema = z.array(
  z.object({ name: z.string(), mode: z.string(), backend: z.string(), hosts: z.array(z.string()) }),
);

/** Answer of `GET /v1/security-groups`: each group of the applied spec and its state on the hosts that hold it. */
export const SecurityGroupListSchema = z.array(
  z.object({
    name: z.string(),
    description: z.string().optional(),
    rules: z.number().int(),
    members: z.number().int(),
    hosts: z.array(
      z.object({
        host: z.string(),
        state: z.enum(['applied', 'outdated', 'missing', 'unknown']),
        problems: z.array(z.string()).optional(),
      }),
    ),
  }),
);

/** Answer of `GET /v1/networks/:name`: the network's spec and what each member host observes. */
export const NetworkViewSchema = z.object({
  name: z.string(),
  spec: z.looseObject({ name: z.string(), mode: z.string(), backend: z.string() }),
  hosts: z.array(
    z.object({
      host: z.string(),
      observed: ObservedNetworkSchema.optional(),
      ports: z.array(z.object({ vm: z.string(), tap: z.string() })).optional(),
      flows: z.string().optional(),
      error: z.string().optional(),
    }),
  ),
});
/** Answer of `GET /v1/networks/:name`. */
export type NetworkView = z.infer<typeof NetworkViewSchema>;

/** Answer of `GET /v1/vms`: each VM desired (spec) and observed (agent) side by side. */
export const VmListSchema = z.array(
  z.object({
    name: z.string(),
    host: z.string(),
    desired: z.enum(['running', 'stopped', 'absent']),
    state: z.enum(['running', 'stopped', 'paused', 'crashed', 'absent', 'unknown']),
    cpus: z.number().int().optional(),
    memoryMiB: z.number().int().optional(),
    cpu: z
      .object({
        pin: z.array(z.number().int()).optional().describe('the host CPU of each vCPU, as the spec asks'),
        quota: z.string().optional().describe('its CPU quota, as the spec asks (e.g. 50%)'),
        vcpus: ObservedVcpusSchema.optional().describe(
          "each vCPU thread's allowed host CPUs, as its host sees them",
        ),
        cpuMax: z.string().optional().describe("its cgroup's cpu.max, as its host sees it"),
      })
      .optional(),
    networks: z.array(z.string()),
    reportAgeMs: z.number().int().min(0).optional().describe("how old its host's report is (see status)"),
    nics: z.array(
      z.object({
        network: z.string(),
        trunk: z.array(z.string()).optional(),
        tap: z.string().describe('the host device of the NIC'),
        mac: z.string(),
        addresses: z.array(z.string()),
        addressSource: z.enum(['guest-agent', 'dhcp-lease', 'spec', 'none']),
      }),
    ),
    problems,
  }),
);
/** One VM as `vm list` shows it. */
export type VmView = z.infer<typeof VmListSchema>[number];

/** Answer of a request that changes something and has nothing else to say. */
export { OkSchema } from '../agent/wire.js';
/** The tail of a VM's serial console log; a guest command's output. */
export { ConsoleTailSchema, GuestExecResultSchema } from '../agent/wire-probe.js';

const expectation = z.union([z.boolean(), z.literal('any')]);

/** Result of a verify task: the measured matrix, path-MTU checks, routers left out, and the verdict. */
export const VerifyResultSchema = z.object({
  endpoints: z.array(
    z.object({
      id: z.string(),
      kind: z.enum(['host', 'peer', 'upstream', 'vm']),
      address: z.string().optional(),
      host: z.string().optional(),
      network: z.string().optional(),
      nic: z.string().optional(),
    }),
  ),
  cells: z.array(
    z.object({
      from: z.string(),
      to: z.string(),
      kind: z.enum(['ping', 'forward', 'port']),
      protocol: z.literal('tcp').optional(),
      port: z.number().int().optional(),
      expected: expectation,
      rule: z.string().optional(),
      blockedBy: z.enum(['topology', 'security-group']).optional(),
      observed: z.boolean(),
      rttMs: z.number().optional(),
      detail: z.string(),
      unmeasured: z.boolean().optional(),
      ok: z.boolean(),
    }),
  ),
  pmtu: z.array(
    z.object({
      network: z.string(),
      from: z.string(),
      to: z.string(),
      expectedMtu: z.number().int(),
      measuredMtu: z.number().int().optional(),
      ok: z.boolean(),
      detail: z.string(),
    }),
  ),
  routers: z.array(z.object({ vm: z.string(), host: z.string(), networks: z.array(z.string()) })),
  /** Storage paths: portals reached from compute hosts, volumes open in QEMU, guest reads and writes. */
  storage: z
    .array(
      z.object({
        check: z.enum(['portal', 'open', 'io']),
        host: z.string(),
        vm: z.string().optional(),
        disk: z.string().optional(),
        volume: z.string(),
        target: z.string(),
        ok: z.boolean(),
        detail: z.string(),
        unmeasured: z.boolean().optional(),
        ms: z.number().optional(),
      }),
    )
    .optional(),
  loadBalancers: z.array(LbCellSchema).optional(),
  notes: z.array(z.string()).optional(),
  ok: z.boolean(),
  mismatches: z.number().int().min(0),
  measuredAt: z.string(),
  durationMs: z.number().min(0),
});
/** Result of a verify task. */
export type VerifyResult = z.infer<typeof VerifyResultSchema>;
/** One measured cell of the matrix. */
export type MatrixCell = VerifyResult['cells'][number];

/** Result of a throughput task: `from` sent to `to` for `durationS` seconds at `mbps`. */
export const ThroughputResultSchema = z.object({
  from: z.string(),
  to: z.string(),
  mbps: z.number().min(0),
  retransmits: z.number().int().optional(),
  durationS: z.number().min(0),
}) satisfies z.ZodType<MeasuredThroughput>;
/** Result of a throughput task. */
export type ThroughputResult = z.infer<typeof ThroughputResultSchema>;

/** Result of a `lab up` task. */
export const LabUpResultSchema = z.object({
  namespaces: z.array(z.string()),
  /** The lab's etcd client URLs, when it has members. */
  etcd: z.array(z.string()).optional(),
  /** The API sockets of the lab's cluster controllers (`VMLINK_SOCKET=a,b`), when it has any. */
  controllers: z.array(z.string()).optional(),
});
/** Result of a `lab down` task. */
export const LabDownResultSchema = z.object({ removed: z.array(z.string()) });

/** One prerequisite check (the agents' and the controller's own). */
export { type DoctorCheck, DoctorCheckSchema } from '../agent/wire-doctor.js';

/** Answer of `GET /v1/doctor`: the controller's own checks and each spec host's, as its agent reports them. */
export const DoctorReportSchema = z.object({
  controller: z.array(DoctorCheckSchema),
  hosts: z.array(
    z.object({
      host: z.string(),
      reachable: z.boolean(),
      error: z.string().optional(),
      checks: z.array(DoctorCheckSchema),
    }),
  ),
  /** Storage paths from compute hosts to their pools, each down one with its evidence and fix. */
  storage: z.array(DoctorCheckSchema).optional(),
  /** What the doctor diagnosed from the agents' observations, the spec and the metric history (wire-observe.ts). */
  diagnoses: z.array(DiagnosisSchema).default([]),
});
/** Answer of `GET /v1/doctor`. */
export type DoctorReport = z.infer<typeof DoctorReportSchema>;

/** `POST /v1/hosts/:name/join-token`: how long the token lives (default 1 hour, at most 24). */
export const JoinTokenBodySchema = z
  .object({ ttlSeconds: z.number().int().min(1).max(86_400).default(3_600) })
  .strict();

/** A join token as `vmlink host join` prints it: the token (shown once), the CA's fingerprint, its expiry. */
export const JoinTokenSchema = z.object({
  host: z.string(),
  token: z.string(),
  caFingerprint: z.string(),
  expiresAt: z.string(),
});

/** The outcome of `vmlink host rotate-cert`. */
export const RotatedSchema = z.object({
  host: z.string(),
  serial: z.string(),
  previousSerial: z.string().optional(),
  notAfter: z.string(),
});
