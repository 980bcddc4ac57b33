// Open vSwitch network backend: vlan networks (one OVS bridge per trunk NIC, shared by every VLAN on it;
// VM access ports tag=ID, trunk ports trunks=...) and vxlan networks (one OVS bridge per network, one
// VXLAN tunnel port per remote VTEP, protected so NORMAL never forwards tunnel to tunnel). The agent's own
// ovsdb-server + ovs-vswitchd run in its namespace (see daemon.ts); every bridge uses the userspace
// (netdev) datapath unless the kernel has the openvswitch module.
//
// With the userspace datapath, VXLAN only works when the underlay NIC is itself a port of an OVS bridge
// and the VTEP address sits on that bridge's internal port (measured: see docs/shared DESIGN.md). So the
// first vxlan network moves the underlay NIC's IPv4 addresses and routes onto `vlu-<hash>` (same MAC as
// the NIC) and the last one gives them back.
//
// State: <stateDir>/networks/<name>/ovs.json (not network.json: the linux backend reads those) and
// <stateDir>/ovs/underlay.json; OVS files under <stateDir>/ovs/, removed with the last network.
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertIfName, Ip, type IpCommand, type IpRoute, ipCmd, routeSpecOf } from '../../../exec/ip.js';
import { type OvsPort, parseFlowDump, type VsctlCommand, vsctlCmd } from '../../../exec/ovs.js';
import type { Runner } from '../../../exec/runner.js';
import {
  ConflictError,
  InvalidRequestError,
  NotFoundError,
  UnsupportedError,
} from '../../../shared/errors.js';
import { log } from '../../../shared/log.js';
import type { HostCapabilities, NetworkConfig, ObservedNetwork } from '../../../shared/model.js';
import { Reverter } from '../../../shared/revert.js';
import { DnsmasqManager, dnsmasqPaths } from '../linux/dnsmasq.js';
import { LinuxNetworkDriver } from '../linux/driver.js';
import { moveCommands } from '../linux/move.js';
import type { NetworkDriver, OpContext, PortConfig } from '../types.js';
import { type OvsDaemonStatus, OvsDaemons } from './daemon.js';
import { type BridgeRole, buildFlows, countOurFlows, flowPorts } from './flows.js';

/** Options of `OvsNetworkDriver`. */
export interface OvsNetworkDriverOptions {
  runner: Runner;
  /** Agent state directory: networks under `<stateDir>/networks/<name>/`, OVS under `<stateDir>/ovs/`. */
  stateDir: string;
  /** Network namespace to manage (the OVS daemons run in it); undefined = the process's own. */
  netns?: string;
  /** Force the datapath type; default: kernel when the openvswitch module exists, else userspace. */
  datapath?: 'netdev' | 'system';
}

/** Network modes the OVS backend realises. */
export const OVS_MODES = ['vlan', 'vxlan'] as const;

/** What the driver persists per network. */
export interface OvsNetworkState {
  version: 1;
  driver: 'ovs';
  config: NetworkConfig;
  configHash: string;
}

/** The underlay moved onto an OVS bridge for the userspace datapath's VXLAN (one per underlay NIC). */
export interface UnderlayState {
  nic: string;
  bridge: string;
  /** IPv4 addresses and routes that were on the NIC. */
  addrs: string[];
  routes: IpRoute[];
}

// external_ids keys vmlink puts on what it creates.
const ROLE = 'vmlink-role';
const NET = 'vmlink-net';
const WANT_TAG = 'vmlink-tag';
const WANT_TRUNKS = 'vmlink-trunks';

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

const hex8 = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 8);

/** OVS bridge holding the underlay NIC and the VTEP address (userspace datapath only). */
export const underlayBridgeName = (nic: string): string => `vlu-${hex8(nic)}`;
/** Internal port carrying a vlan/vxlan network's gateway address (gateway host only). */
export const gatewayPortName = (network: string): string => `vli-${hex8(network)}`;
/** Tunnel port of a vxlan network towards one remote VTEP (<= 15 chars). */
export const tunnelPortName = (device: string, remote: string): string =>
  `${device.slice(0, 8)}-${hex8(remote).slice(0, 6)}`;

