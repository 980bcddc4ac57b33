// Read-only views of the applied spec next to what the hosts report: status, VMs (with addresses), networks.
import { resolveSpec } from '../plan/resolve.js';
import { tuningChanges, tuningDrift } from '../plan/tuning.js';
import { NotFoundError, UnsupportedError } from '../shared/errors.js';
import type { HostReport, NicConfig, ObservedVcpu, ObservedVm } from '../shared/model.js';
import { Limiter } from '../shared/queue.js';
import type { NetworkSpec, Spec, VmSpec } from '../spec/schema.js';
import { networkHosts } from '../spec/topology.js';
import { agentAddress } from './agents.js';
import { type AgentFactory, REPORT_TIMEOUT_MS } from './hosts.js';
import { type HostHealth, hostHealth } from './monitor.js';
import type { GuestAddresses, ReportCache } from './report-cache.js';
import { hostGuests } from './report-refresh.js';
import { type SecurityGroupListItem, securityGroupViews } from './security-group-views.js';
import type { ParsedStoredSpec, SpecStore } from './spec-store.js';
import type { Store } from './store/types.js';

export { GUEST_ADDRESS_TIMEOUT_MS } from './report-refresh.js';

/** Hosts a cached read asks live at once (those never reported, marked stale, or missing heartbeats). */
export const LIVE_READ_CONCURRENCY = 64;

/** How `status` and `vm list` read the hosts: from the report cache where it is current (default), or `live`. */
export interface ReadOptions {
  live?: boolean;
}

/** How `status` answers: `summary` gives each host's report without its bulky parts (see `summaryReport`). */
export interface StatusOptions extends ReadOptions {
  summary?: boolean;
}

/** Each kept report's summary, made once (the report cache hands out the same object until the next refresh). */
const summaries = new WeakMap<HostReport, HostReport>();

/**
 * A report without what `vmlink status` does not show and other routes serve (`vm list`: ports and CPU placement;
 * `network show`: leases; `host devices`): each VM, network and security group keeps its name, state, pid, hash and
 * problems, not the config it was realised from. At 1,000 hosts x 20 VMs the whole reports are 23 MB of JSON, the
 * summaries 2.3 MB.
 */
export function summaryReport(r: HostReport): HostReport {
  let s = summaries.get(r);
  if (!s) {
    const { devices: _devices, ...rest } = r;
    s = {
      ...rest,
      networks: r.networks.map(({ config: _c, leases: _l, ...n }) => n),
      vms: r.vms.map(({ config: _c, ports: _p, vcpus: _v, cpuMax: _m, ...v }) => v),
      ...(r.securityGroups ? { securityGroups: r.securityGroups.map(({ config: _c, ...g }) => g) } : {}),
    };
    summaries.set(r, s);
  }
  return s;
}

/**
 * The spec resolved into per-host configs, once per parsed spec (the parser hands out one object per text and
 * placement): at 200 hosts x 20 VMs resolving took ~300 ms of every `vm list` served from the report cache. With it,
 * each VM's desired NICs by host and name.
 */
const resolved = new WeakMap<Spec, { nics: Map<string, Map<string, NicConfig[]>> }>();
function resolvedOf(spec: Spec): { nics: Map<string, Map<string, NicConfig[]>> } {
  let r = resolved.get(spec);
  if (!r) {
    const nics = new Map<string, Map<string, NicConfig[]>>();
    for (const [host, d] of Object.entries(resolveSpec(spec)))
      nics.set(host, new Map(d.vms.map((v) => [v.name, v.nics])));
    r = { nics };
    resolved.set(spec, r);
  }
  return r;
}

/**
 * A report's VMs by name, once per report: a kept report is the same object until its host's next refresh, and
 * `vm list` looked 20,000 VMs up by a fresh "host\0name" key each call.
 */
const vmsByName = new WeakMap<HostReport, Map<string, ObservedVm>>();
function vmsOf(report: HostReport | undefined): Map<string, ObservedVm> | undefined {
  if (!report) return undefined;
  let m = vmsByName.get(report);
  if (!m) {
    m = new Map(report.vms.map((v) => [v.name, v]));
    vmsByName.set(report, m);
  }
  return m;
}

