// Open vSwitch network backend: vlan networks (one OVS bridge per trunk NIC, shared by every VLAN on it;
// VM access ports tag=ID, trunk ports trunks=...) and vxlan networks (one OVS bridge per network, one
// VXLAN tunnel port per remote VTEP, protected so NORMAL never forwards tunnel to tunnel). The agent's own
// ovsdb-server + ovs-vswitchd run in its namespace (see daemon.ts); every bridge uses the userspace
// (netdev) datapath unless the kernel has the openvswitch module.
//
// This file is the network core (bridges, trunks, tunnels, gateway port, flows, the host input table); beside it:
// names.ts, validate.ts, state.ts (ovs.json per network, underlay files), underlay.ts (the userspace datapath's
// VXLAN underlay bridge), ports.ts, observe.ts (listNetworks), flows.ts and port-guard.ts (OpenFlow tables and
// anti-spoofing), security-groups.ts, security-group-flows.ts and security-group-state.ts (security groups as
// conntrack flows, and the groups applied), host-input.ts (what VMs may send the host), daemon.ts. OVS files live
// under <stateDir>/ovs/ and go with the last network.
import { assertIfName, Ip, type IpCommand, ipCmd } from '../../../exec/ip.js';
import { Nft } from '../../../exec/nft.js';
import { type Ovs, parseFlowDump, type VsctlCommand, vsctlCmd } from '../../../exec/ovs.js';
import type { Runner } from '../../../exec/runner.js';
import { ConflictError, NotFoundError, UnsupportedError } from '../../../shared/errors.js';
import { VXLAN_PORT } from '../../../shared/limits.js';
import { log } from '../../../shared/log.js';
import type { HostCapabilities, NetworkConfig, ObservedNetwork } from '../../../shared/model.js';
import { SerialQueue } from '../../../shared/queue.js';
import { Reverter } from '../../../shared/revert.js';
import type { SecurityGroupConfig } from '../../../shared/security-groups.js';
import { probeNetworkCapabilities } from '../linux/capabilities.js';
import { DnsmasqManager, dnsmasqPaths } from '../linux/dnsmasq.js';
import { assertNetworkName } from '../linux/validate.js';
import type { SecurityGroupStore } from '../security-group-store.js';
import { moveLegacyNetworkDirs } from '../state-layout.js';
import type {
  AppliedNetworkConfig,
  AppliedSecurityGroup,
  NetworkDriver,
  OpContext,
  PortConfig,
} from '../types.js';
import { type OvsDaemonStatus, OvsDaemons } from './daemon.js';
import { buildFlows, flowPorts, replaceFlowsAtomic, reservationsOn, roleOf } from './flows.js';
import { buildOvsHostInput, OVS_TABLE_FAMILY, OVS_TABLE_NAME } from './host-input.js';
import { gatewayPortName, gatewayPortOf, legacyGatewayPortName, NET, ROLE, tunnelPortName } from './names.js';
import { type OvsObserveHost, observeOvsNetworks } from './observe.js';
import { attachPort, detachPort, type OvsPortHost, portAttached, validateOvsPort } from './ports.js';
import { assertGroupName, ovsSecurityGroupStore, validateSecurityGroup } from './security-group-state.js';
import { applySecurityGroup, type OvsSecurityGroupHost, removeSecurityGroup } from './security-groups.js';
import { type OvsNetworkState, OvsStateStore, vlansOn } from './state.js';
import { ensureUnderlay, releaseUnderlay } from './underlay.js';
import { OVS_MODES, validateOvsNetworkConfig } from './validate.js';

/** Options of `OvsNetworkDriver`. */
export interface OvsNetworkDriverOptions {
  runner: Runner;
  /** Agent state directory: networks under `<stateDir>/network-ovs/<name>/`, OVS under `<stateDir>/ovs/`. */
  stateDir: string;
  /** Network namespace to manage (the OVS daemons run in it); undefined = the process's own. */
  netns?: string;
  /** Force the datapath type; default: kernel when the openvswitch module exists, else userspace. */
  datapath?: 'netdev' | 'system';
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
  private readonly nft: Nft;
  // The kernel feature probe, run once (as the linux backend does).
  private kernelCaps: Promise<HostCapabilities['network']> | undefined;
  private readonly states: OvsStateStore;
  private readonly groups: SecurityGroupStore;
  // What the port, underlay and observe helpers use of this driver.
  private readonly host: OvsPortHost & OvsObserveHost & OvsSecurityGroupHost;
  private readonly queue = new SerialQueue();
  /** Last daemon start, for reports: how long it took. */
  lastStart: OvsDaemonStatus | undefined;

