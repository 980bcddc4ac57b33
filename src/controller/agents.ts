import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  type AgentAction,
  type AgentBatchResult,
  AgentBatchResultSchema,
  AgentDoctorSchema,
  AgentHealthSchema,
  type ConfirmState,
  ConfirmStateSchema,
  ConsoleTailSchema,
  type DoctorCheck,
  FlowsSchema,
  type GuestExecResult,
  GuestExecResultSchema,
  type GuestInterface,
  GuestInterfacesSchema,
  HostReportSchema,
  OkSchema,
  type ProbeBatchRequest,
  ProbeBatchResultSchema,
  type ProbeRequest,
  type ProbeResult,
  ProbeResultSchema,
} from '../agent/wire.js';
import { BadResponseError, InvalidSpecError } from '../shared/errors.js';
import { HttpClient } from '../shared/http/client.js';
import {
  AGENT_ACTION_TIMEOUT_MS,
  AGENT_BATCH_PER_ACTION_MS,
  AGENT_QUERY_TIMEOUT_MS,
  AGENT_QUICK_TIMEOUT_MS,
  GUEST_EXEC_ANSWER_MARGIN_MS,
  GUEST_INTERFACES_TIMEOUT_MS,
  PROBE_ANSWER_MARGIN_MS,
} from '../shared/limits.js';
import type { HostReport } from '../shared/model.js';
import { labAgentSocket } from '../shared/paths.js';
import type { VersionInfo } from '../shared/version.js';
import type { Spec } from '../spec/schema.js';

let defaultToken: string | undefined;

/** Sets the bearer token sent to agents outside a lab (`vmlink daemon --agent-token-file`). */
export function setAgentToken(token: string | undefined): void {
  defaultToken = token;
}

/**
 * The bearer token for an agent address: a lab relay socket's lab token (`agent.token` beside it), else the
 * daemon's agent token. Unix sockets of agents themselves need none; sending one does no harm.
 */
export function agentToken(address: string): string | undefined {
  if (address.startsWith('unix://')) {
    const file = join(dirname(address.slice('unix://'.length)), 'agent.token');
    if (existsSync(file)) {
      try {
        return readFileSync(file, 'utf8').trim() || defaultToken;
      } catch {}
    }
  }
  return defaultToken;
}

/** The controller's client of one host agent. */
export class AgentClient {
  private readonly http: HttpClient;
  constructor(
    readonly host: string,
    readonly address: string,
    token: string | undefined = agentToken(address),
  ) {
    // Every request carries the controller's wire version; the agent refuses one it cannot speak, and the client
    // refuses an answer from an agent whose version it cannot speak (see shared/version.ts).
    this.http = new HttpClient(address, {
      name: `agent of ${host}`,
      protocol: 'wire',
      ...(token ? { token } : {}),
    });
  }

  /** Liveness and the handshake: answers when the agent is reachable and speaks a wire version we do. */
  health(timeoutMs = AGENT_QUICK_TIMEOUT_MS): Promise<{ ok: boolean; version: string; wire?: VersionInfo }> {
    return this.http.get('/v1/health', AgentHealthSchema, timeoutMs);
  }

  /** Observed state and capabilities of the host. */
  report(timeoutMs = AGENT_QUERY_TIMEOUT_MS): Promise<HostReport> {
    return this.http.get('/v1/report', HostReportSchema, timeoutMs);
  }

  /** The host's prerequisite checks (binaries, QEMU identity, launcher, test guest, tun). */
  async doctor(timeoutMs = AGENT_QUERY_TIMEOUT_MS): Promise<DoctorCheck[]> {
    return (await this.http.get('/v1/doctor', AgentDoctorSchema, timeoutMs)).checks;
  }

  /** Applies one action on the host. */
  async act(action: AgentAction, timeoutMs = AGENT_ACTION_TIMEOUT_MS): Promise<void> {
    await this.http.post('/v1/actions', action, OkSchema, timeoutMs);
  }

  /**
   * Applies actions in order in one request; one result per action the agent attempted (it stops after the first
   * failure). Commit-confirmed actions go one at a time through `act`.
   */
  async actBatch(actions: AgentAction[]): Promise<AgentBatchResult['results']> {
    const timeoutMs = AGENT_ACTION_TIMEOUT_MS + actions.length * AGENT_BATCH_PER_ACTION_MS;
    return (await this.http.post('/v1/actions/batch', { actions }, AgentBatchResultSchema, timeoutMs))
      .results;
  }

  /** Keeps a commit-confirmed change (404 when unknown, 409 when it was rolled back). */
  confirm(id: string, timeoutMs = AGENT_QUICK_TIMEOUT_MS): Promise<ConfirmState> {
    return this.http.post(`/v1/confirm/${id}`, {}, ConfirmStateSchema, timeoutMs);
  }

  /** State of a commit-confirmed change. */
  confirmState(id: string, timeoutMs = AGENT_QUICK_TIMEOUT_MS): Promise<ConfirmState> {
    return this.http.get(`/v1/confirm/${id}`, ConfirmStateSchema, timeoutMs);
  }

  /** Runs a probe from the host or one of its guests. */
  probe(req: ProbeRequest): Promise<ProbeResult> {
    return this.http.post('/v1/probe', req, ProbeResultSchema, req.timeoutMs + PROBE_ANSWER_MARGIN_MS);
  }

  /** Runs probes from one source at once (one command on the host or in the guest); results in request order. */
  async probeBatch(req: ProbeBatchRequest): Promise<ProbeResult[]> {
    const longest = Math.max(...req.probes.map((p) => p.timeoutMs));
    const { results } = await this.http.post(
      '/v1/probes',
      req,
      ProbeBatchResultSchema,
      longest + PROBE_ANSWER_MARGIN_MS,
    );
    if (results.length !== req.probes.length)
      throw new BadResponseError(
        `agent of ${this.host} answered ${req.probes.length} probe(s) with ${results.length} result(s)`,
        '/v1/probes',
      );
    return results;
  }

  /** Runs argv inside a guest. */
  exec(vm: string, argv: string[], timeoutMs: number, input?: string): Promise<GuestExecResult> {
    return this.http.post(
      `/v1/vms/${vm}/exec`,
      { argv, timeoutMs, ...(input === undefined ? {} : { input }) },
      GuestExecResultSchema,
      timeoutMs + GUEST_EXEC_ANSWER_MARGIN_MS,
    );
  }

  /** A guest's NICs and addresses. */
  interfaces(vm: string): Promise<GuestInterface[]> {
    return this.http.get(`/v1/vms/${vm}/interfaces`, GuestInterfacesSchema, GUEST_INTERFACES_TIMEOUT_MS);
  }

  /** The tail of a VM's serial console log. */
  console(vm: string, tail: number): Promise<{ log: string }> {
    return this.http.get(`/v1/vms/${vm}/console?tail=${tail}`, ConsoleTailSchema);
  }

  /** The OpenFlow rules of a network on this host. */
  flows(network: string): Promise<{ backend: string; flows: string }> {
    return this.http.get(`/v1/networks/${network}/flows`, FlowsSchema);
  }
}

/**
 * Where the controller reaches a host's agent: the spec's `agent`, else the lab relay's socket for that host
 * (which crosses the lab LAN to the agent's TCP listener).
 */
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

/** A client of `host`'s agent as `spec` places it. */
export function agentFor(spec: Spec, host: string): AgentClient {
  return new AgentClient(host, agentAddress(spec, host));
}
