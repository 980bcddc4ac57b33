// Linux network backend: a bridge per network, dnsmasq per nat/isolated network, one nftables
// table per host, persistent taps for VM ports. Every command goes through the runner (optionally
// inside one network namespace); applied configs persist under <stateDir>/networks/<name>/.
//
// Forwarding: a nat network sets net.ipv4.ip_forward=1 in the namespace the driver manages (the
// host's own namespace for an agent on a real host, a lab namespace in tests); it is never reset,
// since other software on the host may rely on it.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  assertIfName,
  Ip,
  type IpCommand,
  type IpLink,
  type IpRoute,
  ipCmd,
  routeSpecOf,
} from '../../../exec/ip.js';
import { Nft } from '../../../exec/nft.js';
import type { Runner } from '../../../exec/runner.js';
import { ConflictError, InvalidRequestError, NotFoundError } from '../../../shared/errors.js';
import type { HostCapabilities, NetworkConfig, ObservedNetwork } from '../../../shared/model.js';
import { Reverter } from '../../../shared/revert.js';
import type { NetworkDriver, OpContext, PortConfig } from '../types.js';
import { DnsmasqManager, dnsmasqPaths } from './dnsmasq.js';
import { buildRuleset, needsRules, TABLE_FAMILY, TABLE_NAME } from './ruleset.js';

/** Bridges this driver creates carry the alias `vmlink:net:<network>` so it can find them again. */
export const ALIAS_PREFIX = 'vmlink:net:';

/** Options of `LinuxNetworkDriver`. */
export interface LinuxNetworkDriverOptions {
  runner: Runner;
  /** Agent state directory; networks persist under `<stateDir>/networks/<name>/`. */
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
  } else if (!cfg.subnet) {
    throw new InvalidRequestError(`${at}.subnet: ${cfg.mode} mode needs a subnet`, `${at}.subnet`);
  }
  if (cfg.mode !== 'nat' && cfg.forwards.length > 0) {
    throw new InvalidRequestError(`${at}.forwards: port forwards need nat mode`, `${at}.forwards`);
  }
  // Renders (and so validates) the ruleset fragment of this network alone.
  buildRuleset([cfg]);
}

