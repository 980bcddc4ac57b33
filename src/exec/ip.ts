// Typed wrappers over iproute2 (`ip`): argv builders, `ip -json` parsers and `ip -batch -` for
// multi-step changes. Nothing here builds a shell string; every command goes through the one Runner.
import { InvalidRequestError } from '../shared/errors.js';
import { isVlanId, VLAN_ID_MAX, VLAN_ID_MIN, VXLAN_PORT } from '../shared/limits.js';
import {
  type IpAddr,
  type IpLink,
  type IpRoute,
  parseAddrs,
  parseLinks,
  parseNetnsList,
  parseNetnsPids,
  parseRoutes,
} from './ip-parse.js';
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

/** Refuses an argument `ip -batch`/`bridge -batch` would split or quote differently than we meant. */
export function assertToken(arg: string): void {
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
