import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { natNet, vlanNet } from '../drivers/network/linux/fixtures.test-util.js';
import { validateNetworkConfig } from '../drivers/network/linux/validate.js';
import { validateOvsNetworkConfig } from '../drivers/network/ovs/validate.js';
import { bridgeCmd } from '../exec/bridge.js';
import { ipCmd } from '../exec/ip.js';
import { vsctlCmd } from '../exec/ovs.js';
import {
  CONFIRM_WINDOW_MAX_S,
  CONFIRM_WINDOW_MIN_S,
  LINK_MTU_MAX,
  MTU_MIN,
  NETWORK_MTU_MAX,
  VLAN_ID_MAX,
  VLAN_ID_MIN,
} from '../shared/limits.js';
import { HostSchema, NetworkSchema } from '../spec/schema.js';
import { ConfirmSchema, NetworkConfigSchema, UplinkConfigSchema } from './wire.js';

// The spec's bounds are the users'; the agent's wire schema and the exec builders must accept exactly the same
// values, so nothing a spec refuses reaches a host and nothing it accepts is refused on the way down.
const accepts = (f: () => unknown) => {
  try {
    f();
    return true;
  } catch {
    return false;
  }
};

describe('limits agree from the spec down to the drivers and exec builders', () => {
  it('network MTU', () => {
    for (const mtu of [MTU_MIN - 1, MTU_MIN, 1500, NETWORK_MTU_MAX, NETWORK_MTU_MAX + 1, 68, 65535]) {
      const spec = NetworkSchema.safeParse({
        name: 'web',
        host: 'h1',
        mode: 'nat',
        cidr: '10.1.0.0/24',
        mtu,
      }).success;
      const wire = NetworkConfigSchema.safeParse({ ...natNet, mtu }).success;
      const linux = accepts(() => validateNetworkConfig({ ...natNet, mtu }));
      const ovs = accepts(() => validateOvsNetworkConfig({ ...vlanNet, backend: 'ovs', mtu }));
      expect({ mtu, wire, linux, ovs }).toEqual({ mtu, wire: spec, linux: spec, ovs: spec });
      expect(spec).toBe(mtu >= MTU_MIN && mtu <= NETWORK_MTU_MAX);
    }
  });

  it('commit-confirm window: the spec (seconds) and the wire (ms) take the same windows', () => {
    for (const s of [
      CONFIRM_WINDOW_MIN_S - 1,
      CONFIRM_WINDOW_MIN_S,
      60,
      CONFIRM_WINDOW_MAX_S,
      CONFIRM_WINDOW_MAX_S + 1,
    ]) {
      const spec = HostSchema.safeParse({ name: 'h1', confirmTimeoutSeconds: s }).success;
      const wire = ConfirmSchema.safeParse({ id: randomUUID(), timeoutMs: s * 1000 }).success;
      expect({ s, wire }).toEqual({ s, wire: spec });
      expect(spec).toBe(s >= CONFIRM_WINDOW_MIN_S && s <= CONFIRM_WINDOW_MAX_S);
    }
  });

  it("host NICs: never one of vmlink's own devices", () => {
    for (const nic of ['eth0', 'enp3s0', 'br0', 'vlb-web', 'vlt-web1-0', 'vlo-eth1']) {
      const spec = HostSchema.safeParse({ name: 'h1', uplink: nic }).success;
      const wire = UplinkConfigSchema.safeParse({ device: nic }).success;
      expect({ nic, wire }).toEqual({ nic, wire: spec });
      expect(spec).toBe(!nic.startsWith('vl'));
    }
  });

  it('uplink (host NIC) MTU', () => {
    for (const mtu of [MTU_MIN - 1, MTU_MIN, LINK_MTU_MAX, LINK_MTU_MAX + 1]) {
      const wire = UplinkConfigSchema.safeParse({ device: 'eth0', mtu }).success;
      const ovs = accepts(() => vsctlCmd.addPort('br0', 'p0', { mtu }));
      expect({ mtu, wire, ovs }).toEqual({ mtu, wire: mtu >= MTU_MIN && mtu <= LINK_MTU_MAX, ovs: wire });
    }
  });

  it('VLAN ids', () => {
    for (const id of [VLAN_ID_MIN - 1, VLAN_ID_MIN, VLAN_ID_MAX, VLAN_ID_MAX + 1]) {
      const ok = id >= VLAN_ID_MIN && id <= VLAN_ID_MAX;
      const spec = NetworkSchema.safeParse({
        name: 'v',
        mode: 'vlan',
        vlan: id,
        cidr: '10.2.0.0/24',
      }).success;
      const wire = NetworkConfigSchema.safeParse({
        ...natNet,
        mode: 'vlan',
        vlan: { id, trunk: 'eth0' },
      }).success;
      const ip = accepts(() => ipCmd.linkAdd({ name: 'v0', kind: 'vlan', link: 'eth0', vlanId: id }));
      const bridge = accepts(() => bridgeCmd.vlanAdd('eth0', id));
      const ovs = accepts(() => vsctlCmd.addPort('br0', 'p0', { tag: id }));
      const linux = accepts(() => validateNetworkConfig({ ...vlanNet, vlan: { ...vlanNet.vlan!, id } }));
      const ovsNet = accepts(() =>
        validateOvsNetworkConfig({ ...vlanNet, backend: 'ovs', vlan: { ...vlanNet.vlan!, id } }),
      );
      expect({ id, spec, wire, ip, bridge, ovs, linux, ovsNet }).toEqual({
        id,
        spec: ok,
        wire: ok,
        ip: ok,
        bridge: ok,
        ovs: ok,
        linux: ok,
        ovsNet: ok,
      });
    }
  });
});