/** Refuses a config the OVS backend cannot realise, before any change, naming the field. */
export function validateOvsNetworkConfig(cfg: NetworkConfig): void {
  const at = `networks.${cfg.name}`;
  if (!NAME.test(cfg.name))
    throw new InvalidRequestError(`invalid network name ${JSON.stringify(cfg.name)}`, 'name');
  if (!(OVS_MODES as readonly string[]).includes(cfg.mode))
    throw new UnsupportedError(
      `${at}.mode: the ovs backend realises ${OVS_MODES.join(' and ')} networks, not ${cfg.mode}; use backend linux`,
      `${at}.mode`,
    );
  assertIfName(cfg.bridge, `${at}.bridge`);
  if (!Number.isInteger(cfg.mtu) || cfg.mtu < 68 || cfg.mtu > 65535)
    throw new InvalidRequestError(`${at}.mtu: ${cfg.mtu} out of range 68-65535`, `${at}.mtu`);
  if (cfg.nat || cfg.forwards.length > 0)
    throw new UnsupportedError(
      `${at}: NAT and port forwards need the host's nftables table, which the linux backend owns; the ovs backend only routes on-link (gateway without nat)`,
      `${at}.gateway.nat`,
    );
  if (cfg.mode === 'vlan') {
    const v = cfg.vlan;
    if (!v)
      throw new InvalidRequestError(`${at}.vlan: a vlan network needs its VLAN id and trunk`, `${at}.vlan`);
    if (!Number.isInteger(v.id) || v.id < 1 || v.id > 4094)
      throw new InvalidRequestError(`${at}.vlan: ${v.id} out of range 1-4094`, `${at}.vlan`);
    assertIfName(v.trunk, `${at}.vlan.trunk`);
    if (v.trunk === cfg.bridge)
      throw new InvalidRequestError(`${at}.vlan.trunk: cannot be the bridge itself`, `${at}.vlan.trunk`);
  } else {
    const x = cfg.vxlan;
    if (!x)
      throw new InvalidRequestError(`${at}.vxlan: a vxlan network needs its VNI and VTEPs`, `${at}.vxlan`);
    if (!Number.isInteger(x.vni) || x.vni < 1 || x.vni > 16_777_215)
      throw new InvalidRequestError(`${at}.vni: ${x.vni} out of range 1-16777215`, `${at}.vni`);
    assertIfName(x.underlay, `${at}.vxlan.underlay`);
    for (const a of [x.local, ...x.remotes])
      if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(a))
        throw new InvalidRequestError(
          `${at}.vxlan: ${JSON.stringify(a)} is not an IPv4 address`,
          `${at}.vxlan`,
        );
    if (!Number.isInteger(x.port) || x.port < 1 || x.port > 65535)
      throw new InvalidRequestError(`${at}.vxlan.port: ${x.port} out of range`, `${at}.vxlan.port`);
  }
}

/** The Open vSwitch network backend (vlan and vxlan networks). */
export class OvsNetworkDriver implements NetworkDriver {
  /** The agent's OVS daemons (exposed for the agent's capability report and for tests). */
  readonly daemons: OvsDaemons;
  private readonly runner: Runner;
  private readonly stateDir: string;
  private readonly netns: string | undefined;
  private readonly ip: Ip;
  private readonly dnsmasq: DnsmasqManager;
  private readonly kernel: LinuxNetworkDriver;
  private queue: Promise<unknown> = Promise.resolve();
  /** Last daemon start, for reports: how long it took. */
  lastStart: OvsDaemonStatus | undefined;

  constructor(opts: OvsNetworkDriverOptions) {
    this.runner = opts.runner;
    this.stateDir = opts.stateDir;
    this.netns = opts.netns;
    this.ip = new Ip(opts.runner, opts.netns);
    this.dnsmasq = new DnsmasqManager(opts.runner, opts.netns);
    this.daemons = new OvsDaemons(opts.runner, opts.stateDir, opts.netns, opts.datapath);
    // Only for its kernel feature probe (a scratch namespace); it never sees our networks.
    this.kernel = new LinuxNetworkDriver({ runner: opts.runner, stateDir: opts.stateDir, netns: opts.netns });
  }

  private get ovs() {
    return this.daemons.ovs;
  }

  /** Modes this backend realises. */
  supportedModes(): NetworkConfig['mode'][] {
    return [...OVS_MODES];
  }

  // Networks.

  /** Creates the network or converges it to `cfg`; undoes this call's changes on failure. */
  async ensureNetwork(cfg: NetworkConfig, configHash: string, ctx?: OpContext): Promise<void> {
    validateOvsNetworkConfig(cfg);
    await this.serial(async () => {
      await this.ready(ctx);
      await this.doEnsure(cfg, configHash, ctx);
    });
  }

  /** Removes the network (and the OVS daemons with the last network); a missing network is fine. */
  async deleteNetwork(name: string, ctx?: OpContext): Promise<void> {
    if (!NAME.test(name))
      throw new InvalidRequestError(`invalid network name ${JSON.stringify(name)}`, 'name');
    await this.serial(async () => {
      ctx?.signal?.throwIfAborted();
      const state = await this.readState(name);
      if (state) {
        ctx?.progress?.(`removing network ${name}`);
        await this.ready(ctx);
        await this.teardown(
          state,
          (await this.readAllStates()).filter((s) => s.config.name !== name),
        );
      }
      await rm(this.netDir(name), { recursive: true, force: true });
      if ((await this.readAllStates()).length === 0) {
        const underlays = await this.readUnderlays();
        if (underlays.length === 0) await this.daemons.destroy();
      }
    });
  }

