// Typed wrappers over iproute2 (`ip`): argv builders, `ip -json` parsers and `ip -batch -` for
// multi-step changes. Nothing here builds a shell string; every command goes through the one Runner.
import { InvalidRequestError } from '../shared/errors.js';
import { isVlanId, VLAN_ID_MAX, VLAN_ID_MIN, VXLAN_PORT } from '../shared/limits.js';
import { ExecError, type Runner, type RunResult } from './runner.js';

/** One `ip` command as argv without the leading `ip` (a line of `ip -batch`). */
export type IpCommand = readonly string[];

/** Link kinds vmlink creates. */
export type LinkKind = 'bridge' | 'veth' | 'dummy' | 'vxlan' | 'macvlan' | 'vlan' | 'bond' | 'geneve';

/** Arguments of `ip link add`. */
export interface LinkAddSpec {
  name: string;
  kind: LinkKind;
  mtu?: number;
  /** Parent device (vlan, macvlan; vxlan underlay `dev`). */
  link?: string;
  /** veth: name of the peer end. */
  peer?: string;
  /** veth: namespace the peer end is created in. */
  peerNetns?: string;
  /** vlan: 802.1Q id. */
  vlanId?: number;
  /** vxlan/geneve: network identifier. */
  vni?: number;
  /** vxlan: UDP destination port. */
  dstport?: number;
  /** vxlan/geneve: remote endpoint address. */
  remote?: string;
  /** vxlan: local endpoint address. */
  local?: string;
  /** macvlan mode. */
  macvlanMode?: 'bridge' | 'vepa' | 'private' | 'passthru';
  /** bridge: enable VLAN filtering. */
  vlanFiltering?: boolean;
  /** vxlan: learn remote MACs from received packets (false = `nolearning`, for static head-end replication). */
  learning?: boolean;
}

/** Arguments of `ip link set dev NAME`; only the given fields change. */
export interface LinkSetSpec {
  mtu?: number;
  up?: boolean;
  /** Bridge to enslave to; null releases the device (`nomaster`). */
  master?: string | null;
  alias?: string;
  address?: string;
  /** Move the device to this network namespace. */
  netns?: string;
}

/** Arguments of `ip tuntap add`. */
export interface TuntapSpec {
  name: string;
  mode: 'tap' | 'tun';
  vnetHdr?: boolean;
  multiQueue?: boolean;
  user?: string;
}

/** A route as `ip route` takes it. */
export interface RouteSpec {
  /** `default` or a CIDR. */
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  metric?: number;
  src?: string;
}

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

const IFNAME = /^[A-Za-z0-9_.@:-]{1,15}$/;

function assertGroup(group: number): void {
  if (!Number.isInteger(group) || group < 1 || group > 0x7fffffff)
    throw new InvalidRequestError(`invalid device group ${group}`);
}

/** Refuses a device name the kernel would reject or a batch line could misread. */
export function assertIfName(name: string, what = 'device name'): void {
  if (!IFNAME.test(name) || name === '.' || name === '..') {
    throw new InvalidRequestError(
      `invalid ${what} ${JSON.stringify(name)}: 1-15 characters of [A-Za-z0-9_.@:-]`,
    );
  }
}

/** Refuses a namespace name that is not a plain file name under /run/netns. */
export function assertNetnsName(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name) || name === '.' || name === '..') {
    throw new InvalidRequestError(`invalid namespace name ${JSON.stringify(name)}`);
  }
}