/** `localeCompare`'s order, with the collator made once (20,000 names sort in ms, not a second). */
const byName = new Intl.Collator();

/**
 * Per parsed spec: each host's agent address (`agentAddress` searches the hosts: O(hosts²) per `status`), and each
 * of its VMs' rank in `byName`'s order, so that `vm list` sorts by comparing numbers (20,000 names through the
 * collator were ~300,000 compares every call).
 */
const perSpec = new WeakMap<Spec, { address: Map<string, string>; rank: Map<string, number> }>();
function perSpecOf(spec: Spec): { address: Map<string, string>; rank: Map<string, number> } {
  let p = perSpec.get(spec);
  if (!p) {
    const names = spec.vms.map((v) => v.name).sort((a, b) => byName.compare(a, b));
    p = { address: new Map(), rank: new Map(names.map((n, i) => [n, i])) };
    perSpec.set(spec, p);
  }
  return p;
}
const addressOf = (spec: Spec, host: string): string => {
  const known = perSpecOf(spec).address;
  let a = known.get(host);
  if (a === undefined) {
    a = agentAddress(spec, host);
    known.set(host, a);
  }
  return a;
};

/** How long `status` asks a host the heartbeat monitor found unreachable before it says so. */
export const UNREACHABLE_RECHECK_MS = 2_000;

/** One host as `status` shows it. */
export interface HostStatus {
  name: string;
  address: string;
  /**
   * Whether its agent answered: this request (`reportAgeMs` 0), or the cache's refresh `reportAgeMs` ago with no
   * heartbeat missed since (the heartbeat `state` may lag behind by a period).
   */
  reachable: boolean;
  /** How old `report` is: 0 when asked for this request, else the age of the controller's cached copy. */
  reportAgeMs?: number;
  /** Heartbeat state (`unknown` when the daemon has not polled it yet). */
  state: HostHealth['state'];
  /** When the agent last answered a heartbeat (ISO time). */
  lastSeen?: string;
  /** Heartbeats missed in a row. */
  missed?: number;
  error?: string;
  report?: HostReport;
  /** Where the spec sets `hosts[].tuning`: the fields the host's reported values differ on (`ecn 2 -> 1`). */
  tuningDrift?: string[];
}

/** The answer of `status`. */
export interface StatusView {
  spec?: { source: string; appliedAt: string };
  hosts: HostStatus[];
}

/** One NIC of a VM as `vm list` shows it: where it is attached and the addresses it has. */
export interface VmNicView {
  /** The network (for a trunk NIC, the first of its networks). */
  network: string;
  /** Every network of a trunk NIC. */
  trunk?: string[];
  /** The host device (tap) of the NIC, as its host reports it (else as the spec derives it). */
  tap: string;
  mac: string;
  /** Addresses with prefix where known (e.g. 10.0.0.5/24); loopback and link-local ones left out. */
  addresses: string[];
  /** Where `addresses` come from: the guest agent, a DHCP lease, the spec (fixed address, unconfirmed), or none. */
  addressSource: 'guest-agent' | 'dhcp-lease' | 'spec' | 'none';
}

/** One VM as `vm list` shows it: desired (spec) and observed (agent) side by side. */
export interface VmView {
  name: string;
  host: string;
  desired: 'running' | 'stopped' | 'absent';
  state: ObservedVm['state'] | 'absent' | 'unknown';
  cpus?: number;
  memoryMiB?: number;
  /**
   * Its CPU placement and limit: as the spec asks (`pin`, `quota`) and as its host sees them (each vCPU thread's
   * allowed CPUs, its cgroup's `cpu.max`); absent when the spec asks for neither and the host reports neither.
   */
  cpu?: { pin?: number[]; quota?: string; vcpus?: ObservedVcpu[]; cpuMax?: string };
  networks: string[];
  /** How old its host's report is (see `HostStatus.reportAgeMs`); absent where its host did not answer. */
  reportAgeMs?: number;
  /** Each NIC with its tap and addresses (VMs of the applied spec only). */
  nics: VmNicView[];
  problems: string[];
}