/** The linux bridge + nftables + dnsmasq network backend. */
export class LinuxNetworkDriver implements NetworkDriver {
  private readonly runner: Runner;
  private readonly stateDir: string;
  private readonly netns: string | undefined;
  private readonly ip: Ip;
  private readonly nft: Nft;
  private readonly dnsmasq: DnsmasqManager;
  private caps: Promise<HostCapabilities['network']> | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: LinuxNetworkDriverOptions) {
    this.runner = opts.runner;
    this.stateDir = opts.stateDir;
    this.netns = opts.netns;
    this.ip = new Ip(opts.runner, opts.netns);
    this.nft = new Nft(opts.runner, opts.netns);
    this.dnsmasq = new DnsmasqManager(opts.runner, opts.netns);
  }

  // Networks.

  /** Creates the network or converges it to `cfg` from any partial state; undoes this call's changes on failure. */
  async ensureNetwork(cfg: NetworkConfig, configHash: string, ctx?: OpContext): Promise<void> {
    validateNetworkConfig(cfg);
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
        // No state: still remove a bridge this driver labelled for the network.
        const orphan = (await this.ip.link.list()).find((l) => l.alias === ALIAS_PREFIX + name);
        if (orphan) await this.ip.link.del(orphan.name);
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
      } else {
        const s4 = c.subnet!;
        if (
          br &&
          !addrs.some((a) => a.dev === c.bridge && a.local === s4.gateway && a.prefixLen === s4.prefixLength)
        ) {
          problems.push(`address ${s4.gateway}/${s4.prefixLength} missing on ${c.bridge}`);
        }
        if ((await this.dnsmasq.pid(dnsmasqPaths(this.stateDir, c.name))) === undefined)
          problems.push('dnsmasq not running');
        if (!tablePresent) problems.push(`nftables table ${TABLE_FAMILY} ${TABLE_NAME} missing`);
        if (c.mode === 'nat') {
          forwarding ??= await this.ipForwarding();
          if (!forwarding) problems.push('net.ipv4.ip_forward is off');
        }
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

  // Ports.

  /** Creates the persistent tap (vnet_hdr) if missing, attaches it to the bridge, sets mtu, brings it up. */
  async ensurePort(port: PortConfig, ctx?: OpContext): Promise<void> {
    assertIfName(port.tap, 'tap');
    assertIfName(port.bridge, 'bridge');
    ctx?.signal?.throwIfAborted();
    const br = await this.ip.link.get(port.bridge);
    if (br?.kind !== 'bridge') throw new NotFoundError('bridge', port.bridge);
    const r = new Reverter();
    try {
      let tap = await this.ip.link.get(port.tap);
      if (tap && tap.kind !== 'tun')
        throw new ConflictError(`device ${port.tap} exists and is not a tap`, port.tap);
      if (!tap) {
        await this.ip.tuntap.add({ name: port.tap, mode: 'tap', vnetHdr: true });
        r.add(() => this.ip.tuntap.del(port.tap));
        tap = await this.ip.link.get(port.tap);
      }
      if (tap?.master !== port.bridge || tap.mtu !== port.mtu || !tap.up) {
        await this.ip.link.set(port.tap, { master: port.bridge, mtu: port.mtu, up: true });
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

  // Host.

  /** Probes kernel features once, in a scratch namespace `vlcap-<random>` that is deleted afterwards. */
  capabilities(): Promise<HostCapabilities['network']> {
    this.caps ??= this.probe().catch((e) => {
      this.caps = undefined;
      throw e;
    });
    return this.caps;
  }

  // Internals.

  private async doEnsure(cfg: NetworkConfig, configHash: string, ctx?: OpContext): Promise<void> {
    ctx?.signal?.throwIfAborted();
    const states = await this.readAllStates();
    const clash = states.find((s) => s.config.name !== cfg.name && s.config.bridge === cfg.bridge);
    if (clash)
      throw new ConflictError(
        `bridge ${cfg.bridge} already belongs to network ${clash.config.name}`,
        `networks.${cfg.name}.bridge`,
      );
    const uplinkClash =
      cfg.mode === 'bridge' &&
      states.find(
        (s) => s.config.name !== cfg.name && s.config.mode === 'bridge' && s.config.uplink === cfg.uplink,
      );
    if (uplinkClash)
      throw new ConflictError(
        `uplink ${cfg.uplink} already belongs to network ${uplinkClash.config.name}`,
        `networks.${cfg.name}.uplink`,
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

    const r = new Reverter();
    try {
      const links = new Map((await this.ip.link.list()).map((l) => [l.name, l]));
      if (cfg.mode === 'bridge' && !links.has(cfg.uplink!)) throw new NotFoundError('uplink', cfg.uplink!);
      const created = await this.ensureBridge(cfg, links.get(cfg.bridge), r);
      let moved: NetworkState['moved'];
      let readdressed = false;
      const paths = dnsmasqPaths(this.stateDir, cfg.name);
      if (cfg.mode === 'bridge') {
        moved = await this.ensureUplink(cfg, links, r, prev?.moved);
      } else {
        readdressed = await this.ensureGateway(cfg, r);
        if (cfg.mode === 'nat' && !(await this.ipForwarding())) {
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

      if (cfg.mode === 'bridge') await this.dnsmasq.stop(paths);
      else {
        const prevConf = await readFile(paths.conf, 'utf8').catch(() => undefined);
        // dnsmasq binds the bridge's addresses once: a re-created bridge or new address needs a restart.
        const did = await this.dnsmasq.ensure(cfg, paths, created || readdressed);
        if (did !== 'unchanged') {
          ctx?.progress?.(`network ${cfg.name}: dnsmasq ${did}`);
          r.add(async () => {
            await this.dnsmasq.stop(paths);
            if (prev && prevConf !== undefined && prev.config.mode !== 'bridge')
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

  /** Puts exactly the gateway address on the bridge; true when addresses changed. */
  private async ensureGateway(cfg: NetworkConfig, r: Reverter): Promise<boolean> {
    const s = cfg.subnet!;
    const want = `${s.gateway}/${s.prefixLength}`;
    const have = (await this.ip.addr.list({ dev: cfg.bridge, family: 'inet' })).filter(
      (a) => a.scope === 'global',
    );
    const cmds: IpCommand[] = have
      .filter((a) => `${a.local}/${a.prefixLen}` !== want)
      .map((a) => ipCmd.addrDel(cfg.bridge, `${a.local}/${a.prefixLen}`));
    if (!have.some((a) => `${a.local}/${a.prefixLen}` === want)) {
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

  /** Takes a network's realisation down (dnsmasq, uplink, bridge); keeps its state files. */
  private async teardown(state: NetworkState): Promise<void> {
    const c = state.config;
    await this.dnsmasq.stop(dnsmasqPaths(this.stateDir, c.name));
    if (c.mode === 'bridge' && c.uplink) await this.releaseUplink(c.bridge, c.uplink);
    const br = await this.ip.link.get(c.bridge);
    if (br && br.kind === 'bridge' && (br.alias === undefined || br.alias === ALIAS_PREFIX + c.name)) {
      await this.ip.link.del(c.bridge);
    }
  }

  /** Rebuilds the host table from every persisted network and swaps it in atomically (or deletes it). */
  private async applyRuleset(): Promise<void> {
    const text = buildRuleset((await this.readAllStates()).map((s) => s.config));
    if (text) await this.nft.replaceTable(TABLE_FAMILY, TABLE_NAME, text);
    else await this.nft.deleteTable(TABLE_FAMILY, TABLE_NAME);
  }

  private async ipForwarding(): Promise<boolean> {
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
    const tmp = join(dir, `.network.json.${process.pid}.tmp`);
    await writeFile(tmp, `${JSON.stringify(s, null, 2)}\n`, { mode: 0o644 });
    await rename(tmp, join(dir, 'network.json'));
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }
}

/** Routes to carry over when addresses move: everything but the kernel's own subnet routes. */
function movableRoutes(routes: IpRoute[]): IpRoute[] {
  return routes.filter((r) => r.protocol !== 'kernel' && (r.type === undefined || r.type === 'unicast'));
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
