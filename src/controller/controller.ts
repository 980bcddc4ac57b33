// The controller's facade for the API: one object wiring the parts (spec store, deployer, views, VMs, lab, verify).

import { performance } from 'node:perf_hooks';
import type { GuestExecResult } from '../agent/wire-probe.js';
import type { Runner } from '../exec/runner.js';
import type { OwnedVm } from '../shared/cluster.js';
import { ConflictError, InvalidRequestError, InvalidStateError, NotFoundError } from '../shared/errors.js';
import type { Spec } from '../spec/schema.js';
import type { ThroughputResult } from '../verify/throughput.js';
import { AlertEngine, type AlertEngineDeps } from './alerts/engine.js';
import { type ApplyOptions, Deployer, type ReconcileOptions } from './apply.js';
import { BackupControl } from './backup/control.js';
import { type BackupDeps, VmLocks } from './backup/deps.js';
import { BackupKeys } from './backup/keys.js';
import { BackupManager, type BackupManagerOptions } from './backup/manager.js';
import { ObjectiveGauges } from './backup/objective-gauges.js';
import { BalanceControl, snapshotWithRates } from './balance/service.js';
import type { Coordination } from './cluster/types.js';
import { type ConfirmTiming, RolledBackError } from './confirm.js';
import { hostDevices } from './device-views.js';
import { DrillControl, labClusterOps } from './drills/control.js';
import { decide } from './ha/decide.js';
import { HaManager } from './ha/manager.js';
import { type ClusterEtcd, prepareClusterEtcd } from './ha/members.js';
import { HaControl } from './ha/status.js';
import type { DecideFn } from './ha/types.js';
import { type AgentFactory, type AgentPort, httpAgents } from './hosts.js';
import { LabControl } from './lab-control.js';
import { lbViews } from './lb-views.js';
import { type CollectorOptions, MetricsCollector } from './metrics/collector.js';
import { type MigrationDeps, runMigration } from './migrate/run.js';
import { hostHealth } from './monitor.js';
import { OwnershipStore, withOwnership } from './ownership.js';
import type { HostCredentials, Rotated, RotatingAgent } from './pki/service.js';
import type { PlanResult } from './planning.js';
import { ReportCache, withReportCache } from './report-cache.js';
import { ReportRefresher } from './report-refresh.js';
import { withSecrets } from './secrets/delivery.js';
import { type SecretInfo, SecretVault } from './secrets/vault.js';
import type { SecurityGroupListItem } from './security-group-views.js';
import { type ParsedStoredSpec, SpecStore } from './spec-store.js';
import { StorageControl } from './storage-control.js';
import { fenceVmVolumes } from './storage-fence.js';
import { isEtcdStore } from './store/etcd.js';
import type { Store } from './store/types.js';
import type { TaskContext } from './tasks.js';
import { measureSpecThroughput, type ThroughputRequest, type VerifyResult, verifySpec } from './verify.js';
import { LastVerify, verifyCells } from './verify-last.js';
import type { ReadOptions, StatusOptions } from './views.js';
import { type NetworkListItem, type NetworkView, type StatusView, Views, type VmView } from './views.js';
import { VmControl } from './vm-control.js';
import type { HostDevicesList } from './wire-devices.js';
import type { LbView } from './wire-lb.js';

export type { ApplyOptions } from './apply.js';
export { DEFAULT_CONFIRM_MS, RolledBackError } from './confirm.js';
export { toAction } from './execute-plan.js';
export type { PlanResult } from './planning.js';
export type { StoredSpec } from './spec-store.js';
export type { HostStatus, NetworkView, StatusView, VmNicView, VmView } from './views.js';

