import { Agent as HttpsAgent } from 'node:https';
import {
  type AgentAction,
  type AgentBatchResult,
  AgentBatchResultSchema,
  AgentHealthSchema,
  type ConfirmState,
  ConfirmStateSchema,
  CsrAnswerSchema,
  FlowsSchema,
  HostReportSchema,
  OkSchema,
} from '../agent/wire.js';
import {
  BackupJobAnswerSchema,
  type BackupRunRequest,
  type FileRestoreRequest,
  GcResultSchema,
  PruneAnswerSchema,
  type PullRequest,
  type RestoreRequest,
  SnapshotListSchema,
  type StoreEnsureRequest,
  StoreListSchema,
  type VerifyRequest,
} from '../agent/wire-backup.js';
import type { DoctorObservations } from '../agent/wire-doctor.js';
import { AgentDoctorSchema, type DoctorCheck } from '../agent/wire-doctor.js';
import {
  GUEST_INTERFACES_ROUTE,
  GUEST_LIST_ANSWER_TIMEOUT_MS,
  type GuestList,
  GuestListSchema,
} from '../agent/wire-guests.js';
import {
  AbortAnswerSchema,
  DirtyRateSchema,
  type IncomingRequest,
  type MigrationJob,
  MigrationJobSchema,
  type OutgoingRequest,
  type ResumeRequest,
} from '../agent/wire-migrate.js';
import {
  ConsoleTailSchema,
  type GuestExecResult,
  GuestExecResultSchema,
  type GuestInterface,
  GuestInterfacesSchema,
  type ProbeBatchRequest,
  ProbeBatchResultSchema,
  type ProbeRequest,
  type ProbeResult,
  ProbeResultSchema,
} from '../agent/wire-probe.js';
import { DeviceInventorySchema, OpenDisksSchema, VmSnapshotsSchema } from '../agent/wire-storage.js';
import {
  BACKUP_FILE_RESTORE_MAX_BYTES,
  BACKUP_MANIFEST_MAX_BYTES,
  type BackupJob,
  type BackupStoreStatus,
  BackupStoreStatusSchema,
  type GcResult,
  type Manifest,
  ManifestSchema,
  type SnapshotId,
  type SnapshotSummary,
} from '../shared/backup.js';
import type { DeviceInventory } from '../shared/devices.js';
import { BadResponseError, InvalidSpecError } from '../shared/errors.js';
import { type ClientTls, HttpClient, HttpStatusError } from '../shared/http/client.js';
import {
  AGENT_ACTION_TIMEOUT_MS,
  AGENT_BATCH_PER_ACTION_MS,
  AGENT_QUERY_TIMEOUT_MS,
  AGENT_QUICK_TIMEOUT_MS,
  GUEST_EXEC_ANSWER_MARGIN_MS,
  GUEST_INTERFACES_TIMEOUT_MS,
  PROBE_ANSWER_MARGIN_MS,
} from '../shared/limits.js';
import {
  type AgentMetrics,
  AgentMetricsSchema,
  METRICS_AGENT_TIMEOUT_MS,
  METRICS_BODY_MAX_BYTES,
} from '../shared/metrics.js';
import type { HostReport } from '../shared/model.js';
import { labAgentSocket } from '../shared/paths.js';
import type { ObservedSnapshot } from '../shared/storage.js';
import { peerMismatch, type TlsCredentials } from '../shared/tls.js';
import type { VersionInfo } from '../shared/version.js';
import type { Spec } from '../spec/schema.js';

/** What the controller trusts and presents when it calls agents over TLS. */
export interface AgentTrust {
  /** The controller's own key and certificate, and the CA. */
  credentials: TlsCredentials;
  /** Why `host`'s certificate with `serial` is refused (revoked, superseded, never issued), or undefined. */
  refusal(host: string, serial: string): string | undefined;
}

let trust: AgentTrust | undefined;
// One keep-alive pool per host address: heartbeats and applies reuse a TLS session instead of a handshake each.
const pools = new Map<string, { host: string; agent: HttpsAgent }>();

/** Sets the credentials this process calls agents with (the controller does at start). */
export function setAgentTrust(t: AgentTrust | undefined): void {
  trust = t;
  for (const key of [...pools.keys()]) dropPool(key);
}

/** Closes the connections kept open to `host`'s agent (its certificate was revoked or replaced). */
export function forgetAgentConnections(host: string): void {
  for (const [key, p] of pools) if (p.host === host) dropPool(key);
}

