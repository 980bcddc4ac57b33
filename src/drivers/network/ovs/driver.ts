// Open vSwitch network backend: vlan networks (one OVS bridge per trunk NIC, shared by every VLAN on it;
// VM access ports tag=ID, trunk ports trunks=...) and vxlan networks (one OVS bridge per network, one
// VXLAN tunnel port per remote VTEP, protected so NORMAL never forwards tunnel to tunnel). The agent's own
// ovsdb-server + ovs-vswitchd run in its namespace (see daemon.ts); every bridge uses the userspace
// (netdev) datapath unless the kernel has the openvswitch module.
//
// This file is the driver's face (the interface, its serial queue, the daemons' readiness, the flow tables and host
// input table of all networks); beside it: converge.ts (one network's bridge, trunk or tunnels, gateway port and
// dnsmasq, and its teardown), names.ts, validate.ts, state.ts (ovs.json per network, underlay files), underlay.ts
// (the userspace datapath's VXLAN underlay bridge), ports.ts, observe.ts (listNetworks), flows.ts and port-guard.ts
// (OpenFlow tables and anti-spoofing), security-groups.ts, security-group-flows.ts and security-group-state.ts
// (security groups as conntrack flows, and the groups applied), host-input.ts (what VMs may send the host),
// daemon.ts. OVS files live under <stateDir>/ovs/ and go with the last network.
import { assertIfName, Ip } from '../../../exec/ip.js';
import { Nft } from '../../../exec/nft.js';
import { type Ovs, parseFlowDump } from '../../../exec/ovs.js';
import type { Runner } from '../../../exec/runner.js';
import { NotFoundError, UnsupportedError } from '../../../shared/errors.js';
import { log } from '../../../shared/log.js';
import type { HostCapabilities, NetworkConfig, ObservedNetwork } from '../../../shared/model.js';
import { SerialQueue } from '../../../shared/queue.js';
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
import { convergeOvsNetwork, type OvsConvergeHost, teardownOvsNetwork } from './converge.js';
import { type OvsDaemonStatus, OvsDaemons } from './daemon.js';
import { buildFlows, flowPorts, replaceFlowsAtomic, reservationsOn, roleOf } from './flows.js';
import { buildOvsHostInput, OVS_TABLE_FAMILY, OVS_TABLE_NAME } from './host-input.js';
import { gatewayPortName, gatewayPortOf } from './names.js';
import { type OvsObserveHost, observeOvsNetworks } from './observe.js';
import { attachPort, detachPort, type OvsPortHost, portAttached, validateOvsPort } from './ports.js';
import { assertGroupName, ovsSecurityGroupStore, validateSecurityGroup } from './security-group-state.js';
import { applySecurityGroup, type OvsSecurityGroupHost, removeSecurityGroup } from './security-groups.js';
import { type OvsNetworkState, OvsStateStore } from './state.js';
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
  // What the port, observe, security group and converge helpers use of this driver.
  private readonly host: OvsPortHost & OvsObserveHost & OvsSecurityGroupHost & OvsConvergeHost;
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
      loadHostInput: () => this.applyHostInput(),
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
      await convergeOvsNetwork(this.host, cfg, configHash, ctx);
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
        await teardownOvsNetwork(
          this.host,
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
        await convergeOvsNetwork(this.host, s.config, s.configHash, ctx, true);
      } catch (err) {
        log.warn({ err, network: s.config.name }, 'ovs: re-converging after restart failed');
      }
    }
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