/** How the controller is wired (tests inject fake agents and a short commit-confirm clock). */
export interface ControllerOptions {
  agents?: AgentFactory;
  confirmTiming?: ConfirmTiming;
  /** The CA and the controller's certificate (lab up, join, rotation, revocation need it). */
  credentials?: HostCredentials;
  /** The key secrets are sealed with (`<stateDir>/secrets.key`); without it secrets cannot be set or delivered. */
  secretsKey?: Buffer;
  /**
   * The cluster's coordination (etcd): with it, planning skips hosts without a live lease and `haManager()` gives
   * the HA manager to run on the active controller.
   */
  coordination?: Coordination;
  /** The HA decision engine (tests inject one). */
  decide?: DecideFn;
  /**
   * The etcd under the store, for what apply writes outside it (host users and roles, the agents' membership);
   * default: the store itself when it is an `EtcdStore`. Pass the raw one when the store is wrapped.
   */
  etcd?: ClusterEtcd;
  /**
   * Create the hosts' etcd users and roles at apply (and enable etcd auth): default true. False only for etcd
   * without TLS (`etcd+http://`, tests): without client certificates nobody has an etcd identity.
   */
  etcdAuth?: boolean;
  /** The backup side's clock and job polling (tests: a fake clock, a short poll). */
  backup?: Pick<BackupDeps, 'now' | 'poll'>;
  /** The metrics collector's clock and period (tests). */
  metrics?: CollectorOptions;
  /** The alert engine's clock and webhook timing (tests: a fake clock drives `for`). */
  alerts?: Pick<AlertEngineDeps, 'now'> & { actions?: NonNullable<AlertEngineDeps['actions']> };
}

/** Plans, applies and verifies specs against the hosts' agents. Holds no host state itself: agents report it. */
export class Controller {
  private readonly specs: SpecStore;
  private readonly deployer: Deployer;
  private readonly views: Views;
  private readonly vmControl: VmControl;
  private readonly lab: LabControl;
  private readonly credentials: HostCredentials | undefined;
  private readonly agents: AgentFactory;
  private readonly vault: SecretVault | undefined;
  private readonly coordination: Coordination | undefined;
  private readonly decide: DecideFn;
  /** Owner records of a cluster's VMs (placement, fencing tokens). */
  readonly ownership: OwnershipStore;
  /** What live migrations use (controller/migrate/): agents with ownership, the applied spec, owner records. */
  readonly migration: Omit<MigrationDeps, 'progress' | 'signal'>;
  /** HA status and maintenance (the HA routes call it directly). */
  readonly ha: HaControl;
  private readonly fenceVolumes: (spec: Spec, vm: string, owner: OwnedVm) => Promise<unknown>;
  /** Failure drills in a spec's lab, run from outside the lab (the drill route calls it directly). */
  readonly drills: DrillControl;
  /** Pools, volumes, snapshots, image import and capacity (the storage routes call it directly). */
  readonly storage: StorageControl;
  /** Backups, restores, keys and objectives (the backup routes and the backup manager call it directly). */
  readonly backups: BackupControl;
  /**
   * The site's metrics: the collector of the agents' samples (an active-only service: main.ts starts it), the
   * `MetricsSource` of alerts and the doctor, and the controller's own series (`metrics.series`).
   */
  readonly metrics: MetricsCollector;
  /** The backup manager's last objectives, as the series the collector adds to each snapshot (alertable). */
  readonly objectiveGauges = new ObjectiveGauges();
  /** The balancer: plans (`GET /v1/balance`), applies, and runs automatic rounds (an active-only service). */
  readonly balance: BalanceControl;
  /** Alert rules of the applied spec: instances, silences, acks (the alert routes call it directly). */
  readonly alerts: AlertEngine;
  /** The last verify's matrix (`GET /v1/verify/last`, the web console's topology and matrix). */
  readonly lastVerify = new LastVerify();
  /** Keeps each host's report current for `status` and `vm list` (active-only: main.ts starts it). */
  readonly reports: ReportRefresher;

