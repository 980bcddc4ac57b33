// Load balancers (docs/load-balancers.md): bounds and the config one host's agent realises, shared by spec, plan,
// agent wire and the LB driver.

/** Most load balancers a spec may declare. */
export const LOAD_BALANCERS_MAX = 64;
/** Most hosts running one load balancer (each runs HAProxy and Keepalived). */
export const LB_HOSTS_MAX = 8;
/** Most frontends (listening ports) of one load balancer. */
export const LB_FRONTENDS_MAX = 16;
/** Most backend VMs of one load balancer. */
export const LB_BACKENDS_MAX = 64;
/** Health check interval bounds (ms). */
export const LB_CHECK_INTERVAL_MIN_MS = 100;
export const LB_CHECK_INTERVAL_MAX_MS = 60_000;
/** How long one check may wait for a backend's answer (ms): bounds and the default (HAProxy's `timeout check`). */
export const LB_CHECK_TIMEOUT_MIN_MS = 100;
export const LB_CHECK_TIMEOUT_MAX_MS = 60_000;
export const LB_CHECK_TIMEOUT_DEFAULT_MS = 2000;
/** Most consecutive results before a backend changes state (HAProxy's rise/fall). */
export const LB_CHECK_COUNT_MAX = 10;
/** Longest health check path. */
export const LB_CHECK_PATH_MAX = 128;

/** A frontend protocol: `tcp` (layer 4 proxy) or `http` (HAProxy parses requests, checks by HTTP). */
export type LbProtocol = 'tcp' | 'http';

/** One load balancer as one of its hosts realises it (everything resolved: addresses, ports, devices). */
export interface LbConfig {
  name: string;
  /** The network it sits on and that network's bridge on this host. */
  network: string;
  bridge: string;
  /** MTU of the network (the LB's port into the bridge takes it). */
  mtu: number;
  /** Prefix length of the network's subnet. */
  prefix: number;
  /** The network's gateway address, when it has one (default route of the LB's namespace). */
  gateway?: string;
  vip: string;
  /** VRRP virtual router id (1-255), unique per network. */
  vrid: number;
  /** This host's LB address on the network (VRRP source, health checks and proxied connections come from it). */
  address: string;
  /** VRRP priority of this host (higher holds the VIP). */
  priority: number;
  /** The other LB hosts' addresses (VRRP unicast peers). */
  peers: string[];
  frontends: { port: number; protocol: LbProtocol; backendPort: number }[];
  /** Backend VMs by name with their fixed address on the network. */
  backends: { vm: string; address: string }[];
  /** `timeoutMs` is absent in configs an older agent recorded (HAProxy then uses the interval). */
  healthCheck: { intervalMs: number; timeoutMs?: number; rise: number; fall: number; path: string };
}

/** A load balancer as an agent reports it. */
export interface ObservedLb {
  name: string;
  configHash: string;
  /** HAProxy and Keepalived run (identity-checked). */
  haproxy: boolean;
  keepalived: boolean;
  /** This host holds the VIP now (Keepalived MASTER). */
  holdsVip: boolean;
  /** Backends HAProxy sees up, by VM name (from its stats socket); absent when it cannot be asked. */
  backendsUp?: string[];
  /** What is wrong (a process not running, a missing device); empty when sound. */
  problems: string[];
}

/** The VRRP router id of a load balancer that names none: 1-255 from a hash of its name (stable across runs). */
export function defaultVrid(name: string): number {
  let h = 2166136261;
  for (const c of name) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  return 1 + (h % 255);
}

/** VRRP priority of the `i`-th listed LB host that names none: 150, 140, ... (never below 1). */
export function defaultPriority(i: number): number {
  return Math.max(1, 150 - 10 * i);
}
