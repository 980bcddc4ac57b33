// Linux network backend: a bridge per network, dnsmasq per network with a subnet on this host, one
// nftables table per host, persistent taps for VM ports. Every command goes through the runner
// (optionally inside one network namespace); applied configs persist under <stateDir>/network-linux/<name>/.
//
// Multi-host modes: vxlan = the bridge plus a VXLAN device (nolearning) with one static all-zeros FDB
// entry per remote VTEP (head-end replication, no multicast); vlan = the bridge plus an 802.1Q device
// on the trunk NIC (only where the kernel has 802.1Q). Either has a subnet only on its gateway host.
// The host's uplink itself (MTU, addresses, default route) is managed through `UplinkManager`.
//
// Forwarding: a nat network sets net.ipv4.ip_forward=1 in the namespace the driver manages (the
// host's own namespace for an agent on a real host, a lab namespace in tests); it is never reset,
// since other software on the host may rely on it.
//
// This file is the driver's face (the interface, its serial queue, what each helper gets); its helpers each have
// one job: converge.ts (one network's bridge, gateway address, members and dnsmasq, and its removal),
// host-table.ts (the host's nftables table), state.ts (persisted state), validate.ts, capabilities.ts (kernel
// probe), move.ts (addresses between the uplink and a bridge), overlay*.ts (VXLAN/802.1Q members), ports.ts,
// uplink.ts, observe.ts (listNetworks), forwarding.ts, batch.ts (the bulk forms).
import { Bridge, bridgeCmd } from '../../../exec/bridge.js';
import { Ip } from '../../../exec/ip.js';
import { Nft } from '../../../exec/nft.js';
import type { Runner } from '../../../exec/runner.js';
import { log } from '../../../shared/log.js';
import type {
  HostCapabilities,
  NetworkConfig,
  ObservedNetwork,
  ObservedUplink,
  UplinkConfig,
} from '../../../shared/model.js';
import { SerialQueue } from '../../../shared/queue.js';
import type { SecurityGroupConfig } from '../../../shared/security-groups.js';
import { moveLegacyNetworkDirs } from '../state-layout.js';
import type {
  AppliedNetworkConfig,
  AppliedSecurityGroup,
  ItemResult,
  NetworkDriver,
  NetworkItem,
  OpContext,
  PortConfig,
  UplinkManager,
} from '../types.js';
import {
  type BulkOps,
  deleteNetworksInBulk,
  deleteTaps,
  ensureNetworksInBulk,
  ensurePlainPorts,
  plainPort,
} from './batch.js';
import { modesSupported, probeNetworkCapabilities, requireMode } from './capabilities.js';
import { type ConvergeHost, convergeNetwork, removeNetwork } from './converge.js';
import { DnsmasqManager, dnsmasqPaths } from './dnsmasq.js';
import { guardLeases } from './guard-leases.js';
import { HostTable } from './host-table.js';
import { type ObserveHost, observeNetworks } from './observe.js';
import { ensurePortsScript, removePortsScript } from './port-guard.js';
import { deletePort, ensurePort, type PortHost, portAttached, portMasters } from './ports.js';
import { LinuxSecurityGroups } from './security-group-manager.js';
import { LinuxNetworkStateStore } from './state.js';
import { applyUplink, observeUplink, validateUplinkConfig } from './uplink.js';
import { assertNetworkName, validateNetworkConfig } from './validate.js';

/** Options of `LinuxNetworkDriver`. */
export interface LinuxNetworkDriverOptions {
  runner: Runner;
  /** Agent state directory; networks persist under `<stateDir>/network-linux/<name>/`, the uplink in `<stateDir>/uplink.json`. */
  stateDir: string;
  /** Network namespace to manage; undefined = the process's own (an agent on its host). */
  netns?: string;
}

/** The linux bridge + nftables + dnsmasq network backend; also manages the host's uplink. */
export class LinuxNetworkDriver implements NetworkDriver, UplinkManager {
  private readonly runner: Runner;
  private readonly stateDir: string;
  private readonly netns: string | undefined;
  private readonly ip: Ip;
  private readonly br: Bridge;
  private readonly nft: Nft;
  private readonly dnsmasq: DnsmasqManager;
  private readonly states: LinuxNetworkStateStore;
  private readonly groups: LinuxSecurityGroups;
  // What the port, observe and converge helpers use of this driver.
  private readonly host: PortHost & ObserveHost & ConvergeHost;
  private readonly table: HostTable;
  private caps: Promise<HostCapabilities['network']> | undefined;
  private readonly queue = new SerialQueue();

