// The OVS backend's own checks of a network config: what it refuses before any change, naming the field.
import { assertIfName } from '../../../exec/ip.js';
import { InvalidRequestError, UnsupportedError } from '../../../shared/errors.js';
import {
  isNetworkMtu,
  isVlanId,
  MTU_MIN,
  NETWORK_MTU_MAX,
  PORT_MAX,
  PORT_MIN,
  VLAN_ID_MAX,
  VLAN_ID_MIN,
  VNI_MAX,
} from '../../../shared/limits.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { assertNetworkName } from '../linux/validate.js';

/** Network modes the OVS backend realises. */
export const OVS_MODES = ['vlan', 'vxlan'] as const;

/** Refuses a config the OVS backend cannot realise, before any change, naming the field. */
export function validateOvsNetworkConfig(cfg: NetworkConfig): void {
  const at = `networks.${cfg.name}`;
  assertNetworkName(cfg.name);
  if (!(OVS_MODES as readonly string[]).includes(cfg.mode))
    throw new UnsupportedError(
      `${at}.mode: the ovs backend realises ${OVS_MODES.join(' and ')} networks, not ${cfg.mode}; use backend linux`,
      `${at}.mode`,
    );
  assertIfName(cfg.bridge, `${at}.bridge`);
  if (!isNetworkMtu(cfg.mtu))
    throw new InvalidRequestError(
      `${at}.mtu: ${cfg.mtu} out of range ${MTU_MIN}-${NETWORK_MTU_MAX}`,
      `${at}.mtu`,
    );
  if (cfg.nat || cfg.forwards.length > 0)
    throw new UnsupportedError(
      `${at}: NAT and port forwards need the host's nftables table, which the linux backend owns; the ovs backend only routes on-link (gateway without nat)`,
      `${at}.gateway.nat`,
    );
  if (cfg.mode === 'vlan') {
    const v = cfg.vlan;
    if (!v)
      throw new InvalidRequestError(`${at}.vlan: a vlan network needs its VLAN id and trunk`, `${at}.vlan`);
    if (!isVlanId(v.id))
      throw new InvalidRequestError(
        `${at}.vlan: ${v.id} out of range ${VLAN_ID_MIN}-${VLAN_ID_MAX}`,
        `${at}.vlan`,
      );
    assertIfName(v.trunk, `${at}.vlan.trunk`);
    if (v.trunk === cfg.bridge)
      throw new InvalidRequestError(`${at}.vlan.trunk: cannot be the bridge itself`, `${at}.vlan.trunk`);
  } else {
    const x = cfg.vxlan;
    if (!x)
      throw new InvalidRequestError(`${at}.vxlan: a vxlan network needs its VNI and VTEPs`, `${at}.vxlan`);
    if (!Number.isInteger(x.vni) || x.vni < 1 || x.vni > VNI_MAX)
      throw new InvalidRequestError(`${at}.vni: ${x.vni} out of range 1-${VNI_MAX}`, `${at}.vni`);
    assertIfName(x.underlay, `${at}.vxlan.underlay`);
    for (const a of [x.local, ...x.remotes])
      if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(a))
        throw new InvalidRequestError(
          `${at}.vxlan: ${JSON.stringify(a)} is not an IPv4 address`,
          `${at}.vxlan`,
        );
    if (!Number.isInteger(x.port) || x.port < PORT_MIN || x.port > PORT_MAX)
      throw new InvalidRequestError(`${at}.vxlan.port: ${x.port} out of range`, `${at}.vxlan.port`);
  }
}