function dropPool(key: string): void {
  pools.get(key)?.agent.destroy();
  pools.delete(key);
}

function poolFor(host: string, address: string): HttpsAgent {
  const key = `${host} ${address}`;
  let p = pools.get(key);
  if (!p) {
    p = { host, agent: new HttpsAgent({ keepAlive: true, maxSockets: 16 }) };
    pools.set(key, p);
  }
  return p.agent;
}

/** Whether an agent address is reached over TLS (TCP, or the lab relay's socket that leads to TCP). */
const overTls = (address: string) => address.startsWith('https://') || address.startsWith('https+unix://');

/**
 * TLS for `host`'s agent at `address`: the controller's certificate, and the agent's checked to chain to the CA,
 * name `host`, and be its current, unrevoked one. Undefined for a local unix socket (no TLS there).
 */
export function agentTls(host: string, address: string): ClientTls | undefined {
  if (!overTls(address) || !trust) return undefined;
  const t = trust;
  return {
    ...t.credentials,
    checkPeer: (cert) =>
      peerMismatch(cert, { role: 'host', name: host }, (serial) => t.refusal(host, serial)),
    agent: poolFor(host, address),
  };
}

/** An agent's doctor answer as the controller received it (`AgentClient.doctorObserved`). */
export interface AgentDoctorAnswer {
  checks: DoctorCheck[];
  observations?: DoctorObservations;
  /** The controller's clock when the request went out and when its answer came back (epoch ms). */
  sentAt: number;
  receivedAt: number;
}

