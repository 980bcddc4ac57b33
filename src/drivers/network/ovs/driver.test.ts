import { describe, expect, it } from 'vitest';
import type { NetworkConfig } from '../../../shared/model.js';
import { ovsdbServerArgv, ovsPaths, vswitchdArgv } from './daemon.js';
import { gatewayPortName, tunnelPortName, underlayBridgeName } from './names.js';
import { validateOvsNetworkConfig } from './validate.js';

const base: NetworkConfig = {
  name: 'v100',
  mode: 'vlan',
  backend: 'ovs',
  bridge: 'vlo-12345678',
  mtu: 1500,
  vlan: { id: 100, trunk: 'eth1' },
  forwards: [],
};

describe('ovs driver config checks', () => {
  it('accepts vlan and vxlan, refuses other modes naming the linux backend', () => {
    expect(() => validateOvsNetworkConfig(base)).not.toThrow();
    expect(() => validateOvsNetworkConfig({ ...base, mode: 'nat' })).toThrow(
      /ovs backend realises vlan and vxlan.*use backend linux/,
    );
  });

  it('refuses bad VLANs, trunks, NAT and vxlan settings before any change, naming the field', () => {
    expect(() => validateOvsNetworkConfig({ ...base, vlan: { id: 4095, trunk: 'eth1' } })).toThrow(
      /networks\.v100\.vlan: 4095/,
    );
    expect(() => validateOvsNetworkConfig({ ...base, vlan: { id: 10, trunk: 'eth1;rm' } })).toThrow(
      /vlan\.trunk/,
    );
    expect(() => validateOvsNetworkConfig({ ...base, nat: true })).toThrow(/nftables/);
    const vx: NetworkConfig = {
      ...base,
      mode: 'vxlan',
      vxlan: { vni: 0, device: 'vlx-1', local: '10.0.0.1', remotes: [], port: 4789, underlay: 'eth0' },
    };
    expect(() => validateOvsNetworkConfig(vx)).toThrow(/vni: 0/);
    expect(() =>
      validateOvsNetworkConfig({ ...vx, vxlan: { ...vx.vxlan!, vni: 5, remotes: ['x'] } }),
    ).toThrow(/not an IPv4/);
  });

  it('derives device names of at most 15 characters', () => {
    for (const n of [
      underlayBridgeName('enp0s31f6'),
      gatewayPortName('a-long-network-name'),
      tunnelPortName('vlx-12345678', '192.168.1.2'),
    ])
      expect(n.length).toBeLessThanOrEqual(15);
    expect(tunnelPortName('vlx-12345678', '10.0.0.1')).not.toBe(tunnelPortName('vlx-12345678', '10.0.0.2'));
  });

  it('daemon command lines keep every file under <stateDir>/ovs', () => {
    const p = ovsPaths('/var/lib/vmlink');
    expect(ovsdbServerArgv(p).join(' ')).toBe(
      'ovsdb-server /var/lib/vmlink/ovs/conf.db --remote=punix:/var/lib/vmlink/ovs/run/db.sock --pidfile=/var/lib/vmlink/ovs/run/ovsdb-server.pid --unixctl=/var/lib/vmlink/ovs/run/ovsdb-server.ctl --log-file=/var/lib/vmlink/ovs/ovsdb-server.log --detach --no-chdir',
    );
    expect(vswitchdArgv(p, false)).toContain('--disable-system');
    expect(vswitchdArgv(p, true)).not.toContain('--disable-system');
  });
});
