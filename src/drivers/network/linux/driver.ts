// Linux network backend: a bridge per network, dnsmasq per network with a subnet on this host, one
// nftables table per host, persistent taps for VM ports. Every command goes through the runner
// (optionally inside one network namespace); applied configs persist under <stateDir>/networks/<name>/.
//
// Multi-host modes: vxlan = the bridge plus a VXLAN device (nolearning) with one static all-zeros FDB
// entry per remote VTEP (head-end replication, no multicast); vlan = the bridge plus an 802.1Q device
// on the trunk NIC (only where the kernel has 802.1Q). Either has a subnet only on its gateway host.
// The host's uplink itself (MTU, addresses, default route) is managed through `UplinkManager`.
//
// Forwarding: a nat network sets net.ipv4.ip_forward=1 in the namespace the driver manages (the
// host's own namespace for an agent on a real host, a lab namespace in tests); it is never reset,
// since other software on the host may rely on it.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import {
  assertIfName,
  Bridge,
  Ip,
  type IpAddr,
  type IpCommand,
  type IpLink,
  type IpRoute,
  ipCmd,
  routeSpecOf,
} from '../../../exec/ip.js';
import { Nft } from '../../../exec/nft.js';
import type { Runner } from '../../../exec/runner.js';
import {
  ConflictError,
  InvalidRequestError,
  NotFoundError,
  UnsupportedError,
} from '../../../shared/errors.js';
import { log } from '../../../shared/log.js';
import type {
  HostCapabilities,
  NetworkConfig,
  ObservedNetwork,
  ObservedUplink,
  UplinkConfig,
} from '../../../shared/model.js';
import { Reverter } from '../../../shared/revert.js';
import type { NetworkDriver, OpContext, PortConfig, UplinkManager } from '../types.js';
import { DnsmasqManager, dnsmasqPaths } from './dnsmasq.js';
import {
  fdbProblems,
  fdbSync,
  floodRemotes,
  memberDevice,
  parsePortVlans,
  portVlanCommands,
  VLAN_ALIAS_PREFIX,
  VXLAN_ALIAS_PREFIX,
  VXLAN_OVERHEAD_V4,
  VXLAN_OVERHEAD_V6,
  vlanDeviceName,
  vtepDevice,
  vxlanDrift,
  wantedPortVlans,
} from './overlay.js';
import { buildRuleset, isRouted, needsRules, TABLE_FAMILY, TABLE_NAME } from './ruleset.js';
import {
  movableRoutes,
  putBackUplink,
  readUplink,
  type UplinkSnapshot,
  uplinkCommands,
  uplinkMatches,
  validateUplinkConfig,
} from './uplink.js';

export type { UplinkSnapshot } from './uplink.js';

/** The uplink's state now (MTU, addresses, routes; JSON-serialisable), for `restoreUplink` (commit-confirm rollback). */
export function snapshotUplink(
  runner: Runner,
  device: string,
  opts: { netns?: string } = {},
): Promise<UplinkSnapshot> {
  assertIfName(device, 'uplink');
  return readUplink(new Ip(runner, opts.netns), device);
}

/**
 * Puts the uplink back exactly as `snapshot` recorded it (MTU of the uplink and its bridge, addresses,
 * default and static routes) in one `ip -batch`. The hash `configureUplink` persisted is then no longer
 * reported by `observeUplink`, since the uplink no longer matches its config.
 */
export async function restoreUplink(
  runner: Runner,
  snapshot: UplinkSnapshot,
  opts: { netns?: string } = {},
): Promise<void> {
  assertIfName(snapshot.device, 'uplink');
  assertIfName(snapshot.addressDevice, 'uplink address device');
  await putBackUplink(new Ip(runner, opts.netns), snapshot);
}

/** Bridges this driver creates carry the alias `vmlink:net:<network>` so it can find them again. */
export const ALIAS_PREFIX = 'vmlink:net:';

/** Options of `LinuxNetworkDriver`. */
export interface LinuxNetworkDriverOptions {
  runner: Runner;
  /** Agent state directory; networks persist under `<stateDir>/networks/<name>/`, the uplink in `<stateDir>/uplink.json`. */
  stateDir: string;
  /** Network namespace to manage; undefined = the process's own (an agent on its host). */
  netns?: string;
}

/** What the driver persists per network: the applied config, its hash, and what bridge mode moved. */
export interface NetworkState {
  version: 1;
  config: NetworkConfig;
  configHash: string;
  /** Bridge mode: the uplink's IPv4 addresses and routes moved onto the bridge. */
  moved?: { addrs: string[]; routes: IpRoute[] };
}

/** What the driver persists about the uplink: the config last applied through `configureUplink`, and its hash. */
export interface UplinkState {
  version: 1;
  config: UplinkConfig;
  configHash: string;
}

/** Kernel feature names reported by `capabilities()`. */
export const NETWORK_FEATURES = [
  'vlan',
  'vxlan',
  'macvlan',
  'bond',
  'geneve',
  'bridgeVlanFiltering',
  'nftables',
  'tap',
] as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Remedy named when this host's kernel cannot do a VLAN thing the linux backend would need. */
const OVS_REMEDY = "use backend: ovs for vlan networks (Open vSwitch's userspace datapath does VLANs here)";

