import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VmIds, vmIdsFile } from '../drivers/hypervisor/qemu/identity.js';
import { Ip, type IpCommand, ipCmd } from '../exec/ip.js';
import { Nft } from '../exec/nft.js';
import type { Runner } from '../exec/runner.js';
import { Sysctl } from '../exec/sysctl.js';
import { InvalidRequestError, TimeoutError, UnavailableError, VmlinkError } from '../shared/errors.js';
import { AnyAnswerSchema, HttpClient } from '../shared/http/client.js';
import {
  DAEMON_STOP_GRACE_MS,
  DEFAULT_MTU,
  KILL_WAIT_MS,
  LAB_AGENT_START_TIMEOUT_MS,
  LAB_HEALTH_TIMEOUT_MS,
  LAB_RELAY_START_TIMEOUT_MS,
} from '../shared/limits.js';
import type { OpContext } from '../shared/op.js';
import {
  AGENT_TCP_PORT,
  labAgentOwnSocket,
  labAgentSocket,
  labHostStateDir,
  labHostTlsDir,
  labRunDir,
  stateDir,
} from '../shared/paths.js';
import {
  identify,
  isRunning,
  type ProcessIdentity,
  processesOfUids,
  processFromIdentityFile,
  signalProcess,
  waitExited,
  writeIdentityFile,
} from '../shared/process.js';
import { readFileCappedSync, writeFileAtomic, writeFileAtomicSync } from '../shared/state-file.js';
import { pollUntil } from '../shared/time.js';
import { formatIpv4, parseCidr } from '../spec/net.js';
import type { LabSpec } from '../spec/schema.js';
import { type LabCluster, LabControllers } from './cluster.js';
import { ETCD_CLIENT_PORT, LabEtcd, labEtcdEndpoints, labEtcdSocket } from './etcd.js';
import { labNamespaces, machineNs, mgmtNs, routerNs, switchNs, upstreamNs } from './names.js';
import { lanDhcpRange, ROUTER_TABLE, renderLanDhcpConf, routerDnsmasq, routerRuleset } from './router.js';
import { LabStorage, labPoolRootArgs } from './storage.js';

const VMLINK_BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));
/** What a recorded lab process (agent, relay) must be before the lab trusts or signals it: this vmlink. */
const LAB_PROCESS = { args: [VMLINK_BIN] };

/** A lab segment: an extra L2 switch every lab host joins on its next NIC (eth1, eth2, ...). */
export interface LabSegment {
  name: string;
  mtu: number;
}

/** Options of a lab beyond its spec. */
export interface LabOptions {
  /** Uplink NIC of each host's agent (spec `hosts[].uplink`); default eth0. */
  uplinks?: Record<string, string>;
  /** Whether the controller reaches a host's agent through the relay (mutual TLS); checked after `up`. */
  reachable?: (host: string) => Promise<boolean>;
  /** Hosts whose agents restart even when running (their credentials were renewed). */
  restartAgents?: readonly string[];
  /** etcd members that restart even when running (their credentials were renewed). */
  restartEtcd?: readonly string[];
  /**
   * Called once the lab's etcd answers and before any agent starts (etcd's users and roles: an agent's first lease
   * needs its user). Through the relay's sockets (`labEtcdSocket`): this process is on no lab LAN.
   */
  etcdReady?: () => Promise<void>;
  /** A cluster on the lab's etcd: compute hosts' agents get `--etcd <members> --cluster-heartbeat-s <s>`. */
  joinEtcd?: { heartbeatSeconds: number };
  /** What `lab.controllers` share with this controller (required when the lab has any). */
  controllers?: LabCluster;
}

/** The management station's address on the lab LAN: the highest usable address of `lab.lan.cidr`. */
export function labMgmtAddress(spec: LabSpec): string {
  return formatIpv4(parseCidr(spec.lan.cidr)!.broadcast - 1);
}

/** The LAN's MTU (`lab.lan.mtu`, default 1500). */
export function labLanMtu(spec: LabSpec): number {
  return (spec.lan as { mtu?: number }).mtu ?? DEFAULT_MTU;
}

/** The lab's extra segments in order (`lab.segments`); host NIC eth(i+1) joins segment i. */
export function labSegments(spec: LabSpec): LabSegment[] {
  const segs = (spec as { segments?: Array<{ name: string; mtu?: number }> }).segments ?? [];
  return segs.map((s) => ({ name: s.name, mtu: s.mtu ?? DEFAULT_MTU }));
}

