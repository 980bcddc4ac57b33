// `GET /v1/doctor`: the controller's own checks and each spec host's prerequisite checks, which its agent runs
// (the controller runs no host command; it only asks).
import type { DoctorCheck } from '../agent/wire.js';
import type { Spec } from '../spec/schema.js';
import { agentFor } from './agents.js';
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

/**
 * Each host of `spec` with its agent's prerequisite checks; an agent that does not answer is a failed check. With
 * pools, the storage paths too (`storage`), explained from the agents and the controller's recent `events`.
 */
export async function gatherDoctor(
  spec: Spec | undefined,
  timeoutMs = 60_000,
  events: readonly StoreEvent[] = [],
): Promise<DoctorReport> {
  const hosts = await Promise.all(
    (spec?.hosts ?? []).map(async (h): Promise<DoctorReport['hosts'][number]> => {
      try {
        return { host: h.name, reachable: true, checks: await agentFor(spec!, h.name).doctor(timeoutMs) };
      } catch (e) {
        return { host: h.name, reachable: false, error: (e as Error).message, checks: [] };
      }
    }),
  );
  const storage = spec?.pools.length
    ? await storageDoctor(spec, new Map(spec.hosts.map((h) => [h.name, agentFor(spec, h.name)])), events)
    : [];
  return { controller: controllerChecks(spec), hosts, ...(storage.length ? { storage } : {}), diagnoses: [] };
}