/** Refuses a config the driver cannot realise, before any change, naming the field. */
export function validateNetworkConfig(cfg: NetworkConfig): void {
  const at = `networks.${cfg.name}`;
  if (!NAME.test(cfg.name))
    throw new InvalidRequestError(`invalid network name ${JSON.stringify(cfg.name)}`, 'name');
  assertIfName(cfg.bridge, `${at}.bridge`);
  if (!Number.isInteger(cfg.mtu) || cfg.mtu < 68 || cfg.mtu > 65535) {
    throw new InvalidRequestError(`${at}.mtu: ${cfg.mtu} out of range 68-65535`, `${at}.mtu`);
  }
  if (cfg.uplink !== undefined) {
    assertIfName(cfg.uplink, `${at}.uplink`);
    if (cfg.uplink === cfg.bridge)
      throw new InvalidRequestError(`${at}.uplink: cannot be the bridge itself`, `${at}.uplink`);
  }
  if (cfg.mode === 'bridge') {
    if (!cfg.uplink)
      throw new InvalidRequestError(`${at}.uplink: bridge mode needs an uplink NIC`, `${at}.uplink`);
  } else if (!cfg.subnet && (cfg.mode === 'nat' || cfg.mode === 'isolated')) {
    throw new InvalidRequestError(`${at}.subnet: ${cfg.mode} mode needs a subnet`, `${at}.subnet`);
  }
  if (cfg.mode === 'vxlan') validateVxlan(cfg, at);
  if (cfg.mode === 'vlan') {
    const v = cfg.vlan;
    if (!v) throw new InvalidRequestError(`${at}.vlan: vlan mode needs a VLAN id and trunk`, `${at}.vlan`);
    if (!Number.isInteger(v.id) || v.id < 1 || v.id > 4094)
      throw new InvalidRequestError(`${at}.vlan.id: ${v.id} out of range 1-4094`, `${at}.vlan.id`);
    assertIfName(v.trunk, `${at}.vlan.trunk`);
    if (v.trunk === cfg.bridge)
      throw new InvalidRequestError(`${at}.vlan.trunk: cannot be the bridge itself`, `${at}.vlan.trunk`);
  }
  if (!isRouted(cfg) && cfg.forwards.length > 0) {
    throw new InvalidRequestError(
      `${at}.forwards: port forwards need nat mode (or nat on a vxlan/vlan gateway host)`,
      `${at}.forwards`,
    );
  }
  // Renders (and so validates) the ruleset fragment of this network alone.
  buildRuleset([cfg]);
}

function validateVxlan(cfg: NetworkConfig, at: string): void {
  const v = cfg.vxlan;
  if (!v) throw new InvalidRequestError(`${at}.vxlan: vxlan mode needs VXLAN settings`, `${at}.vxlan`);
  if (!Number.isInteger(v.vni) || v.vni < 1 || v.vni > 16777215)
    throw new InvalidRequestError(`${at}.vni: ${v.vni} out of range 1-16777215`, `${at}.vni`);
  assertIfName(v.device, `${at}.vxlan.device`);
  if (v.device === cfg.bridge)
    throw new InvalidRequestError(`${at}.vxlan.device: cannot be the bridge itself`, `${at}.vxlan.device`);
  assertIfName(v.underlay, `${at}.vxlan.underlay`);
  if (!isIP(v.local))
    throw new InvalidRequestError(
      `${at}.vxlan.local: ${JSON.stringify(v.local)} is not an IP address`,
      `${at}.vxlan.local`,
    );
  const seen = new Set<string>();
  for (const [i, r] of v.remotes.entries()) {
    const where = `${at}.vxlan.remotes[${i}]`;
    if (isIP(r) !== isIP(v.local))
      throw new InvalidRequestError(
        `${where}: ${JSON.stringify(r)} is not an address of the VTEP's family`,
        where,
      );
    if (r === v.local) throw new InvalidRequestError(`${where}: ${r} is this host's own VTEP`, where);
    if (seen.has(r)) throw new InvalidRequestError(`${where}: ${r} listed twice`, where);
    seen.add(r);
  }
  if (!Number.isInteger(v.port) || v.port < 1 || v.port > 65535)
    throw new InvalidRequestError(`${at}.vxlan.port: ${v.port} out of range 1-65535`, `${at}.vxlan.port`);
}