/** Where the controller reaches a lab host's agent across the LAN (mutual TLS). */
export const labAgentTcp = (address: string): string => `https://${address}:${AGENT_TCP_PORT}`;

/** The lab: network namespaces standing in for physical machines, built and removed without touching the root namespace. */
export class Lab {
  /** iproute2 in the caller's namespace: only namespaces themselves are managed from there. */
  private readonly ip: Ip;
  /** The servers of the lab's storage machines (tgtd, rpcbind, nfs-ganesha). */
  private readonly storage: LabStorage;

  constructor(
    private readonly runner: Runner,
    readonly spec: LabSpec,
    private readonly opts: LabOptions = {},
  ) {
    this.ip = new Ip(runner);
    this.storage = new LabStorage(runner, spec);
  }

  /** iproute2 inside one of the lab's namespaces. */
  private ipIn(ns: string): Ip {
    return new Ip(this.runner, ns);
  }

  /** Builds whatever is missing (idempotent) and (re)starts any host agent that is not running. */
  async up(ctx: OpContext = {}): Promise<void> {
    const { spec } = this;
    const say = ctx.progress ?? (() => {});
    mkdirSync(labRunDir(spec.name), { recursive: true, mode: 0o755 });
    const existing = new Set(await this.namespaces());
    for (const ns of labNamespaces(spec)) {
      if (existing.has(ns)) continue;
      say(`creating namespace ${ns}`);
      await this.ip.namespaces.add(ns);
      await this.ipIn(ns).link.set('lo', { up: true });
    }
    const lan = parseCidr(spec.lan.cidr)!;
    const sw = switchNs(spec.name);
    const mtu = labLanMtu(spec);
    const segments = labSegments(spec);
    const mgmt = labMgmtAddress(spec);
    const taken = [spec.lan.gateway, ...labLanMachines(spec).map((m) => m.address)];
    if (taken.includes(mgmt))
      throw new InvalidRequestError(
        `lab address ${mgmt} is the lab's management station (the highest address of ${spec.lan.cidr}); give the machine another address`,
        'lab',
      );
    if (!(await this.linkExists(sw, 'lan'))) await this.ipIn(sw).batch(switchBridge('lan', mtu));
    for (const [si, seg] of segments.entries()) {
      if (await this.linkExists(sw, segBridge(si))) continue;
      say(`creating segment ${seg.name} (MTU ${seg.mtu})`);
      await this.ipIn(sw).batch(switchBridge(segBridge(si), seg.mtu));
    }
    // One veth per LAN machine: `eth0` in the machine, `pN` (management station: `pmgmt`) on the switch's bridge.
    const lanMachines = [
      {
        ns: routerNs(spec.name),
        port: 'p0',
        address: spec.lan.gateway,
        gateway: undefined as string | undefined,
      },
      { ns: mgmtNs(spec.name), port: 'pmgmt', address: mgmt, gateway: undefined as string | undefined },
      ...labLanMachines(spec).map((m, i) => ({
        ns: machineNs(spec.name, m.name),
        port: lanPort(i),
        address: m.address,
        gateway: spec.lan.gateway,
      })),
    ];
    for (const m of lanMachines) {
      if (await this.linkExists(m.ns, 'eth0')) continue;
      say(`wiring ${m.ns} to the LAN as ${m.address}`);
      await this.ipIn(m.ns).link.add({ name: 'eth0', kind: 'veth', mtu, peer: m.port, peerNetns: sw });
      await this.ipIn(sw).link.set(m.port, { mtu, master: 'lan', up: true });
      const cmds: IpCommand[] = [
        ipCmd.addrAdd('eth0', `${m.address}/${lan.prefix}`),
        ipCmd.linkSet('eth0', { up: true }),
      ];
      if (m.gateway) cmds.push(ipCmd.routeAdd({ dst: 'default', gateway: m.gateway }));
      await this.ipIn(m.ns).batch(cmds);
    }
    // Every host joins every segment on its next NIC: eth1 on the first segment, eth2 on the second, ...
    for (const [hi, h] of spec.hosts.entries()) {
      const ns = machineNs(spec.name, h.name);
      for (const [si, seg] of segments.entries()) {
        const nic = `eth${si + 1}`;
        if (await this.linkExists(ns, nic)) continue;
        const port = segmentPort(hi, si);
        say(`wiring ${h.name} to segment ${seg.name} as ${nic}`);
        await this.ipIn(ns).link.add({ name: nic, kind: 'veth', mtu: seg.mtu, peer: port, peerNetns: sw });
        await this.ipIn(sw).link.set(port, { mtu: seg.mtu, master: segBridge(si), up: true });
        await this.ipIn(ns).link.set(nic, { up: true });
      }
    }
    await this.upRouter(say);
    await this.ensureRelay(say);
    // etcd before the agents: a cluster agent takes its lease at start.
    if (spec.etcd.length) {
      await new LabEtcd(this.runner, spec).up(say, this.opts.restartEtcd);
      await this.opts.etcdReady?.();
    }
    for (const h of spec.hosts) await this.ensureAgent(h.name, h.address, say, this.hostAgentArgs(h.name));
    // A storage machine's servers first, so its agent finds them when it reports its pools.
    for (const [i, m] of spec.storage.entries()) {
      await this.storage.up(m, i, say);
      await this.ensureAgent(m.name, m.address, say, this.storage.agentArgs(m, i));
    }
    // The controller's path: relay socket -> management station -> LAN -> the agent's TLS listener.
    const reachable = this.opts.reachable;
    const cut: string[] = [];
    for (const h of agentMachines(spec)) {
      if (reachable && !(await reachable(h.name))) cut.push(`${h.name} (${labAgentTcp(h.address)})`);
    }
    if (cut.length)
      throw new UnavailableError(
        `the agent of ${cut.join(', ')} runs but does not answer across the lab LAN; its host's network may be cut (see \`vmlink status\`)`,
      );
    if (spec.controllers.length) {
      if (!this.opts.controllers)
        throw new InvalidRequestError(
          `lab ${spec.name} has cluster controllers: they need the CA and secrets key of the controller bringing the lab up`,
          'lab',
        );
      await new LabControllers(this.runner, spec).up(this.opts.controllers, say);
    }
  }

