import type { AgentAction, ProbeRequest, ProbeResult } from '../agent/wire.js';
import type { GuestExecResult, GuestInterface } from '../drivers/hypervisor/types.js';
import { InvalidSpecError, UnavailableError } from '../shared/errors.js';
import { HttpClient } from '../shared/http/client.js';
import type { HostReport } from '../shared/model.js';
import { labAgentSocket } from '../shared/paths.js';
import type { Spec } from '../spec/schema.js';

/** The controller's client of one host agent. */
export class AgentClient {
  private readonly http: HttpClient;
  constructor(
    readonly host: string,
    readonly address: string,
  ) {
    this.http = new HttpClient(address, { name: `agent of ${host}` });
  }

  /** Observed state and capabilities of the host. */
  report(): Promise<HostReport> {
    return this.http.get<HostReport>('/v1/report', 60_000);
  }

  /** Applies one action on the host. */
  async act(action: AgentAction): Promise<void> {
    await this.http.post('/v1/actions', action, 300_000);
  }

  /** Runs a probe from the host or one of its guests. */
  probe(req: ProbeRequest): Promise<ProbeResult> {
    return this.http.post<ProbeResult>('/v1/probe', req, req.timeoutMs + 20_000);
  }

  /** Runs argv inside a guest. */
  exec(vm: string, argv: string[], timeoutMs: number, input?: string): Promise<GuestExecResult> {
    return this.http.post<GuestExecResult>(
      `/v1/vms/${vm}/exec`,
      { argv, timeoutMs, ...(input === undefined ? {} : { input }) },
      timeoutMs + 10_000,
    );
  }

  /** A guest's NICs and addresses. */
  interfaces(vm: string): Promise<GuestInterface[]> {
    return this.http.get<GuestInterface[]>(`/v1/vms/${vm}/interfaces`, 30_000);
  }

  /** The tail of a VM's serial console log. */
  console(vm: string, tail: number): Promise<{ log: string }> {
    return this.http.get<{ log: string }>(`/v1/vms/${vm}/console?tail=${tail}`);
  }
}

/** Where the controller reaches a host's agent: the spec's `agent`, else the lab's socket for that host. */
export function agentAddress(spec: Spec, host: string): string {
  const h = spec.hosts.find((x) => x.name === host);
  if (h?.agent) return h.agent;
  if (spec.lab) return `unix://${labAgentSocket(spec.lab.name, host)}`;
  const i = spec.hosts.findIndex((x) => x.name === host);
  throw new InvalidSpecError([
    {
      path: `hosts[${i}].agent`,
      message: 'is required when the spec has no lab section (e.g. http://10.0.0.2:7443)',
    },
  ]);
}

/** Reports of every spec host, failing with one clear error naming each unreachable agent. */
export async function gatherReports(spec: Spec): Promise<HostReport[]> {
  const results = await Promise.allSettled(
    spec.hosts.map((h) => new AgentClient(h.name, agentAddress(spec, h.name)).report()),
  );
  const down = results.flatMap((r, i) =>
    r.status === 'rejected' ? [`${spec.hosts[i]!.name}: ${(r.reason as Error).message}`] : [],
  );
  if (down.length) {
    const hint = spec.lab ? ' (start the lab and its agents with `vmlink lab up -f SPEC`)' : '';
    throw new UnavailableError(
      `cannot reach the agent of ${down.length} host(s)${hint}:\n  ${down.join('\n  ')}`,
    );
  }
  return results.map((r) => (r as PromiseFulfilledResult<HostReport>).value);
}
