// The host's uplink (MTU, IPv4 addresses, default route) as the linux backend manages it: observe,
// snapshot, configure in one `ip -batch`, and restore a snapshot exactly (commit-confirm rollback).
// The addresses live on the bridge enslaving the uplink when there is one (a bridge-mode network).
import { isIPv4 } from 'node:net';
import { assertIfName, Ip, type IpCommand, ipCmd } from '../../../exec/ip.js';
import { type IpRoute, routeSpecOf } from '../../../exec/ip-parse.js';
import type { Runner } from '../../../exec/runner.js';
import { InvalidRequestError, NotFoundError } from '../../../shared/errors.js';
import { isLinkMtu, LINK_MTU_MAX, MTU_MIN } from '../../../shared/limits.js';
import { log } from '../../../shared/log.js';
import type { ObservedUplink, UplinkConfig } from '../../../shared/model.js';
import type { OpContext } from '../types.js';
import type { LinuxNetworkStateStore } from './state.js';

/** The uplink's state at one moment: everything `restoreUplink` puts back. */
export interface UplinkSnapshot {
  device: string;
  /** The device carrying the addresses (the uplink, or the bridge enslaving it). */
  addressDevice: string;
  mtu: number;
  /** MTU of `addressDevice` when it is not the uplink itself. */
  addressDeviceMtu?: number;
  /** Global IPv4 addresses of `addressDevice`, with prefix. */
  addresses: string[];
  /** Routes through `addressDevice` other than the kernel's own subnet routes (the default route among them). */
  routes: IpRoute[];
}

/** Whether the uplink as observed still has what `cfg` asked for (the fields it sets). */
export function uplinkMatches(cfg: UplinkConfig, snap: UplinkSnapshot): boolean {
  if (cfg.device !== snap.device) return false;
  if (cfg.mtu !== undefined && (snap.mtu !== cfg.mtu || (snap.addressDeviceMtu ?? cfg.mtu) !== cfg.mtu))
    return false;
  if (cfg.addresses !== undefined) {
    const want = [...cfg.addresses].sort();
    const have = [...snap.addresses].sort();
    if (want.length !== have.length || want.some((a, i) => a !== have[i])) return false;
  }
  if (cfg.gateway !== undefined && !snap.routes.some((r) => r.dst === 'default' && r.gateway === cfg.gateway))
    return false;
  return true;
}

/** Refuses an uplink config that is not plain values, naming the field. */
export function validateUplinkConfig(cfg: UplinkConfig): void {
  const at = 'hosts.network';
  if (!/^[A-Za-z0-9_.@:-]{1,15}$/.test(cfg.device))
    throw new InvalidRequestError(
      `${at}: invalid uplink device ${JSON.stringify(cfg.device)}`,
      'hosts.uplink',
    );
  // Only what is configured: a rollback puts back whatever MTU the NIC had, inside these bounds or not.
  if (cfg.mtu !== undefined && !isLinkMtu(cfg.mtu))
    throw new InvalidRequestError(
      `${at}.mtu: ${cfg.mtu} out of range ${MTU_MIN}-${LINK_MTU_MAX}`,
      `${at}.mtu`,
    );
  for (const [i, a] of (cfg.addresses ?? []).entries()) {
    const [ip, len, ...rest] = a.split('/');
    if (rest.length || !ip || !isIPv4(ip) || !/^\d{1,2}$/.test(len ?? '') || Number(len) > 32)
      throw new InvalidRequestError(
        `${at}.addresses[${i}]: ${JSON.stringify(a)} is not an IPv4 address with prefix`,
        `${at}.addresses[${i}]`,
      );
  }
  if (cfg.gateway !== undefined && !isIPv4(cfg.gateway))
    throw new InvalidRequestError(
      `${at}.gateway: ${JSON.stringify(cfg.gateway)} is not an IPv4 address`,
      `${at}.gateway`,
    );
}

/** Routes to carry over or restore: everything but the kernel's own subnet routes. */
export function movableRoutes(routes: readonly IpRoute[]): IpRoute[] {
  return routes.filter((r) => r.protocol !== 'kernel' && (r.type === undefined || r.type === 'unicast'));
}