  /**
   * Starts host `host`'s agent unless it runs and answers (the lab's own start path, as `up` does): what a drill
   * uses to power a killed host back on. Its VMs' QEMU processes are not started here; the cluster decides.
   */
  async startHostAgent(host: string, ctx: OpContext = {}): Promise<void> {
    const h = this.spec.hosts.find((x) => x.name === host);
    if (!h) throw new InvalidRequestError(`lab ${this.spec.name} has no host ${host}`, `host/${host}`);
    await this.ensureAgent(h.name, h.address, ctx.progress ?? (() => {}), this.hostAgentArgs(h.name));
  }

  /** A compute host's agent arguments beyond every agent's: its pool roots, and its etcd in a cluster. */
  private hostAgentArgs(host: string): string[] {
    const join = this.opts.joinEtcd;
    const etcdArgs = join
      ? [
          '--etcd',
          labEtcdEndpoints(this.spec).join(','),
          '--cluster-heartbeat-s',
          String(join.heartbeatSeconds),
        ]
      : [];
    return [...labPoolRootArgs(this.spec.name, host), ...etcdArgs];
  }

  /** Kills every process in the lab's namespaces (agents, QEMU, dnsmasq), deletes them and the lab's files. */
  async down(ctx: OpContext = {}): Promise<void> {
    const say = ctx.progress ?? (() => {});
    const existing = new Set(await this.namespaces());
    const mine = labNamespaces(this.spec).filter((ns) => existing.has(ns));
    // Cluster controllers first (none acts on what follows), then agents, so none restarts what the next step kills.
    await new LabControllers(this.runner, this.spec).down(say);
    for (const h of agentMachines(this.spec)) await this.killRecorded(this.agentRecord(h.name));
    await this.killRecorded(this.relayRecord());
    for (const [i, m] of this.spec.storage.entries()) await this.storage.down(m, i, say);
    await new LabEtcd(this.runner, this.spec).down(say);
    for (const ns of mine) {
      const pids = await this.ip.namespaces.pids(ns);
      if (pids.length) say(`stopping ${pids.length} process(es) in ${ns}`);
      await killAll(pids);
    }
    // A VM's QEMU runs in a network namespace of its own (its jail), so it is not among the pids above: it is
    // found by its VM's uid, which nothing else runs as, and its id is given back.
    for (const h of this.spec.hosts) await this.stopHostVms(h.name, say);
    for (const ns of mine) {
      say(`deleting namespace ${ns}`);
      await this.ip.namespaces.del(ns);
    }
    const left = await this.existingNamespaces();
    if (left.length)
      throw new VmlinkError(
        'exec',
        `lab ${this.spec.name}: namespaces ${left.join(', ')} could not be deleted`,
        {
          subject: 'lab',
        },
      );
    rmSync(labRunDir(this.spec.name), { recursive: true, force: true });
    rmSync(join(stateDir(), 'lab', this.spec.name), { recursive: true, force: true });
  }