/** The linux bridge + nftables + dnsmasq network backend; also manages the host's uplink. */
export class LinuxNetworkDriver implements NetworkDriver, UplinkManager {
  // Whether this process knows the host table is absent (it deleted it, or found none needed).
  private tableAbsent = false;
  private readonly runner: Runner;
  private readonly stateDir: string;
  private readonly netns: string | undefined;
  private readonly ip: Ip;
  private readonly br: Bridge;
  private readonly nft: Nft;
  private readonly dnsmasq: DnsmasqManager;
  private caps: Promise<HostCapabilities['network']> | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: LinuxNetworkDriverOptions) {
    this.runner = opts.runner;
    this.stateDir = opts.stateDir;
    this.netns = opts.netns;
    this.ip = new Ip(opts.runner, opts.netns);
    this.br = new Bridge(opts.runner, opts.netns);
    this.nft = new Nft(opts.runner, opts.netns);
    this.dnsmasq = new DnsmasqManager(opts.runner, opts.netns);
  }

  // Networks.

  /** Creates the network or converges it to `cfg` from any partial state; undoes this call's changes on failure. */
  async ensureNetwork(cfg: NetworkConfig, configHash: string, ctx?: OpContext): Promise<void> {
    validateNetworkConfig(cfg);
    await this.requireMode(cfg);
    await this.serial(() => this.doEnsure(cfg, configHash, ctx));
  }

  /** Removes the network (bridge mode: gives the uplink its addresses and routes back); missing is fine. */
  async deleteNetwork(name: string, ctx?: OpContext): Promise<void> {
    if (!NAME.test(name))
      throw new InvalidRequestError(`invalid network name ${JSON.stringify(name)}`, 'name');
    await this.serial(async () => {
      ctx?.signal?.throwIfAborted();
      const state = await this.readState(name);
      if (state) {
        ctx?.progress?.(`removing network ${name}`);
        await this.teardown(state);
      } else {
        // No state: still remove devices this driver labelled for the network (members first).
        const labels = [VXLAN_ALIAS_PREFIX + name, VLAN_ALIAS_PREFIX + name, ALIAS_PREFIX + name];
        const links = await this.ip.link.list();
        for (const label of labels) {
          for (const l of links.filter((x) => x.alias === label)) await this.ip.link.del(l.name);
        }
      }
      await rm(this.netDir(name), { recursive: true, force: true });
      await this.applyRuleset();
    });
  }

  /** Persisted networks with live checks; bridges labelled by vmlink without state are listed with a problem. */
  async listNetworks(): Promise<ObservedNetwork[]> {
    const states = await this.readAllStates();
    const links = new Map((await this.ip.link.list()).map((l) => [l.name, l]));
    const addrs = await this.ip.addr.list({ family: 'inet' });
    const wantTable = states.some((s) => needsRules(s.config));
    const tablePresent = wantTable
      ? (await this.nft.listTable(TABLE_FAMILY, TABLE_NAME)) !== undefined
      : true;
    let forwarding: boolean | undefined;
    const out: ObservedNetwork[] = [];
    for (const s of states) {
      const c = s.config;
      const problems: string[] = [];
      const br = links.get(c.bridge);
      if (!br) problems.push(`bridge ${c.bridge} missing`);
      else {
        if (br.kind !== 'bridge') problems.push(`${c.bridge} is not a bridge`);
        if (!br.up) problems.push(`bridge ${c.bridge} is down`);
        if (br.mtu !== c.mtu) problems.push(`bridge ${c.bridge} mtu is ${br.mtu}, want ${c.mtu}`);
        if (br.alias !== ALIAS_PREFIX + c.name)
          problems.push(`bridge ${c.bridge} alias is ${br.alias ?? 'unset'}`);
      }
      if (c.mode === 'bridge') {
        const ul = links.get(c.uplink!);
        if (!ul) problems.push(`uplink ${c.uplink} missing`);
        else {
          if (ul.master !== c.bridge) problems.push(`uplink ${c.uplink} not enslaved to ${c.bridge}`);
          const left = addrs.filter((a) => a.dev === c.uplink && a.scope === 'global');
          if (left.length)
            problems.push(
              `uplink ${c.uplink} still has ${left.map((a) => `${a.local}/${a.prefixLen}`).join(', ')}`,
            );
        }
        out.push({ name: c.name, bridge: c.bridge, configHash: s.configHash, problems });
        continue;
      }
      if (c.mode === 'vxlan') problems.push(...(await this.vxlanProblems(c, links, addrs)));
      if (c.mode === 'vlan') problems.push(...vlanProblems(c, links));
      const onBridge = addrs.filter((a) => a.dev === c.bridge && a.scope === 'global');
      const s4 = c.subnet;
      if (s4) {
        if (br && !onBridge.some((a) => a.local === s4.gateway && a.prefixLen === s4.prefixLength)) {
          problems.push(`address ${s4.gateway}/${s4.prefixLength} missing on ${c.bridge}`);
        }
        if ((await this.dnsmasq.pid(dnsmasqPaths(this.stateDir, c.name))) === undefined)
          problems.push('dnsmasq not running');
        if (!tablePresent) problems.push(`nftables table ${TABLE_FAMILY} ${TABLE_NAME} missing`);
        if (isRouted(c)) {
          forwarding ??= await this.ipForwarding();
          if (!forwarding) problems.push('net.ipv4.ip_forward is off');
        }
      } else if (onBridge.length) {
        // Not this network's gateway host (any more): the bridge only switches frames.
        problems.push(
          `bridge ${c.bridge} has ${onBridge.map((a) => `${a.local}/${a.prefixLen}`).join(', ')}, want no address`,
        );
      }
      out.push({ name: c.name, bridge: c.bridge, configHash: s.configHash, problems });
    }
    const known = new Set(states.map((s) => s.config.name));
    for (const l of links.values()) {
      if (!l.alias?.startsWith(ALIAS_PREFIX)) continue;
      const name = l.alias.slice(ALIAS_PREFIX.length);
      if (known.has(name)) continue;
      out.push({ name, bridge: l.name, configHash: '', problems: [`bridge ${l.name} has no vmlink state`] });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Network modes this host can realise with this backend (vxlan and vlan only where the kernel has them). */
  async supportedModes(): Promise<NetworkConfig['mode'][]> {
    const caps = await this.capabilities();
    return [
      'nat',
      'bridge',
      'isolated',
      ...(caps.vxlan ? (['vxlan'] as const) : []),
      ...(caps.vlan ? (['vlan'] as const) : []),
    ];
  }

  // Ports.

  /**
   * Creates the persistent tap (vnet_hdr) if missing, attaches it to the bridge, sets mtu, brings it up.
   * A VLAN access/trunk port needs a vlan_filtering bridge (refused where the kernel lacks it), except an
   * access port on this backend's own vlan network bridge, whose 802.1Q device tags for it.
   */
  async ensurePort(port: PortConfig, ctx?: OpContext): Promise<void> {
    assertIfName(port.tap, 'tap');
    assertIfName(port.bridge, 'bridge');
    ctx?.signal?.throwIfAborted();
    const filtering = await this.needsVlanFiltering(port);
    const br = await this.ip.link.get(port.bridge);
    if (br?.kind !== 'bridge') throw new NotFoundError('bridge', port.bridge);
    const r = new Reverter();
    try {
      const tap = await this.ip.link.get(port.tap);
      if (tap && tap.kind !== 'tun')
        throw new ConflictError(`device ${port.tap} exists and is not a tap`, port.tap);
      if (filtering && !br.vlanFiltering) await this.ip.exec(ipCmd.bridgeVlanFiltering(port.bridge, true));
      const attach = ipCmd.linkSet(port.tap, { master: port.bridge, mtu: port.mtu, up: true });
      if (!tap) {
        // Create and attach in one batch: one command per port instead of three.
        r.add(() => this.ip.tuntap.del(port.tap));
        await this.ip.batch([ipCmd.tuntapAdd({ name: port.tap, mode: 'tap', vnetHdr: true }), attach]);
      } else if (tap.master !== port.bridge || tap.mtu !== port.mtu || !tap.up) {
        await this.ip.batch([attach]);
      }
      if (filtering) {
        const have = parsePortVlans(
          (await this.br.exec(['vlan', 'show', 'dev', port.tap], { json: true })).stdout,
          port.tap,
        );
        await this.br.batch(portVlanCommands(port.tap, have, wantedPortVlans(port)));
      }
      r.success();
    } finally {
      await r.fail();
    }
  }

  /** Deletes the tap; a missing one is not an error, a non-tap device of that name is a conflict. */
  async deletePort(tap: string, ctx?: OpContext): Promise<void> {
    assertIfName(tap, 'tap');
    ctx?.signal?.throwIfAborted();
    const link = await this.ip.link.get(tap);
    if (!link) return;
    if (link.kind !== 'tun') throw new ConflictError(`device ${tap} is not a tap; not deleting it`, tap);
    await this.ip.tuntap.del(tap, link.tunType === 'tun' ? 'tun' : 'tap');
  }

  /** Whether the tap exists and is a port of `bridge`. */
  async portAttached(tap: string, bridge: string): Promise<boolean> {
    assertIfName(tap, 'tap');
    const link = await this.ip.link.get(tap);
    return link?.kind === 'tun' && link.master === bridge;
  }

  /** Every tap on the host with the bridge it is attached to (one command, for reports over many ports). */
  async portMasters(): Promise<Map<string, string | undefined>> {
    const links = await this.ip.link.list();
    return new Map(links.filter((l) => l.kind === 'tun').map((l) => [l.name, l.master]));
  }

  // Host.

  /** Probes kernel features once, in a scratch namespace `vlcap-<random>` that is deleted afterwards. */
  capabilities(): Promise<HostCapabilities['network']> {
    this.caps ??= this.probe().catch((e) => {
      this.caps = undefined;
      throw e;
    });
    return this.caps;
  }

  // Uplink.

  /** The uplink as it is now: its MTU, the device carrying its addresses, addresses, default gateway, applied hash. */
  async observeUplink(device: string): Promise<ObservedUplink> {
    assertIfName(device, 'uplink');
    const snap = await readUplink(this.ip, device);
    const gateway = snap.routes.find((r) => r.dst === 'default' && r.gateway)?.gateway;
    const state = await this.readUplinkState();
    // The hash stands only while the uplink still has what it asked for (not after a rollback or a hand edit).
    const applied = state && uplinkMatches(state.config, snap) ? state.configHash : undefined;
    return {
      device,
      addressDevice: snap.addressDevice,
      mtu: snap.mtu,
      addresses: snap.addresses,
      ...(gateway ? { gateway } : {}),
      ...(applied === undefined ? {} : { configHash: applied }),
    };
  }

  /**
   * Brings the uplink in line with `cfg` in ONE `ip -batch` (MTU of the uplink and of the bridge enslaving
   * it, addresses, default route; VXLAN devices keep their MTU), then persists `cfg` and `configHash`.
   * Idempotent: nothing runs when the uplink already matches. A failed batch is rolled back to before.
   */
  async configureUplink(cfg: UplinkConfig, configHash: string, ctx?: OpContext): Promise<void> {
    validateUplinkConfig(cfg);
    await this.serial(async () => {
      ctx?.signal?.throwIfAborted();
      const snap = await readUplink(this.ip, cfg.device);
      const cmds = uplinkCommands(snap, cfg);
      if (cmds.length) {
        ctx?.progress?.(`uplink ${cfg.device}: ${cmds.length} change(s) in one batch`);
        try {
          await this.ip.batch(cmds);
        } catch (e) {
          await putBackUplink(this.ip, snap).catch((err) =>
            log.warn({ err }, `uplink ${cfg.device}: restoring after a failed change failed`),
          );
          throw e;
        }
      }
      await this.writeUplinkState({ version: 1, config: cfg, configHash });
    });
  }

  // Internals.

  /** Refuses a mode this host's kernel cannot realise, before any change, naming the remedy. */
  private async requireMode(cfg: NetworkConfig): Promise<void> {
    if (cfg.mode !== 'vlan' && cfg.mode !== 'vxlan') return;
    const caps = await this.capabilities();
    if (cfg.mode === 'vlan' && !caps.vlan)
      throw new UnsupportedError(
        `network ${cfg.name}: this host's kernel has no 802.1Q VLAN devices; ${OVS_REMEDY}`,
        `networks.${cfg.name}.backend`,
      );
    if (cfg.mode === 'vxlan' && !caps.vxlan)
      throw new UnsupportedError(
        `network ${cfg.name}: this host's kernel has no VXLAN devices; use backend: ovs for vxlan networks`,
        `networks.${cfg.name}.backend`,
      );
  }

  /** Whether the port needs VLAN filtering on its bridge; refuses where the kernel lacks it. */
  private async needsVlanFiltering(port: PortConfig): Promise<boolean> {
    const trunks = port.trunks ?? [];
    if (port.vlan === undefined && trunks.length === 0) return false;
    const net = (await this.readAllStates()).find((s) => s.config.bridge === port.bridge)?.config;
    if (net?.mode === 'vlan' && trunks.length === 0 && port.vlan === net.vlan?.id) return false;
    if (!(await this.capabilities()).bridgeVlanFiltering) {
      const what = trunks.length
        ? `trunk port (VLANs ${trunks.join(', ')})`
        : `access port (VLAN ${port.vlan})`;
      throw new UnsupportedError(
        `port ${port.tap}: a VLAN ${what} on the linux backend needs bridge vlan_filtering, which this host's kernel lacks; ${OVS_REMEDY}`,
        `ports/${port.tap}`,
      );
    }
    return true;
  }

  private async doEnsure(cfg: NetworkConfig, configHash: string, ctx?: OpContext): Promise<void> {
    ctx?.signal?.throwIfAborted();
    const states = await this.readAllStates();
    const others = states.filter((s) => s.config.name !== cfg.name);
    const clash = others.find((s) => s.config.bridge === cfg.bridge);
    if (clash)
      throw new ConflictError(
        `bridge ${cfg.bridge} already belongs to network ${clash.config.name}`,
        `networks.${cfg.name}.bridge`,
      );
    const uplinkClash =
      cfg.mode === 'bridge' &&
      others.find((s) => s.config.mode === 'bridge' && s.config.uplink === cfg.uplink);
    if (uplinkClash)
      throw new ConflictError(
        `uplink ${cfg.uplink} already belongs to network ${uplinkClash.config.name}`,
        `networks.${cfg.name}.uplink`,
      );
    const member = memberDevice(cfg);
    const memberClash = member && others.find((s) => memberDevice(s.config)?.name === member.name);
    if (member && memberClash)
      throw new ConflictError(
        `${member.kind} device ${member.name} already belongs to network ${memberClash.config.name}`,
        `networks.${cfg.name}.${member.kind}`,
      );
    const prev = states.find((s) => s.config.name === cfg.name);
    // A different bridge, mode or uplink cannot be converged in place: take the old realisation down first.
    if (
      prev &&
      (prev.config.bridge !== cfg.bridge ||
        prev.config.mode !== cfg.mode ||
        prev.config.uplink !== cfg.uplink)
    ) {
      ctx?.progress?.(`network ${cfg.name}: replacing ${prev.config.mode} on ${prev.config.bridge}`);
      if (prev.config.bridge !== cfg.bridge || prev.config.mode === 'bridge' || cfg.mode === 'bridge')
        await this.teardown(prev);
    }
    // A member device (vxlan, vlan) the new config no longer uses goes.
    const prevMember = prev && memberDevice(prev.config);
    if (prevMember && prevMember.name !== member?.name) await this.deleteMember(prev.config);

    const r = new Reverter();
    try {
      const links = new Map((await this.ip.link.list()).map((l) => [l.name, l]));
      if (cfg.mode === 'bridge' && !links.has(cfg.uplink!)) throw new NotFoundError('uplink', cfg.uplink!);
      const vtep = cfg.mode === 'vxlan' ? await this.underlayFor(cfg, links) : undefined;
      if (cfg.mode === 'vlan' && !links.has(cfg.vlan!.trunk))
        throw new NotFoundError('trunk', cfg.vlan!.trunk);
      const created = await this.ensureBridge(cfg, links.get(cfg.bridge), r);
      let moved: NetworkState['moved'];
      let readdressed = false;
      const paths = dnsmasqPaths(this.stateDir, cfg.name);
      if (cfg.mode === 'bridge') {
        moved = await this.ensureUplink(cfg, links, r, prev?.moved);
      } else {
        if (cfg.mode === 'vxlan') await this.ensureVxlan(cfg, links, vtep!, r, ctx);
        if (cfg.mode === 'vlan') await this.ensureVlan(cfg, links, r);
        readdressed = await this.ensureGateway(cfg, r);
        if (isRouted(cfg) && !(await this.ipForwarding())) {
          await this.runner.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'], { netns: this.netns });
        }
      }
      ctx?.signal?.throwIfAborted();

      // The ruleset is built from persisted state: on failure restore the old state, then reload.
      r.add(() => this.applyRuleset());
      await this.writeState({ version: 1, config: cfg, configHash, ...(moved ? { moved } : {}) });
      r.add(async () => {
        if (prev) await this.writeState(prev);
        else await rm(this.netDir(cfg.name), { recursive: true, force: true });
      });

      if (cfg.mode === 'bridge' || !cfg.subnet) await this.dnsmasq.stop(paths);
      else {
        const prevConf = await readFile(paths.conf, 'utf8').catch(() => undefined);
        // dnsmasq binds the bridge's addresses once: a re-created bridge or new address needs a restart.
        const did = await this.dnsmasq.ensure(cfg, paths, created || readdressed);
        if (did !== 'unchanged') {
          ctx?.progress?.(`network ${cfg.name}: dnsmasq ${did}`);
          r.add(async () => {
            await this.dnsmasq.stop(paths);
            if (prev && prevConf !== undefined && prev.config.mode !== 'bridge' && prev.config.subnet)
              await this.dnsmasq.ensure(prev.config, paths);
          });
        }
      }
      await this.applyRuleset();
      r.success();
    } finally {
      await r.fail();
    }
  }

  /** Creates or checks the bridge; true when it was created. */
  private async ensureBridge(cfg: NetworkConfig, link: IpLink | undefined, r: Reverter): Promise<boolean> {
    const alias = ALIAS_PREFIX + cfg.name;
    if (!link) {
      r.add(() => this.ip.exec(ipCmd.linkDel(cfg.bridge), { allowFailure: true }));
      // `ip link add` ignores `alias`: label the bridge in the same batch that creates it.
      await this.ip.batch([
        ipCmd.linkAdd({ name: cfg.bridge, kind: 'bridge' }),
        ipCmd.linkSet(cfg.bridge, { mtu: cfg.mtu, alias, up: true }),
      ]);
      // Answer ARP only for addresses on this bridge: two overlays may share a CIDR, and the host must not claim
      // one overlay's gateway address on the other's bridge (arp_ignore=0 would).
      await this.runner.run(['sysctl', '-q', '-w', `net.ipv4.conf.${cfg.bridge}.arp_ignore=1`], {
        netns: this.netns,
      });
      return true;
    }
    if (link.kind !== 'bridge')
      throw new ConflictError(
        `device ${cfg.bridge} exists and is not a bridge`,
        `networks.${cfg.name}.bridge`,
      );
    if (link.alias !== alias) {
      const owner = link.alias?.startsWith(ALIAS_PREFIX)
        ? `network ${link.alias.slice(ALIAS_PREFIX.length)}`
        : 'something other than vmlink';
      throw new ConflictError(
        `bridge ${cfg.bridge} exists and belongs to ${owner}`,
        `networks.${cfg.name}.bridge`,
      );
    }
    if (link.mtu !== cfg.mtu || !link.up) await this.ip.link.set(cfg.bridge, { mtu: cfg.mtu, up: true });
    return false;
  }

  /**
   * vxlan: the VXLAN device (nolearning, `dev` = the device carrying the VTEP address) enslaved to the
   * bridge, re-created when its VNI, local address, port or underlay differ; then its FDB synced.
   */
  private async ensureVxlan(
    cfg: NetworkConfig,
    links: Map<string, IpLink>,
    dev: string,
    r: Reverter,
    ctx?: OpContext,
  ): Promise<void> {
    const v = cfg.vxlan!;
    const at = `networks.${cfg.name}`;
    const alias = VXLAN_ALIAS_PREFIX + cfg.name;
    const link = links.get(v.device);
    if (link) {
      if (link.kind !== 'vxlan')
        throw new ConflictError(`device ${v.device} exists and is not a vxlan device`, `${at}.vxlan.device`);
      if (link.alias !== undefined && link.alias !== alias)
        throw new ConflictError(
          `vxlan device ${v.device} exists and belongs to ${link.alias.startsWith(VXLAN_ALIAS_PREFIX) ? `network ${link.alias.slice(VXLAN_ALIAS_PREFIX.length)}` : 'something other than vmlink'}`,
          `${at}.vxlan.device`,
        );
    }
    const drift = link ? vxlanDrift(link, v, dev) : [];
    const cmds: IpCommand[] = [];
    if (!link || drift.length) {
      if (link) {
        ctx?.progress?.(`network ${cfg.name}: re-creating ${v.device} (${drift.join('; ')})`);
        cmds.push(ipCmd.linkDel(v.device));
      }
      cmds.push(
        ipCmd.linkAdd({
          name: v.device,
          kind: 'vxlan',
          mtu: cfg.mtu,
          vni: v.vni,
          dstport: v.port,
          local: v.local,
          link: dev,
          learning: false,
        }),
        ipCmd.linkSet(v.device, { master: cfg.bridge, alias, up: true }),
      );
      r.add(() => this.ip.exec(ipCmd.linkDel(v.device), { allowFailure: true }));
    } else if (link.master !== cfg.bridge || link.mtu !== cfg.mtu || !link.up || link.alias !== alias) {
      cmds.push(ipCmd.linkSet(v.device, { master: cfg.bridge, mtu: cfg.mtu, alias, up: true }));
    }
    await this.ip.batch(cmds);

    const have = floodRemotes(await this.br.fdb(v.device));
    const sync = fdbSync(v.device, v.remotes, have);
    if (sync.cmds.length) {
      ctx?.progress?.(
        `network ${cfg.name}: FDB of ${v.device}${sync.add.length ? ` +${sync.add.join(',')}` : ''}${sync.del.length ? ` -${sync.del.join(',')}` : ''}`,
      );
      r.add(() => this.br.batch(fdbSync(v.device, have, v.remotes).cmds).catch(() => undefined));
      await this.br.batch(sync.cmds);
    }
  }

  /** The device the VXLAN device must send through; refuses an overlay mtu it cannot carry (before any change). */
  private async underlayFor(cfg: NetworkConfig, links: Map<string, IpLink>): Promise<string> {
    const v = cfg.vxlan!;
    const at = `networks.${cfg.name}`;
    const dev = vtepDevice(v, links, await this.ip.addr.list());
    const lower = links.get(dev);
    if (!lower) throw new NotFoundError('underlay', dev);
    const overhead = isIP(v.local) === 6 ? VXLAN_OVERHEAD_V6 : VXLAN_OVERHEAD_V4;
    if (cfg.mtu + overhead > lower.mtu)
      throw new InvalidRequestError(
        `${at}.mtu: ${cfg.mtu} + ${overhead} bytes of VXLAN headers exceeds the underlay ${dev}'s mtu ${lower.mtu}`,
        `${at}.mtu`,
      );
    return dev;
  }

  /** vlan: the 802.1Q device `TRUNK.ID` on the trunk NIC, enslaved to the bridge. */
  private async ensureVlan(cfg: NetworkConfig, links: Map<string, IpLink>, r: Reverter): Promise<void> {
    const v = cfg.vlan!;
    const at = `networks.${cfg.name}`;
    const name = vlanDeviceName(v.trunk, v.id);
    const alias = VLAN_ALIAS_PREFIX + cfg.name;
    const trunk = links.get(v.trunk);
    if (!trunk) throw new NotFoundError('trunk', v.trunk);
    const link = links.get(name);
    if (link && link.kind !== 'vlan')
      throw new ConflictError(`device ${name} exists and is not a vlan device`, `${at}.vlan`);
    if (link?.alias !== undefined && link.alias !== alias)
      throw new ConflictError(`vlan device ${name} exists and belongs to ${link.alias}`, `${at}.vlan`);
    const cmds: IpCommand[] = [];
    if (!trunk.up) cmds.push(ipCmd.linkSet(v.trunk, { up: true }));
    if (!link || link.vlanId !== v.id || link.link !== v.trunk) {
      if (link) cmds.push(ipCmd.linkDel(name));
      cmds.push(
        ipCmd.linkAdd({ name, kind: 'vlan', link: v.trunk, vlanId: v.id, mtu: cfg.mtu }),
        ipCmd.linkSet(name, { master: cfg.bridge, alias, up: true }),
      );
      r.add(() => this.ip.exec(ipCmd.linkDel(name), { allowFailure: true }));
    } else if (link.master !== cfg.bridge || link.mtu !== cfg.mtu || !link.up || link.alias !== alias) {
      cmds.push(ipCmd.linkSet(name, { master: cfg.bridge, mtu: cfg.mtu, alias, up: true }));
    }
    await this.ip.batch(cmds);
  }

  /** Live problems of a vxlan network's VXLAN device and its FDB. */
  private async vxlanProblems(
    c: NetworkConfig,
    links: Map<string, IpLink>,
    addrs: readonly IpAddr[],
  ): Promise<string[]> {
    const v = c.vxlan!;
    const link = links.get(v.device);
    if (!link) return [`vxlan device ${v.device} missing`];
    if (link.kind !== 'vxlan') return [`${v.device} is not a vxlan device`];
    const problems = vxlanDrift(link, v, vtepDevice(v, links, addrs));
    if (link.master !== c.bridge) problems.push(`vxlan ${v.device} not enslaved to ${c.bridge}`);
    if (!link.up) problems.push(`vxlan ${v.device} is down`);
    if (link.mtu !== c.mtu) problems.push(`vxlan ${v.device} mtu is ${link.mtu}, want ${c.mtu}`);
    problems.push(...fdbProblems(v.device, v.remotes, floodRemotes(await this.br.fdb(v.device))));
    return problems;
  }

  /** Puts exactly the gateway address on the bridge (none without a subnet); true when addresses changed. */
  private async ensureGateway(cfg: NetworkConfig, r: Reverter): Promise<boolean> {
    const s = cfg.subnet;
    const want = s ? `${s.gateway}/${s.prefixLength}` : undefined;
    const have = (await this.ip.addr.list({ dev: cfg.bridge, family: 'inet' })).filter(
      (a) => a.scope === 'global',
    );
    const cmds: IpCommand[] = have
      .filter((a) => `${a.local}/${a.prefixLen}` !== want)
      .map((a) => ipCmd.addrDel(cfg.bridge, `${a.local}/${a.prefixLen}`));
    if (want && !have.some((a) => `${a.local}/${a.prefixLen}` === want)) {
      cmds.push(ipCmd.addrAdd(cfg.bridge, want));
      r.add(() => this.ip.exec(ipCmd.addrDel(cfg.bridge, want), { allowFailure: true }));
    }
    await this.ip.batch(cmds);
    return cmds.length > 0;
  }

  /** Bridge mode: enslaves the uplink and moves its IPv4 addresses and routes to the bridge in one batch. */
  private async ensureUplink(
    cfg: NetworkConfig,
    links: Map<string, IpLink>,
    r: Reverter,
    prevMoved: NetworkState['moved'],
  ): Promise<NonNullable<NetworkState['moved']>> {
    const uplink = cfg.uplink!;
    const ul = links.get(uplink);
    if (!ul) throw new NotFoundError('uplink', uplink);
    if (ul.master && ul.master !== cfg.bridge) {
      throw new ConflictError(
        `uplink ${uplink} is already a port of ${ul.master}`,
        `networks.${cfg.name}.uplink`,
      );
    }
    const addrs = (await this.ip.addr.list({ dev: uplink, family: 'inet' })).filter(
      (a) => a.scope === 'global',
    );
    const routes = addrs.length ? movableRoutes(await this.ip.route.list({ dev: uplink })) : [];
    const cmds = moveCommands(
      uplink,
      cfg.bridge,
      addrs.map((a) => `${a.local}/${a.prefixLen}`),
      routes,
    );
    if (ul.master !== cfg.bridge) cmds.unshift(ipCmd.linkSet(uplink, { master: cfg.bridge, up: true }));
    else if (!ul.up) cmds.unshift(ipCmd.linkSet(uplink, { up: true }));
    // Same MAC on the bridge as on the NIC, so neighbours' ARP caches stay right.
    const br = links.get(cfg.bridge);
    if (ul.address && br?.address !== ul.address && ul.master !== cfg.bridge) {
      cmds.unshift(ipCmd.linkSet(cfg.bridge, { address: ul.address }));
    }
    if (cmds.length) {
      r.add(() => this.releaseUplink(cfg.bridge, uplink));
      await this.ip.batch(cmds);
    }
    const moved = {
      addrs: [...new Set([...(prevMoved?.addrs ?? []), ...addrs.map((a) => `${a.local}/${a.prefixLen}`)])],
      routes: [...(prevMoved?.routes ?? []), ...routes],
    };
    return moved;
  }

  /** Gives the bridge's IPv4 addresses and routes back to the uplink and releases it, in one batch. */
  private async releaseUplink(bridge: string, uplink: string): Promise<void> {
    const [br, ul] = await Promise.all([this.ip.link.get(bridge), this.ip.link.get(uplink)]);
    if (!ul) return;
    const addrs = br
      ? (await this.ip.addr.list({ dev: bridge, family: 'inet' })).filter((a) => a.scope === 'global')
      : [];
    const routes = addrs.length ? movableRoutes(await this.ip.route.list({ dev: bridge })) : [];
    const cmds = moveCommands(
      bridge,
      uplink,
      addrs.map((a) => `${a.local}/${a.prefixLen}`),
      routes,
    );
    if (ul.master === bridge) cmds.unshift(ipCmd.linkSet(uplink, { master: null }));
    await this.ip.batch(cmds);
  }

  /** Deletes the network's vxlan/vlan device when it is one this driver made (or unlabelled). */
  private async deleteMember(c: NetworkConfig): Promise<void> {
    const m = memberDevice(c);
    if (!m) return;
    const link = await this.ip.link.get(m.name);
    const alias = (m.kind === 'vxlan' ? VXLAN_ALIAS_PREFIX : VLAN_ALIAS_PREFIX) + c.name;
    if (link && link.kind === m.kind && (link.alias === undefined || link.alias === alias))
      await this.ip.link.del(m.name);
  }

  /** Takes a network's realisation down (dnsmasq, uplink, member device, bridge); keeps its state files. */
  private async teardown(state: NetworkState): Promise<void> {
    const c = state.config;
    await this.dnsmasq.stop(dnsmasqPaths(this.stateDir, c.name));
    if (c.mode === 'bridge' && c.uplink) await this.releaseUplink(c.bridge, c.uplink);
    await this.deleteMember(c);
    const br = await this.ip.link.get(c.bridge);
    if (br && br.kind === 'bridge' && (br.alias === undefined || br.alias === ALIAS_PREFIX + c.name)) {
      await this.ip.link.del(c.bridge);
    }
  }

  /**
   * Rebuilds the host table from every persisted network and swaps it in atomically (or deletes it). A table this
   * driver knows it deleted is not deleted again: overlays without a gateway need no rules, and each of their steps
   * would otherwise cost an `nft` run.
   */
  private async applyRuleset(): Promise<void> {
    const text = buildRuleset((await this.readAllStates()).map((s) => s.config));
    if (text) {
      this.tableAbsent = false;
      await this.nft.replaceTable(TABLE_FAMILY, TABLE_NAME, text);
    } else if (!this.tableAbsent) {
      await this.nft.deleteTable(TABLE_FAMILY, TABLE_NAME);
      this.tableAbsent = true;
    }
  }

  private async ipForwarding(): Promise<boolean> {
    // In its own namespace (the agent's case) /proc answers without spawning sysctl.
    if (this.netns === undefined)
      return (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim() === '1';
    const r = await this.runner.run(['sysctl', '-n', 'net.ipv4.ip_forward'], { netns: this.netns });
    return r.stdout.trim() === '1';
  }

  private async probe(): Promise<HostCapabilities['network']> {
    const ns = `vlcap-${randomBytes(4).toString('hex')}`;
    const caps: Record<string, boolean> = Object.fromEntries(NETWORK_FEATURES.map((f) => [f, false]));
    await this.ip.namespaces.add(ns);
    try {
      const inNs = new Ip(this.runner, ns);
      const tryCmd = async (cmd: IpCommand) => (await inNs.exec(cmd, { allowFailure: true })).code === 0;
      await inNs.exec(ipCmd.linkAdd({ name: 'p0', kind: 'veth', peer: 'p1' }));
      caps.vlan = await tryCmd(ipCmd.linkAdd({ name: 'v0', kind: 'vlan', link: 'p0', vlanId: 10 }));
      caps.vxlan = await tryCmd(
        ipCmd.linkAdd({ name: 'x0', kind: 'vxlan', vni: 42, dstport: 4789, local: '127.0.0.1' }),
      );
      caps.macvlan = await tryCmd(ipCmd.linkAdd({ name: 'm0', kind: 'macvlan', link: 'p0' }));
      caps.bond = await tryCmd(ipCmd.linkAdd({ name: 'b0', kind: 'bond' }));
      caps.geneve = await tryCmd(ipCmd.linkAdd({ name: 'g0', kind: 'geneve', vni: 42, remote: '192.0.2.1' }));
      caps.bridgeVlanFiltering = await tryCmd(
        ipCmd.linkAdd({ name: 'br0', kind: 'bridge', vlanFiltering: true }),
      );
      caps.tap = await tryCmd(ipCmd.tuntapAdd({ name: 't0', mode: 'tap', vnetHdr: true }));
      caps.nftables =
        (
          await this.runner.run(['nft', '-f', '-'], {
            netns: ns,
            input: 'table inet vlcap {}\n',
            allowFailure: true,
          })
        ).code === 0;
    } finally {
      await this.ip.namespaces.del(ns);
    }
    return caps;
  }

  private netDir(name: string): string {
    return join(this.stateDir, 'networks', name);
  }

  private uplinkFile(): string {
    return join(this.stateDir, 'uplink.json');
  }

  private async readUplinkState(): Promise<UplinkState | undefined> {
    try {
      const s = JSON.parse(await readFile(this.uplinkFile(), 'utf8')) as UplinkState;
      return s.version === 1 && s.config?.device ? s : undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  private async writeUplinkState(s: UplinkState): Promise<void> {
    await mkdir(this.stateDir, { recursive: true, mode: 0o755 });
    await writeAtomic(this.uplinkFile(), `${JSON.stringify(s, null, 2)}\n`);
  }

  private async readState(name: string): Promise<NetworkState | undefined> {
    try {
      const s = JSON.parse(await readFile(join(this.netDir(name), 'network.json'), 'utf8')) as NetworkState;
      return s.version === 1 && s.config?.name === name ? s : undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  private async readAllStates(): Promise<NetworkState[]> {
    let names: string[];
    try {
      names = await readdir(join(this.stateDir, 'networks'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const states = await Promise.all(names.filter((n) => NAME.test(n)).map((n) => this.readState(n)));
    return states
      .filter((s): s is NetworkState => s !== undefined)
      .sort((a, b) => (a.config.name < b.config.name ? -1 : 1));
  }

  private async writeState(s: NetworkState): Promise<void> {
    const dir = this.netDir(s.config.name);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await writeAtomic(join(dir, 'network.json'), `${JSON.stringify(s, null, 2)}\n`);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }
}

/** Writes a file through a temporary file and a rename, so readers never see half of it. */
async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode: 0o644 });
  await rename(tmp, path);
}

/** Live problems of a vlan network's 802.1Q device. */
function vlanProblems(c: NetworkConfig, links: Map<string, IpLink>): string[] {
  const v = c.vlan!;
  const name = vlanDeviceName(v.trunk, v.id);
  if (!links.has(v.trunk)) return [`trunk ${v.trunk} missing`];
  const link = links.get(name);
  if (!link) return [`vlan device ${name} missing`];
  if (link.kind !== 'vlan') return [`${name} is not a vlan device`];
  const problems: string[] = [];
  if (link.vlanId !== v.id) problems.push(`vlan ${name} has id ${link.vlanId}, want ${v.id}`);
  if (link.link !== v.trunk) problems.push(`vlan ${name} is on ${link.link ?? 'unknown'}, want ${v.trunk}`);
  if (link.master !== c.bridge) problems.push(`vlan ${name} not enslaved to ${c.bridge}`);
  if (!link.up) problems.push(`vlan ${name} is down`);
  if (link.mtu !== c.mtu) problems.push(`vlan ${name} mtu is ${link.mtu}, want ${c.mtu}`);
  return problems;
}

/** Batch lines that move addresses and routes from one device to another (link routes first, default last). */
export function moveCommands(from: string, to: string, addrs: string[], routes: IpRoute[]): IpCommand[] {
  const order = (r: IpRoute) => (r.dst === 'default' ? 2 : r.gateway ? 1 : 0);
  return [
    ...addrs.map((a) => ipCmd.addrDel(from, a)),
    ...addrs.map((a) => ipCmd.addrAdd(to, a)),
    ...[...routes].sort((a, b) => order(a) - order(b)).map((r) => ipCmd.routeReplace(routeSpecOf(r, to))),
  ];
}