  constructor(
    /** The state store (the API keeps its tokens and audit trail there too). */
    readonly store: Store,
    private readonly runner: Runner,
    opts: ControllerOptions = {},
  ) {
    this.credentials = opts.credentials;
    this.coordination = opts.coordination;
    this.decide = opts.decide ?? decide;
    this.ownership = new OwnershipStore(store);
    this.specs = new SpecStore(store, undefined, () => this.ownership.hints());
    this.vault = opts.secretsKey
      ? new SecretVault(store, opts.secretsKey, async () => (await this.specs.current())?.spec)
      : undefined;
    // Every call to an agent goes through here: VM steps get their secrets' values on the way out, and only then.
    // In a cluster, VM starts carry their fencing token; every call but a read marks the host's kept report stale.
    const cache = new ReportCache();
    const agents = withReportCache(
      withOwnership(withSecrets(opts.agents ?? httpAgents, this.vault), this.ownership),
      cache,
    );
    this.agents = agents;
    const coordination = this.coordination;
    const etcd = opts.etcd ?? (isEtcdStore(store) ? store : undefined);
    this.fenceVolumes = (spec, vm, owner) => fenceVmVolumes(spec, vm, owner, { agents, store });
    this.deployer = new Deployer({
      store,
      specs: this.specs,
      agents,
      ownership: this.ownership,
      fenceVolumes: this.fenceVolumes,
      ...(etcd
        ? {
            prepareCluster: async (spec: Spec) => {
              if (spec.cluster?.store !== 'etcd') return 'cluster: not on etcd';
              const auth = opts.etcdAuth ?? true;
              const m = await prepareClusterEtcd(etcd, spec, auth);
              return `cluster: ${auth ? 'etcd users and roles of the hosts and ' : ''}the membership of ${m.hosts.length} host(s) written`;
            },
          }
        : {}),
      ...(coordination
        ? { liveHosts: async () => new Set((await coordination.liveHosts()).map((h) => h.host)) }
        : {}),
      ...(opts.confirmTiming ? { confirmTiming: opts.confirmTiming } : {}),
    });
    this.ha = new HaControl(store, this.specs, this.ownership, coordination);
    this.views = new Views(store, this.specs, agents, cache);
    const spec = async () => (await this.specs.current())?.spec;
    this.reports = new ReportRefresher({ cache, spec, agents, health: () => hostHealth(store) });
    this.vmControl = new VmControl(store, this.specs, agents);
    this.storage = new StorageControl(store, this.specs, agents);
    this.migration = {
      agents,
      spec: async () => (await this.specs.current())?.spec,
      ownership: this.ownership,
      events: store,
    };
    this.lab = new LabControl(store, this.specs, runner, opts.credentials);
    const vault = this.vault;
    this.backups = new BackupControl({
      store,
      spec: async () => (await this.specs.current())?.spec,
      agents,
      keys: new BackupKeys(store, vault),
      hosts: {
        failedHosts: async () => {
          const spec = (await this.specs.current())?.spec;
          if (!coordination || !spec?.cluster) return new Set<string>();
          const live = new Set((await coordination.liveHosts()).map((h) => h.host));
          return new Set(
            spec.hosts.filter((h) => h.role !== 'storage' && !live.has(h.name)).map((h) => h.name),
          );
        },
      },
      ownerHost: async (vm) => (await this.ownership.get(vm))?.host,
      ownership: this.ownership,
      ...(vault ? { secretValues: (names: string[]) => vault.values(names) } : {}),
      locks: new VmLocks(),
      now: opts.backup?.now ?? (() => new Date()),
      ...(opts.backup?.poll ? { poll: opts.backup.poll } : {}),
    });
    this.metrics = new MetricsCollector(
      {
        spec: async () => (await this.specs.current())?.spec,
        // A fake agent without `metrics` counts as a host down.
        agents,
        heartbeats: () => hostHealth(store),
        controllerSeries: (now) => this.objectiveGauges.series(now),
      },
      opts.metrics,
    );
    this.balance = new BalanceControl({
      spec: async () => (await this.specs.current())?.spec,
      snapshot: (fresh) => snapshotWithRates(this.metrics, fresh),
      ha: () => this.ha.view(0),
      // Each move is one live migration with the same checks and rollback as `vmlink vm migrate`.
      migrate: (req) => runMigration(this.migration, req),
      events: (kind, message) => store.appendEvent(kind, message),
    });
    // `scale` actions grow volumes through the same path as `vmlink volume resize`.
    this.alerts = new AlertEngine({
      store,
      rules: async () => (await this.specs.current())?.spec.alerts ?? [],
      ...(opts.alerts?.now ? { now: opts.alerts.now } : {}),
      actions: { volumes: this.storage, ...opts.alerts?.actions },
    });
    this.drills = new DrillControl({
      parse: (text, source) => this.specs.parser.parse(text, source),
      runner,
      labOf: (spec) => this.lab.labOf(spec),
      cluster: labClusterOps(runner),
    });
  }

