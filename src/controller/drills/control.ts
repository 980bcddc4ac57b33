// Drills as the controller runs them: on the controller that brought the lab up (never on one of the lab's own
// cluster controllers, which a drill may kill), against the spec the request carries. It wires the real ports:
// the lab's faults, the cluster's controllers over their sockets, and the /proc sampler.
import type { Runner } from '../../exec/runner.js';
import { killLabController, labControllerSockets, restartLabController } from '../../lab/cluster.js';
import { startEtcdMember, stopEtcdMember } from '../../lab/etcd.js';
import { LabFaults } from '../../lab/faults.js';
import type { Lab } from '../../lab/lab.js';
import { labNamespaces } from '../../lab/names.js';
import { type DrillKind, type DrillReport, leaseTtlSeconds } from '../../shared/cluster.js';
import { InvalidRequestError, InvalidSpecError, InvalidStateError } from '../../shared/errors.js';
import { DRILL_RECOVERY_TIMEOUT_MS, DRILL_SAMPLE_MS } from '../../shared/limits.js';
import { inNetns } from '../../shared/process.js';
import type { LabSpec, Spec } from '../../spec/schema.js';
import type { TaskContext } from '../tasks.js';
import { SocketCluster } from './cluster-client.js';
import { runDrill } from './drill.js';
import type { DrillBody } from './routes.js';
import { labSampleSource, Sampler } from './sampler.js';
import type { DrillEnv, DrillFaults, DrillTiming } from './types.js';

/** A drill request whose spec was parsed and whose target exists. */
export interface CheckedDrill {
  kind: DrillKind;
  target: string;
  spec: Spec;
  lab: LabSpec;
  text: string;
  source: string;
  duringApply: boolean;
}

/** The lab's own operations a drill needs beyond the lab layer's faults (lab/etcd.ts, lab/cluster.ts). */
export interface LabClusterOps {
  /** The cluster controllers' sockets. */
  controllerSockets(lab: LabSpec): string[];
  killController(lab: LabSpec, name: string): Promise<void>;
  restartController(lab: LabSpec, name: string): Promise<void>;
  stopEtcdMember(lab: LabSpec, name: string): Promise<void>;
  startEtcdMember(lab: LabSpec, name: string): Promise<void>;
}

/** What `DrillControl` is built from. */
export interface DrillControlDeps {
  /** Parses and validates a spec text. */
  parse(text: string, source: string): Spec;
  runner: Runner;
  /** The spec's lab as `lab up` builds it (its agents' arguments). */
  labOf(spec: Spec): Lab;
  cluster: LabClusterOps;
  /** Time limits (tests shorten them); default from the spec's heartbeat. */
  timing?: (spec: Spec) => DrillTiming;
}

/** The default time limits for a cluster with heartbeat `h` seconds. */
export function defaultDrillTiming(spec: Spec): DrillTiming {
  const ttlMs = leaseTtlSeconds(spec.cluster?.heartbeatSeconds ?? 5) * 1000;
  return {
    recoveryMs: DRILL_RECOVERY_TIMEOUT_MS,
    restoreMs: DRILL_RECOVERY_TIMEOUT_MS,
    pollMs: DRILL_SAMPLE_MS,
    // Longer than a lease: a host whose renewals failed with the member down would have lost its key by then.
    outageMs: ttlMs + 5_000,
  };
}

/** Runs drills in a spec's lab. */
export class DrillControl {
  constructor(private readonly d: DrillControlDeps) {}

  /** Parses the request's spec and checks that it describes a cluster lab with the target in it. */
  async check(body: DrillBody): Promise<CheckedDrill> {
    const spec = this.d.parse(body.spec, body.source);
    const lab = spec.lab;
    if (!lab || spec.cluster?.store !== 'etcd' || !lab.etcd.length || !lab.controllers.length)
      throw new InvalidSpecError(
        [
          {
            path: spec.lab ? 'cluster' : 'lab',
            message:
              'drills need a cluster lab: `cluster: { store: etcd }`, with `lab.etcd` members and `lab.controllers`',
          },
        ],
        body.source,
      );
    const names = {
      'host-failure': lab.hosts.map((h) => h.name),
      partition: lab.hosts.map((h) => h.name),
      'controller-failure': ['active', ...lab.controllers.map((c) => c.name)],
      'etcd-member-failure': lab.etcd.map((m) => m.name),
    }[body.kind];
    if (!names.includes(body.target))
      throw new InvalidRequestError(
        `${body.kind} needs one of ${names.join(', ')} as its target, got ${body.target}`,
        'target',
      );
    for (const ns of labNamespaces(lab))
      if (await inNetns(process.pid, ns))
        throw new InvalidStateError(
          `this controller runs inside lab ${lab.name} (namespace ${ns}), where a drill may kill it: run the drill against the controller that brought the lab up`,
          `lab/${lab.name}`,
        );
    return {
      kind: body.kind,
      target: body.target,
      spec,
      lab,
      text: body.spec,
      source: body.source,
      duringApply: body.duringApply,
    };
  }

  /** Runs a checked drill; the report says what was measured and whether the lab was restored. */
  async run(c: CheckedDrill, ctx: TaskContext): Promise<DrillReport> {
    const env: DrillEnv = {
      spec: c.spec,
      faults: this.faults(c),
      cluster: new SocketCluster(this.d.cluster.controllerSockets(c.lab), { text: c.text, source: c.source }),
      sampler: new Sampler(labSampleSource(c.spec, c.lab), DRILL_SAMPLE_MS),
      progress: ctx.progress,
      signal: ctx.signal,
      timing: (this.d.timing ?? defaultDrillTiming)(c.spec),
      options: { duringApply: c.duringApply },
    };
    return runDrill(env, c.kind, c.target);
  }

  private faults(c: CheckedDrill): DrillFaults {
    const lab = new LabFaults(this.d.runner, c.lab, this.d.labOf(c.spec));
    const ops = this.d.cluster;
    const at = async (f: () => Promise<void>) => {
      const t = Date.now();
      await f();
      return { at: t };
    };
    return {
      killHost: (h) => lab.killHost(h),
      restartAgent: (h) => lab.restartAgent(h),
      partitionHost: (h) => lab.partitionHost(h),
      healPartition: (h) => lab.healPartition(h),
      killController: (n) => at(() => ops.killController(c.lab, n)),
      restartController: (n) => ops.restartController(c.lab, n),
      stopEtcdMember: (n) => at(() => ops.stopEtcdMember(c.lab, n)),
      startEtcdMember: (n) => ops.startEtcdMember(c.lab, n),
    };
  }
}

/** The lab's own cluster operations (lab/etcd.ts, lab/cluster.ts), each by verified process identity. */
export function labClusterOps(runner: Runner): LabClusterOps {
  return {
    controllerSockets: (lab) => labControllerSockets(lab),
    killController: (lab, name) => killLabController(lab, name),
    restartController: (lab, name) => restartLabController(runner, lab, name),
    // A member that fails, not one asked to leave: SIGKILL, as a crash or a power loss would.
    stopEtcdMember: (lab, name) => stopEtcdMember(runner, lab, name, { hard: true }),
    startEtcdMember: (lab, name) => startEtcdMember(runner, lab, name),
  };
}