/** Reads the uplink's state as a snapshot (throws `NotFoundError` when the device does not exist). */
export async function readUplink(ip: Ip, device: string): Promise<UplinkSnapshot> {
  const link = await ip.link.get(device);
  if (!link) throw new NotFoundError('uplink', device);
  let addressDevice = device;
  let addressDeviceMtu: number | undefined;
  if (link.master) {
    const m = await ip.link.get(link.master);
    if (m?.kind === 'bridge') {
      addressDevice = m.name;
      addressDeviceMtu = m.mtu;
    }
  }
  return {
    device,
    addressDevice,
    mtu: link.mtu,
    ...(addressDeviceMtu === undefined ? {} : { addressDeviceMtu }),
    ...(await addressesAndRoutes(ip, addressDevice)),
  };
}

async function addressesAndRoutes(ip: Ip, dev: string): Promise<{ addresses: string[]; routes: IpRoute[] }> {
  const addresses = (await ip.addr.list({ dev, family: 'inet' }))
    .filter((a) => a.scope === 'global')
    .map((a) => `${a.local}/${a.prefixLen}`);
  return { addresses, routes: movableRoutes(await ip.route.list({ dev })) };
}

const routeKey = (r: IpRoute) => `${r.dst}|${r.gateway ?? ''}|${r.metric ?? 0}`;
/** Link routes first, then gateway routes, the default route last (each needs the one before). */
const routeOrder = (r: IpRoute) => (r.dst === 'default' ? 2 : r.gateway ? 1 : 0);

function ipv4Int(a: string): number {
  return a.split('.').reduce((n, o) => ((n << 8) | Number(o)) >>> 0, 0);
}

/** Whether IPv4 `addr` lies in the subnet of any of `cidrs` (address/prefix). */
export function inSubnets(addr: string, cidrs: readonly string[]): boolean {
  if (!isIPv4(addr)) return false;
  return cidrs.some((c) => {
    const [net, len] = c.split('/');
    const bits = Number(len);
    if (!net || !isIPv4(net)) return false;
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    return (ipv4Int(addr) & mask) >>> 0 === (ipv4Int(net) & mask) >>> 0;
  });
}

/**
 * The one batch that brings the uplink from `snap` to `cfg`: MTU (uplink, then its bridge), addresses
 * (stale ones deleted before new ones are added, so a new address never becomes a deleted primary's
 * secondary), then the default route and the static routes the kernel flushed with old addresses.
 * Empty when the uplink already matches.
 */
export function uplinkCommands(snap: UplinkSnapshot, cfg: UplinkConfig): IpCommand[] {
  const dev = snap.addressDevice;
  const cmds: IpCommand[] = [];
  if (cfg.mtu !== undefined) {
    if (snap.mtu !== cfg.mtu) cmds.push(ipCmd.linkSet(snap.device, { mtu: cfg.mtu }));
    if (dev !== snap.device && snap.addressDeviceMtu !== cfg.mtu)
      cmds.push(ipCmd.linkSet(dev, { mtu: cfg.mtu }));
  }
  const want = cfg.addresses ?? snap.addresses;
  const del = snap.addresses.filter((a) => !want.includes(a));
  const add = want.filter((a) => !snap.addresses.includes(a));
  cmds.push(...del.map((a) => ipCmd.addrDel(dev, a)), ...add.map((a) => ipCmd.addrAdd(dev, a)));

  const defaults = snap.routes.filter((r) => r.dst === 'default');
  const current = defaults[0];
  const reroute: IpRoute[] = [];
  if (del.length) {
    // Deleting addresses may flush routes through them: put back the ones still reachable.
    reroute.push(
      ...snap.routes.filter((r) => r.dst !== 'default' && (!r.gateway || inSubnets(r.gateway, want))),
    );
  }
  if (cfg.gateway !== undefined) {
    if (del.length || current?.gateway !== cfg.gateway || defaults.length > 1) {
      // Same metric as the route it replaces, so `route replace` swaps it in place.
      cmds.push(
        ...defaults
          .slice(1)
          .map((r) => ipCmd.routeDel({ dst: 'default', gateway: r.gateway, dev, metric: r.metric })),
      );
      reroute.push({
        dst: 'default',
        gateway: cfg.gateway,
        flags: [],
        ...(current?.metric === undefined ? {} : { metric: current.metric }),
      });
    }
  } else if (del.length && current?.gateway && inSubnets(current.gateway, want)) {
    reroute.push(current);
  }
  cmds.push(
    ...[...reroute]
      .sort((a, b) => routeOrder(a) - routeOrder(b))
      .map((r) => ipCmd.routeReplace(routeSpecOf(r, dev))),
  );
  return cmds;
}