  constructor(opts: OvsNetworkDriverOptions) {
    this.runner = opts.runner;
    this.stateDir = opts.stateDir;
    this.netns = opts.netns;
    this.ip = new Ip(opts.runner, opts.netns);
    this.dnsmasq = new DnsmasqManager(opts.runner, opts.netns);
    this.nft = new Nft(opts.runner, opts.netns);
    this.daemons = new OvsDaemons(opts.runner, opts.stateDir, opts.netns, opts.datapath);
    this.states = new OvsStateStore(opts.stateDir, this.daemons.paths.dir);
    this.groups = ovsSecurityGroupStore(opts.stateDir);
    this.host = {
      networkDir: (name) => this.states.networkDir(name),
      ip: this.ip,
      ovs: this.daemons.ovs,
      daemons: this.daemons,
      dnsmasq: this.dnsmasq,
      nft: this.nft,
      states: this.states,
      groups: this.groups,
      ready: (ctx) => this.ready(ctx),
      syncFlows: (bridge, states) => this.syncFlows(bridge, states),
      syncAllFlows: (ctx) => this.syncAllFlows(ctx),
    };
  }

  private get ovs(): Ovs {
    return this.daemons.ovs;
  }

  /** Modes this backend realises. */
  supportedModes(): NetworkConfig['mode'][] {
    return [...OVS_MODES];
  }

  /** Moves this backend's networks out of the directory it shared with the linux backend (at agent start). */
  async upgradeState(): Promise<void> {
    await moveLegacyNetworkDirs({
      stateDir: this.stateDir,
      target: this.states.root,
      marker: 'ovs.json',
      // A running dnsmasq has the old paths on its command line: stop it before the move, start it after.
      beforeMove: (_name, dir) => this.dnsmasq.stop(dnsmasqPaths(dir)),
      afterMove: async (name, dir) => {
        const s = await this.states.read(name);
        if (s?.config.subnet)
          await this.dnsmasq
            .ensure({ ...s.config, bridge: gatewayPortName(name) }, dnsmasqPaths(dir), false)
            .catch((e: unknown) => {
              // Reported by listNetworks as a problem; the next apply starts it.
              log.warn({ network: name, err: (e as Error).message }, 'dnsmasq not restarted after the move');
            });
      },
    });
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
    assertNetworkName(name);
    await this.serial(async () => {
      ctx?.signal?.throwIfAborted();
      const state = await this.states.read(name);
      if (state) {
        ctx?.progress?.(`removing network ${name}`);
        await this.ready(ctx);
        await this.teardown(
          state,
          (await this.states.readAll()).filter((s) => s.config.name !== name),
        );
      }
      await this.states.remove(name);
      await this.applyHostInput();
      if ((await this.states.readAll()).length === 0) {
        const underlays = await this.states.readUnderlays();
        if (underlays.length === 0) await this.daemons.destroy();
      }
    });
  }

  /** The config network `name` was last built from here, from this backend's own state file. */
  async appliedConfig(name: string): Promise<AppliedNetworkConfig | undefined> {
    const s = await this.states.read(name);
    return s ? { config: s.config, configHash: s.configHash } : undefined;
  }

  /** Persisted networks with live checks of the daemons, bridges, ports, tunnels, gateway and flows. */
  listNetworks(): Promise<ObservedNetwork[]> {
    return observeOvsNetworks(this.host);
  }