/** One network as `network show` shows it. */
export interface NetworkView {
  name: string;
  spec: NetworkSpec;
  /** `ports`: the host devices of the VM NICs on the network there (tap names, as the agent realised them). */
  hosts: Array<{
    host: string;
    observed?: HostReport['networks'][number];
    ports?: Array<{ vm: string; tap: string }>;
    flows?: string;
    error?: string;
  }>;
}

/** One network as `network list` shows it. */
export interface NetworkListItem {
  name: string;
  mode: string;
  backend: string;
  hosts: string[];
}

/** Builds the read-only views from the stored spec, the heartbeat state and the agents' answers. */
export class Views {
  constructor(
    private readonly store: Store,
    private readonly specs: SpecStore,
    private readonly agents: AgentFactory,
    /** Each host's last report (report-cache.ts); without one, or while it is not kept current, every read is live. */
    private readonly cache?: ReportCache,
  ) {}

  private readonly liveReads = new Limiter(LIVE_READ_CONCURRENCY);

  /** Whether `host`'s cached answers may be served: kept current, and no heartbeat missed since they were fetched. */
  private cached(
    hh: Pick<HostHealth, 'state' | 'missed'> | undefined,
    opts: ReadOptions,
  ): ReportCache | undefined {
    return !opts.live && this.cache?.serving && hh?.state === 'up' && hh.missed === 0
      ? this.cache
      : undefined;
  }

  /**
   * Hosts of the applied spec: heartbeat state, and the agents' reports of those that answer (from the report cache
   * with their age, unless `live`).
   */
  async status(opts: StatusOptions = {}): Promise<StatusView> {
    const cur = await this.specs.current();
    if (!cur) return { hosts: [] };
    const st = await this.statusOf(cur, opts);
    if (!opts.summary) return st;
    return { ...st, hosts: st.hosts.map((h) => (h.report ? { ...h, report: summaryReport(h.report) } : h)) };
  }

  // The applied spec read once per request: at 1,000 hosts reading and placing it is itself tens of ms and more.
  private async statusOf(cur: ParsedStoredSpec, opts: ReadOptions): Promise<StatusView> {
    const health = await hostHealth(this.store);
    const hosts = await Promise.all(
      cur.spec.hosts.map(async (h): Promise<HostStatus> => {
        const drifted = (report: HostReport) => {
          const seen = report.capabilities.tuning;
          const drift = h.tuning ? tuningChanges(tuningDrift(h.tuning, seen), seen) : undefined;
          return drift ? { tuningDrift: drift } : {};
        };
        const address = addressOf(cur.spec, h.name);
        const hh = health[h.name];
        const beat = {
          state: hh?.state ?? ('unknown' as const),
          ...(hh?.lastSeen ? { lastSeen: hh.lastSeen } : {}),
          ...(hh ? { missed: hh.missed } : {}),
        };
        // A host the monitor gave up on is asked briefly only: status must answer quickly, yet a host that is
        // back (say, its relay was restarted) shows as reachable before the next heartbeat notices.
        const givenUp = hh?.state === 'unreachable';
        const hit = this.cached(hh, opts)?.report(h.name);
        if (hit)
          return {
            name: h.name,
            address,
            reachable: true,
            reportAgeMs: hit.ageMs,
            ...beat,
            report: hit.value,
            ...drifted(hit.value),
          };
        try {
          const ask = () =>
            this.agents(cur.spec, h.name).report(givenUp ? UNREACHABLE_RECHECK_MS : REPORT_TIMEOUT_MS);
          // `--live` asks every host at once, as before the cache; a cached read's misses are bounded.
          const report = await (opts.live ? ask() : this.liveReads.run(ask));
          return {
            name: h.name,
            address,
            reachable: true,
            reportAgeMs: 0,
            ...beat,
            report,
            ...drifted(report),
          };
        } catch (e) {
          const error = givenUp
            ? `missed ${hh.missed} heartbeats (last seen ${hh.lastSeen ?? 'never'}): ${hh.error ?? ''}`
            : (e as Error).message;
          return { name: h.name, address, reachable: false, ...beat, error };
        }
      }),
    );
    return { spec: { source: cur.source, appliedAt: cur.appliedAt }, hosts };
  }