  /** Namespaces of this lab that exist now. */
  async existingNamespaces(): Promise<string[]> {
    const all = new Set(await this.namespaces());
    return labNamespaces(this.spec).filter((ns) => all.has(ns));
  }

  /** The router's address on the upstream network: the first host address that is not the upstream machine's. */
  routerUpstreamAddress(): string {
    const up = parseCidr(this.spec.upstream.cidr)!;
    const first = up.network + 1;
    return formatIpv4(formatIpv4(first) === this.spec.upstream.address ? first + 1 : first);
  }

  private async upRouter(say: (m: string) => void): Promise<void> {
    const { spec } = this;
    const rt = routerNs(spec.name);
    const upNs = upstreamNs(spec.name);
    const up = parseCidr(spec.upstream.cidr)!;
    if (!(await this.linkExists(rt, 'eth1'))) {
      say(`wiring the router to the upstream network ${spec.upstream.cidr}`);
      await this.ipIn(rt).link.add({ name: 'eth1', kind: 'veth', peer: 'eth0', peerNetns: upNs });
      await this.ipIn(rt).batch([
        ipCmd.addrAdd('eth1', `${this.routerUpstreamAddress()}/${up.prefix}`),
        ipCmd.linkSet('eth1', { up: true }),
      ]);
      // The upstream machine gets no route back into the LAN: like the internet, it sees only the router.
      await this.ipIn(upNs).batch([
        ipCmd.addrAdd('eth0', `${spec.upstream.address}/${up.prefix}`),
        ipCmd.linkSet('eth0', { up: true }),
      ]);
    }
    await new Sysctl(this.runner, rt).set('net.ipv4.ip_forward', 1);
    await new Nft(this.runner, rt).replaceTable('ip', ROUTER_TABLE, routerRuleset());
    await this.ensureLanDhcp(say);
  }

  private async ensureLanDhcp(say: (m: string) => void): Promise<void> {
    const { spec } = this;
    const dir = labRunDir(spec.name);
    const pidfile = join(dir, 'router-dnsmasq.pid');
    const conf = join(dir, 'router-dnsmasq.conf');
    if (await routerDnsmasq(pidfile, conf)) return;
    const range = lanDhcpRange(spec);
    say(`starting the LAN's DHCP server on the router (${range.start}-${range.end})`);
    await writeFileAtomic(
      conf,
      renderLanDhcpConf(spec, { pidFile: pidfile, leaseFile: join(dir, 'router-dnsmasq.leases') }),
      { mode: 0o644 },
    );
    await this.runner.run(['dnsmasq', `--conf-file=${conf}`], { netns: routerNs(spec.name) });
  }

  /** Records of a host's agent: `<host>.agent.json` (identity, what the lab trusts) and `<host>.agent.pid`. */
  private agentRecord(host: string): ProcessRecord {
    return processRecord(labAgentRecordBase(this.spec.name, host));
  }

  /** Records of the management relay: `relay.json` and `relay.pid`. */
  private relayRecord(): ProcessRecord {
    return processRecord(join(labRunDir(this.spec.name), 'relay'));
  }

  /** Starts the management relay (one process, one socket per host) unless it runs with these routes. */
  private async ensureRelay(say: (m: string) => void): Promise<void> {
    const { spec } = this;
    const dir = labRunDir(spec.name);
    // Each agent's TLS listener, and each etcd member's client port (TLS passes through the pipe untouched).
    const pipes = [
      ...agentMachines(spec).map((h) => ({
        socket: labAgentSocket(spec.name, h.name),
        to: labAgentTcp(h.address),
      })),
      ...spec.etcd.map((m) => ({
        socket: labEtcdSocket(spec.name, m.name),
        to: `https://${m.address}:${ETCD_CLIENT_PORT}`,
      })),
    ];
    const routes = pipes.flatMap((p) => ['--listen', `unix://${p.socket}`, '--to', p.to]);
    const argsFile = join(dir, 'relay.args');
    const record = this.relayRecord();
    const same = readFileCappedSync(argsFile) === JSON.stringify(routes);
    const socketsThere = pipes.every((p) => existsSync(p.socket));
    if (same && socketsThere && (await this.recordedRunning(record))) return;
    await this.killRecorded(record);
    say(`starting the management relay in ${mgmtNs(spec.name)} (${labMgmtAddress(spec)})`);
    for (const p of pipes) rmSync(p.socket, { force: true });
    const relay = await this.spawnRecorded(
      [process.execPath, VMLINK_BIN, 'lab', 'relay', ...routes],
      mgmtNs(spec.name),
      join(dir, 'relay.log'),
      record,
    );
    writeFileAtomicSync(argsFile, JSON.stringify(routes));
    const up = await pollUntil(
      async () => {
        if (pipes.every((p) => existsSync(p.socket))) return 'up';
        return relay && (await isRunning(relay)) ? undefined : 'exited';
      },
      { timeoutMs: LAB_RELAY_START_TIMEOUT_MS, intervalMs: 100 },
    );
    if (up === 'up') return;
    throw new TimeoutError(
      `the lab's management relay did not come up; see ${join(dir, 'relay.log')}`,
      'lab',
    );
  }

