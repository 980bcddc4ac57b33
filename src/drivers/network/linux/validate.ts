// The linux backend's own checks of a network config: what it refuses before any change, naming the
// field (the spec validator checks the same things earlier; an agent must not trust its caller).
import { isIP } from 'node:net';
import { assertIfName } from '../../../exec/ip.js';
import { InvalidRequestError } from '../../../shared/errors.js';
import {
  isNetworkMtu,
  isVlanId,
  MTU_MIN,
  NETWORK_MTU_MAX,
  PORT_MAX,
  PORT_MIN,
  VLAN_ID_MAX,
  VLAN_ID_MIN,
} from '../../../shared/limits.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { NETWORK_NAME } from '../state-layout.js';
import { buildRuleset, isRouted } from './ruleset.js';

/** Refuses a network name that cannot be a state directory here. */
export function assertNetworkName(name: string): void {
  if (!NETWORK_NAME.test(name))
    throw new InvalidRequestError(`invalid network name ${JSON.stringify(name)}`, 'name');
}

/** Refuses a config the driver cannot realise, before any change, naming the field. */
export function validateNetworkConfig(cfg: NetworkConfig): void {
  const at = `networks.${cfg.name}`;
  assertNetworkName(cfg.name);
  assertIfName(cfg.bridge, `${at}.bridge`);
  if (!isNetworkMtu(cfg.mtu)) {
    throw new InvalidRequestError(
      `${at}.mtu: ${cfg.mtu} out of range ${MTU_MIN}-${NETWORK_MTU_MAX}`,
      `${at}.mtu`,
    );
  }
  if (cfg.uplink !== undefined) {
    assertIfName(cfg.uplink, `${at}.uplink`);
    if (cfg.uplink === cfg.bridge)
      throw new InvalidRequestError(`${at}.uplink: cannot be the bridge itself`, `${at}.uplink`);
  }
  if (cfg.mode === 'bridge') {
    if (!cfg.uplink)
      throw new InvalidRequestError(`${at}.uplink: bridge mode needs an uplink NIC`, `${at}.uplink`);
  } else if (!cfg.subnet && (cfg.mode === 'nat' || cfg.mode === 'isolated')) {
    throw new InvalidRequestError(`${at}.subnet: ${cfg.mode} mode needs a subnet`, `${at}.subnet`);
  }
  if (cfg.mode === 'vxlan') validateVxlan(cfg, at);
  if (cfg.mode === 'vlan') {
    const v = cfg.vlan;
    if (!v) throw new InvalidRequestError(`${at}.vlan: vlan mode needs a VLAN id and trunk`, `${at}.vlan`);
    if (!isVlanId(v.id))
      throw new InvalidRequestError(
        `${at}.vlan.id: ${v.id} out of range ${VLAN_ID_MIN}-${VLAN_ID_MAX}`,
        `${at}.vlan.id`,
      );
    assertIfName(v.trunk, `${at}.vlan.trunk`);
    if (v.trunk === cfg.bridge)
      throw new InvalidRequestError(`${at}.vlan.trunk: cannot be the bridge itself`, `${at}.vlan.trunk`);
  }
  if (!isRouted(cfg) && cfg.forwards.length > 0) {
    throw new InvalidRequestError(
      `${at}.forwards: port forwards need nat mode (or nat on a vxlan/vlan gateway host)`,
      `${at}.forwards`,
    );
  }
  // Renders (and so validates) the ruleset fragment of this network alone.
  buildRuleset([cfg]);
}

function validateVxlan(cfg: NetworkConfig, at: string): void {
  const v = cfg.vxlan;
  if (!v) throw new InvalidRequestError(`${at}.vxlan: vxlan mode needs VXLAN settings`, `${at}.vxlan`);
  if (!Number.isInteger(v.vni) || v.vni < 1 || v.vni > 16777215)
    throw new InvalidRequestError(`${at}.vni: ${v.vni} out of range 1-16777215`, `${at}.vni`);
  assertIfName(v.device, `${at}.vxlan.device`);
  if (v.device === cfg.bridge)
    throw new InvalidRequestError(`${at}.vxlan.device: cannot be the bridge itself`, `${at}.vxlan.device`);
  assertIfName(v.underlay, `${at}.vxlan.underlay`);
  if (!isIP(v.local))
    throw new InvalidRequestError(
      `${at}.vxlan.local: ${JSON.stringify(v.local)} is not an IP address`,
      `${at}.vxlan.local`,
    );
  const seen = new Set<string>();
  for (const [i, r] of v.remotes.entries()) {
    const where = `${at}.vxlan.remotes[${i}]`;
    if (isIP(r) !== isIP(v.local))
      throw new InvalidRequestError(
        `${where}: ${JSON.stringify(r)} is not an address of the VTEP's family`,
        where,
      );
    if (r === v.local) throw new InvalidRequestError(`${where}: ${r} is this host's own VTEP`, where);
    if (seen.has(r)) throw new InvalidRequestError(`${where}: ${r} listed twice`, where);
    seen.add(r);
  }
  if (!Number.isInteger(v.port) || v.port < PORT_MIN || v.port > PORT_MAX)
    throw new InvalidRequestError(
      `${at}.vxlan.port: ${v.port} out of range ${PORT_MIN}-${PORT_MAX}`,
      `${at}.vxlan.port`,
    );
}