  /** The OpenFlow table of the network's bridge (`ovs-ofctl dump-flows --names`, durations dropped). */
  async flows(networkName: string): Promise<string> {
    const s = await this.states.read(networkName);
    if (!s) throw new NotFoundError('network', networkName);
    if ((await this.daemons.pid('ovs-vswitchd')) === undefined)
      throw new UnsupportedError(`ovs-vswitchd is not running on this host; apply again to restart it`);
    const lines = parseFlowDump(await this.ovs.dumpFlows(s.config.bridge, { names: true }), true);
    const sharers = (await this.states.readAll()).filter((x) => x.config.bridge === s.config.bridge);
    const head = `# ${s.config.bridge} (${roleOf(s.config)} bridge of ${sharers.map((x) => x.config.name).join(', ')})`;
    return `${[head, ...lines].join('\n')}\n`;
  }

  // Ports.

  /** Creates the persistent tap (vnet_hdr) if missing and makes it an access (`vlan`) or trunk (`trunks`) port. */
  async ensurePort(port: PortConfig, ctx?: OpContext): Promise<void> {
    validateOvsPort(port);
    ctx?.signal?.throwIfAborted();
    await this.serial(() => attachPort(this.host, port, ctx));
  }

  /** Removes the port from OVS and deletes its tap (a veth end is only unplugged); missing is fine. */
  async deletePort(tap: string, ctx?: OpContext): Promise<void> {
    assertIfName(tap, 'tap');
    ctx?.signal?.throwIfAborted();
    await this.serial(() => detachPort(this.host, tap, ctx));
  }

  /** Whether the device exists and is a working port of `bridge` with the VLAN settings ensurePort gave it. */
  portAttached(tap: string, bridge: string): Promise<boolean> {
    return portAttached(this.host, tap, bridge);
  }

  // Security groups.

  /**
   * Records the group and rebuilds the flow tables of every bridge (one bundle each: only the flows that differ
   * change, atomically), so its ports, and ports whose rules name it as remote group, follow at once.
   */
  async ensureSecurityGroup(group: SecurityGroupConfig, configHash: string, ctx?: OpContext): Promise<void> {
    const g = validateSecurityGroup(group);
    await this.serial(() => applySecurityGroup(this.host, g, configHash, ctx));
  }

  /** Forgets the group and rebuilds the flow tables (ports still naming it allow nothing inbound); missing is fine. */
  async deleteSecurityGroup(name: string, ctx?: OpContext): Promise<void> {
    assertGroupName(name);
    await this.serial(() => removeSecurityGroup(this.host, name, ctx));
  }

  /** Groups applied on this host, from this backend's state files. */
  listSecurityGroups(): Promise<AppliedSecurityGroup[]> {
    return this.groups.readAll();
  }
  // Host.

  /** Kernel network features (probed like the linux backend) plus `ovs` and `ovsKernelDatapath`. */
  async capabilities(): Promise<HostCapabilities['network']> {
    this.kernelCaps ??= probeNetworkCapabilities(this.runner, this.ip).catch((e) => {
      this.kernelCaps = undefined;
      throw e;
    });
    const caps = { ...(await this.kernelCaps) };
    // Found once, Open vSwitch stays installed for this agent's life; not found, it is looked for again (it may be
    // installed meanwhile). Every report asks, so the answer must not cost a command each time.
    if (!this.ovsInstalled) {
      const ovs = await this.runner
        .run(['ovs-vswitchd', '--version'], { allowFailure: true })
        .catch(() => undefined);
      this.ovsInstalled = ovs?.code === 0;
    }
    caps.ovs = this.ovsInstalled;
    caps.ovsKernelDatapath = (await this.daemons.datapathType()) === 'system';
    return caps;
  }

  // Internals.

  private ovsInstalled = false;