/** The controller's client of one host agent. */
export class AgentClient {
  private readonly http: HttpClient;
  /** For the backup answers that may be large: manifests, snapshot lists, a file restore's content. */
  private readonly large: HttpClient;
  /** For metric samples: bounded by METRICS_BODY_MAX_BYTES (an agent is untrusted input). */
  private readonly sample: HttpClient;
  constructor(
    readonly host: string,
    readonly address: string,
  ) {
    const tls = agentTls(host, address);
    // Every request carries the controller's wire version; the agent refuses one it cannot speak, and the client
    // refuses an answer from an agent whose version it cannot speak (see shared/version.ts).
    this.http = new HttpClient(address, {
      name: `agent of ${host}`,
      protocol: 'wire',
      ...(tls ? { tls } : {}),
    });
    this.large = new HttpClient(address, {
      name: `agent of ${host}`,
      protocol: 'wire',
      maxResponseBytes: BACKUP_LARGE_ANSWER_MAX_BYTES,
      ...(tls ? { tls } : {}),
    });
    this.sample = new HttpClient(address, {
      name: `agent of ${host}`,
      protocol: 'wire',
      maxResponseBytes: METRICS_BODY_MAX_BYTES,
      ...(tls ? { tls } : {}),
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

  /** One metric sample of the host (docs/observability.md), parsed strictly and read up to METRICS_BODY_MAX_BYTES. */
  metrics(timeoutMs = METRICS_AGENT_TIMEOUT_MS): Promise<AgentMetrics> {
    return this.sample.get('/v1/metrics', AgentMetricsSchema, timeoutMs);
  }

  /**
   * The whole `GET /v1/doctor` answer (checks and observations), with when the request went out and its answer came
   * back by the controller's clock: the agent's clock reading lies between the two (the clock-drift bound).
   */
  async doctorObserved(timeoutMs = AGENT_QUERY_TIMEOUT_MS): Promise<AgentDoctorAnswer> {
    const sentAt = Date.now();
    const r = await this.http.get('/v1/doctor', AgentDoctorSchema, timeoutMs);
    return { ...r, sentAt, receivedAt: Date.now() };
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

  /**
   * Every running VM's guest interfaces in one request (`vm list`'s addresses); undefined from an agent that predates
   * the route (404): the caller asks VM by VM then.
   */
  async guestList(): Promise<GuestList | undefined> {
    return this.http
      .get(GUEST_INTERFACES_ROUTE, GuestListSchema, GUEST_LIST_ANSWER_TIMEOUT_MS)
      .catch((e: unknown) => {
        if (e instanceof HttpStatusError && e.status === 404) return undefined;
        throw e;
      });
  }

  /** The block devices the VM's QEMU has open (verify's storage checks). */
  openDisks(vm: string): Promise<{ disks: Array<{ disk: string; target: string; readOnly: boolean }> }> {
    return this.http.get(`/v1/vms/${vm}/disks`, OpenDisksSchema, AGENT_QUICK_TIMEOUT_MS);
  }

  /** The tail of a VM's serial console log. */
  console(vm: string, tail: number): Promise<{ log: string }> {
    return this.http.get(`/v1/vms/${vm}/console?tail=${tail}`, ConsoleTailSchema);
  }

  /** Asks the agent for a CSR of a new key (made and kept there) to rotate its certificate. */
  async tlsCsr(): Promise<string> {
    return (await this.http.post('/v1/tls/csr', {}, CsrAnswerSchema, AGENT_QUICK_TIMEOUT_MS)).csr;
  }

  /** Installs the certificate for the agent's pending key; the agent serves it from its next connection on. */
  async installCert(cert: string, ca: string): Promise<void> {
    await this.http.post('/v1/tls/cert', { cert, ca }, OkSchema, AGENT_QUICK_TIMEOUT_MS);
  }

  /** The host's PCI and USB devices, read afresh. */
  devices(timeoutMs = AGENT_QUERY_TIMEOUT_MS): Promise<DeviceInventory> {
    return this.http.get('/v1/devices', DeviceInventorySchema, timeoutMs);
  }

  /** A VM's whole-VM snapshots. */
  async vmSnapshots(vm: string): Promise<ObservedSnapshot[]> {
    return (await this.http.get(`/v1/vms/${vm}/snapshots`, VmSnapshotsSchema)).snapshots;
  }

  /** The OpenFlow rules of a network on this host. */
  flows(network: string): Promise<{ backend: string; flows: string }> {
    return this.http.get(`/v1/networks/${network}/flows`, FlowsSchema);
  }

  // ---- Live migrations (agent/wire-migrate.ts) ----

  /** Target: prepares an incoming VM (ports, directory, QEMU paused waiting for the stream). */
  async migrationIncoming(req: IncomingRequest): Promise<void> {
    await this.http.post('/v1/migrations/incoming', req, OkSchema, MIGRATION_CALL_TIMEOUT_MS);
  }

  /** Target: the guest runs there once its state arrived (`fence`: its new owner token, in a cluster). */
  async migrationResume(id: string, req: ResumeRequest): Promise<void> {
    await this.http.post(`/v1/migrations/${id}/resume`, req, OkSchema, MIGRATION_CALL_TIMEOUT_MS);
  }

  /**
   * Target: removes a prepared incoming VM (rollback); `ran`: it had already resumed there on arrival, so nothing was
   * removed and the guest runs there.
   */
  async migrationAbort(id: string): Promise<{ ran: boolean }> {
    const a = await this.http.post(
      `/v1/migrations/${id}/abort`,
      {},
      AbortAnswerSchema,
      MIGRATION_CALL_TIMEOUT_MS,
    );
    return { ran: a.ran === true };
  }

  /** Source: starts sending a VM to the target's agent. */
  migrationStart(req: OutgoingRequest): Promise<MigrationJob> {
    return this.http.post('/v1/migrations/outgoing', req, MigrationJobSchema);
  }

  /** Source: a migration job's state and progress. */
  migrationJob(id: string): Promise<MigrationJob> {
    return this.http.get(`/v1/migrations/${id}`, MigrationJobSchema);
  }

  /** Source: how fast running VM `vm` dirties its memory, measured over `seconds` (undefined: cannot tell). */
  async migrationDirtyRate(vm: string, seconds: number): Promise<number | undefined> {
    const r = await this.http.post(
      '/v1/migrations/dirty-rate',
      { vm, seconds },
      DirtyRateSchema,
      seconds * 1000 + MIGRATION_CALL_TIMEOUT_MS,
    );
    return r.dirtyRateMiBps;
  }

  /** Source: the guest runs there again after a migration the target could not take over. */
  async migrationRollback(id: string): Promise<void> {
    await this.http.post(`/v1/migrations/${id}/rollback`, {}, OkSchema, MIGRATION_CALL_TIMEOUT_MS);
  }

  // ---- Backups (agent/wire-backup.ts) ----

  /** Realises a backup store on this host (path absent: the agent's default directory). */
  backupStoreEnsure(store: StoreEnsureRequest['store']): Promise<BackupStoreStatus> {
    return this.http.post(`/v1/backup-stores/${store.name}/ensure`, { store }, BackupStoreStatusSchema);
  }

  /** The backup stores this host serves. */
  async backupStores(): Promise<BackupStoreStatus[]> {
    return (await this.http.get('/v1/backup-stores', StoreListSchema)).stores;
  }

  /** A store's snapshots (of one VM when given), oldest first. */
  async snapshots(store: string, vm?: string): Promise<SnapshotSummary[]> {
    const q = vm === undefined ? '' : `?vm=${encodeURIComponent(vm)}`;
    return (await this.large.get(`/v1/backup-stores/${store}/snapshots${q}`, SnapshotListSchema)).snapshots;
  }

  /** One snapshot's manifest. */
  manifest(store: string, id: SnapshotId): Promise<Manifest> {
    return this.large.get(`/v1/backup-stores/${store}/snapshots/${id}`, ManifestSchema);
  }

  /** Deletes snapshots (their chunks go at the next GC); an offsite store answers 403. Returns those deleted. */
  async prune(store: string, snapshots: SnapshotId[]): Promise<SnapshotId[]> {
    return (await this.http.post(`/v1/backup-stores/${store}/prune`, { snapshots }, PruneAnswerSchema))
      .deleted;
  }

  /** Mark and sweep of a store's chunks. */
  gc(store: string, graceMs?: number): Promise<GcResult> {
    return this.http.post(
      `/v1/backup-stores/${store}/gc`,
      graceMs === undefined ? {} : { graceMs },
      GcResultSchema,
      BACKUP_SYNC_CALL_TIMEOUT_MS,
    );
  }

  /** Starts a verify of a store (a job: poll it with `job`). */
  verify(store: string, req: VerifyRequest): Promise<BackupJob> {
    return this.http.post(`/v1/backup-stores/${store}/verify`, req, BackupJobAnswerSchema);
  }

  /** Starts an offsite store's pull from its source (a job). */
  pull(store: string, req: PullRequest): Promise<BackupJob> {
    return this.http.post(`/v1/backup-stores/${store}/pull`, req, BackupJobAnswerSchema);
  }

  /** Starts a backup of one of this host's VMs (a job). */
  startBackup(req: BackupRunRequest): Promise<BackupJob> {
    return this.http.post('/v1/backup-jobs', req, BackupJobAnswerSchema);
  }

  /** Starts a restore into one of this host's stopped VMs (a job). */
  startRestore(req: RestoreRequest): Promise<BackupJob> {
    return this.http.post('/v1/restore-jobs', req, BackupJobAnswerSchema);
  }

  /** Starts reading one file out of a snapshot (a job whose answer carries the file). */
  startFileRestore(req: FileRestoreRequest): Promise<BackupJob> {
    return this.http.post('/v1/file-restore-jobs', req, BackupJobAnswerSchema);
  }

  /** A backup job of any kind; NotFoundError when the agent does not know it (it restarted since). */
  job(id: string): Promise<BackupJob> {
    return this.large.get(`/v1/backup-jobs/${id}`, BackupJobAnswerSchema);
  }
}

/** Most bytes of a large backup answer: a file restore's content in base64, or a manifest, with room for the rest. */
const BACKUP_LARGE_ANSWER_MAX_BYTES =
  Math.max(Math.ceil(BACKUP_FILE_RESTORE_MAX_BYTES / 3) * 4, BACKUP_MANIFEST_MAX_BYTES) + 1024 * 1024;
/** How long a synchronous store call (GC: bounded by the store's size) may take. */
const BACKUP_SYNC_CALL_TIMEOUT_MS = 30 * 60 * 1000;

/**
 * Where the controller reaches a host's agent: the spec's `agent`, else the lab relay's socket for that host
 * (which crosses the lab LAN to the agent's TLS listener, so TLS runs over it end to end).
 */
export function agentAddress(spec: Spec, host: string): string {
  const h = spec.hosts.find((x) => x.name === host);
  const i = spec.hosts.findIndex((x) => x.name === host);
  if (h?.agent?.startsWith('http://'))
    throw new InvalidSpecError([
      {
        path: `hosts[${i}].agent`,
        message: `agents speak only mutual TLS over TCP: use https://${h.agent.slice('http://'.length)}`,
      },
    ]);
  if (h?.agent) return h.agent;
  if (spec.lab) return `https+unix://${labAgentSocket(spec.lab.name, host)}`;
  throw new InvalidSpecError([
    {
      path: `hosts[${i}].agent`,
      message: 'is required when the spec has no lab section (e.g. https://10.0.0.2:7443)',
    },
  ]);
}

/** Migration calls wait for QEMU (a start, the state's arrival): longer than a query. */
const MIGRATION_CALL_TIMEOUT_MS = 120_000;

/** A client of `host`'s agent as `spec` places it. */
export function agentFor(spec: Spec, host: string): AgentClient {
  return new AgentClient(host, agentAddress(spec, host));
}
