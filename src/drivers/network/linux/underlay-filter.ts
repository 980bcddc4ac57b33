// The VXLAN underlay filter (issue 8, hole 9): the host accepts VXLAN (UDP 4789) only from the member VTEPs of an
// overlay it holds, per overlay (the VNI in the VXLAN header, read as raw payload: nft 1.0.6 has no vxlan
// expression) and source address; any other VXLAN packet is counted and dropped before the kernel's VXLAN socket
// sees it. A LAN neighbour can then no longer inject frames into an overlay, unless it forges a member's address
// (the underlay's own job, e.g. uRPF or switch port security).
import { InvalidRequestError } from '../../../shared/errors.js';
import { VXLAN_PORT } from '../../../shared/limits.js';
import type { NetworkConfig } from '../../../shared/model.js';

/** Counter comment of the rule that drops VXLAN from anyone but a member VTEP. */
export const VXLAN_DROP = 'vxlan from a non-member';

/** The `vni . remote` elements of `vxlan_vteps` this network adds (none but for vxlan networks). */
export function vtepElements(cfg: NetworkConfig, ipv4: (v: string, what: string) => string): string[] {
  const x = cfg.vxlan;
  if (cfg.mode !== 'vxlan' || !x) return [];
  if (!Number.isInteger(x.vni) || x.vni < 1 || x.vni > 16_777_215)
    throw new InvalidRequestError(
      `networks.${cfg.name}.vxlan.vni: ${x.vni} out of range`,
      `networks.${cfg.name}.vxlan.vni`,
    );
  return x.remotes.map((r) => `${x.vni} . ${ipv4(r, `networks.${cfg.name}.vxlan.remotes`)}`);
}

/** The set of member VTEPs, keyed by VNI (bits 32-55 of the VXLAN header, after the 8-byte UDP header) and source. */
export const VXLAN_SET: [string, string] = ['set vxlan_vteps', 'typeof @th,96,24 . ip saddr'];

/** The input hook's first rules: VXLAN from members passes, the rest of UDP 4789 is dropped. */
export const UNDERLAY_RULES = [
  `udp dport ${VXLAN_PORT} @th,96,24 . ip saddr @vxlan_vteps accept`,
  `udp dport ${VXLAN_PORT} counter drop comment "${VXLAN_DROP}"`,
];