function assertToken(arg: string): void {
  if (arg === '' || /[\s"'\\#]/.test(arg)) {
    throw new InvalidRequestError(`invalid ip argument ${JSON.stringify(arg)}`);
  }
}

/** Argv builders (without the leading `ip`) for the commands vmlink uses. */
export const ipCmd = {
  /** `link add NAME [mtu M] [link P] type KIND ...`. */
  linkAdd(s: LinkAddSpec): IpCommand {
    assertIfName(s.name);
    const a = ['link', 'add'];
    if (s.link !== undefined) {
      assertIfName(s.link, 'parent device');
      if (s.kind === 'vlan' || s.kind === 'macvlan') a.push('link', s.link);
    }
    a.push('name', s.name);
    if (s.mtu !== undefined) a.push('mtu', String(s.mtu));
    a.push('type', s.kind);
    switch (s.kind) {
      case 'veth':
        if (s.peer === undefined) throw new InvalidRequestError('veth needs a peer name');
        assertIfName(s.peer, 'peer name');
        a.push('peer', 'name', s.peer);
        if (s.peerNetns !== undefined) {
          assertNetnsName(s.peerNetns);
          a.push('netns', s.peerNetns);
        }
        break;
      case 'vlan':
        if (s.vlanId === undefined || !isVlanId(s.vlanId)) {
          throw new InvalidRequestError(`vlan id must be ${VLAN_ID_MIN}-${VLAN_ID_MAX}, got ${s.vlanId}`);
        }
        a.push('id', String(s.vlanId));
        break;
      case 'vxlan':
        a.push('id', String(s.vni ?? 1), 'dstport', String(s.dstport ?? VXLAN_PORT));
        if (s.remote !== undefined) a.push('remote', s.remote);
        if (s.local !== undefined) a.push('local', s.local);
        if (s.link !== undefined) a.push('dev', s.link);
        if (s.learning === false) a.push('nolearning');
        break;
      case 'geneve':
        a.push('id', String(s.vni ?? 1));
        if (s.remote !== undefined) a.push('remote', s.remote);
        break;
      case 'macvlan':
        a.push('mode', s.macvlanMode ?? 'bridge');
        break;
      case 'bridge':
        if (s.vlanFiltering !== undefined) a.push('vlan_filtering', s.vlanFiltering ? '1' : '0');
        break;
      default:
        break;
    }
    a.forEach(assertToken);
    return a;
  },
  /** `link del dev NAME`. */
  linkDel(name: string): IpCommand {
    assertIfName(name);
    return ['link', 'del', 'dev', name];
  },
  /** `link set dev NAME ...`; the alias may contain spaces (quoted in batches). */
  linkSet(name: string, s: LinkSetSpec): IpCommand {
    assertIfName(name);
    const a = ['link', 'set', 'dev', name];
    if (s.master === null) a.push('nomaster');
    else if (s.master !== undefined) {
      assertIfName(s.master, 'master');
      a.push('master', s.master);
    }
    if (s.mtu !== undefined) a.push('mtu', String(s.mtu));
    if (s.address !== undefined) a.push('address', s.address);
    if (s.netns !== undefined) {
      assertNetnsName(s.netns);
      a.push('netns', s.netns);
    }
    a.slice(4).forEach(assertToken);
    if (s.alias !== undefined) {
      if (!/^[\x20-\x7e]{1,255}$/.test(s.alias) || /["\\]/.test(s.alias)) {
        throw new InvalidRequestError(`invalid link alias ${JSON.stringify(s.alias)}`);
      }
      a.push('alias', s.alias);
    }
    if (s.up !== undefined) a.push(s.up ? 'up' : 'down');
    return a;
  },
  /** `link set dev NAME group N`. */
  linkSetGroup(name: string, group: number): IpCommand {
    assertIfName(name);
    assertGroup(group);
    return ['link', 'set', 'dev', name, 'group', String(group)];
  },
  /** `link del group N`: every device of the group in one netlink request (one RCU grace period, not one each). */
  linkDelGroup(group: number): IpCommand {
    assertGroup(group);
    return ['link', 'del', 'group', String(group)];
  },
  /** `link set dev NAME type bridge vlan_filtering 0|1`. */
  bridgeVlanFiltering(name: string, on: boolean): IpCommand {
    assertIfName(name);
    return ['link', 'set', 'dev', name, 'type', 'bridge', 'vlan_filtering', on ? '1' : '0'];
  },
  /** `addr add CIDR dev NAME` (IPv4 gets `broadcast +`). */
  addrAdd(dev: string, cidr: string): IpCommand {
    assertIfName(dev);
    assertToken(cidr);
    return cidr.includes(':')
      ? ['addr', 'add', cidr, 'dev', dev]
      : ['addr', 'add', cidr, 'broadcast', '+', 'dev', dev];
  },
  /** `addr del CIDR dev NAME`. */
  addrDel(dev: string, cidr: string): IpCommand {
    assertIfName(dev);
    assertToken(cidr);
    return ['addr', 'del', cidr, 'dev', dev];
  },
  /** `route add ...`. */
  routeAdd(r: RouteSpec): IpCommand {
    return ['route', 'add', ...routeArgs(r)];
  },
  /** `route replace ...`. */
  routeReplace(r: RouteSpec): IpCommand {
    return ['route', 'replace', ...routeArgs(r)];
  },
  /** `route del ...`. */
  routeDel(r: RouteSpec): IpCommand {
    return ['route', 'del', ...routeArgs(r)];
  },
  /** `tuntap add dev NAME mode tap [vnet_hdr] [multi_queue] [user U]` (persistent). */
  tuntapAdd(s: TuntapSpec): IpCommand {
    assertIfName(s.name);
    const a = ['tuntap', 'add', 'dev', s.name, 'mode', s.mode];
    if (s.vnetHdr) a.push('vnet_hdr');
    if (s.multiQueue) a.push('multi_queue');
    if (s.user !== undefined) a.push('user', s.user);
    a.forEach(assertToken);
    return a;
  },
  /** `tuntap del dev NAME mode tap`. */
  tuntapDel(name: string, mode: 'tap' | 'tun' = 'tap'): IpCommand {
    assertIfName(name);
    return ['tuntap', 'del', 'dev', name, 'mode', mode];
  },
};

function routeArgs(r: RouteSpec): string[] {
  const a = [r.dst];
  if (r.gateway !== undefined) a.push('via', r.gateway);
  if (r.dev !== undefined) {
    assertIfName(r.dev);
    a.push('dev', r.dev);
  }
  if (r.protocol !== undefined) a.push('proto', r.protocol);
  if (r.scope !== undefined) a.push('scope', r.scope);
  if (r.src !== undefined) a.push('src', r.src);
  if (r.metric !== undefined) a.push('metric', String(r.metric));
  a.forEach(assertToken);
  return a;
}

/** Renders commands as `ip -batch` input: one line each, arguments with spaces double-quoted. */
export function renderBatch(cmds: readonly IpCommand[]): string {
  return cmds
    .map((c) =>
      c
        .map((arg) => {
          if (/[\n\r"\\#]/.test(arg) || arg === '')
            throw new InvalidRequestError(`invalid ip argument ${JSON.stringify(arg)}`);
          return /\s/.test(arg) ? `"${arg}"` : arg;
        })
        .join(' '),
    )
    .map((l) => `${l}\n`)
    .join('');
}

type Json = Record<string, unknown>;

function parseArray(text: string): Json[] {
  const t = text.trim();
  if (t === '') return [];
  const v: unknown = JSON.parse(t);
  if (!Array.isArray(v)) throw new Error('ip -json: expected an array');
  return v.filter((x): x is Json => typeof x === 'object' && x !== null);
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
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

/** iproute2 bound to one runner and (optionally) one network namespace. */
export class Ip {
  constructor(
    private readonly runner: Runner,
    /** Namespace every command runs in; undefined = the caller's own. */
    readonly netns?: string,
  ) {}

  /** Runs one command (`ip ARGS`). */
  exec(cmd: IpCommand, opts: { allowFailure?: boolean; json?: boolean } = {}): Promise<RunResult> {
    const argv = ['ip', ...(opts.json ? ['-json'] : []), ...cmd];
    return this.runner.run(argv, { netns: this.netns, allowFailure: opts.allowFailure });
  }

  /** Runs commands with one `ip -batch -` (stops at the first failing line); no-op when empty. */
  async batch(cmds: readonly IpCommand[]): Promise<void> {
    if (cmds.length === 0) return;
    await this.runner.run(['ip', '-batch', '-'], { netns: this.netns, input: renderBatch(cmds) });
  }

  /** Links. */
  readonly link = {
    add: async (s: LinkAddSpec): Promise<void> => void (await this.exec(ipCmd.linkAdd(s))),
    del: async (name: string): Promise<void> => void (await this.exec(ipCmd.linkDel(name))),
    set: async (name: string, s: LinkSetSpec): Promise<void> =>
      void (await this.exec(ipCmd.linkSet(name, s))),
    /** Every link with details. */
    list: async (): Promise<IpLink[]> =>
      parseLinks((await this.exec(['-details', 'link', 'show'], { json: true })).stdout),
    /** One link with details, or undefined when it does not exist. */
    get: async (name: string): Promise<IpLink | undefined> => {
      assertIfName(name);
      const r = await this.exec(['-details', 'link', 'show', 'dev', name], {
        json: true,
        allowFailure: true,
      });
      if (r.code !== 0) {
        if (/does not exist|Cannot find device/i.test(r.stderr)) return undefined;
        throw new ExecError(r);
      }
      return parseLinks(r.stdout)[0];
    },
  };

  /** Addresses. */
  readonly addr = {
    add: async (dev: string, cidr: string): Promise<void> => void (await this.exec(ipCmd.addrAdd(dev, cidr))),
    del: async (dev: string, cidr: string): Promise<void> => void (await this.exec(ipCmd.addrDel(dev, cidr))),
    /** Addresses of one device (or all), optionally of one family. */
    list: async (opts: { dev?: string; family?: 'inet' | 'inet6' } = {}): Promise<IpAddr[]> => {
      const a: string[] = [];
      if (opts.family) a.push(opts.family === 'inet' ? '-4' : '-6');
      a.push('addr', 'show');
      if (opts.dev !== undefined) {
        assertIfName(opts.dev);
        a.push('dev', opts.dev);
      }
      return parseAddrs((await this.exec(a, { json: true })).stdout);
    },
  };

  /** Routes of the main table. */
  readonly route = {
    add: async (r: RouteSpec): Promise<void> => void (await this.exec(ipCmd.routeAdd(r))),
    replace: async (r: RouteSpec): Promise<void> => void (await this.exec(ipCmd.routeReplace(r))),
    del: async (r: RouteSpec): Promise<void> => void (await this.exec(ipCmd.routeDel(r))),
    /** IPv4 (default) or IPv6 routes, optionally only those through `dev`. */
    list: async (opts: { dev?: string; family?: 'inet' | 'inet6' } = {}): Promise<IpRoute[]> => {
      const a = [opts.family === 'inet6' ? '-6' : '-4', 'route', 'show'];
      if (opts.dev !== undefined) {
        assertIfName(opts.dev);
        a.push('dev', opts.dev);
      }
      return parseRoutes((await this.exec(a, { json: true })).stdout, opts.dev);
    },
  };

  /** Persistent tun/tap devices. */
  readonly tuntap = {
    add: async (s: TuntapSpec): Promise<void> => void (await this.exec(ipCmd.tuntapAdd(s))),
    del: async (name: string, mode: 'tap' | 'tun' = 'tap'): Promise<void> =>
      void (await this.exec(ipCmd.tuntapDel(name, mode))),
  };

  /** Named network namespaces (always managed from the caller's own namespace). */
  readonly namespaces = {
    add: async (name: string): Promise<void> => {
      assertNetnsName(name);
      await this.runner.run(['ip', 'netns', 'add', name]);
    },
    del: async (name: string): Promise<void> => {
      assertNetnsName(name);
      await this.runner.run(['ip', 'netns', 'del', name], { allowFailure: true });
    },
    /** Names of the named namespaces that exist. */
    list: async (): Promise<string[]> =>
      parseNetnsList((await this.runner.run(['ip', '-json', 'netns', 'list'])).stdout),
    /** Pids of the processes in a namespace (none when it does not exist). */
    pids: async (name: string): Promise<number[]> => {
      assertNetnsName(name);
      const r = await this.runner.run(['ip', 'netns', 'pids', name], { allowFailure: true });
      return r.code === 0 ? parseNetnsPids(r.stdout) : [];
    },
  };
}

/** One `bridge` command (iproute2's bridge tool) as argv without the leading `bridge` (a line of `bridge -batch`). */
export type BridgeCommand = readonly string[];

/** A forwarding database entry as parsed from `bridge -json fdb show`. */
export interface FdbEntry {
  mac: string;
  /** The device the entry is on (`ifname`). */
  dev?: string;
  /** Remote VTEP of a vxlan entry. */
  dst?: string;
  /** Bridge the entry belongs to (entries of the bridge itself, not of the device). */
  master?: string;
  flags: string[];
  state?: string;
}

/** The all-zeros MAC of VXLAN head-end replication entries (flood/unknown-unicast to every listed VTEP). */
export const FLOOD_MAC = '00:00:00:00:00:00';

const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

/** Argv builders (without the leading `bridge`) for the bridge tool commands vmlink uses. */
export const bridgeCmd = {
  /** `fdb append MAC dev DEV dst IP` (static; several entries per MAC allowed: head-end replication). */
  fdbAppend(dev: string, dst: string, mac: string = FLOOD_MAC): BridgeCommand {
    return fdbArgs('append', dev, dst, mac);
  },
  /** `fdb del MAC dev DEV dst IP`. */
  fdbDel(dev: string, dst: string, mac: string = FLOOD_MAC): BridgeCommand {
    return fdbArgs('del', dev, dst, mac);
  },
  /** `vlan add dev DEV vid ID [pvid] [untagged]` (a port of a vlan_filtering bridge). */
  vlanAdd(dev: string, vid: number, opts: { pvid?: boolean; untagged?: boolean } = {}): BridgeCommand {
    assertIfName(dev);
    assertVid(vid);
    const a = ['vlan', 'add', 'dev', dev, 'vid', String(vid)];
    if (opts.pvid) a.push('pvid');
    if (opts.untagged) a.push('untagged');
    return a;
  },
  /** `vlan del dev DEV vid ID`. */
  vlanDel(dev: string, vid: number): BridgeCommand {
    assertIfName(dev);
    assertVid(vid);
    return ['vlan', 'del', 'dev', dev, 'vid', String(vid)];
  },
};

function fdbArgs(op: 'append' | 'del', dev: string, dst: string, mac: string): BridgeCommand {
  assertIfName(dev);
  if (!MAC.test(mac)) throw new InvalidRequestError(`invalid MAC address ${JSON.stringify(mac)}`);
  assertToken(dst);
  if (!/^[0-9A-Fa-f.:]+$/.test(dst))
    throw new InvalidRequestError(`invalid VTEP address ${JSON.stringify(dst)}`);
  return ['fdb', op, mac, 'dev', dev, 'dst', dst];
}

function assertVid(vid: number): void {
  if (!isVlanId(vid))
    throw new InvalidRequestError(`vlan id must be ${VLAN_ID_MIN}-${VLAN_ID_MAX}, got ${vid}`);
}

/** Parses `bridge -json fdb show [dev DEV]`. */
export function parseFdb(text: string): FdbEntry[] {
  return parseArray(text).map((o) => {
    const e: FdbEntry = {
      mac: String(o.mac ?? ''),
      flags: Array.isArray(o.flags) ? (o.flags as string[]) : [],
    };
    const dev = str(o.ifname);
    if (dev) e.dev = dev;
    const dst = str(o.dst);
    if (dst) e.dst = dst;
    const master = str(o.master);
    if (master) e.master = master;
    const state = str(o.state);
    if (state) e.state = state;
    return e;
  });
}

/** iproute2's `bridge` tool bound to one runner and (optionally) one network namespace. */
export class Bridge {
  constructor(
    private readonly runner: Runner,
    /** Namespace every command runs in; undefined = the caller's own. */
    readonly netns?: string,
  ) {}

  /** Runs one command (`bridge ARGS`). */
  exec(cmd: BridgeCommand, opts: { allowFailure?: boolean; json?: boolean } = {}): Promise<RunResult> {
    const argv = ['bridge', ...(opts.json ? ['-json'] : []), ...cmd];
    return this.runner.run(argv, { netns: this.netns, allowFailure: opts.allowFailure });
  }

  /** Runs commands with one `bridge -batch -` (stops at the first failing line); no-op when empty. */
  async batch(cmds: readonly BridgeCommand[]): Promise<void> {
    if (cmds.length === 0) return;
    await this.runner.run(['bridge', '-batch', '-'], { netns: this.netns, input: renderBatch(cmds) });
  }

  /** Forwarding database entries of one device. */
  async fdb(dev: string): Promise<FdbEntry[]> {
    assertIfName(dev);
    return parseFdb((await this.exec(['fdb', 'show', 'dev', dev], { json: true })).stdout);
  }

  /** Every device's entries in one command, by device (for reports over many overlays). */
  async fdbByDevice(): Promise<Map<string, FdbEntry[]>> {
    const byDev = new Map<string, FdbEntry[]>();
    for (const e of parseFdb((await this.exec(['fdb', 'show'], { json: true })).stdout)) {
      if (e.dev === undefined) continue;
      byDev.set(e.dev, [...(byDev.get(e.dev) ?? []), e]);
    }
    return byDev;
  }
}