  /**
   * The HA manager for this controller's cluster (register it as an active-only service); undefined without a
   * coordination service (SQLite: no leases, no HA).
   */
  haManager(): HaManager | undefined {
    if (!this.coordination) return undefined;
    return new HaManager({
      store: this.store,
      specs: this.specs,
      ownership: this.ownership,
      coordination: this.coordination,
      agents: this.agents,
      reconcile: (ctx, opts) => this.deployer.reconcile(ctx, opts),
      decide: this.decide,
      fenceVolumes: this.fenceVolumes,
    });
  }

  /**
   * The backup manager (register it as an active-only service): due schedules, restore tests and objectives on the
   * active controller; with SQLite, the only controller.
   */
  backupManager(opts: BackupManagerOptions = {}): BackupManager {
    return new BackupManager(this.backups, {
      ...opts,
      onEvaluated: (objectives, at) => {
        this.objectiveGauges.set(objectives, at);
        opts.onEvaluated?.(objectives, at);
      },
    });
  }

  /**
   * Applies the current spec as owner records place it (failed hosts skipped), serialized with applies: what the HA
   * manager runs after moving VMs, and what drills call to converge.
   */
  reconcile(ctx: TaskContext, opts: ReconcileOptions = {}): Promise<PlanResult & { applied: number }> {
    return this.deployer.reconcile(ctx, opts);
  }

  /** The spec last applied, parsed; undefined before the first apply. */
  currentSpec(): Promise<ParsedStoredSpec | undefined> {
    return this.specs.current();
  }

  /** Validates a spec text (cached: the apply that follows does not parse it again). */
  validate(text: string, source: string): Spec {
    return this.specs.parser.parse(text, source);
  }

  /** Validates `text` and diffs it against what the hosts report. */
  plan(text: string, source: string): Promise<PlanResult> {
    return this.deployer.plan(text, source);
  }

  /** Plans and applies `text`; see `Deployer.apply`. Hosts that left the spec have their certificates revoked. */
  async apply(
    text: string,
    source: string,
    ctx: TaskContext,
    opts: ApplyOptions = {},
  ): Promise<PlanResult & { applied: number }> {
    const before = (await this.specs.current())?.spec.hosts.map((h) => h.name) ?? [];
    const started = performance.now();
    const r = await this.deployer.apply(text, source, ctx, opts).catch((e: unknown) => {
      const outcome =
        e instanceof RolledBackError ? 'rolled-back' : ctx.signal.aborted ? 'cancelled' : 'failed';
      this.metrics.series.observeApply(outcome, (performance.now() - started) / 1000);
      throw e;
    });
    this.metrics.series.observeApply('succeeded', (performance.now() - started) / 1000);
    const now = new Set(this.validate(text, source).hosts.map((h) => h.name));
    const left = before.filter((h) => !now.has(h) && this.credentials?.revoke(h, 'left the spec'));
    if (left.length) {
      ctx.progress?.(`revoked the certificate of ${left.join(', ')} (left the spec)`);
      await this.store.appendEvent('host.revoked', `${left.join(', ')}: left the spec`);
    }
    return r;
  }

