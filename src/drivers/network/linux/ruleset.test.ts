import { describe, expect, it } from 'vitest';
import { ConflictError, InvalidRequestError } from '../../../shared/errors.js';
import { bridgedNet, isolatedNet, natNet, natNoUplink } from './fixtures.test-util.js';
import { expectGolden } from './golden.test-util.js';
import { bridgeZones, buildRuleset, rulesetDelta, rulesetModel } from './ruleset.js';

describe('buildRuleset', () => {
  it('needs no table without networks; a bridge network only filters what its VM ports send the host', () => {
    expect(buildRuleset([])).toBeUndefined();
    const m = rulesetModel([bridgedNet])!;
    // Its LAN bridge carries the host's own traffic: not a guest bridge, nothing opened, nothing routed.
    expect(Object.values(m)).toEqual([
      {
        bridge: bridgedNet.bridge,
        kind: 'switched',
        guest: false,
        vteps: [],
        ports: [],
        chains: {},
        zone: expect.any(Number),
      },
    ]);
    expect(buildRuleset([bridgedNet])).toContain('meta mark & 0x00200000 == 0x00200000 jump guest_input');
  });

  it("opens a network's host services to its VMs (any host address), after DHCP, DNS and ping to the gateway", () => {
    const open = { ...isolatedNet, hostServices: [{ protocol: 'tcp' as const, port: 22 }] };
    const m = rulesetModel([
      open,
      { ...bridgedNet, hostServices: [{ protocol: 'udp' as const, port: 123 }] },
    ])!;
    expect(m[isolatedNet.name]?.chains[`in-${isolatedNet.bridge}`]).toEqual([
      `udp sport 68 udp dport 67 accept comment "net:${isolatedNet.name}"`,
      `ip daddr ${isolatedNet.subnet!.gateway} meta l4proto { tcp, udp } th dport 53 accept comment "net:${isolatedNet.name}"`,
      `ip daddr ${isolatedNet.subnet!.gateway} icmp type echo-request accept comment "net:${isolatedNet.name}"`,
      `tcp dport 22 accept comment "net:${isolatedNet.name}"`,
    ]);
    expect(m[bridgedNet.name]?.chains).toEqual({
      [`in-${bridgedNet.bridge}`]: [`udp dport 123 accept comment "net:${bridgedNet.name}"`],
    });
    const bad = { ...isolatedNet, hostServices: [{ protocol: 'tcp' as const, port: 0 }] };
    expect(() => rulesetModel([bad])).toThrow(InvalidRequestError);
  });

  it("drops VM traffic to the host after the network's chain and VXLAN from non-members before anything", () => {
    const lines = buildRuleset([natNet])!
      .split('\n')
      .map((l) => l.trim());
    const input = lines.slice(lines.indexOf('chain input {'));
    expect(input.slice(2, 6)).toEqual([
      'udp dport 4789 @th,96,24 . ip saddr @vxlan_vteps accept',
      'udp dport 4789 @th,96,24 @vxlan_vnis counter drop comment "vxlan from a non-member"',
      'iifname @guest_bridges jump guest_input',
      'meta mark & 0x00200000 == 0x00200000 jump guest_input',
    ]);
    const guest = lines.slice(lines.indexOf('chain guest_input {'));
    expect(guest.slice(1, 5)).toEqual([
      'ct state established,related accept',
      'icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept',
      'iifname vmap @host_services',
      'counter drop comment "guest to host"',
    ]);
  });

  it('renders one nat network with forwards', () => {
    expectGolden('ruleset-nat.nft', buildRuleset([natNet])!);
  });

  it('renders several networks in name order, whatever the input order', () => {
    const text = buildRuleset([natNet, bridgedNet, isolatedNet, natNoUplink])!;
    expect(buildRuleset([natNoUplink, isolatedNet, bridgedNet, natNet])).toBe(text);
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
  it('drops traffic of isolated bridges before any routed one accepts forwarded connections', () => {
    const nat = { ...natNet, name: 'aaa-nat', bridge: 'vlb-aaaa0000' };
    const iso = {
      ...natNet,
      name: 'zzz-iso',
      mode: 'isolated' as const,
      bridge: 'vlb-ffff0000',
      forwards: [],
    };
    const model = rulesetModel([iso, nat])!;
    expect(model['zzz-iso']?.kind).toBe('isolated');
    expect(model['aaa-nat']?.kind).toBe('routed');
    const lines = buildRuleset([iso, nat])!
      .split('\n')
      .map((l) => l.trim());
    const isoDrop = lines.indexOf('iifname @isolated_bridges counter drop');
    const dnatAccept = lines.indexOf('oifname @routed_bridges ct status dnat counter accept');
    expect(isoDrop).toBeGreaterThan(-1);
    expect(dnatAccept).toBeGreaterThan(-1);
    expect(isoDrop).toBeLessThan(dnatAccept);
  });
});

describe('bridgeZones', () => {
  it('gives each bridge its own zone from its name, stable as others come and go', () => {
    const a = bridgeZones(['vlb-a', 'vlb-b']);
    expect(new Set(a.values()).size).toBe(2);
    for (const z of a.values()) expect(z).toBeGreaterThanOrEqual(1);
    expect(bridgeZones(['vlb-b']).get('vlb-b')).toBe(a.get('vlb-b'));
  });
});

describe('rulesetDelta', () => {
  const iso = { ...isolatedNet, name: 'iso', bridge: 'vlb-00000002' };
  const model = (...nets: Parameters<typeof rulesetModel>[0]) => rulesetModel(nets)!;

  it('changes nothing when nothing changed', () => {
    expect(rulesetDelta(model(natNet, iso), model(iso, natNet))).toBe('');
  });

  it('adds a network by its elements and chains only, the others untouched', () => {
    const d = rulesetDelta(model(iso), model(iso, natNet));
    expect(d).not.toContain('vlb-00000002');
    expect(d.split('\n').filter(Boolean)).toEqual([
      'add chain inet vmlink in-vlb-0a1b2c3d',
      'add rule inet vmlink in-vlb-0a1b2c3d udp sport 68 udp dport 67 accept comment "net:web"',
      'add rule inet vmlink in-vlb-0a1b2c3d ip daddr 10.10.0.1 meta l4proto { tcp, udp } th dport 53 accept comment "net:web"',
      'add rule inet vmlink in-vlb-0a1b2c3d ip daddr 10.10.0.1 icmp type echo-request accept comment "net:web"',
      'add chain inet vmlink masq-vlb-0a1b2c3d',
      'add rule inet vmlink masq-vlb-0a1b2c3d ip saddr 10.10.0.0/24 ip daddr != 10.10.0.0/24 oifname != "vlb-0a1b2c3d" counter masquerade comment "net:web"',
      'add chain inet vmlink dnat-vlb-0a1b2c3d',
      'add rule inet vmlink dnat-vlb-0a1b2c3d iifname != "vlb-0a1b2c3d" tcp dport 8080 counter dnat ip to 10.10.0.10:80 comment "net:web vm:web1"',
      'add rule inet vmlink dnat-vlb-0a1b2c3d iifname != "vlb-0a1b2c3d" udp dport 5353 counter dnat ip to 10.10.0.10:53 comment "net:web vm:web1"',
      'add chain inet vmlink out-vlb-0a1b2c3d',
      'add rule inet vmlink out-vlb-0a1b2c3d ip daddr != 127.0.0.0/8 tcp dport 8080 counter dnat ip to 10.10.0.10:80 comment "net:web vm:web1"',
      'add rule inet vmlink out-vlb-0a1b2c3d ip daddr != 127.0.0.0/8 udp dport 5353 counter dnat ip to 10.10.0.10:53 comment "net:web vm:web1"',
      'add element inet vmlink guest_bridges { "vlb-0a1b2c3d" }',
      'add element inet vmlink bridge_zones { "vlb-0a1b2c3d" : 2914 }',
      'add element inet vmlink host_services { "vlb-0a1b2c3d" : jump in-vlb-0a1b2c3d }',
      'add element inet vmlink same_bridge { "vlb-0a1b2c3d" . "vlb-0a1b2c3d" }',
      'add element inet vmlink routed_bridges { "vlb-0a1b2c3d" }',
      'add element inet vmlink masq_by_bridge { "vlb-0a1b2c3d" : jump masq-vlb-0a1b2c3d }',
      'add element inet vmlink dnat_ports { tcp . 8080 : jump dnat-vlb-0a1b2c3d }',
      'add element inet vmlink dnat_local_ports { tcp . 8080 : jump out-vlb-0a1b2c3d }',
      'add element inet vmlink dnat_ports { udp . 5353 : jump dnat-vlb-0a1b2c3d }',
      'add element inet vmlink dnat_local_ports { udp . 5353 : jump out-vlb-0a1b2c3d }',
    ]);
  });

  it('removes a network: the elements that jump to its chains first, then the chains', () => {
    const d = rulesetDelta(model(iso, natNet), model(iso)).split('\n').filter(Boolean);
    const lastElement = Math.max(...d.map((l, i) => (l.startsWith('delete element') ? i : -1)));
    const firstChain = d.findIndex((l) => l.startsWith('delete chain'));
    expect(firstChain).toBeGreaterThan(lastElement);
    expect(d.filter((l) => l.startsWith('delete chain'))).toEqual([
      'delete chain inet vmlink in-vlb-0a1b2c3d',
      'delete chain inet vmlink masq-vlb-0a1b2c3d',
      'delete chain inet vmlink dnat-vlb-0a1b2c3d',
      'delete chain inet vmlink out-vlb-0a1b2c3d',
    ]);
    expect(d.some((l) => l.includes('vlb-00000002'))).toBe(false);
  });

  it('changes a forward by refilling its chains and swapping the one port', () => {
    const moved = { ...natNet, forwards: [natNet.forwards[0]!, { ...natNet.forwards[1]!, hostPort: 5354 }] };
    const d = rulesetDelta(model(natNet), model(moved)).split('\n').filter(Boolean);
    expect(d).toContain('flush chain inet vmlink dnat-vlb-0a1b2c3d');
    expect(d).toContain('delete element inet vmlink dnat_ports { udp . 5353 : jump dnat-vlb-0a1b2c3d }');
    expect(d).toContain('add element inet vmlink dnat_ports { udp . 5354 : jump dnat-vlb-0a1b2c3d }');
    expect(d.some((l) => l.includes('tcp . 8080'))).toBe(false);
    expect(d.some((l) => l.includes('masq_by_bridge'))).toBe(false);
  });

  it('turns an isolated network into a routed one and back', () => {
    const routed = { ...iso, mode: 'nat' as const };
    const there = rulesetDelta(model(iso), model(routed));
    expect(there).toContain('delete element inet vmlink isolated_bridges { "vlb-00000002" }');
    expect(there).toContain('add element inet vmlink routed_bridges { "vlb-00000002" }');
    const back = rulesetDelta(model(routed), model(iso));
    expect(back).toContain('delete chain inet vmlink masq-vlb-00000002');
    expect(back).toContain('add element inet vmlink isolated_bridges { "vlb-00000002" }');
  });
});
