// The spec's primitive checks (names, addresses, ports, MTUs), shared by schema.ts and the schema-*.ts modules so
// each check is written once.
import { z } from 'zod';
import {
  ADDRESS_PREFIX_MAX,
  ADDRESS_PREFIX_MIN,
  LINK_MTU_MAX,
  MTU_MIN,
  NETWORK_PREFIX_MAX,
  NETWORK_PREFIX_MIN,
  PORT_MAX,
  PORT_MIN,
  SECRET_VALUE_BASE64_MAX,
  VLAN_ID_MAX,
  VLAN_ID_MIN,
} from '../shared/limits.js';
import { VMLINK_DEVICE_PATTERN } from './net.js';

/** Names of every spec object: they reach commands, file names and interface aliases, so they are strict. */
export const NAME_PATTERN = /^[a-z][a-z0-9-]{0,30}$/;
export const name = z
  .string()
  .regex(NAME_PATTERN, 'must match ^[a-z][a-z0-9-]{0,30}$ (lower-case letter, then up to 30 of a-z, 0-9, -)');

// Dotted quad, each octet 0-255 without leading zeros, in one regex: the controller checks every address of 1,000
// hosts' reports each refresh round, and a split per address was its largest CPU item while serving `status`.
const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const IPV4_PATTERN = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
export const ipv4 = z
  .string()
  .refine((s) => IPV4_PATTERN.test(s), 'must be an IPv4 address such as 10.0.0.5');
export const cidr = z.string().refine((s) => {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(s);
  return (
    !!m &&
    ipv4.safeParse(m[1]).success &&
    Number(m[2]) >= NETWORK_PREFIX_MIN &&
    Number(m[2]) <= NETWORK_PREFIX_MAX
  );
}, `must be an IPv4 network such as 10.0.0.0/24 (prefix ${NETWORK_PREFIX_MIN}-${NETWORK_PREFIX_MAX})`);
export const mac = z
  .string()
  .regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/, 'must be a lower-case MAC address such as 52:54:00:12:34:56')
  .refine(
    (m) => (Number.parseInt(m.slice(0, 2), 16) & 1) === 0,
    'must be a unicast MAC address (first octet even)',
  );
// A host NIC: never one of the devices vmlink creates itself (a network must not enslave another's bridge).
export const ifname = z
  .string()
  .regex(/^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$/, 'must be a Linux interface name (1-15 characters)')
  .refine(
    (s) => !VMLINK_DEVICE_PATTERN.test(s),
    'must name a host NIC, not a device vmlink creates (vl?-...)',
  );
export const port = z.number().int().min(PORT_MIN).max(PORT_MAX);
/** An address with its prefix on an interface, e.g. 192.168.50.10/24. */
export const hostCidr = z.string().refine((s) => {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(s);
  return (
    !!m &&
    ipv4.safeParse(m[1]).success &&
    Number(m[2]) >= ADDRESS_PREFIX_MIN &&
    Number(m[2]) <= ADDRESS_PREFIX_MAX
  );
}, `must be an IPv4 address with prefix such as 192.168.50.10/24 (prefix ${ADDRESS_PREFIX_MIN}-${ADDRESS_PREFIX_MAX})`);
export const vlanId = z.number().int().min(VLAN_ID_MIN).max(VLAN_ID_MAX);
/** MTU of a host NIC or a lab switch (jumbo frames allowed). */
export const linkMtu = z.number().int().min(MTU_MIN).max(LINK_MTU_MAX);

/** An IPv4 address (dotted quad, no leading zeros): the spec's check, shared with the agent's wire schema. */
export const Ipv4Schema = ipv4;
/** A lower-case unicast MAC address: the spec's check, shared with the agent's wire schema. */
export const MacSchema = mac;
/** A host NIC's name (never a device vmlink creates): the spec's check, shared with the agent's wire schema. */
export const HostNicSchema = ifname;
/** A TCP/UDP port. */
export const PortSchema = port;
/** An IPv4 network with a prefix of 8-30 (host bits allowed here; the agent's wire refuses them). */
export const NetworkCidrSchema = cidr;
/** An address with prefix on an interface (e.g. 192.168.50.10/24). */
export const HostCidrSchema = hostCidr;

/** A DHCP address range of a network or the lab LAN. */
export const dhcpRange = z
  .object({ start: ipv4, end: ipv4 })
  .strict()
  .describe('address range handed out by DHCP; defaults to .100-.199 of the network (or its upper half)');

/** A USB device as `vendor:product` in hex (`046d:c52b`); `wildcard` also accepts `vendor:*`. */
export function usbId(wildcard: boolean) {
  return z
    .string()
    .regex(
      wildcard ? /^[0-9a-f]{4}:([0-9a-f]{4}|\*)$/ : /^[0-9a-f]{4}:[0-9a-f]{4}$/,
      `must be vendor:product in lower-case hex, such as 046d:c52b${wildcard ? ' (or 046d:* for a whole vendor)' : ''}`,
    );
}

/** A secret's value as it crosses an API (never in a spec): base64 of at most SECRET_VALUE_MAX_BYTES bytes. */
export const SecretValueBase64Schema = z
  .string()
  .min(1)
  .max(SECRET_VALUE_BASE64_MAX)
  .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64');
