// The host input policy (issue 8, hole 8): what a VM may send to the host itself. Traffic enters from a VM when it
// comes in on a vmlink bridge that only VMs (local taps, remote VMs over an overlay or VLAN) sit on, or when the
// bridge family marked it at a VM's tap (port-guard.ts): a bridge network's LAN bridge also carries the host's own
// LAN traffic, so there only the frames of VM ports are filtered. Such traffic reaches the host only for replies
// to the host's own connections, DHCP, DNS and ping to the network's gateway address, IPv6 neighbour discovery and
// the network's `hostServices`; the rest is counted and dropped.
import { InvalidRequestError } from '../../../shared/errors.js';
import type { NetworkConfig } from '../../../shared/model.js';

/** Packet mark bit the bridge family sets on every frame that enters from a VM port (read by the inet input hook). */
export const GUEST_MARK = 0x00200000;
/** `GUEST_MARK` as nftables writes it. */
export const GUEST_MARK_HEX = `0x${GUEST_MARK.toString(16).padStart(8, '0')}`;

/** Counter comment of the rule that drops VM traffic to the host (tests and operators read its counter). */
export const GUEST_TO_HOST_DROP = 'guest to host';

/** Whether a network's bridge carries only VM traffic (every mode but bridge, whose LAN bridge the host shares). */
export function isGuestBridge(cfg: NetworkConfig): boolean {
  return cfg.mode !== 'bridge';
}

/**
 * The rules of a network's own host-input chain (`in-<bridge>`): what its VMs may reach on the host beyond replies
 * and neighbour discovery. Empty when nothing is open (a bridge network without hostServices).
 */
export function hostInputRules(cfg: NetworkConfig, gateway: string | undefined): string[] {
  const tag = `comment "net:${cfg.name}"`;
  const rules: string[] = [];
  if (gateway) {
    rules.push(
      `udp sport 68 udp dport 67 accept ${tag}`,
      `ip daddr ${gateway} meta l4proto { tcp, udp } th dport 53 accept ${tag}`,
      `ip daddr ${gateway} icmp type echo-request accept ${tag}`,
    );
  }
  for (const s of cfg.hostServices ?? []) {
    if (
      (s.protocol !== 'tcp' && s.protocol !== 'udp') ||
      !Number.isInteger(s.port) ||
      s.port < 1 ||
      s.port > 65535
    )
      throw new InvalidRequestError(
        `networks.${cfg.name}.hostServices: ${JSON.stringify(s)} is not a tcp or udp port`,
        `networks.${cfg.name}.hostServices`,
      );
    rules.push(`${s.protocol} dport ${s.port} accept ${tag}`);
  }
  return rules;
}

/** The fixed chain every VM packet to the host goes through: replies, neighbour discovery, its network's chain, drop. */
export const GUEST_INPUT_RULES = [
  'ct state established,related accept',
  'icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept',
  'iifname vmap @host_services',
  `counter drop comment "${GUEST_TO_HOST_DROP}"`,
];

/** The input hook's rule for traffic from devices only VMs reach (the ovs backend's table uses it alone). */
export const GUEST_BRIDGE_JUMP = 'iifname @guest_bridges jump guest_input';

/** The input hook's rules for VM traffic (after the underlay filter): VM bridges and marked frames. */
export const GUEST_INPUT_JUMPS = [
  GUEST_BRIDGE_JUMP,
  `meta mark & ${GUEST_MARK_HEX} == ${GUEST_MARK_HEX} jump guest_input`,
];
