// Bridge mode moves the uplink NIC's IPv4 addresses and routes onto the bridge that enslaves it, and
// gives them back when the network goes; each move is one `ip -batch`, so the host is never left
// half-addressed between two commands.
import { type Ip, type IpCommand, ipCmd } from '../../../exec/ip.js';
import { type IpLink, type IpRoute, routeSpecOf } from '../../../exec/ip-parse.js';
import { ConflictError, NotFoundError } from '../../../shared/errors.js';
import type { NetworkConfig } from '../../../shared/model.js';
import type { Reverter } from '../../../shared/revert.js';
import type { NetworkState } from './state.js';
import { movableRoutes } from './uplink.js';

/** Batch lines that move addresses and routes from one device to another (link routes first, default last). */
export function moveCommands(from: string, to: string, addrs: string[], routes: IpRoute[]): IpCommand[] {
  const order = (r: IpRoute) => (r.dst === 'default' ? 2 : r.gateway ? 1 : 0);
  return [
    ...addrs.map((a) => ipCmd.addrDel(from, a)),
    ...addrs.map((a) => ipCmd.addrAdd(to, a)),
    ...[...routes].sort((a, b) => order(a) - order(b)).map((r) => ipCmd.routeReplace(routeSpecOf(r, to))),
  ];
}

/**
 * Bridge mode: enslaves the uplink and moves its IPv4 addresses and routes to the bridge in one batch;
 * returns everything moved so far (`prevMoved` plus this call's), for the network's state.
 */
export async function enslaveUplink(
  ip: Ip,
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
  const addrs = (await ip.addr.list({ dev: uplink, family: 'inet' })).filter((a) => a.scope === 'global');
  const routes = addrs.length ? movableRoutes(await ip.route.list({ dev: uplink })) : [];
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
    r.add(() => releaseUplink(ip, cfg.bridge, uplink));
    await ip.batch(cmds);
  }
  return {
    addrs: [...new Set([...(prevMoved?.addrs ?? []), ...addrs.map((a) => `${a.local}/${a.prefixLen}`)])],
    routes: [...(prevMoved?.routes ?? []), ...routes],
  };
}

/** Gives the bridge's IPv4 addresses and routes back to the uplink and releases it, in one batch. */
export async function releaseUplink(ip: Ip, bridge: string, uplink: string): Promise<void> {
  const [br, ul] = await Promise.all([ip.link.get(bridge), ip.link.get(uplink)]);
  if (!ul) return;
  const addrs = br
    ? (await ip.addr.list({ dev: bridge, family: 'inet' })).filter((a) => a.scope === 'global')
    : [];
  const routes = addrs.length ? movableRoutes(await ip.route.list({ dev: bridge })) : [];
  const cmds = moveCommands(
    bridge,
    uplink,
    addrs.map((a) => `${a.local}/${a.prefixLen}`),
    routes,
  );
  if (ul.master === bridge) cmds.unshift(ipCmd.linkSet(uplink, { master: null }));
  await ip.batch(cmds);
}
