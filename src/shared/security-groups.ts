// Security groups (issue 9): the resolved shape a host realises, shared by spec, plan, wire and network drivers.
//
// Semantics (every backend implements exactly these; the network conformance suite checks them):
// - A port with `securityGroups` (non-empty) is default-deny inbound: a frame delivered to it passes only as part
//   of a connection the port's guest started (conntrack established/related), as ARP, IPv6 neighbour discovery or a
//   DHCP reply, or when an ingress rule of any of its groups matches (protocol, destination port, source).
// - Outbound it is allowed, unless one of its groups has egress rules: then only established/related traffic, ARP,
//   neighbour discovery, DHCP client requests and what an egress rule matches leave it.
// - A rule's remote is `cidr` (the packet's other address lies in it), `group` (the frame's other end is a NIC of
//   that group: matched by MAC, which port security binds to the NIC's addresses; every vmlink path between two VMs
//   is layer 2 — a bridge, the LAN, an overlay — so the MAC a port sees is the member's own), or neither (any).
// - A port without groups keeps the behaviour it had before security groups (anti-spoofing aside).
// - Groups need port security (the remote-group match and the stateful replies trust the port's source addresses),
//   so a trunk NIC or one with `portSecurity: false` cannot have groups (validation says so).

/** Most security groups a spec may declare. */
export const SECURITY_GROUPS_MAX = 256;
/** Most rules one security group may hold. */
export const SECURITY_GROUP_RULES_MAX = 128;
/** Most security groups one NIC may be in. */
export const NIC_SECURITY_GROUPS_MAX = 8;
/** Most port entries (single ports or ranges) one rule may list. */
export const RULE_PORTS_MAX = 32;
/** Most member NICs one group's remote set may hold (every NIC of the site in the group). */
export const SECURITY_GROUP_MEMBERS_MAX = 8_192;

/** A rule's direction, seen from the VM: ingress reaches its NIC, egress leaves it. */
export type RuleDirection = 'ingress' | 'egress';
/** A rule's protocol; `any` matches every IPv4 protocol. */
export type RuleProtocol = 'tcp' | 'udp' | 'icmp' | 'any';
/** One destination port or an inclusive range (tcp and udp only). */
export type PortRange = { from: number; to: number };

/** One rule of a group, resolved. */
export interface SecurityGroupRuleConfig {
  direction: RuleDirection;
  protocol: RuleProtocol;
  /** Destination ports (tcp/udp); absent: every port. Sorted, merged. */
  ports?: PortRange[];
  /** Remote addresses: the source of ingress, the destination of egress; absent with `group` too: any. */
  cidr?: string;
  /** Remote group: the other end is a NIC of this group (see `SecurityGroupConfig.memberMacs` of that group). */
  group?: string;
}

/** A security group as one host realises it. */
export interface SecurityGroupConfig {
  name: string;
  /** In spec order (the order does not change what they allow). */
  rules: SecurityGroupRuleConfig[];
  /** MACs of every NIC in this group on every host, sorted: what a rule naming this group as `group` matches. */
  memberMacs: string[];
}