/**
 * The one batch that brings the uplink from `now` back to `snap` exactly: MTUs, routes that were
 * not there, addresses, then every snapshot route (re-created where the kernel flushed it).
 */
export function restoreCommands(snap: UplinkSnapshot, now: UplinkSnapshot): IpCommand[] {
  const dev = snap.addressDevice;
  const cmds: IpCommand[] = [];
  if (now.mtu !== snap.mtu) cmds.push(ipCmd.linkSet(snap.device, { mtu: snap.mtu }));
  if (snap.addressDeviceMtu !== undefined && now.addressDeviceMtu !== snap.addressDeviceMtu)
    cmds.push(ipCmd.linkSet(dev, { mtu: snap.addressDeviceMtu }));
  const keep = new Set(snap.routes.map(routeKey));
  cmds.push(
    ...now.routes
      .filter((r) => !keep.has(routeKey(r)))
      .sort((a, b) => routeOrder(b) - routeOrder(a))
      .map((r) =>
        ipCmd.routeDel({
          dst: r.dst,
          dev,
          ...(r.gateway ? { gateway: r.gateway } : {}),
          ...(r.metric === undefined ? {} : { metric: r.metric }),
        }),
      ),
  );
  cmds.push(
    ...now.addresses.filter((a) => !snap.addresses.includes(a)).map((a) => ipCmd.addrDel(dev, a)),
    ...snap.addresses.filter((a) => !now.addresses.includes(a)).map((a) => ipCmd.addrAdd(dev, a)),
  );
  const nowKeys = new Set(now.routes.map(routeKey));
  const addrChanged = cmds.some((c) => c[0] === 'addr');
  cmds.push(
    ...[...snap.routes]
      .filter((r) => addrChanged || !nowKeys.has(routeKey(r)))
      .sort((a, b) => routeOrder(a) - routeOrder(b))
      .map((r) => ipCmd.routeReplace(routeSpecOf(r, dev))),
  );
  return cmds;
}

/** Puts the uplink back exactly as `snap` (from `readUplink`) recorded it (MTU, addresses, routes), in one `ip -batch`. */
export async function putBackUplink(ip: Ip, snap: UplinkSnapshot): Promise<void> {
  const link = await ip.link.get(snap.device);
  if (!link) throw new NotFoundError('uplink', snap.device);
  const bridge = snap.addressDevice === snap.device ? undefined : await ip.link.get(snap.addressDevice);
  const now: UplinkSnapshot = {
    device: snap.device,
    addressDevice: snap.addressDevice,
    mtu: link.mtu,
    ...(bridge ? { addressDeviceMtu: bridge.mtu } : {}),
    ...(snap.addressDevice === snap.device || bridge
      ? await addressesAndRoutes(ip, snap.addressDevice)
      : { addresses: [], routes: [] }),
  };
  await ip.batch(restoreCommands(snap, now));
}

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

/** The uplink as it is now: its MTU, the device carrying its addresses, addresses, default gateway, applied hash. */
export async function observeUplink(
  ip: Ip,
  states: LinuxNetworkStateStore,
  device: string,
): Promise<ObservedUplink> {
  assertIfName(device, 'uplink');
  const snap = await readUplink(ip, device);
  const gateway = snap.routes.find((r) => r.dst === 'default' && r.gateway)?.gateway;
  const state = await states.readUplink();
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
 * Brings the uplink in line with a validated `cfg` in ONE `ip -batch`, then persists `cfg` and
 * `configHash`; nothing runs when it already matches, and a failed batch is rolled back to before.
 */
export async function applyUplink(
  ip: Ip,
  states: LinuxNetworkStateStore,
  cfg: UplinkConfig,
  configHash: string,
  ctx?: OpContext,
): Promise<void> {
  ctx?.signal?.throwIfAborted();
  const snap = await readUplink(ip, cfg.device);
  const cmds = uplinkCommands(snap, cfg);
  if (cmds.length) {
    ctx?.progress?.(`uplink ${cfg.device}: ${cmds.length} change(s) in one batch`);
    try {
      await ip.batch(cmds);
    } catch (e) {
      await putBackUplink(ip, snap).catch((err) =>
        log.warn({ err }, `uplink ${cfg.device}: restoring after a failed change failed`),
      );
      throw e;
    }
  }
  await states.writeUplink({ version: 1, config: cfg, configHash });
}
