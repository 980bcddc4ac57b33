// How the controller reaches hosts: one injectable agent-client factory, and gathering every host's report.
import { UnavailableError, VmlinkError } from '../shared/errors.js';
import { AGENT_REPORT_TIMEOUT_MS } from '../shared/limits.js';
import type { HostReport } from '../shared/model.js';
import { VersionMismatchError } from '../shared/version.js';
import type { Spec } from '../spec/schema.js';
import { type AgentClient, agentFor } from './agents.js';

/** What the controller asks of one host's agent (an `AgentClient`, or a fake in tests). */
export type AgentPort = Pick<
  AgentClient,
  | 'health'
  | 'report'
  | 'act'
  | 'actBatch'
  | 'confirm'
  | 'confirmState'
  | 'exec'
  | 'interfaces'
  | 'console'
  | 'flows'
> &
  // Optional so that fakes without them keep working.
  Partial<Pick<AgentClient, 'devices' | 'vmSnapshots' | 'metrics'>> &
  // Every guest's addresses in one call (issue 13): optional, `vm list` asks VM by VM without it.
  Partial<Pick<AgentClient, 'guestList'>> &
  // Live migrations (issue 13): optional so that fakes without them keep working.
  Partial<
    Pick<
      AgentClient,
      | 'migrationIncoming'
      | 'migrationResume'
      | 'migrationAbort'
      | 'migrationStart'
      | 'migrationJob'
      | 'migrationRollback'
      | 'migrationDirtyRate'
    >
  > &
  // Backups (issue 12): optional so that fakes without them keep working.
  Partial<
    Pick<
      AgentClient,
      | 'backupStoreEnsure'
      | 'backupStores'
      | 'snapshots'
      | 'manifest'
      | 'prune'
      | 'gc'
      | 'verify'
      | 'pull'
      | 'startBackup'
      | 'startRestore'
      | 'startFileRestore'
      | 'job'
    >
  >;

/** Makes the client of `host`'s agent as `spec` places it. */
export type AgentFactory = (spec: Spec, host: string) => AgentPort;

/** The real factory: HTTP clients of the agents (see `agentAddress`). */
export const httpAgents: AgentFactory = agentFor;

/** How long the controller waits for a report that `status` or a dropped host's plan needs. */
export const REPORT_TIMEOUT_MS = AGENT_REPORT_TIMEOUT_MS;

// Refused by the agent, the error arrives rebuilt from its body (kind `unsupported`); refused here, as itself.
const isVersionMismatch = (e: unknown): boolean =>
  e instanceof VersionMismatchError ||
  (e instanceof VmlinkError && e.kind === 'unsupported' && /^agent wire versions differ/.test(e.message));

/**
 * Reports of every spec host, failing with one clear error naming each unreachable agent; `notes` adds what the
 * heartbeat monitor knows (e.g. "unreachable since ...").
 */
export async function gatherReports(
  spec: Spec,
  agents: AgentFactory,
  notes: Record<string, string> = {},
): Promise<HostReport[]> {
  const results = await Promise.allSettled(spec.hosts.map((h) => agents(spec, h.name).report()));
  // An agent that answers but speaks another wire version is not "unreachable": say what to upgrade.
  const mismatched = results.flatMap((r) =>
    r.status === 'rejected' && isVersionMismatch(r.reason) ? [r.reason as Error] : [],
  );
  if (mismatched.length)
    throw new VersionMismatchError(
      `nothing was planned or changed:\n  ${mismatched.map((e) => e.message).join('\n  ')}`,
    );
  const down = results.flatMap((r, i) => {
    if (r.status === 'fulfilled') return [];
    const name = spec.hosts[i]!.name;
    return [`${name}: ${(r.reason as Error).message}${notes[name] ? ` (${notes[name]})` : ''}`];
  });
  if (down.length) {
    const hint = spec.lab ? ' (start the lab and its agents with `vmlink lab up -f SPEC`)' : '';
    throw new UnavailableError(
      `cannot reach the agent of ${down.length} host(s)${hint}; nothing was planned or changed:\n  ${down.join('\n  ')}`,
    );
  }
  return results.map((r) => (r as PromiseFulfilledResult<HostReport>).value);
}