  private async ensureAgent(
    host: string,
    address: string,
    say: (m: string) => void,
    roleArgs: string[] = [],
  ): Promise<void> {
    const socket = labAgentOwnSocket(this.spec.name, host);
    const record = this.agentRecord(host);
    const restart = this.opts.restartAgents?.includes(host) ?? false;
    if (
      !restart &&
      (await this.recordedRunning(record)) &&
      (await agentAnswers(socket, LAB_HEALTH_TIMEOUT_MS))
    )
      return;
    await this.killRecorded(record);
    say(`starting the agent of ${host} in ${machineNs(this.spec.name, host)}`);
    const dir = labHostStateDir(this.spec.name, host);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    const agent = await this.spawnRecorded(
      [
        process.execPath,
        VMLINK_BIN,
        'agent',
        '--host',
        host,
        '--listen',
        `unix://${socket}`,
        '--listen-tcp',
        labAgentTcp(address),
        '--tls-dir',
        labHostTlsDir(this.spec.name, host),
        '--uplink',
        this.opts.uplinks?.[host] ?? 'eth0',
        '--state-dir',
        dir,
        // Lab machines share one kernel: each reports its own processes' CPU and memory.
        '--metrics-scope',
        'processes',
        ...roleArgs,
      ],
      machineNs(this.spec.name, host),
      join(labRunDir(this.spec.name), `${host}.agent.log`),
      record,
      { VMLINK_LOG: process.env.VMLINK_LOG ?? 'info' },
    );
    const up = await pollUntil(
      async () => {
        if (await agentAnswers(socket, LAB_HEALTH_TIMEOUT_MS)) return 'up';
        return agent && (await isRunning(agent)) ? undefined : 'exited';
      },
      { timeoutMs: LAB_AGENT_START_TIMEOUT_MS, intervalMs: 200 },
    );
    if (up === 'up') return;
    throw new TimeoutError(
      `the agent of ${host} did not come up; see ${join(labRunDir(this.spec.name), `${host}.agent.log`)}`,
      `host/${host}`,
    );
  }

  /**
   * Starts a lab process detached in `netns` and records its identity (pid + start time), so later runs signal
   * exactly this process and never one that reused its pid; the plain pidfile is for operators' tools. Undefined
   * when it exited at once.
   */
  private async spawnRecorded(
    argv: string[],
    netns: string,
    logFile: string,
    record: ProcessRecord,
    env?: Record<string, string>,
  ): Promise<ProcessIdentity | undefined> {
    const pid = await this.runner.spawnDetached(argv, { netns, logFile, ...(env ? { env } : {}) });
    const id = await identify(pid);
    if (id) {
      await writeIdentityFile(record.identity, id);
      await writeFileAtomic(record.pidfile, `${pid}\n`, { mode: 0o644 });
    }
    return id;
  }

  /** Whether the recorded process still runs. */
  private async recordedRunning(record: ProcessRecord): Promise<boolean> {
    return (await processFromIdentityFile(record.identity, LAB_PROCESS)) !== undefined;
  }

  /** Kills the QEMU of every VM lab host `host`'s agent recorded an id for, and frees those ids. */
  private async stopHostVms(host: string, say: (m: string) => void): Promise<void> {
    const ids = new VmIds({ file: vmIdsFile(labHostStateDir(this.spec.name, host)) });
    const vms = await ids.all();
    const pids = await processesOfUids(new Set(Object.values(vms)));
    if (pids.length) say(`stopping ${pids.length} VM process(es) of ${host}`);
    await killAll(pids);
    for (const name of Object.keys(vms)) await ids.free(name);
  }