  /** A one-time token (and the CA's fingerprint) that lets `host`'s agent join within `ttlMs`. */
  joinToken(host: string, ttlMs?: number) {
    return this.requireCredentials().joinToken(host, ttlMs);
  }

  /** Spends a join token on `host`'s certificate for the key of `csr`. */
  async join(host: string, token: string, csr: string): Promise<{ cert: string; ca: string }> {
    const r = await this.requireCredentials().join(host, token, csr);
    await this.store.appendEvent('host.joined', `${host} joined with a join token`);
    return r;
  }

  /** The CA certificate and its fingerprint (public). */
  ca(): { ca: string; fingerprint: string } {
    const { pki } = this.requireCredentials();
    return { ca: pki.caPem, fingerprint: pki.caFingerprint };
  }

  /** Rotates `host`'s certificate through its agent (new key there, old serial revoked); the agent keeps serving. */
  async rotateCert(host: string): Promise<Rotated> {
    const creds = this.requireCredentials();
    const cur = await this.specs.current();
    if (!cur?.spec.hosts.some((h) => h.name === host)) throw new NotFoundError('host', host);
    const agent = this.agents(cur.spec, host) as AgentPort & Partial<RotatingAgent>;
    if (!agent.tlsCsr || !agent.installCert)
      throw new InvalidStateError(`the agent of ${host} cannot rotate its certificate`, `host/${host}`);
    const r = await creds.rotate(host, agent as RotatingAgent);
    await this.store.appendEvent('host.cert-rotated', `${host}: serial ${r.previousSerial} -> ${r.serial}`);
    return r;
  }

  private requireCredentials(): HostCredentials {
    if (!this.credentials)
      throw new InvalidStateError('this controller has no CA (it was started without one)', 'pki');
    return this.credentials;
  }

  /** Removes every VM and network of `text` (or of the last applied spec) from its hosts. */
  destroy(
    text: string | undefined,
    source: string,
    ctx: TaskContext,
  ): Promise<PlanResult & { applied: number }> {
    return this.deployer.destroy(text, source, ctx);
  }

  /** Hosts of the applied spec: heartbeat state, and the agents' reports (kept ones with their age, unless live). */
  status(opts?: StatusOptions): Promise<StatusView> {
    return this.views.status(opts);
  }

  /** Load balancers of the applied spec with what their hosts report (VIP holder, backends UP/DOWN, processes). */
  async loadBalancers(): Promise<LbView[]> {
    const cur = await this.specs.current();
    return cur ? lbViews(cur.spec, (await this.views.status()).hosts) : [];
  }

  /** Every VM of the applied spec and every VM the hosts report (from kept reports, unless live). */
  vms(opts?: ReadOptions): Promise<VmView[]> {
    return this.views.vms(opts);
  }

  /** A network of the applied spec: its spec, and per member host what the agent observes (and its flows). */
  networkShow(name: string, withFlows: boolean): Promise<NetworkView> {
    return this.views.networkShow(name, withFlows);
  }

  /** The PCI and USB devices of `host` (or of every host of the applied spec), as their agents read them now. */
  async hostDevices(host?: string): Promise<HostDevicesList> {
    return hostDevices((await this.specs.current())?.spec, this.agents, host);
  }

  /** Every network of the applied spec with its member hosts. */
  networks(): Promise<NetworkListItem[]> {
    return this.views.networks();
  }

  /** Every security group of the applied spec, with its state on each host that holds it. */
  securityGroups(): Promise<SecurityGroupListItem[]> {
    return this.views.securityGroups();
  }

