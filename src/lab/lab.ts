import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { VmIds, vmIdsFile } from '../drivers/hypervisor/qemu/identity.js';
import { Ip, type IpCommand, ipCmd } from '../exec/ip.js';
import { Nft } from '../exec/nft.js';
import type { Runner } from '../exec/runner.js';
import { Sysctl } from '../exec/sysctl.js';
import { InvalidRequestError, UnavailableError, VmlinkError } from '../shared/errors.js';
import type { OpContext } from '../shared/op.js';
import { labHostStateDir, labRunDir, stateDir } from '../shared/paths.js';
import { processesOfUids } from '../shared/process.js';
import { writeFileAtomic } from '../shared/state-file.js';
import { formatIpv4, parseCidr } from '../spec/net.js';
import type { LabSpec } from '../spec/schema.js';
import { type LabCluster, LabControllers } from './cluster.js';
import { LabEtcd, labEtcdEndpoints } from './etcd.js';
import {
  agentMachines,
  labAgentTcp,
  labLanMachines,
  labLanMtu,
  labMgmtAddress,
  labSegments,
  lanPort,
  segBridge,
  segmentPort,
} from './layout.js';
import { labNamespaces, machineNs, mgmtNs, routerNs, switchNs, upstreamNs } from './names.js';
import { killAll, LabProcesses } from './processes.js';
import { lanDhcpRange, ROUTER_TABLE, renderLanDhcpConf, routerDnsmasq, routerRuleset } from './router.js';
import { LabStorage, labPoolRootArgs } from './storage.js';

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

/** The lab: network namespaces standing in for physical machines, built and removed without touching the root namespace. */
export class Lab {
  /** iproute2 in the caller's namespace: only namespaces themselves are managed from there. */
  private readonly ip: Ip;
  /** The servers of the lab's storage machines (tgtd, rpcbind, nfs-ganesha). */
  private readonly storage: LabStorage;
  /** Its agents and its management relay. */
  private readonly procs: LabProcesses;

  constructor(
    private readonly runner: Runner,
    readonly spec: LabSpec,
    private readonly opts: LabOptions = {},
  ) {
    this.ip = new Ip(runner);
    this.storage = new LabStorage(runner, spec);
    this.procs = new LabProcesses(runner, spec, opts);
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
    await this.procs.ensureRelay(say);
    // etcd before the agents: a cluster agent takes its lease at start.
    if (spec.etcd.length) {
      await new LabEtcd(this.runner, spec).up(say, this.opts.restartEtcd);
      await this.opts.etcdReady?.();
    }
    for (const h of spec.hosts)
      await this.procs.ensureAgent(h.name, h.address, say, this.hostAgentArgs(h.name));
    // A storage machine's servers first, so its agent finds them when it reports its pools.
    for (const [i, m] of spec.storage.entries()) {
      await this.storage.up(m, i, say);
      await this.procs.ensureAgent(m.name, m.address, say, this.storage.agentArgs(m, i));
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
    await this.procs.ensureAgent(h.name, h.address, ctx.progress ?? (() => {}), this.hostAgentArgs(h.name));
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
    for (const h of agentMachines(this.spec)) await this.procs.killAgent(h.name);
    await this.procs.killRelay();
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

  /** Kills the QEMU of every VM lab host `host`'s agent recorded an id for, and frees those ids. */
  private async stopHostVms(host: string, say: (m: string) => void): Promise<void> {
    const ids = new VmIds({ file: vmIdsFile(labHostStateDir(this.spec.name, host)) });
    const vms = await ids.all();
    const pids = await processesOfUids(new Set(Object.values(vms)));
    if (pids.length) say(`stopping ${pids.length} VM process(es) of ${host}`);
    await killAll(pids);
    for (const name of Object.keys(vms)) await ids.free(name);
  }

  private async namespaces(): Promise<string[]> {
    return this.ip.namespaces.list();
  }

  private async linkExists(ns: string, dev: string): Promise<boolean> {
    return (await this.ipIn(ns).link.get(dev)) !== undefined;
  }
}

/** A switch bridge of the lab: created with its MTU, then up. */
function switchBridge(name: string, mtu: number): IpCommand[] {
  return [ipCmd.linkAdd({ name, kind: 'bridge', mtu }), ipCmd.linkSet(name, { up: true })];
}
