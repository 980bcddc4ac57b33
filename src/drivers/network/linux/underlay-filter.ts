// The VXLAN underlay filter (issue 8, hole 9): a VXLAN packet (UDP 4789) for one of this backend's overlays (its
// VNI, read from the VXLAN header as raw payload: nft 1.0.6 has no vxlan expression) is accepted only from that
// overlay's member VTEPs; from anyone else it is counted and dropped before the kernel's VXLAN device sees it. A LAN
// neighbour can then no longer inject frames into an overlay, unless it forges a member's address (the underlay's
// own job, e.g. uRPF or switch port security). Other VNIs are left alone: the kernel drops those no device has, and
// Open vSwitch's kernel datapath, which shares the port, admits only its tunnel ports' remote_ip and key.
import { InvalidRequestError } from '../../../shared/errors.js';
import { VXLAN_PORT } from '../../../shared/limits.js';
import type { NetworkConfig } from '../../../shared/model.js';

/** Counter comment of the rule that drops VXLAN from anyone but a member VTEP. */
export const VXLAN_DROP = 'vxlan from a non-member';

/** The `vxlan_vnis` element (its VNI) and `vxlan_vteps` elements (`vni . remote`) this network adds (vxlan only). */
export function vtepElements(
  cfg: NetworkConfig,
  ipv4: (v: string, what: string) => string,
): { vni?: string; vteps: string[] } {
  const x = cfg.vxlan;
  if (cfg.mode !== 'vxlan' || !x) return { vteps: [] };
  if (!Number.isInteger(x.vni) || x.vni < 1 || x.vni > 16_777_215)
    throw new InvalidRequestError(
      `networks.${cfg.name}.vxlan.vni: ${x.vni} out of range`,
      `networks.${cfg.name}.vxlan.vni`,
    );
  return {
    vni: String(x.vni),
    vteps: x.remotes.map((r) => `${x.vni} . ${ipv4(r, `networks.${cfg.name}.vxlan.remotes`)}`),
  };
}

/**
 * The sets: this backend's VNIs, and their member VTEPs keyed by VNI (bits 32-55 of the VXLAN header, after the
 * 8-byte UDP header) and source.
 */
export const VXLAN_SETS: Array<[string, string]> = [
  ['set vxlan_vnis', 'typeof @th,96,24'],
  ['set vxlan_vteps', 'typeof @th,96,24 . ip saddr'],
];

/** The input hook's first rules: VXLAN from a member passes, the rest for one of these VNIs is dropped. */
export const UNDERLAY_RULES = [
  `udp dport ${VXLAN_PORT} @th,96,24 . ip saddr @vxlan_vteps accept`,
  `udp dport ${VXLAN_PORT} @th,96,24 @vxlan_vnis counter drop comment "${VXLAN_DROP}"`,
];
