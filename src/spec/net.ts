// IPv4 and CIDR arithmetic on unsigned 32-bit numbers, plus the stable names and MACs derived from spec names.
// Pure: node:crypto is the only import.
import { createHash } from 'node:crypto';

/** An IPv4 network: network address, prefix length, and the derived broadcast address (all as uint32). */
export interface Cidr {
  network: number;
  prefix: number;
  broadcast: number;
  /** Number of addresses, network and broadcast included. */
  size: number;
}

/** An inclusive range of IPv4 addresses as uint32. */
export interface IpRange {
  start: number;
  end: number;
}

/** Parses dotted-quad IPv4 into a uint32; undefined when malformed. */
export function parseIpv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const part = m[i]!;
    const o = Number(part);
    if (o > 255 || String(o) !== part) return undefined;
    n = n * 256 + o;
  }
  return n;
}

/** Formats a uint32 as dotted-quad IPv4. */
export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Parses `a.b.c.d/p`; `network` is the address with host bits cleared. Undefined when malformed. */
export function parseCidr(s: string): Cidr | undefined {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(s);
  if (!m) return undefined;
  const addr = parseIpv4(m[1]!);
  const prefix = Number(m[2]);
  if (addr === undefined || prefix > 32) return undefined;
  const size = 2 ** (32 - prefix);
  const network = addr - (addr % size);
  return { network, prefix, broadcast: network + size - 1, size };
}

/** Whether a CIDR string has bits set beyond its prefix (e.g. 10.0.0.5/24). */
export function hasHostBits(s: string): boolean {
  const c = parseCidr(s);
  const addr = parseIpv4(s.split('/')[0] ?? '');
  return c !== undefined && addr !== undefined && addr !== c.network;
}

/** The canonical `network/prefix` form of a CIDR. */
export function formatCidr(c: Cidr): string {
  return `${formatIpv4(c.network)}/${c.prefix}`;
}

/** Whether address `ip` (uint32) lies in `c`, network and broadcast addresses included. */
export function cidrContains(c: Cidr, ip: number): boolean {
  return ip >= c.network && ip <= c.broadcast;
}

/** Whether two networks share any address. */
export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.network <= b.broadcast && b.network <= a.broadcast;
}

/** First usable host address of a network: the default gateway. */
export function firstHost(c: Cidr): number {
  return c.network + 1;
}

/**
 * The DHCP range used when a spec gives none: network+100..network+199 when that fits below the broadcast
 * address, otherwise the upper half of the subnet; when the gateway falls inside, the larger side of it.
 */
export function defaultDhcpRange(c: Cidr, gateway: number): IpRange {
  let r: IpRange =
    c.network + 199 < c.broadcast
      ? { start: c.network + 100, end: c.network + 199 }
      : { start: c.network + c.size / 2, end: c.broadcast - 1 };
  if (gateway >= r.start && gateway <= r.end) {
    const below = gateway - r.start;
    const above = r.end - gateway;
    r = above >= below ? { start: gateway + 1, end: r.end } : { start: r.start, end: gateway - 1 };
  }
  return r;
}

/** Formats a range as `start-end`. */
export function formatRange(r: IpRange): string {
  return `${formatIpv4(r.start)}-${formatIpv4(r.end)}`;
}

function sha256hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/** Longest Linux interface name (IFNAMSIZ - 1). */
export const IFNAME_MAX = 15;

/**
 * Names of the devices vmlink creates: `vl`, a letter, a dash (vlb- bridges, vlt- taps, vlx- VXLAN devices,
 * vlo-/vli-/vlu- Open vSwitch bridges and ports). A host NIC is never named so.
 */
export const VMLINK_DEVICE_PATTERN = /^vl[a-z]-/;

const hashedName = (prefix: string, key: string): string => `${prefix}${sha256hex(key).slice(0, 8)}`;

/**
 * Linux bridge name of a network: `vlb-<network>` when that fits in 15 characters, else `vlb-` + 8 hex of
 * sha256(network name). A network named like 8 hex digits gets the hash too, so the two forms never meet.
 */
export function bridgeName(network: string): string {
  const readable = `vlb-${network}`;
  return readable.length <= IFNAME_MAX && !/^[0-9a-f]{8}$/.test(network)
    ? readable
    : hashedName('vlb-', network);
}

/**
 * Tap name of a VM NIC: `vlt-<vm>-<index>` when that fits in 15 characters, else `vlt-` + 8 hex of
 * sha256(`vm/index`). The readable form always has a dash after the prefix and the hashed one none, and the last
 * dash separates the index, so no two NICs share a name.
 */
export function tapName(vm: string, nicIndex: number): string {
  const readable = `vlt-${vm}-${nicIndex}`;
  return readable.length <= IFNAME_MAX ? readable : hashedName('vlt-', `${vm}/${nicIndex}`);
}

/** The bridge name vmlink gave a network before readable names (`vlb-` + hash): still adopted where it exists. */
export function legacyBridgeName(network: string): string {
  return hashedName('vlb-', network);
}

/** The tap name vmlink gave a VM NIC before readable names (`vlt-` + hash): still adopted where it exists. */
export function legacyTapName(vm: string, nicIndex: number): string {
  return hashedName('vlt-', `${vm}/${nicIndex}`);
}

/** Stable locally-administered-range MAC of a VM NIC: `52:54:00:` + 3 bytes of sha256(`vm/index`). */
export function derivedMac(vm: string, nicIndex: number): string {
  const h = sha256hex(`${vm}/${nicIndex}`);
  return `52:54:00:${h.slice(0, 2)}:${h.slice(2, 4)}:${h.slice(4, 6)}`;
}

/** VXLAN device (linux) or OVS tunnel port prefix of a vxlan network: `vlx-` + 8 hex of sha256(network name). */
export function vxlanDeviceName(network: string): string {
  return `vlx-${sha256hex(network).slice(0, 8)}`;
}

/**
 * OVS bridge shared by every vlan network on one trunk NIC: `vlo-<nic>` when that fits in 15 characters, else
 * `vlo-` + 8 hex of sha256(NIC name); a NIC named like 8 hex digits gets the hash (see `bridgeName`).
 */
export function ovsVlanBridgeName(trunkNic: string): string {
  const readable = `vlo-${trunkNic}`;
  return readable.length <= IFNAME_MAX && !/^[0-9a-f]{8}$/.test(trunkNic)
    ? readable
    : hashedName('vlo-', trunkNic);
}

/** The OVS vlan bridge name vmlink gave a trunk NIC before readable names (`vlo-` + hash): still adopted. */
export function legacyOvsVlanBridgeName(trunkNic: string): string {
  return hashedName('vlo-', trunkNic);
}