  /** Kills the recorded process (if it is still that process) and forgets it. */
  private async killRecorded(record: ProcessRecord): Promise<void> {
    const id = await processFromIdentityFile(record.identity, LAB_PROCESS);
    if (id && (await signalProcess(id, 'SIGKILL'))) await waitExited(id, KILL_WAIT_MS);
    rmSync(record.identity, { force: true });
    rmSync(record.pidfile, { force: true });
  }

  private async namespaces(): Promise<string[]> {
    return this.ip.namespaces.list();
  }

  private async linkExists(ns: string, dev: string): Promise<boolean> {
    return (await this.ipIn(ns).link.get(dev)) !== undefined;
  }
}

/** Where the lab records a machine's agent: `<base>.json` (its identity) and `<base>.pid`. */
const labAgentRecordBase = (lab: string, host: string): string => join(labRunDir(lab), `${host}.agent`);

/** The file recording the identity of lab machine `host`'s agent (pid + start time), written by `lab up`. */
export const labAgentIdentityFile = (lab: string, host: string): string =>
  `${labAgentRecordBase(lab, host)}.json`;

/** What a lab agent process must be before the lab signals it: this checkout's vmlink. */
export const LAB_AGENT_PROCESS = LAB_PROCESS;

/**
 * Every machine on the lab LAN in the order of their switch ports (p1, p2, ...): hosts, peers, storage machines,
 * then etcd members and cluster controllers (last, so that older labs keep their ports).
 */
export const labLanMachines = (spec: LabSpec) => [
  ...spec.hosts,
  ...spec.peers,
  ...spec.storage,
  ...spec.etcd,
  ...spec.controllers,
];

/** The LAN switch's port of the `i`-th LAN machine (its eth0's veth peer). */
const lanPort = (i: number): string => `p${i + 1}`;

/** The switch's port of host number `hi`'s NIC on segment `si`. */
const segmentPort = (hi: number, si: number): string => `h${hi}s${si}`;

/**
 * The switch ports (in the switch namespace) that carry lab host `host`'s links: its LAN port and one per
 * segment. Setting them down cuts the host off as a pulled cable would; undefined for a machine that is no host.
 */
export function labHostSwitchPorts(spec: LabSpec, host: string): string[] | undefined {
  const hi = spec.hosts.findIndex((h) => h.name === host);
  if (hi < 0) return undefined;
  const li = labLanMachines(spec).findIndex((m) => m.name === host);
  return [lanPort(li), ...labSegments(spec).map((_, si) => segmentPort(hi, si))];
}

/** The lab machines that run a vmlink agent: its hosts, then its storage machines. */
const agentMachines = (spec: LabSpec) => [...spec.hosts, ...spec.storage];

/** A switch bridge of the lab: created with its MTU, then up. */
function switchBridge(name: string, mtu: number): IpCommand[] {
  return [ipCmd.linkAdd({ name, kind: 'bridge', mtu }), ipCmd.linkSet(name, { up: true })];
}

/** Where a lab process is recorded: its identity (trusted) and a plain pidfile (for people and their tools). */
interface ProcessRecord {
  identity: string;
  pidfile: string;
}

const processRecord = (base: string): ProcessRecord => ({ identity: `${base}.json`, pidfile: `${base}.pid` });

/** Switch bridge of lab segment `i`. */
const segBridge = (i: number): string => `seg${i}`;

/** SIGTERM to every process, SIGKILL to what is left after the grace; each checked by identity before a signal. */
async function killAll(pids: number[]): Promise<void> {
  const ids = (await Promise.all(pids.map(identify))).filter((i): i is ProcessIdentity => i !== undefined);
  for (const id of ids) await signalProcess(id, 'SIGTERM');
  const exited = async () => (await Promise.all(ids.map((id) => isRunning(id)))).every((r) => !r);
  if (await pollUntil(exited, { timeoutMs: DAEMON_STOP_GRACE_MS, intervalMs: 100 })) return;
  for (const id of ids) await signalProcess(id, 'SIGKILL');
  await pollUntil(exited, { timeoutMs: KILL_WAIT_MS, intervalMs: 50 });
}

async function agentAnswers(socket: string, timeoutMs: number): Promise<boolean> {
  if (!existsSync(socket)) return false;
  try {
    await new HttpClient(`unix://${socket}`, { timeoutMs }).get('/v1/health', AnyAnswerSchema);
    return true;
  } catch {
    return false;
  }
}
