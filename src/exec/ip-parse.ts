// Parsers of iproute2's `-json` answers (links, addresses, routes, namespaces): what `ip` reports, as typed
// objects. Input is the machine's own iproute2 output; fields it lacks stay undefined.
import type { RouteSpec } from './ip.js';

/** A link as parsed from `ip -json -details link show`. */
export interface IpLink {
  name: string;
  index: number;
  /** `linkinfo.info_kind` (bridge, veth, tun, vxlan, ...); undefined for plain NICs. */
  kind?: string;
  /** tun/tap: `tap` or `tun`. */
  tunType?: string;
  master?: string;
  alias?: string;
  mtu: number;
  /** Administratively up (IFF_UP). */
  up: boolean;
  operstate: string;
  address?: string;
  /** Top-level `link`: the parent device (vlan, macvlan) or veth peer, when in the same namespace. */
  link?: string;
  /** vxlan devices: their tunnel parameters (`linkinfo.info_data`). */
  vxlan?: { vni: number; local?: string; port: number; dev?: string; learning: boolean };
  /** vlan devices: the 802.1Q id. */
  vlanId?: number;
  /** bridges: whether VLAN filtering is on. */
  vlanFiltering?: boolean;
  /** Its device group (0: `default`; names from /etc/iproute2/group are left out). */
  group?: number;
}

/** An address as parsed from `ip -json addr show`. */
export interface IpAddr {
  dev: string;
  family: 'inet' | 'inet6';
  local: string;
  prefixLen: number;
  scope: string;
  broadcast?: string;
}

/** A route as parsed from `ip -json route show`. */
export interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  metric?: number;
  prefsrc?: string;
  type?: string;
  flags: string[];
}

type Json = Record<string, unknown>;

/** The objects of an iproute2 `-json` answer (an array; anything else in it is dropped). */
export function parseArray(text: string): Json[] {
  const t = text.trim();
  if (t === '') return [];
  const v: unknown = JSON.parse(t);
  if (!Array.isArray(v)) throw new Error('ip -json: expected an array');
  return v.filter((x): x is Json => typeof x === 'object' && x !== null);
}

/** A non-empty string field of an iproute2 `-json` object, else undefined. */
export const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);

/** Parses `ip -json [-details] link show`. */
export function parseLinks(text: string): IpLink[] {
  return parseArray(text).map((o) => {
    const info = (o.linkinfo ?? {}) as Json;
    const data = (info.info_data ?? {}) as Json;
    const flags = Array.isArray(o.flags) ? (o.flags as string[]) : [];
    const link: IpLink = {
      name: String(o.ifname),
      index: num(o.ifindex) ?? 0,
      mtu: num(o.mtu) ?? 0,
      up: flags.includes('UP'),
      operstate: str(o.operstate) ?? 'UNKNOWN',
    };
    const kind = str(info.info_kind);
    if (kind) link.kind = kind;
    const tunType = str(data.type);
    if (kind === 'tun' && tunType) link.tunType = tunType;
    const master = str(o.master);
    if (master) link.master = master;
    const alias = str(o.ifalias);
    if (alias) link.alias = alias;
    if (o.group === 'default') link.group = 0;
    else if (typeof o.group === 'number' || (typeof o.group === 'string' && /^\d+$/.test(o.group)))
      link.group = Number(o.group);
    const address = str(o.address);
    if (address) link.address = address;
    const parent = str(o.link);
    if (parent) link.link = parent;
    if (kind === 'vxlan') {
      link.vxlan = {
        vni: num(data.id) ?? 0,
        port: num(data.port) ?? 0,
        learning: data.learning !== false,
      };
      const local = str(data.local) ?? str(data.local6);
      if (local) link.vxlan.local = local;
      const dev = str(data.link);
      if (dev) link.vxlan.dev = dev;
    }
    if (kind === 'vlan') {
      const id = num(data.id);
      if (id !== undefined) link.vlanId = id;
    }
    if (kind === 'bridge' && data.vlan_filtering !== undefined)
      link.vlanFiltering = data.vlan_filtering === 1;
    return link;
  });
}

/** Parses `ip -json addr show` into one entry per address. */
export function parseAddrs(text: string): IpAddr[] {
  const out: IpAddr[] = [];
  for (const o of parseArray(text)) {
    const infos = Array.isArray(o.addr_info) ? (o.addr_info as Json[]) : [];
    for (const a of infos) {
      const family = a.family === 'inet6' ? 'inet6' : a.family === 'inet' ? 'inet' : undefined;
      const local = str(a.local);
      if (!family || !local) continue;
      const addr: IpAddr = {
        dev: String(o.ifname),
        family,
        local,
        prefixLen: num(a.prefixlen) ?? (family === 'inet' ? 32 : 128),
        scope: str(a.scope) ?? 'global',
      };
      const brd = str(a.broadcast);
      if (brd) addr.broadcast = brd;
      out.push(addr);
    }
  }
  return out;
}

/** Parses `ip -json route show`; `dev` fills in the device when the command filtered by it. */
export function parseRoutes(text: string, dev?: string): IpRoute[] {
  return parseArray(text).map((o) => {
    const r: IpRoute = { dst: String(o.dst), flags: Array.isArray(o.flags) ? (o.flags as string[]) : [] };
    const gw = str(o.gateway);
    if (gw) r.gateway = gw;
    const d = str(o.dev) ?? dev;
    if (d) r.dev = d;
    for (const k of ['protocol', 'scope', 'prefsrc', 'type'] as const) {
      const v = str(o[k]);
      if (v) r[k] = v;
    }
    const metric = num(o.metric);
    if (metric !== undefined) r.metric = metric;
    return r;
  });
}

/** Parses `ip -json netns list` (older iproute2 prints nothing when there is no namespace). */
export function parseNetnsList(text: string): string[] {
  return parseArray(text)
    .map((o) => str(o.name))
    .filter((n): n is string => n !== undefined);
}

/** Parses `ip netns pids NAME`: one pid per line. */
export function parseNetnsPids(text: string): number[] {
  return text
    .split(/\s+/)
    .filter((t) => /^\d+$/.test(t))
    .map(Number);
}

/** Turns an observed route into the spec that re-creates it on `dev`. */
export function routeSpecOf(r: IpRoute, dev: string): RouteSpec {
  const s: RouteSpec = { dst: r.dst, dev };
  if (r.gateway) s.gateway = r.gateway;
  if (r.protocol && r.protocol !== 'boot') s.protocol = r.protocol;
  if (r.scope && r.scope !== 'global' && r.scope !== 'universe') s.scope = r.scope;
  if (r.prefsrc) s.src = r.prefsrc;
  if (r.metric !== undefined) s.metric = r.metric;
  return s;
}