  /** Starts or adopts the daemons; after a vswitchd (re)start, converges every network (flows, addresses). */
  private async ready(ctx?: OpContext): Promise<void> {
    const st = await this.daemons.ensureRunning();
    if (st['ovs-vswitchd'] !== 'started') return;
    this.lastStart = st;
    ctx?.progress?.(`started Open vSwitch in ${st.startMs} ms`);
    log.info({ stateDir: this.stateDir, netns: this.netns, ms: st.startMs }, 'ovs daemons started');
    // A restarted vswitchd re-creates bridges and ports from the database, but not the OpenFlow tables
    // nor the addresses of internal ports (new tap devices): put them back.
    for (const s of await this.states.readAll()) {
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
    const states = await this.states.readAll();
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
        if (dp === 'netdev') await ensureUnderlay(this.host, x.underlay, r);
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
          if (x.port !== VXLAN_PORT) options.dst_port = String(x.port);
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

      const paths = dnsmasqPaths(this.states.networkDir(cfg.name));
      // A gateway port made under its legacy name keeps serving (dnsmasq listens on it).
      const gw = gatewayPortOf(ports, cfg.name);
      let readdressed = false;
      if (cfg.subnet) readdressed = await this.ensureGateway(cfg, gw, r);
      else await this.removeGateway(cfg.name);

      r.add(async () => {
        if (prev) await this.states.write(prev);
        else await this.states.remove(cfg.name);
      });
      await this.states.write({ version: 1, driver: 'ovs', config: cfg, configHash });
      if (cfg.subnet) {
        const dcfg: NetworkConfig = { ...cfg, bridge: gw };
        const did = await this.dnsmasq.ensure(dcfg, paths, readdressed || restarted);
        if (did !== 'unchanged') {
          ctx?.progress?.(`network ${cfg.name}: dnsmasq ${did}`);
          r.add(() => this.dnsmasq.stop(paths));
        }
      }
      await this.syncFlows(cfg.bridge, await this.states.readAll());
      await this.applyHostInput();
      r.success();
    } finally {
      await r.fail();
    }
  }

  /** Gateway host: an internal port (tag=VLAN on a vlan bridge) with exactly the gateway address; true when re-addressed. */
  private async ensureGateway(cfg: NetworkConfig, gw: string, r: Reverter): Promise<boolean> {
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
    await this.dnsmasq.stop(dnsmasqPaths(this.states.networkDir(network)));
    await this.ovs.vsctl([
      ...vsctlCmd.delPort(gatewayPortName(network)),
      ...vsctlCmd.delPort(legacyGatewayPortName(network)),
    ]);
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
      if ((await this.states.readUnderlays()).some((u) => u.nic === c.vxlan!.underlay))
        await releaseUnderlay(this.host, c.vxlan!.underlay);
  }

  /**
   * Rebuilds a bridge's OpenFlow table from its ports and the applied security groups, as one OpenFlow bundle
   * (replace-flows --bundle: only flows that differ change, all at once, so no packet sees half a rule change).
   */
  private async syncFlows(bridge: string, states: OvsNetworkState[]): Promise<void> {
    const owner = states.find((s) => s.config.bridge === bridge);
    if (!owner) return;
    if (!(await this.ovs.bridges()).some((b) => b.name === bridge)) return;
    const reserved = reservationsOn(
      bridge,
      states.map((s) => s.config),
    );
    const flows = buildFlows(
      roleOf(owner.config),
      flowPorts(await this.ovs.ports(), bridge, reserved),
      await this.groups.byName(),
    );
    await replaceFlowsAtomic(this.ovs, bridge, flows);
  }

  /** Rebuilds the flow tables of every bridge of this backend's networks (after a security group change). */
  private async syncAllFlows(ctx?: OpContext): Promise<void> {
    const states = await this.states.readAll();
    if (states.length === 0) return;
    await this.ready(ctx);
    for (const bridge of new Set(states.map((s) => s.config.bridge))) await this.syncFlows(bridge, states);
  }

  /** Loads the host input policy of every persisted network (host-input.ts) in one transaction; none: deleted. */
  private async applyHostInput(): Promise<void> {
    const states = await this.states.readAll();
    const ports = states.length ? await this.ovs.ports() : [];
    const table = buildOvsHostInput(
      states.map((s) => ({
        cfg: s.config,
        ...(s.config.subnet ? { gatewayPort: gatewayPortOf(ports, s.config.name) } : {}),
      })),
    );
    if (table) await this.nft.replaceTable(OVS_TABLE_FAMILY, OVS_TABLE_NAME, table);
    else await this.nft.deleteTable(OVS_TABLE_FAMILY, OVS_TABLE_NAME);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }
}
