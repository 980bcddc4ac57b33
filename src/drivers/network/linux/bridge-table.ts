// Names shared by the scripts of vmlink's bridge-family table (port guards, security groups) and the packet-mark bits
// that carry what the inet table learns (conntrack) to the bridge family, which has no conntrack on every kernel.

/** Name of vmlink's bridge-family table. */
export const BRIDGE_TABLE = 'bridge vmlink';

/**
 * Set by the inet table (`sg_state` chains) on packets conntrack sees as established or related; read by the bridge
 * family's security-group chains. The bridge family cannot use `ct` itself without nf_conntrack_bridge (absent on
 * some kernels, this test kernel among them), but with br_netfilter the IPv4 hooks see bridged frames first.
 */
export const SG_EST_MARK = 0x00400000;
/** Set in the bridge prerouting hook on frames the bridge switches (not to the host): their flows get a ct zone. */
export const SG_BRIDGED_MARK = 0x00800000;
/** Set by a group's egress chain when none of its egress rules matched (the port's chain then drops). */
export const SG_RESTRICT_MARK = 0x01000000;

/** A mark bit as nftables writes it. */
export const markHex = (m: number): string => `0x${m.toString(16).padStart(8, '0')}`;
/** The mask that clears these bits. */
export const clearMaskHex = (...bits: number[]): string => markHex(~bits.reduce((a, b) => a | b, 0) >>> 0);