  /** Persisted networks with live checks of the daemons, bridges, ports, tunnels, gateway and flows. */
  async listNetworks(): Promise<ObservedNetwork[]> {
    const states = await this.readAllStates();
    if (states.length === 0) return [];
    const daemonProblems = await this.daemons.problems();
    if (daemonProblems.length)
      return states.map((s) => ({
        name: s.config.name,
        bridge: s.config.bridge,
        configHash: s.configHash,
        problems: [...daemonProblems],
      }));
    const [bridges, ports, links, addrs] = await Promise.all([
      this.ovs.bridges(),
      this.ovs.ports(),
      this.ip.link.list(),
      this.ip.addr.list({ family: 'inet' }),
    ]);
    const dp = await this.daemons.datapathType();
    const linkNames = new Set(links.map((l) => l.name));
    const portByName = new Map(ports.map((p) => [p.name, p]));
    const flowCount = new Map<string, number>();
    const out: ObservedNetwork[] = [];
    for (const s of states) {
      const c = s.config;
      const problems: string[] = [];
      const br = bridges.find((b) => b.name === c.bridge);
      if (!br) problems.push(`OVS bridge ${c.bridge} missing`);
      else {
        if (br.datapathType !== dp)
          problems.push(`OVS bridge ${c.bridge} datapath is ${br.datapathType || 'system'}, want ${dp}`);
        if (!flowCount.has(c.bridge)) {
          const want = buildFlows(roleOf(c), flowPorts(ports, c.bridge)).length;
          const have = countOurFlows(parseFlowDump(await this.ovs.dumpFlows(c.bridge)));
          flowCount.set(c.bridge, have - want);
        }
        if (flowCount.get(c.bridge) !== 0) problems.push(`OpenFlow table of ${c.bridge} is not vmlink's`);
      }
      const portProblem = (name: string, what: string, check?: (p: OvsPort) => string | undefined) => {
        const p = portByName.get(name);
        if (!p || p.bridge !== c.bridge) return problems.push(`${what} ${name} is not a port of ${c.bridge}`);
        if (p.error) return problems.push(`${what} ${name}: ${p.error}`);
        const why = check?.(p);
        if (why) problems.push(`${what} ${name} ${why}`);
      };
      if (c.mode === 'vlan') {
        const v = c.vlan!;
        if (!linkNames.has(v.trunk)) problems.push(`trunk NIC ${v.trunk} missing`);
        portProblem(v.trunk, 'trunk NIC', (p) =>
          p.trunks.length && !p.trunks.includes(v.id) ? `does not carry VLAN ${v.id}` : undefined,
        );
      } else {
        const x = c.vxlan!;
        for (const remote of x.remotes)
          portProblem(tunnelPortName(x.device, remote), 'tunnel', (p) =>
            p.type !== 'vxlan' || p.options.remote_ip !== remote || p.options.key !== String(x.vni)
              ? 'has the wrong VXLAN settings'
              : undefined,
          );
        if (dp === 'netdev') {
          const ub = underlayBridgeName(x.underlay);
          if (!bridges.some((b) => b.name === ub)) problems.push(`underlay bridge ${ub} missing`);
          else if (!addrs.some((a) => a.dev === ub && a.local === x.local))
            problems.push(`VTEP address ${x.local} missing on ${ub}`);
        }
      }
      if (c.subnet) {
        const gw = gatewayPortName(c.name);
        portProblem(gw, 'gateway port', (p) =>
          c.mode === 'vlan' && p.tag !== c.vlan!.id
            ? `has tag ${p.tag ?? 'none'}, want ${c.vlan!.id}`
            : undefined,
        );
        if (
          !addrs.some(
            (a) => a.dev === gw && a.local === c.subnet!.gateway && a.prefixLen === c.subnet!.prefixLength,
          )
        )
          problems.push(`address ${c.subnet.gateway}/${c.subnet.prefixLength} missing on ${gw}`);
        if ((await this.dnsmasq.pid(dnsmasqPaths(this.stateDir, c.name))) === undefined)
          problems.push('dnsmasq not running');
      }
      out.push({ name: c.name, bridge: c.bridge, configHash: s.configHash, problems });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The OpenFlow table of the network's bridge (`ovs-ofctl dump-flows --names`, durations dropped). */
  async flows(networkName: string): Promise<string> {
    const s = await this.readState(networkName);
    if (!s) throw new NotFoundError('network', networkName);
    if ((await this.daemons.pid('ovs-vswitchd')) === undefined)
      throw new UnsupportedError(`ovs-vswitchd is not running on this host; apply again to restart it`);
    const lines = parseFlowDump(await this.ovs.dumpFlows(s.config.bridge, { names: true }), true);
    const sharers = (await this.readAllStates()).filter((x) => x.config.bridge === s.config.bridge);
    const head = `# ${s.config.bridge} (${roleOf(s.config)} bridge of ${sharers.map((x) => x.config.name).join(', ')})`;
    return `${[head, ...lines].join('\n')}\n`;
  }

  // Ports.

  /** Creates the persistent tap (vnet_hdr) if missing and makes it an access (`vlan`) or trunk (`trunks`) port. */
  async ensurePort(port: PortConfig, ctx?: OpContext): Promise<void> {
    assertIfName(port.tap, 'tap');
    assertIfName(port.bridge, 'bridge');
    if (port.vlan !== undefined && port.trunks !== undefined)
      throw new InvalidRequestError(`port ${port.tap}: either an access VLAN or trunks, not both`, 'tap');
    for (const v of [...(port.vlan === undefined ? [] : [port.vlan]), ...(port.trunks ?? [])])
      if (!Number.isInteger(v) || v < 1 || v > 4094)
        throw new InvalidRequestError(`port ${port.tap}: VLAN ${v} out of range 1-4094`, 'tap');
    if (port.trunks !== undefined && port.trunks.length === 0)
      throw new InvalidRequestError(`port ${port.tap}: a trunk port needs at least one VLAN`, 'tap');
    ctx?.signal?.throwIfAborted();
    await this.serial(async () => {
      const states = await this.readAllStates();
      if (!states.some((s) => s.config.bridge === port.bridge))
        throw new NotFoundError('bridge', port.bridge);
      await this.ready(ctx);
      if (!(await this.ovs.bridges()).some((b) => b.name === port.bridge))
        throw new NotFoundError('bridge', port.bridge);
      const r = new Reverter();
      try {
        let link = await this.ip.link.get(port.tap);
        // A veth end is accepted as is (labs attach namespace "VMs" that way); anything else must be a tap.
        if (link && link.kind !== 'tun' && link.kind !== 'veth')
          throw new ConflictError(`device ${port.tap} exists and is not a tap`, port.tap);
        if (!link) {
          await this.ip.tuntap.add({ name: port.tap, mode: 'tap', vnetHdr: true });
          r.add(() => this.ip.tuntap.del(port.tap));
          link = await this.ip.link.get(port.tap);
        }
        if (link?.mtu !== port.mtu || !link.up) await this.ip.link.set(port.tap, { mtu: port.mtu, up: true });
        const existing = (await this.ovs.ports()).find((p) => p.name === port.tap);
        const cmds: VsctlCommand[] = [];
        if (existing?.bridge && existing.bridge !== port.bridge) cmds.push(...vsctlCmd.delPort(port.tap));
        const trunks = port.trunks ? [...new Set(port.trunks)].sort((a, b) => a - b) : undefined;
        cmds.push(
          ...vsctlCmd.addPort(port.bridge, port.tap, {
            ...(port.vlan !== undefined ? { tag: port.vlan, vlanMode: 'access' as const } : {}),
            ...(trunks ? { trunks, vlanMode: 'trunk' as const } : {}),
            externalIds: {
              [ROLE]: 'vm',
              [WANT_TAG]: port.vlan === undefined ? '' : String(port.vlan),
              [WANT_TRUNKS]: trunks ? trunks.join('-') : '',
            },
          }),
        );
        const clear: ('tag' | 'trunks' | 'vlan_mode')[] = [];
        if (port.vlan === undefined) clear.push('tag');
        if (!trunks) clear.push('trunks');
        if (port.vlan === undefined && !trunks) clear.push('vlan_mode');
        cmds.push(...vsctlCmd.clearPort(port.tap, clear));
        await this.ovs.vsctl(cmds);
        r.add(() => this.ovs.vsctl(vsctlCmd.delPort(port.tap), { allowFailure: true }));
        await this.syncFlows(port.bridge, states);
        r.success();
      } finally {
        await r.fail();
      }
    });
  }

  /** Removes the port from OVS and deletes its tap (a veth end is only unplugged); missing is fine. */
  async deletePort(tap: string, ctx?: OpContext): Promise<void> {
    assertIfName(tap, 'tap');
    ctx?.signal?.throwIfAborted();
    await this.serial(async () => {
      const link = await this.ip.link.get(tap);
      if (link && link.kind !== 'tun' && link.kind !== 'veth')
        throw new ConflictError(`device ${tap} is not a tap; not deleting it`, tap);
      if ((await this.daemons.pid('ovsdb-server')) !== undefined) {
        const p = (await this.ovs.ports()).find((x) => x.name === tap);
        if (p) {
          await this.ready(ctx);
          await this.ovs.vsctl(vsctlCmd.delPort(tap));
          if (p.bridge) await this.syncFlows(p.bridge, await this.readAllStates());
        }
      }
      if (link?.kind === 'tun') await this.ip.tuntap.del(tap, link.tunType === 'tun' ? 'tun' : 'tap');
    });
  }

  /** Whether the device exists and is a working port of `bridge` with the VLAN settings ensurePort gave it. */
  async portAttached(tap: string, bridge: string): Promise<boolean> {
    assertIfName(tap, 'tap');
    const link = await this.ip.link.get(tap);
    if (!link) return false;
    if ((await this.daemons.pid('ovs-vswitchd')) === undefined) return false;
    if ((await this.daemons.pid('ovsdb-server')) === undefined) return false;
    const p = (await this.ovs.ports()).find((x) => x.name === tap);
    if (!p || p.bridge !== bridge || p.error || (p.ofport ?? -1) < 1) return false;
    const wantTag = p.externalIds[WANT_TAG] ?? '';
    const wantTrunks = p.externalIds[WANT_TRUNKS] ?? '';
    return (
      wantTag === (p.tag === undefined ? '' : String(p.tag)) &&
      wantTrunks === [...p.trunks].sort((a, b) => a - b).join('-')
    );
  }

  // Host.

  /** Kernel network features (probed like the linux backend) plus `ovs` and `ovsKernelDatapath`. */
  async capabilities(): Promise<HostCapabilities['network']> {
    const caps = { ...(await this.kernel.capabilities()) };
    const ovs = await this.runner
      .run(['ovs-vswitchd', '--version'], { allowFailure: true })
      .catch(() => undefined);
    caps.ovs = ovs?.code === 0;
    caps.ovsKernelDatapath = (await this.daemons.datapathType()) === 'system';
    return caps;
  }

  // Internals.

  /** Starts or adopts the daemons; after a vswitchd (re)start, converges every network (flows, addresses). */
  private async ready(ctx?: OpContext): Promise<void> {
    const st = await this.daemons.ensureRunning();
    if (st['ovs-vswitchd'] !== 'started') return;
    this.lastStart = st;
    ctx?.progress?.(`started Open vSwitch in ${st.startMs} ms`);
    log.info({ stateDir: this.stateDir, netns: this.netns, ms: st.startMs }, 'ovs daemons started');
    // A restarted vswitchd re-creates bridges and ports from the database, but not the OpenFlow tables
    // nor the addresses of internal ports (new tap devices): put them back.
    for (const s of await this.readAllStates()) {
      try {
        await this.doEnsure(s.config, s.configHash, ctx, true);
      } catch (err) {
        log.warn({ err, network: s.config.name }, 'ovs: re-converging after restart failed');
      }
    }
  }

  private async doEnsure(
    cfg: NetworkConfig,
    configHash: string,
    ctx?: OpContext,
    restarted = false,
  ): Promise<void> {
    ctx?.signal?.throwIfAborted();
    const states = await this.readAllStates();
    const others = states.filter((s) => s.config.name !== cfg.name);
    for (const o of others) {
      if (o.config.bridge !== cfg.bridge) continue;
      if (cfg.mode !== 'vlan' || o.config.mode !== 'vlan')
        throw new ConflictError(
          `bridge ${cfg.bridge} already belongs to network ${o.config.name}`,
          `networks.${cfg.name}.bridge`,
        );
      if (o.config.vlan!.trunk !== cfg.vlan!.trunk)
        throw new ConflictError(
          `bridge ${cfg.bridge} already belongs to trunk ${o.config.vlan!.trunk} (network ${o.config.name})`,
          `networks.${cfg.name}.bridge`,
        );
      if (o.config.vlan!.id === cfg.vlan!.id)
        throw new ConflictError(
          `VLAN ${cfg.vlan!.id} on ${cfg.vlan!.trunk} already belongs to network ${o.config.name}`,
          `networks.${cfg.name}.vlan`,
        );
    }
    if (cfg.mode === 'vlan') {
      const trunkClash = others.find(
        (o) =>
          o.config.mode === 'vlan' &&
          o.config.vlan!.trunk === cfg.vlan!.trunk &&
          o.config.bridge !== cfg.bridge,
      );
      if (trunkClash)
        throw new ConflictError(
          `trunk ${cfg.vlan!.trunk} already carries bridge ${trunkClash.config.bridge} (network ${trunkClash.config.name})`,
          `networks.${cfg.name}.vlan.trunk`,
        );
    }
    const prev = states.find((s) => s.config.name === cfg.name);
    if (
      prev &&
      (prev.config.bridge !== cfg.bridge ||
        prev.config.mode !== cfg.mode ||
        prev.config.vlan?.trunk !== cfg.vlan?.trunk ||
        prev.config.vxlan?.underlay !== cfg.vxlan?.underlay)
    ) {
      ctx?.progress?.(`network ${cfg.name}: replacing ${prev.config.mode} on ${prev.config.bridge}`);
      await this.teardown(prev, others);
    }

    const dp = await this.daemons.datapathType();
    const r = new Reverter();
    try {
      const [bridges, ports, links] = await Promise.all([
        this.ovs.bridges(),
        this.ovs.ports(),
        this.ip.link.list(),
      ]);
      const bridgeExists = bridges.some((b) => b.name === cfg.bridge);
      // A kernel device of that name that is not our OVS bridge (e.g. a linux bridge): refuse.
      if (!bridgeExists && links.some((l) => l.name === cfg.bridge))
        throw new ConflictError(
          `device ${cfg.bridge} exists and is not an OVS bridge of vmlink`,
          `networks.${cfg.name}.bridge`,
        );
      const cmds: VsctlCommand[] = [
        ...vsctlCmd.addBr(cfg.bridge, {
          datapathType: dp,
          externalIds: { [ROLE]: cfg.mode },
          // Unknown ports and the LOCAL port switch nothing: the flow table (default drop) decides.
          otherConfig: {},
        }),
      ];
      if (!bridgeExists) r.add(() => this.ovs.vsctl(vsctlCmd.delBr(cfg.bridge), { allowFailure: true }));

      if (cfg.mode === 'vlan') {
        const v = cfg.vlan!;
        const nic = links.find((l) => l.name === v.trunk);
        if (!nic) throw new NotFoundError('trunk NIC', v.trunk);
        if (nic.master)
          throw new ConflictError(
            `trunk NIC ${v.trunk} is a port of ${nic.master}`,
            `networks.${cfg.name}.vlan.trunk`,
          );
        const onOther = ports.find((p) => p.name === v.trunk && p.bridge && p.bridge !== cfg.bridge);
        if (onOther)
          throw new ConflictError(
            `trunk NIC ${v.trunk} is a port of OVS bridge ${onOther.bridge}`,
            `networks.${cfg.name}.vlan.trunk`,
          );
        const vlans = vlansOn(cfg.bridge, [
          ...others,
          { version: 1, driver: 'ovs', config: cfg, configHash },
        ]);
        cmds.push(
          ...vsctlCmd.addPort(cfg.bridge, v.trunk, {
            vlanMode: 'trunk',
            trunks: vlans,
            externalIds: { [ROLE]: 'trunk' },
          }),
        );
        if (!nic.up) await this.ip.link.set(v.trunk, { up: true });
      } else {
        const x = cfg.vxlan!;
        if (dp === 'netdev') await this.ensureUnderlay(x.underlay, r);
        const want = new Map(x.remotes.map((rm) => [tunnelPortName(x.device, rm), rm]));
        for (const p of ports)
          if (p.bridge === cfg.bridge && p.externalIds[ROLE] === 'tunnel' && !want.has(p.name))
            cmds.push(...vsctlCmd.delPort(p.name, cfg.bridge));
        for (const [name, remote] of want) {
          const options: Record<string, string> = {
            remote_ip: remote,
            key: String(x.vni),
            local_ip: x.local,
          };
          if (x.port !== 4789) options.dst_port = String(x.port);
          const have = ports.find((p) => p.name === name);
          if (have?.bridge && have.bridge !== cfg.bridge) cmds.push(...vsctlCmd.delPort(name));
          // Options replace as a whole: drop stale keys (dst_port) first.
          if (have?.bridge === cfg.bridge) {
            const stale = Object.keys(have.options).filter((k) => !(k in options));
            cmds.push(...vsctlCmd.removeKeys('Interface', name, 'options', stale));
          }
          cmds.push(
            ...vsctlCmd.addPort(cfg.bridge, name, {
              type: 'vxlan',
              options,
              protected: true,
              externalIds: { [ROLE]: 'tunnel', [NET]: cfg.name },
            }),
          );
        }
      }
      await this.ovs.vsctl(cmds);
      // The bridge's own internal port (a kernel device) carries nothing but is kept at the network MTU.
      await this.ip.link.set(cfg.bridge, { mtu: cfg.mtu }).catch(() => undefined);
      ctx?.signal?.throwIfAborted();

      const paths = dnsmasqPaths(this.stateDir, cfg.name);
      let readdressed = false;
      if (cfg.subnet) readdressed = await this.ensureGateway(cfg, r);
      else await this.removeGateway(cfg.name);

      r.add(async () => {
        if (prev) await this.writeState(prev);
        else await rm(this.netDir(cfg.name), { recursive: true, force: true });
      });
      await this.writeState({ version: 1, driver: 'ovs', config: cfg, configHash });
      if (cfg.subnet) {
        const dcfg: NetworkConfig = { ...cfg, bridge: gatewayPortName(cfg.name) };
        const did = await this.dnsmasq.ensure(dcfg, paths, readdressed || restarted);
        if (did !== 'unchanged') {
          ctx?.progress?.(`network ${cfg.name}: dnsmasq ${did}`);
          r.add(() => this.dnsmasq.stop(paths));
        }
      }
      await this.syncFlows(cfg.bridge, await this.readAllStates());
      r.success();
    } finally {
      await r.fail();
    }
  }

  /** Gateway host: an internal port (tag=VLAN on a vlan bridge) with exactly the gateway address; true when re-addressed. */
  private async ensureGateway(cfg: NetworkConfig, r: Reverter): Promise<boolean> {
    const gw = gatewayPortName(cfg.name);
    const s = cfg.subnet!;
    const existed = (await this.ovs.ports()).some((p) => p.name === gw && p.bridge === cfg.bridge);
    await this.ovs.vsctl([
      ...(existed ? [] : vsctlCmd.delPort(gw)),
      ...vsctlCmd.addPort(cfg.bridge, gw, {
        type: 'internal',
        ...(cfg.mode === 'vlan' ? { tag: cfg.vlan!.id, vlanMode: 'access' as const } : {}),
        externalIds: { [ROLE]: 'gateway', [NET]: cfg.name },
      }),
    ]);
    if (!existed) r.add(() => this.ovs.vsctl(vsctlCmd.delPort(gw), { allowFailure: true }));
    const want = `${s.gateway}/${s.prefixLength}`;
    const have = (await this.ip.addr.list({ dev: gw, family: 'inet' })).filter((a) => a.scope === 'global');
    const cmds: IpCommand[] = [
      ipCmd.linkSet(gw, { mtu: cfg.mtu, up: true }),
      ...have
        .filter((a) => `${a.local}/${a.prefixLen}` !== want)
        .map((a) => ipCmd.addrDel(gw, `${a.local}/${a.prefixLen}`)),
    ];
    const add = !have.some((a) => `${a.local}/${a.prefixLen}` === want);
    if (add) cmds.push(ipCmd.addrAdd(gw, want));
    await this.ip.batch(cmds);
    return add || cmds.length > 1;
  }

  private async removeGateway(network: string): Promise<void> {
    await this.dnsmasq.stop(dnsmasqPaths(this.stateDir, network));
    await this.ovs.vsctl(vsctlCmd.delPort(gatewayPortName(network)));
  }

  /** Makes the underlay NIC a port of its OVS bridge and moves its IPv4 addresses and routes there. */
  private async ensureUnderlay(nic: string, r: Reverter): Promise<void> {
    const bridge = underlayBridgeName(nic);
    const link = await this.ip.link.get(nic);
    if (!link) throw new NotFoundError('underlay NIC', nic);
    if (link.master)
      throw new ConflictError(
        `underlay NIC ${nic} is a port of ${link.master}; the ovs backend needs it free for its VXLAN underlay`,
        nic,
      );
    const known = (await this.readUnderlays()).find((u) => u.nic === nic);
    const addrs = (await this.ip.addr.list({ dev: nic, family: 'inet' })).filter((a) => a.scope === 'global');
    const routes = addrs.length ? movable(await this.ip.route.list({ dev: nic })) : [];
    const exists = (await this.ovs.bridges()).some((b) => b.name === bridge);
    await this.ovs.vsctl([
      ...vsctlCmd.addBr(bridge, {
        datapathType: 'netdev',
        externalIds: { [ROLE]: 'underlay' },
        // Same MAC as the NIC: neighbours' ARP caches stay right.
        otherConfig: link.address ? { hwaddr: link.address } : {},
      }),
      ...vsctlCmd.addPort(bridge, nic, { externalIds: { [ROLE]: 'underlay-nic' } }),
    ]);
    if (!exists) r.add(() => this.releaseUnderlay(nic));
    const state: UnderlayState = {
      nic,
      bridge,
      addrs: [...new Set([...(known?.addrs ?? []), ...addrs.map((a) => `${a.local}/${a.prefixLen}`)])],
      routes: [...(known?.routes ?? []), ...routes],
    };
    await this.writeUnderlay(state);
    // After a vswitchd restart the internal port is a new device: put back what it had.
    const onBridge = (await this.ip.addr.list({ dev: bridge, family: 'inet' })).map(
      (a) => `${a.local}/${a.prefixLen}`,
    );
    const missing = state.addrs.filter(
      (a) => !addrs.some((x) => `${x.local}/${x.prefixLen}` === a) && !onBridge.includes(a),
    );
    const cmds: IpCommand[] = [
      ipCmd.linkSet(bridge, { mtu: link.mtu, up: true }),
      ...moveCommands(
        nic,
        bridge,
        addrs.map((a) => `${a.local}/${a.prefixLen}`),
        routes,
      ),
      ...missing.map((a) => ipCmd.addrAdd(bridge, a)),
    ];
    if (missing.length) cmds.push(...state.routes.map((rt) => ipCmd.routeReplace(routeSpecOf(rt, bridge))));
    await this.ip.batch(cmds);
  }

  /** Gives the underlay bridge's addresses and routes back to the NIC and deletes the bridge. */
  private async releaseUnderlay(nic: string): Promise<void> {
    const bridge = underlayBridgeName(nic);
    const [br, ul] = await Promise.all([this.ip.link.get(bridge), this.ip.link.get(nic)]);
    if (br && ul) {
      const addrs = (await this.ip.addr.list({ dev: bridge, family: 'inet' })).filter(
        (a) => a.scope === 'global',
      );
      const routes = addrs.length ? movable(await this.ip.route.list({ dev: bridge })) : [];
      await this.ip.batch(
        moveCommands(
          bridge,
          nic,
          addrs.map((a) => `${a.local}/${a.prefixLen}`),
          routes,
        ),
      );
    }
    await this.ovs.vsctl(vsctlCmd.delBr(bridge));
    await rm(join(this.daemons.paths.dir, `underlay-${nic}.json`), { force: true });
  }

  /** Takes a network's realisation down; `others` are the networks that stay. */
  private async teardown(state: OvsNetworkState, others: OvsNetworkState[]): Promise<void> {
    const c = state.config;
    await this.removeGateway(c.name);
    const sharers = others.filter((o) => o.config.bridge === c.bridge);
    if (sharers.length) {
      // A shared vlan bridge stays; its trunk carries one VLAN less.
      await this.ovs.vsctl(vsctlCmd.setPort(c.vlan!.trunk, { trunks: vlansOn(c.bridge, others) }));
      await this.syncFlows(c.bridge, others);
    } else await this.ovs.vsctl(vsctlCmd.delBr(c.bridge));
    if (
      c.mode === 'vxlan' &&
      !others.some((o) => o.config.mode === 'vxlan' && o.config.vxlan!.underlay === c.vxlan!.underlay)
    )
      if ((await this.readUnderlays()).some((u) => u.nic === c.vxlan!.underlay))
        await this.releaseUnderlay(c.vxlan!.underlay);
  }

  /** Rebuilds a bridge's OpenFlow table from its ports (replace-flows: unchanged flows stay). */
  private async syncFlows(bridge: string, states: OvsNetworkState[]): Promise<void> {
    const owner = states.find((s) => s.config.bridge === bridge);
    if (!owner) return;
    if (!(await this.ovs.bridges()).some((b) => b.name === bridge)) return;
    const flows = buildFlows(roleOf(owner.config), flowPorts(await this.ovs.ports(), bridge));
    await this.ovs.replaceFlows(bridge, flows);
  }

  private netDir(name: string): string {
    return join(this.stateDir, 'networks', name);
  }

  private async readState(name: string): Promise<OvsNetworkState | undefined> {
    try {
      const s = JSON.parse(await readFile(join(this.netDir(name), 'ovs.json'), 'utf8')) as OvsNetworkState;
      return s.version === 1 && s.driver === 'ovs' && s.config?.name === name ? s : undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  private async readAllStates(): Promise<OvsNetworkState[]> {
    let names: string[];
    try {
      names = await readdir(join(this.stateDir, 'networks'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const states = await Promise.all(names.filter((n) => NAME.test(n)).map((n) => this.readState(n)));
    return states
      .filter((s): s is OvsNetworkState => s !== undefined)
      .sort((a, b) => (a.config.name < b.config.name ? -1 : 1));
  }

  private async writeState(s: OvsNetworkState): Promise<void> {
    const dir = this.netDir(s.config.name);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await atomicWrite(join(dir, 'ovs.json'), `${JSON.stringify(s, null, 2)}\n`);
  }

  private async readUnderlays(): Promise<UnderlayState[]> {
    let names: string[];
    try {
      names = await readdir(this.daemons.paths.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: UnderlayState[] = [];
    for (const n of names.filter((x) => /^underlay-.+\.json$/.test(x)))
      out.push(JSON.parse(await readFile(join(this.daemons.paths.dir, n), 'utf8')) as UnderlayState);
    return out;
  }

  private async writeUnderlay(u: UnderlayState): Promise<void> {
    await mkdir(this.daemons.paths.dir, { recursive: true, mode: 0o750 });
    await atomicWrite(
      join(this.daemons.paths.dir, `underlay-${u.nic}.json`),
      `${JSON.stringify(u, null, 2)}\n`,
    );
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }
}

/** Flow policy of a network's bridge. */
function roleOf(cfg: NetworkConfig): BridgeRole {
  return cfg.mode === 'vlan' ? 'vlan' : 'overlay';
}

/** VLANs of every vlan network on `bridge`, sorted (the trunk NIC carries exactly these). */
function vlansOn(bridge: string, states: OvsNetworkState[]): number[] {
  return [
    ...new Set(
      states.filter((s) => s.config.bridge === bridge && s.config.vlan).map((s) => s.config.vlan!.id),
    ),
  ].sort((a, b) => a - b);
}

/** Routes to carry over when addresses move: everything but the kernel's own subnet routes. */
function movable(routes: IpRoute[]): IpRoute[] {
  return routes.filter((r) => r.protocol !== 'kernel' && (r.type === undefined || r.type === 'unicast'));
}

async function atomicWrite(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode: 0o644 });
  await rename(tmp, path);
}