  constructor(opts: LinuxNetworkDriverOptions) {
    this.runner = opts.runner;
    this.stateDir = opts.stateDir;
    this.netns = opts.netns;
    this.ip = new Ip(opts.runner, opts.netns);
    this.br = new Bridge(opts.runner, opts.netns);
    this.nft = new Nft(opts.runner, opts.netns);
    this.dnsmasq = new DnsmasqManager(opts.runner, opts.netns);
    this.states = new LinuxNetworkStateStore(opts.stateDir);
    this.groups = new LinuxSecurityGroups(opts.runner, this.nft, opts.netns, opts.stateDir);
    this.table = new HostTable(this.nft);
    this.host = {
      runner: this.runner,
      netns: this.netns,
      networkDir: (name) => this.states.networkDir(name),
      ip: this.ip,
      br: this.br,
      nft: this.nft,
      dnsmasq: this.dnsmasq,
      states: this.states,
      capabilities: () => this.capabilities(),
      loadRules: () => this.applyRuleset(),
    };
  }

  /**
   * At agent start: moves this backend's networks out of the directory it shared with the OVS backend, then loads the
   * host table as this version builds it (an upgraded agent filters guests before its next apply), and the security
   * groups applied before (a reboot emptied the table; the agent re-ensures running VMs' ports next).
   */
  async upgradeState(): Promise<void> {
    await this.moveLegacyState();
    await this.serial(() => this.groups.restore());
    if ((await this.states.readAll()).length)
      await this.serial(() => this.applyRuleset()).catch((e: unknown) => {
        // The next network change loads it again; a start must not fail on it.
        log.warn({ err: (e as Error).message }, 'nftables table not loaded at start');
      });
  }

  private async moveLegacyState(): Promise<void> {
    await moveLegacyNetworkDirs({
      stateDir: this.stateDir,
      target: this.states.root,
      marker: 'network.json',
      // A running dnsmasq has the old paths on its command line: stop it before the move, start it after.
      beforeMove: (_name, dir) => this.dnsmasq.stop(dnsmasqPaths(dir)),
      afterMove: async (name, dir) => {
        const s = await this.states.read(name);
        if (s && s.config.mode !== 'bridge' && s.config.subnet)
          await this.dnsmasq.ensure(s.config, dnsmasqPaths(dir), false).catch((e: unknown) => {
            // Reported by listNetworks as a problem; the next apply starts it.
            log.warn({ network: name, err: (e as Error).message }, 'dnsmasq not restarted after the move');
          });
      },
    });
  }

  // Networks.

  /** Creates the network or converges it to `cfg` from any partial state; undoes this call's changes on failure. */
  async ensureNetwork(cfg: NetworkConfig, configHash: string, ctx?: OpContext): Promise<void> {
    validateNetworkConfig(cfg);
    // Only overlays depend on kernel features: other modes never pay for the probe.
    if (cfg.mode === 'vlan' || cfg.mode === 'vxlan') requireMode(cfg, await this.capabilities());
    await this.serial(() => convergeNetwork(this.host, cfg, configHash, ctx));
  }

  /**
   * `ensureNetwork` for many networks at once: new nat, isolated and vxlan networks are built together (see
   * batch.ts) with one nftables load; every other item, and every item of a batch that failed, goes one by one.
   * Stops at the first failing item.
   */
  async ensureNetworks(items: readonly NetworkItem[], ctx?: OpContext): Promise<ItemResult[]> {
    return ensureNetworksInBulk(this.bulkOps(), items, ctx);
  }

  /** Removes the network (bridge mode: gives the uplink its addresses and routes back); missing is fine. */
  async deleteNetwork(name: string, ctx?: OpContext): Promise<void> {
    assertNetworkName(name);
    await this.serial(async () => {
      await removeNetwork(this.host, name, ctx);
      await this.applyRuleset();
    });
  }

  /**
   * `deleteNetwork` for many networks with one nftables load at the end: networks that are not bridge mode go
   * down together (see `removeNetworksTogether`), the rest (and all of them, if that fails) one by one, stopping
   * at the first failure.
   */
  async deleteNetworks(names: readonly string[], ctx?: OpContext): Promise<ItemResult[]> {
    return deleteNetworksInBulk(this.bulkOps(), names, ctx);
  }

  /** The config network `name` was last built from here, from this backend's own state file. */
  async appliedConfig(name: string): Promise<AppliedNetworkConfig | undefined> {
    const s = await this.states.read(name);
    return s ? { config: s.config, configHash: s.configHash } : undefined;
  }

  /** Persisted networks with live checks; bridges labelled by vmlink without state are listed with a problem. */
  listNetworks(): Promise<ObservedNetwork[]> {
    return observeNetworks(this.host);
  }

  /** Network modes this host can realise with this backend (vxlan and vlan only where the kernel has them). */
  async supportedModes(): Promise<NetworkConfig['mode'][]> {
    return modesSupported(await this.capabilities());
  }

  // Ports.

