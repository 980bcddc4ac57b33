// Config hashes: what the agent stores with a realised object and the plan compares against.
import { createHash } from 'node:crypto';
import type { NetworkConfig, UplinkConfig, VmConfig } from '../shared/model.js';
import type { SecurityGroupConfig } from '../shared/security-groups.js';
import { canonicalNetworkNames, canonicalVmNames } from './device-names.js';

/** JSON with object keys sorted at every level; `undefined` members are dropped as JSON.stringify does. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const parts = Object.keys(obj)
    .filter((k) => obj[k] !== undefined && typeof obj[k] !== 'function')
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`);
  return `{${parts.join(',')}}`;
}

/** First 16 hex digits of sha256 over the canonical JSON of `obj`. */
export function configHash(obj: unknown): string {
  return createHash('sha256').update(canonicalJson(obj)).digest('hex').slice(0, 16);
}

/**
 * Hash of a network config, as the agent stores it after realising the network. A bridge name derived from the
 * network's name hashes as its legacy form, so the switch to readable names changes no hash.
 */
export function networkConfigHash(net: NetworkConfig): string {
  return configHash(canonicalNetworkNames(net));
}

/**
 * Hash of a VM config without its power state: starting or stopping a VM does not rebuild it. Derived tap and
 * bridge names hash as their legacy forms (see `networkConfigHash`).
 */
export function vmConfigHash(vm: VmConfig): string {
  const { state: _state, ...rest } = canonicalVmNames(vm);
  return configHash(rest);
}

/** Hash of an uplink config, as the agent reports it in `ObservedUplink.configHash` after applying it. */
export function uplinkConfigHash(uplink: UplinkConfig): string {
  return configHash(uplink);
}

/** Hash of a security group config, as a backend stores it with the group (`ensureSecurityGroup`'s configHash). */
export function securityGroupConfigHash(group: SecurityGroupConfig): string {
  return configHash(group);
}