  /**
   * Starts or stops one VM of the applied spec now (the spec's desired state is unchanged); in a cluster a stop is
   * recorded with `by` (HA leaves the VM stopped) and a start clears it.
   */
  vmPower(name: string, action: 'start' | 'stop', force = false, by?: string): Promise<void> {
    return this.vmControl.power(name, action, force, by);
  }

  /** Runs argv in a VM's guest. */
  vmExec(name: string, argv: string[], timeoutMs: number, input?: string): Promise<GuestExecResult> {
    return this.vmControl.exec(name, argv, timeoutMs, input);
  }

  /** The tail of a VM's serial console log. */
  vmConsole(name: string, tail: number): Promise<{ log: string }> {
    return this.vmControl.console(name, tail);
  }

  /** Where a VM runs (the console stream connects to that host's agent). */
  vmPlacement(name: string) {
    return this.vmControl.placement(name);
  }

  /** Measures the connectivity matrix of the applied spec. */
  async verify(ctx: TaskContext): Promise<VerifyResult> {
    const cur = await this.specs.current();
    if (!cur) throw new InvalidRequestError('nothing to verify: apply a spec first');
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    const r = await verifySpec(cur.spec, this.runner, ctx).catch((e: unknown) => {
      this.metrics.series.observeVerify(ctx.signal.aborted ? 'cancelled' : 'failed', seconds());
      throw e;
    });
    this.metrics.series.observeVerify(r.ok ? 'ok' : 'mismatch', seconds(), verifyCells(r));
    this.lastVerify.set(r);
    await this.store.appendEvent('verify', `${r.cells.length} cells, ${r.mismatches} mismatch(es)`);
    return r;
  }

  /** Measures TCP throughput between two endpoints of the applied spec with iperf3. */
  async throughput(req: ThroughputRequest, ctx: TaskContext): Promise<ThroughputResult> {
    const cur = await this.specs.current();
    if (!cur) throw new InvalidRequestError('nothing to measure: apply a spec first');
    const r = await measureSpecThroughput(cur.spec, this.runner, req, ctx);
    await this.store.appendEvent('verify.throughput', `${r.from} -> ${r.to}: ${r.mbps} Mbit/s`);
    return r;
  }

  /** Builds the spec's lab (namespaces, LAN, router, agents); idempotent. */
  labUp(text: string, source: string, ctx: TaskContext): Promise<{ namespaces: string[] }> {
    return this.lab.up(text, source, ctx);
  }

  /** Removes the spec's lab and everything in it (VMs, dnsmasq, agents, namespaces, state files). */
  labDown(text: string, source: string, ctx: TaskContext): Promise<{ removed: string[] }> {
    return this.lab.down(text, source, ctx);
  }

  /** Sets secret `name` to `value` (admin). */
  async secretSet(name: string, value: Buffer): Promise<{ created: boolean }> {
    const r = await this.requireVault().set(name, value);
    await this.store.appendEvent('secret.set', `${name}${r.created ? ' (created)' : ' (replaced)'}`);
    return r;
  }

  /** Every secret's name, dates and users (never a value). */
  secretList(): Promise<SecretInfo[]> {
    return this.requireVault().list();
  }

  /** Deletes secret `name` unless the applied spec uses it (admin). */
  async secretDelete(name: string): Promise<void> {
    await this.requireVault().delete(name);
    await this.store.appendEvent('secret.deleted', name);
  }

  private requireVault(): SecretVault {
    if (!this.vault)
      throw new InvalidStateError(
        'this controller has no secrets key (it was started without one)',
        'secrets',
      );
    return this.vault;
  }

  /** The newest events. */
  events(limit: number) {
    return this.store.events(limit);
  }
}

/** Rejects a mutating request while another one runs. */
export function assertIdle(running: { kind: string; id: string } | undefined): void {
  if (running)
    throw new ConflictError(
      `another ${running.kind} is running (task ${running.id}); wait for it or cancel it`,
    );
}