  /**
   * Every VM of the applied spec with its NICs' addresses, and every other VM the hosts report (from the report
   * cache, unless `live`; guest addresses with one request per host).
   */
  async vms(opts: ReadOptions = {}): Promise<VmView[]> {
    const cur = await this.specs.current();
    if (!cur) return [];
    const { hosts } = await this.statusOf(cur, opts);
    const guests = await this.guestsByHost(cur.spec, hosts, opts);
    const desired = resolvedOf(cur.spec).nics;
    const reports = hosts.flatMap((h) => (h.report ? [h.report] : []));
    // Indexed once: at 1,000 hosts x 20 VMs, a search per VM through every host (and per NIC through every host's
    // leases) took seconds.
    const byHost = new Map(hosts.map((h) => [h.name, h]));
    const leases = leaseIndex(reports);
    const out = cur.spec.vms.map((vm): VmView => {
      const h = byHost.get(vm.host);
      const obs = vmsOf(h?.report)?.get(vm.name);
      const nics = desired.get(vm.host)?.get(vm.name) ?? [];
      const guest = obs?.state === 'running' ? guests.get(vm.host)?.get(vm.name) : undefined;
      return {
        name: vm.name,
        host: vm.host,
        desired: vm.state,
        state: !h?.reachable ? 'unknown' : (obs?.state ?? 'absent'),
        cpus: vm.cpus,
        memoryMiB: vm.memoryMiB,
        ...cpuView(vm.cpu, obs),
        networks: vm.nics.flatMap((n) => n.trunk ?? (n.network === undefined ? [] : [n.network])),
        ...(h?.reportAgeMs === undefined ? {} : { reportAgeMs: h.reportAgeMs }),
        // The tap as the agent realised it (a VM from before readable names keeps its hashed one).
        nics: nics.map((n, i) => nicView({ ...n, tap: obs?.ports?.[i]?.tap ?? n.tap }, guest, leases)),
        problems: obs?.problems ?? [],
      };
    });
    const listed = new Set(out.map((o) => o.name));
    for (const h of hosts) {
      for (const v of h.report?.vms ?? []) {
        if (!listed.has(v.name))
          out.push({
            name: v.name,
            host: h.name,
            desired: 'absent',
            state: v.state,
            networks: [],
            nics: [],
            problems: v.problems,
          });
      }
    }
    const { rank } = perSpecOf(cur.spec);
    return out.sort((a, b) => {
      const ra = rank.get(a.name);
      const rb = rank.get(b.name);
      return ra !== undefined && rb !== undefined ? ra - rb : byName.compare(a.name, b.name);
    });
  }

  /** A network of the applied spec: its spec, and per member host what the agent observes (and its flows). */
  async networkShow(name: string, withFlows: boolean): Promise<NetworkView> {
    const cur = await this.specs.current();
    const net = cur?.spec.networks.find((n) => n.name === name);
    if (!cur || !net) throw new NotFoundError('network', name);
    // Asked up front: a per-host error row would read as if the host were down.
    if (withFlows && net.backend !== 'ovs')
      throw new UnsupportedError(
        `network ${name} uses the ${net.backend} backend, which switches with a kernel bridge and has no OpenFlow rules; --flows is for backend: ovs networks`,
        `network/${name}`,
      );
    const hosts = await Promise.all(
      networkHosts(cur.spec, net).map(async (host): Promise<NetworkView['hosts'][number]> => {
        const agent = this.agents(cur.spec, host);
        try {
          const report = await agent.report();
          const observed = report.networks.find((n) => n.name === name);
          const flows = withFlows ? (await agent.flows(name)).flows : undefined;
          const ports = report.vms.flatMap((v) =>
            (v.ports ?? [])
              .filter((p) => p.network === name || p.trunk?.includes(name))
              .map((p) => ({ vm: v.name, tap: p.tap })),
          );
          return {
            host,
            ...(observed ? { observed, ports } : {}),
            ...(flows === undefined ? {} : { flows }),
          };
        } catch (e) {
          return { host, error: (e as Error).message.split('\n')[0]! };
        }
      }),
    );
    return { name, spec: net, hosts };
  }

