// `GET /v1/doctor`: the controller's own checks, each spec host's prerequisite checks (which its agent runs: the
// controller runs no host command; it only asks), the storage paths, and the diagnoses (controller/diagnose/) drawn
// from the agents' observations, their capability reports, the heartbeat records and the metric history.
import type { DoctorCheck } from '../agent/wire-doctor.js';
import { resolveSpec } from '../plan/resolve.js';
import { NotFoundError } from '../shared/errors.js';
import type { MetricsSource } from '../shared/metrics.js';
import type { Spec } from '../spec/schema.js';
import { type AgentDoctorAnswer, agentFor } from './agents.js';
import { MEMORY_TREND_NEEDS } from './diagnose/guest-memory-growth.js';
import { diagnose, type HostFacts } from './diagnose/index.js';
import { storageCheckHost } from './diagnose/storage-path-down.js';
import type { HostHealth } from './monitor.js';
import { storageDoctor } from './storage-doctor.js';
import type { StoreEvent } from './store/types.js';
import type { DoctorReport } from './wire.js';

/** The controller's own checks: what it can tell about itself without running a command. */
export function controllerChecks(spec: Spec | undefined): DoctorCheck[] {
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  const uid = process.getuid?.();
  return [
    {
      name: 'controller node',
      ok: nodeMajor >= 20,
      detail: process.version,
      fix: 'run the controller on Node.js 20 or newer',
    },
    {
      name: 'controller root',
      // Only a lab needs it (the controller builds the lab's namespaces); agents do the rest on their hosts.
      ok: uid === 0 || !spec?.lab,
      detail: `uid ${uid}${spec?.lab ? ' (the lab needs root)' : ''}`,
      fix: 'run `vmlink daemon` as root: it builds the lab namespaces',
    },
    {
      name: 'spec',
      ok: true,
      detail: spec ? `${spec.hosts.length} host(s) applied` : 'none applied yet (vmlink apply -f SPEC)',
    },
  ];
}

/** What an agent could not observe, as a failed check: the diagnoses that need it were not made for that host. */
function observationChecks(a: AgentDoctorAnswer): DoctorCheck[] {
  if (!a.observations)
    return [
      {
        name: 'observations',
        ok: true,
        detail:
          'none sent (an older agent): STP, VLAN trunk, overlay MTU and clock not diagnosed on this host',
      },
    ];
  if (!a.observations.errors.length) return [];
  return [
    {
      name: 'observations',
      ok: false,
      detail: `partly unread: ${a.observations.errors.join('; ')}`,
      fix: "see the agent's log; the diagnoses that need what is missing were not made for this host",
    },
  ];
}

/** What the doctor reads beyond the spec: all optional (a controller without a monitor or metrics diagnoses less). */
export interface DoctorContext {
  /** Only this spec host (`?host=`): its checks, storage paths and diagnoses. */
  host?: string;
  /** The heartbeat monitor's records, by host. */
  health?: Readonly<Record<string, HostHealth>>;
  /** The collector's metric history (guest memory trends, the clock offset of an agent without a stamp). */
  metrics?: MetricsSource;
  now?: () => number;
}

/**
 * Each host of `spec` with its agent's prerequisite checks; an agent that does not answer is a failed check. With
 * pools, the storage paths too (`storage`), explained from the agents and the controller's recent `events`. Then the
 * diagnoses of every asked host.
 */
export async function gatherDoctor(
  spec: Spec | undefined,
  timeoutMs = 60_000,
  events: readonly StoreEvent[] = [],
  ctx: DoctorContext = {},
): Promise<DoctorReport> {
  if (ctx.host !== undefined && !spec?.hosts.some((h) => h.name === ctx.host))
    throw new NotFoundError('host', ctx.host);
  const asked = (spec?.hosts ?? []).filter((h) => ctx.host === undefined || h.name === ctx.host);
  const facts = await Promise.all(
    asked.map(async (h): Promise<HostFacts> => {
      const health = ctx.health?.[h.name];
      const agent = agentFor(spec!, h.name);
      try {
        const [answer, report] = await Promise.all([
          agent.doctorObserved(timeoutMs),
          agent.report(timeoutMs).catch(() => undefined),
        ]);
        return { host: h.name, answer, ...(report ? { report } : {}), ...(health ? { health } : {}) };
      } catch (e) {
        return { host: h.name, error: (e as Error).message, ...(health ? { health } : {}) };
      }
    }),
  );
  const hosts = facts.map((f): DoctorReport['hosts'][number] =>
    f.answer
      ? { host: f.host, reachable: true, checks: [...f.answer.checks, ...observationChecks(f.answer)] }
      : { host: f.host, reachable: false, error: f.error!, checks: [] },
  );
  const allStorage = spec?.pools.length
    ? await storageDoctor(spec, new Map(spec.hosts.map((h) => [h.name, agentFor(spec, h.name)])), events)
    : [];
  // With `?host=`, the paths from or on that host (a check naming no host concerns every host).
  const storage = allStorage.filter((c) => {
    const host = storageCheckHost(c.name);
    return ctx.host === undefined || host === undefined || host === ctx.host;
  });
  const diagnoses = spec
    ? diagnose({
        spec,
        desired: resolveSpec(spec),
        hosts: facts,
        storage,
        ...(ctx.metrics ? { metrics: ctx.metrics } : {}),
        now: (ctx.now ?? Date.now)(),
      })
    : [];
  const controller = controllerChecks(spec);
  if (spec?.vms.length)
    controller.push({
      name: 'guest memory trends',
      ok: true,
      detail: ctx.metrics
        ? `checked from the metric history (needs ${MEMORY_TREND_NEEDS})`
        : 'not checked: this controller collects no metrics (guest-memory-growth needs their history)',
    });
  return { controller, hosts, ...(storage.length ? { storage } : {}), diagnoses };
}
