import { describe, expect, it } from 'vitest';
import { ConflictError, InvalidRequestError } from '../../../shared/errors.js';
import { bridgedNet, isolatedNet, natNet, natNoUplink } from './fixtures.test-util.js';
import { expectGolden } from './golden.test-util.js';
import { buildRuleset } from './ruleset.js';

describe('buildRuleset', () => {
  it('needs no table without nat or isolated networks', () => {
    expect(buildRuleset([])).toBeUndefined();
    expect(buildRuleset([bridgedNet])).toBeUndefined();
  });

  it('renders one nat network with forwards', () => {
    expectGolden('ruleset-nat.nft', buildRuleset([natNet])!);
  });

  it('renders several networks in name order, whatever the input order', () => {
    const text = buildRuleset([natNet, bridgedNet, isolatedNet, natNoUplink])!;
    expect(buildRuleset([natNoUplink, isolatedNet, natNet])).toBe(text);
    expectGolden('ruleset-mixed.nft', text);
  });

  it('refuses a host port forwarded twice', () => {
    const other = { ...natNoUplink, forwards: [{ ...natNet.forwards[0]!, targetIp: '10.20.0.5' }] };
    expect(() => buildRuleset([natNet, other])).toThrow(ConflictError);
    // Same port, other protocol is fine.
    expect(() =>
      buildRuleset([natNet, { ...other, forwards: [{ ...other.forwards[0]!, protocol: 'udp' }] }]),
    ).not.toThrow();
  });

  it('refuses values that would not be plain nftables tokens', () => {
    const bad = (patch: object) => () => buildRuleset([{ ...natNet, ...patch }]);
    expect(bad({ bridge: 'br" accept; #' })).toThrow(InvalidRequestError);
    expect(bad({ subnet: { ...natNet.subnet!, cidr: '10.0.0.0/33' } })).toThrow(/not an IPv4 CIDR/);
    expect(bad({ forwards: [{ ...natNet.forwards[0]!, targetIp: '10.0.0.300' }] })).toThrow(
      /not an IPv4 address/,
    );
    expect(bad({ forwards: [{ ...natNet.forwards[0]!, hostPort: 70000 }] })).toThrow(/out of range/);
    expect(bad({ name: 'a"b' })).toThrow(InvalidRequestError);
  });
});

describe('isolation comes first', () => {
  it('drops traffic of isolated networks before any nat network accepts forwarded connections', () => {
    const nat = { ...natNet, name: 'aaa-nat', bridge: 'vlb-aaaa0000' };
    const iso = {
      ...natNet,
      name: 'zzz-iso',
      mode: 'isolated' as const,
      bridge: 'vlb-ffff0000',
      forwards: [],
    };
    const lines = buildRuleset([iso, nat])!
      .split('\n')
      .map((l) => l.trim());
    const isoDrop = lines.indexOf('iifname "vlb-ffff0000" drop comment "net:zzz-iso"');
    const dnatAccept = lines.indexOf('oifname "vlb-aaaa0000" ct status dnat accept comment "net:aaa-nat"');
    expect(isoDrop).toBeGreaterThan(-1);
    expect(dnatAccept).toBeGreaterThan(-1);
    expect(isoDrop).toBeLessThan(dnatAccept);
  });
});
