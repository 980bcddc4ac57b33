import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { OvsBridge, OvsPort } from '../../../exec/ovs.js';
import { legacyOvsVlanBridgeName, ovsVlanBridgeName } from '../../../spec/net.js';
import {
  gatewayPortName,
  gatewayPortOf,
  legacyGatewayPortName,
  legacyUnderlayBridgeName,
  NET,
  ROLE,
  underlayBridgeName,
  underlayBridgeOf,
} from './names.js';

const ifname = /^[A-Za-z0-9_.@:-]{1,15}$/;
const networkName = fc.stringMatching(/^[a-z][a-z0-9-]{0,30}$/);
// Kernel interface names as trunk and underlay NICs have them (hex-looking ones included).
const nicName = fc.oneof(fc.stringMatching(/^[a-z][a-z0-9.@_-]{0,14}$/), fc.stringMatching(/^[0-9a-f]{8}$/));

/** Every name a derivation can give `key`, readable or legacy. */
const forms = (derive: (k: string) => string, legacy: (k: string) => string, k: string) => [
  derive(k),
  legacy(k),
];

describe('OVS device names', () => {
  it('are readable where they fit', () => {
    expect(ovsVlanBridgeName('eth1')).toBe('vlo-eth1');
    expect(gatewayPortName('prod100')).toBe('vli-prod100');
    expect(underlayBridgeName('eth0')).toBe('vlu-eth0');
    expect(gatewayPortName('a-long-network-name')).toMatch(/^vli-[0-9a-f]{8}$/);
    expect(ovsVlanBridgeName('enp0s31f6.100')).toMatch(/^vlo-[0-9a-f]{8}$/);
    // A name that looks like a hash is hashed, so it cannot take another key's legacy name.
    expect(gatewayPortName('deadbeef')).toBe(legacyGatewayPortName('deadbeef'));
  });

  it('are valid interface names, and no two keys share one, readable or legacy', () => {
    const cases: Array<[(k: string) => string, (k: string) => string, fc.Arbitrary<string>]> = [
      [ovsVlanBridgeName, legacyOvsVlanBridgeName, nicName],
      [underlayBridgeName, legacyUnderlayBridgeName, nicName],
      [gatewayPortName, legacyGatewayPortName, networkName],
    ];
    for (const [derive, legacy, arb] of cases)
      fc.assert(
        fc.property(arb, arb, (a, b) => {
          for (const n of forms(derive, legacy, a)) expect(n).toMatch(ifname);
          if (a === b) return;
          const fb = forms(derive, legacy, b);
          for (const n of forms(derive, legacy, a)) expect(fb).not.toContain(n);
        }),
      );
  });
});

const port = (p: Partial<OvsPort> & { name: string }): OvsPort => ({
  trunks: [],
  externalIds: {},
  type: '',
  options: {},
  ...p,
});
const bridge = (name: string, role: string): OvsBridge => ({
  name,
  datapathType: 'netdev',
  ports: [],
  externalIds: { [ROLE]: role },
  otherConfig: {},
});

describe('OVS devices found under their legacy names', () => {
  it('keeps a gateway port made under the legacy name, found by its labels', () => {
    const old = legacyGatewayPortName('prod100');
    const ports = [
      port({
        name: old,
        bridge: 'vlo-eth1',
        type: 'internal',
        externalIds: { [ROLE]: 'gateway', [NET]: 'prod100' },
      }),
      port({ name: 'vli-other', externalIds: { [ROLE]: 'gateway', [NET]: 'other' } }),
    ];
    expect(gatewayPortOf(ports, 'prod100')).toBe(old);
    expect(gatewayPortOf(ports, 'test200')).toBe('vli-test200');
    // A port of that name without vmlink's labels is not adopted.
    expect(gatewayPortOf([port({ name: legacyGatewayPortName('x') })], 'x')).toBe('vli-x');
  });

  it('keeps an underlay bridge made under the legacy name', () => {
    const old = legacyUnderlayBridgeName('eth0');
    expect(underlayBridgeOf([bridge(old, 'underlay')], 'eth0')).toBe(old);
    expect(underlayBridgeOf([bridge(old, 'vxlan')], 'eth0')).toBe('vlu-eth0');
    expect(underlayBridgeOf([], 'eth0')).toBe('vlu-eth0');
  });
});
