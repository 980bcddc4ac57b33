// The host input policy of OVS networks (issue 8, hole 8): what a VM may send to the host itself. On an OVS bridge
// the host is reached through the network's gateway port (`vli-<network>`, an internal port: a normal netdev to
// nftables) and, were it up, the bridge's own LOCAL port. Those devices go into the guest set of the ovs backend's
// own table, `inet vmlink-ovs`, whose input hook runs the same policy as the linux backend's (linux/host-input.ts):
// replies, DHCP, DNS and ping to the gateway address, IPv6 neighbour discovery and the network's `hostServices`;
// the rest is counted and dropped. A table of its own because the linux backend replaces `inet vmlink` whole;
// nftables runs every table's input hook, so a drop in either one stops the packet.
import { assertIfName } from '../../../exec/ip.js';
import { InvalidRequestError } from '../../../shared/errors.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { GUEST_BRIDGE_JUMP, GUEST_INPUT_RULES, hostInputRules } from '../linux/host-input.js';

/** nftables family of the ovs backend's table. */
export const OVS_TABLE_FAMILY = 'inet' as const;
/** Name of the ovs backend's table (host input policy of OVS networks). */
export const OVS_TABLE_NAME = 'vmlink-ovs';

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** An OVS network as its host input policy needs it: its config and its gateway port here, if any. */
export interface OvsInputNetwork {
  cfg: NetworkConfig;
  /** The internal port carrying the gateway address (gateway host only). */
  gatewayPort?: string;
}

/**
 * The `table inet vmlink-ovs { ... }` block for these networks, or undefined when there are none (then the table is
 * deleted). Every bridge and gateway port is a guest device; a gateway port's network chain opens DHCP, DNS, ping
 * and its hostServices.
 */
export function buildOvsHostInput(networks: readonly OvsInputNetwork[]): string | undefined {
  if (networks.length === 0) return undefined;
  const nets = [...networks].sort((a, b) => (a.cfg.name < b.cfg.name ? -1 : a.cfg.name > b.cfg.name ? 1 : 0));
  const guests = new Set<string>();
  const services: string[] = [];
  const chains: string[] = [];
  for (const { cfg, gatewayPort } of nets) {
    assertIfName(cfg.bridge, `networks.${cfg.name}.bridge`);
    guests.add(cfg.bridge);
    if (!gatewayPort || !cfg.subnet) continue;
    assertIfName(gatewayPort, `networks.${cfg.name}.gateway`);
    const gateway = cfg.subnet.gateway;
    if (!IPV4.test(gateway))
      throw new InvalidRequestError(
        `networks.${cfg.name}.subnet.gateway: ${JSON.stringify(gateway)} is not an IPv4 address`,
        `networks.${cfg.name}.subnet.gateway`,
      );
    guests.add(gatewayPort);
    services.push(`"${gatewayPort}" : jump in-${gatewayPort}`);
    chains.push(`\tchain in-${gatewayPort} {`, ...hostInputRules(cfg, gateway).map((r) => `\t\t${r}`), '\t}');
  }
  const q = [...guests].sort().map((g) => `"${g}"`);
  return `${[
    `table ${OVS_TABLE_FAMILY} ${OVS_TABLE_NAME} {`,
    '\tset guest_bridges {',
    '\t\ttype ifname',
    `\t\telements = { ${q.join(', ')} }`,
    '\t}',
    '\tmap host_services {',
    '\t\ttype ifname : verdict',
    ...(services.length ? [`\t\telements = { ${services.join(', ')} }`] : []),
    '\t}',
    ...chains,
    '\tchain guest_input {',
    ...GUEST_INPUT_RULES.map((r) => `\t\t${r}`),
    '\t}',
    '\tchain input {',
    '\t\ttype filter hook input priority filter; policy accept;',
    `\t\t${GUEST_BRIDGE_JUMP}`,
    '\t}',
    '}',
  ].join('\n')}\n`;
}