  /** Creates or re-attaches the VM's tap (see ports.ts), then marks it (and guards it, with `security`): port-guard.ts. */
  async ensurePort(port: PortConfig, ctx?: OpContext): Promise<void> {
    await ensurePort(this.host, port, ctx);
    await this.nft.load(ensurePortsScript([port], await guardLeases(this.states, this.dnsmasq, [port])));
  }

  /** Plain ports in one batch, VLAN ports one by one (see `ensurePlainPorts`); their guards in one nft load. */
  async ensurePorts(ports: readonly PortConfig[], ctx?: OpContext): Promise<void> {
    await ensurePlainPorts(this.ip, ports.filter(plainPort), ctx);
    for (const p of ports.filter((p) => !plainPort(p))) await ensurePort(this.host, p, ctx);
    if (ports.length)
      await this.nft.load(ensurePortsScript(ports, await guardLeases(this.states, this.dnsmasq, ports)));
  }

  /** Deletes taps together (see `deleteTaps`), and their guards. */
  async deletePorts(taps: readonly string[], ctx?: OpContext): Promise<void> {
    await deleteTaps(this.ip, taps, ctx);
    if (taps.length) await this.nft.load(removePortsScript(taps));
  }

  /** Deletes the tap and its guard; a missing one is not an error, a non-tap device of that name is a conflict. */
  async deletePort(tap: string, ctx?: OpContext): Promise<void> {
    await deletePort(this.ip, tap, ctx);
    await this.nft.load(removePortsScript([tap]));
  }

  /** Whether the tap exists and is a port of `bridge`. */
  portAttached(tap: string, bridge: string): Promise<boolean> {
    return portAttached(this.ip, tap, bridge);
  }

  /** Every tap on the host with the bridge it is attached to (one command, for reports over many ports). */
  portMasters(): Promise<Map<string, string | undefined>> {
    return portMasters(this.ip);
  }

  /** The bridge forwards `mac` to `tap` from now on (a migrated guest's port; see NetworkDriver.claimMac). */
  async claimMac(tap: string, mac: string, ctx?: OpContext): Promise<void> {
    ctx?.signal?.throwIfAborted();
    await this.br.exec(bridgeCmd.fdbClaim(tap, mac));
  }

  // Security groups (security-groups.ts).

  /** Applies a group's rules and members in one transaction of its own objects; idempotent. */
  ensureSecurityGroup(group: SecurityGroupConfig, configHash: string, ctx?: OpContext): Promise<void> {
    return this.serial(() => this.groups.ensure(group, configHash, ctx));
  }

  /** Removes a group (emptied instead while something still refers to it); missing is fine. */
  deleteSecurityGroup(name: string, ctx?: OpContext): Promise<void> {
    return this.serial(() => this.groups.delete(name, ctx));
  }

  /** The groups applied on this host, from this backend's state files. */
  listSecurityGroups(): Promise<AppliedSecurityGroup[]> {
    return this.groups.list();
  }

  // Host.

  /** Probes kernel features once, in a scratch namespace `vlcap-<random>` that is deleted afterwards. */
  capabilities(): Promise<HostCapabilities['network']> {
    this.caps ??= probeNetworkCapabilities(this.runner, this.ip).catch((e) => {
      this.caps = undefined;
      throw e;
    });
    return this.caps;
  }

  // Uplink.

  /** The uplink as it is now: its MTU, the device carrying its addresses, addresses, default gateway, applied hash. */
  observeUplink(device: string): Promise<ObservedUplink> {
    return observeUplink(this.ip, this.states, device);
  }

  /**
   * Brings the uplink in line with `cfg` in ONE `ip -batch` (MTU of the uplink and of the bridge enslaving
   * it, addresses, default route; VXLAN devices keep their MTU), then persists `cfg` and `configHash`.
   * Idempotent: nothing runs when the uplink already matches. A failed batch is rolled back to before.
   */
  async configureUplink(cfg: UplinkConfig, configHash: string, ctx?: OpContext): Promise<void> {
    validateUplinkConfig(cfg);
    await this.serial(() => applyUplink(this.ip, this.states, cfg, configHash, ctx));
  }

  // Internals.

  /** What the bulk forms (batch.ts) use of this driver: its one-by-one paths, under its serial queue. */
  private bulkOps(): BulkOps {
    return {
      host: this.host,
      serial: (fn) => this.serial(fn),
      validate: async (cfg) => {
        validateNetworkConfig(cfg);
        if (cfg.mode === 'vlan' || cfg.mode === 'vxlan') requireMode(cfg, await this.capabilities());
      },
      ensureOne: (item, ctx) => convergeNetwork(this.host, item.cfg, item.configHash, ctx),
      removeOne: (name, ctx) => removeNetwork(this.host, name, ctx),
      loadRules: () => this.applyRuleset(),
    };
  }

  /** Brings the host table (host-table.ts) in line with every persisted network. */
  private async applyRuleset(): Promise<void> {
    await this.table.apply((await this.states.readAll()).map((s) => s.config));
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }
}