  /** Every network of the applied spec with its member hosts. */
  async networks(): Promise<NetworkListItem[]> {
    const cur = await this.specs.current();
    if (!cur) return [];
    return cur.spec.networks.map((n) => ({
      name: n.name,
      mode: n.mode,
      backend: n.backend,
      hosts: networkHosts(cur.spec, n),
    }));
  }

  /** Every security group of the applied spec, with its state on each host that holds it. */
  async securityGroups(): Promise<SecurityGroupListItem[]> {
    const cur = await this.specs.current();
    if (!cur || cur.spec.securityGroups.length === 0) return [];
    const { hosts } = await this.status();
    return securityGroupViews(cur.spec, resolveSpec(cur.spec), hosts);
  }

  /**
   * The guest addresses of each reachable host's running VMs: from the report cache where current (and not `live`),
   * else one request per host (a bounded number of hosts at once).
   */
  private async guestsByHost(
    spec: Spec,
    hosts: HostStatus[],
    opts: ReadOptions,
  ): Promise<Map<string, GuestAddresses>> {
    const out = new Map<string, GuestAddresses>();
    await Promise.all(
      hosts.map(async (h) => {
        const running = (h.report?.vms ?? []).filter((v) => v.state === 'running').map((v) => v.name);
        if (running.length === 0) return;
        // The heartbeat as `status` read it for this request.
        const hit = this.cached({ state: h.state, missed: h.missed ?? Number.NaN }, opts)?.guests(h.name);
        out.set(
          h.name,
          hit?.value ??
            (await this.liveReads.run(() =>
              hostGuests(this.agents(spec, h.name), h.name, running, this.cache),
            )),
        );
      }),
    );
    return out;
  }
}

/**
 * A NIC's view: addresses from the guest agent when it answered, else the DHCP lease for its MAC on its network (on
 * whichever host serves DHCP there), else the fixed address the spec gives it.
 */
export function nicView(
  nic: NicConfig,
  guest: Map<string, string[]> | undefined,
  leases: LeaseIndex,
): VmNicView {
  const mac = nic.mac.toLowerCase();
  const base = {
    network: nic.network,
    ...(nic.trunk ? { trunk: nic.trunk.networks } : {}),
    tap: nic.tap,
    mac: nic.mac,
  };
  const fromGuest = guest?.get(mac);
  if (fromGuest?.length) return { ...base, addresses: fromGuest, addressSource: 'guest-agent' };
  const leased = nic.network === undefined ? undefined : leases.get(leaseKey(nic.network, mac));
  if (leased?.length) return { ...base, addresses: leased, addressSource: 'dhcp-lease' };
  if (nic.staticIp)
    return {
      ...base,
      addresses: [`${nic.staticIp.address}/${nic.staticIp.prefixLength}`],
      addressSource: 'spec',
    };
  return { ...base, addresses: [], addressSource: 'none' };
}

/** The DHCP leases of every report by network and MAC (lower case), each address once. */
export type LeaseIndex = ReadonlyMap<string, string[]>;

const leaseKey = (network: string, mac: string): string => `${network}\0${mac}`;

/** Indexes the reports' DHCP leases (see `LeaseIndex`): one pass over them, not one per NIC. */
export function leaseIndex(reports: readonly HostReport[]): LeaseIndex {
  const out = new Map<string, string[]>();
  for (const r of reports)
    for (const n of r.networks)
      for (const l of n.leases ?? []) {
        const k = leaseKey(n.name, l.mac.toLowerCase());
        const ips = out.get(k) ?? [];
        if (!ips.includes(l.ip)) ips.push(l.ip);
        out.set(k, ips);
      }
  return out;
}

/** VmView's `cpu`: the spec's request beside what the host observed (each part only when present). */
function cpuView(asked: VmSpec['cpu'], obs: ObservedVm | undefined): Pick<VmView, 'cpu'> {
  const cpu = {
    ...(asked?.pin ? { pin: asked.pin } : {}),
    ...(asked?.quota ? { quota: asked.quota } : {}),
    ...(obs?.vcpus ? { vcpus: obs.vcpus } : {}),
    ...(obs?.cpuMax ? { cpuMax: obs.cpuMax } : {}),
  };
  return Object.keys(cpu).length > 0 ? { cpu } : {};
}
