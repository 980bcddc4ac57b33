import type {
  HostCapabilities,
  NetworkConfig,
  ObservedNetwork,
  ObservedUplink,
  UplinkConfig,
} from '../../shared/model.js';
import type { OpContext } from '../../shared/op.js';
import type { SecurityGroupConfig } from '../../shared/security-groups.js';

/** Operation context of mutating driver calls (lives in shared/; re-exported for the drivers' imports). */
export type { OpContext } from '../../shared/op.js';

/** A network's config as a backend last applied it, with the hash `ensureNetwork` received. */
export interface AppliedNetworkConfig {
  config: NetworkConfig;
  configHash: string;
}

/** What became of one item of a bulk driver call; a bulk call that stops early returns fewer results than items. */
export type ItemResult = { ok: true } | { ok: false; error: unknown };

/** One network of a bulk `ensureNetworks` call. */
export interface NetworkItem {
  cfg: NetworkConfig;
  configHash: string;
}

/** A VM port: a persistent tap the hypervisor attaches to. */
export interface PortConfig {
  tap: string;
  bridge: string;
  mtu: number;
  /** Access port: VLAN tag (ovs; linux needs bridge vlan_filtering). */
  vlan?: number;
  /** Trunk port: VLANs passed tagged. */
  trunks?: number[];
  /**
   * Anti-spoofing: the only MAC and IPv4 addresses the port lets out (plus the address a DHCP server gives that MAC).
   * `addresses` holds the NIC's fixed address or DHCP reservation (trusted on every host: vmlink's DHCP gives that
   * MAC only that address) and its allowed ones. Absent: the port is not filtered (trunk ports, `portSecurity: false`).
   */
  security?: {
    mac: string;
    addresses: string[];
    /**
     * The NIC takes an address not known beforehand by DHCP (no fixed address, no reservation): the linux backend
     * learns it from the DHCP reply, the ovs backend pins it to a reservation on this host, if any.
     */
    dhcp?: boolean;
  };
  /**
   * Security groups of the port (names of groups given to `ensureSecurityGroup`), only with `security`; absent or
   * empty: no groups. Semantics in shared/security-groups.ts. A group named here but not (yet) ensured allows
   * nothing: the port is default-deny inbound until it is.
   */
  securityGroups?: string[];
}

/** A security group as a backend last applied it, with the hash `ensureSecurityGroup` received. */
export interface AppliedSecurityGroup {
  config: SecurityGroupConfig;
  configHash: string;
}

/** A network backend on one host (linux bridge + nftables + dnsmasq; later Open vSwitch). */
export interface NetworkDriver {
  // Networks.
  /** Creates the network, or brings an existing one in line with `cfg`; idempotent. `configHash` is reported back by `listNetworks`. */
  ensureNetwork(cfg: NetworkConfig, configHash: string, ctx?: OpContext): Promise<void>;
  /**
   * Optional bulk form of `ensureNetwork` for a batch of one host's steps: the same outcome as calling it on each
   * item in order, stopping at the first failure (items before it stay applied, the failed one is undone).
   */
  ensureNetworks?(items: readonly NetworkItem[], ctx?: OpContext): Promise<ItemResult[]>;
  /** Removes the network and everything it started; a missing network is not an error. */
  deleteNetwork(name: string, ctx?: OpContext): Promise<void>;
  /** Optional bulk form of `deleteNetwork`, in order, stopping at the first failure. */
  deleteNetworks?(names: readonly string[], ctx?: OpContext): Promise<ItemResult[]>;
  /** Networks this driver realised on the host, with their problems. */
  listNetworks(): Promise<ObservedNetwork[]>;
  /** Moves state an older vmlink left into this backend's current layout; idempotent (the agent calls it at start). */
  upgradeState?(): Promise<void>;
  /** The config (and its hash) network `name` was last built from by this backend; undefined when it has none. */
  appliedConfig(name: string): Promise<AppliedNetworkConfig | undefined>;

  // Ports.
  /** Creates (or re-attaches) a VM port on its network's bridge; idempotent. */
  ensurePort(port: PortConfig, ctx?: OpContext): Promise<void>;
  /** Optional bulk form of `ensurePort`: all or nothing (on failure it leaves nothing it made, and throws). */
  ensurePorts?(ports: readonly PortConfig[], ctx?: OpContext): Promise<void>;
  /** Removes a VM port; a missing port is not an error. */
  deletePort(tap: string, ctx?: OpContext): Promise<void>;
  /** Optional bulk form of `deletePort`: checks every tap first, then removes them together; throws on failure. */
  deletePorts?(taps: readonly string[], ctx?: OpContext): Promise<void>;
  /** Whether the port exists and is attached to `bridge`. */
  portAttached(tap: string, bridge: string): Promise<boolean>;
  /** OpenFlow rules the backend installed for a network (ovs); absent for backends without flows. */
  flows?(network: string): Promise<string>;
  /** Optional bulk form for reports: every port of this backend with its bridge, in one query. */
  portMasters?(): Promise<Map<string, string | undefined>>;
  /**
   * Points the bridge's forwarding entry for `mac` at port `tap` now: a VM that arrived by live migration ran on
   * another host a moment ago, so this bridge learned its MAC on the overlay port, and frames for it would not reach
   * the tap until the guest sends something (QEMU's announce usually does; this does not depend on it).
   */
  claimMac?(tap: string, mac: string, ctx?: OpContext): Promise<void>;

  // Security groups (backends that support them; the agent refuses ports with groups on one that does not).
  /**
   * Creates or updates a group's rules and member set; idempotent and atomic (one transaction), touching only this
   * group's own objects, so ports in other groups never see a gap. Ports already in the group follow at once.
   */
  ensureSecurityGroup?(group: SecurityGroupConfig, configHash: string, ctx?: OpContext): Promise<void>;
  /** Removes a group no port uses any more; a missing group is not an error. */
  deleteSecurityGroup?(name: string, ctx?: OpContext): Promise<void>;
  /** Groups this backend realised on the host, with the hash each was applied with. */
  listSecurityGroups?(): Promise<AppliedSecurityGroup[]>;

  // Host.
  /** Kernel network features this host has. */
  capabilities(): Promise<HostCapabilities['network']>;
  /** Network modes this backend can realise on this host (absent: nat, bridge and isolated). */
  supportedModes?(): NetworkConfig['mode'][] | Promise<NetworkConfig['mode'][]>;
}

/** The host's own uplink (addresses, MTU): changes here can cut the management path, so they are commit-confirmed. */
export interface UplinkManager {
  /** The uplink as it is now. */
  observeUplink(device: string): Promise<ObservedUplink>;
  /** Brings the uplink in line with `cfg` (on the bridge that enslaves it, if any); idempotent. */
  configureUplink(cfg: UplinkConfig, configHash: string, ctx?: OpContext): Promise<void>;
}
