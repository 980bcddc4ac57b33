import { describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../../shared/errors.js';
import type { SecurityGroupConfig } from '../../../shared/security-groups.js';
import { expectGolden } from './golden.test-util.js';
import { ensurePortsScript, removePortsScript } from './port-guard.js';
import {
  deleteGroupScript,
  ensureGroupScript,
  groupChainRules,
  portSgLines,
  portSgRules,
  ruleStatement,
} from './security-groups.js';

const web: SecurityGroupConfig = {
  name: 'web',
  rules: [
    {
      direction: 'ingress',
      protocol: 'tcp',
      ports: [
        { from: 80, to: 80 },
        { from: 8000, to: 8100 },
      ],
    },
    { direction: 'ingress', protocol: 'icmp', group: 'admin' },
    { direction: 'ingress', protocol: 'any', cidr: '10.1.2.3/24' },
    { direction: 'egress', protocol: 'udp', ports: [{ from: 53, to: 53 }], cidr: '10.0.0.1/32' },
    { direction: 'egress', protocol: 'any', group: 'web' },
  ],
  memberMacs: ['52:54:00:00:00:02', '52:54:00:00:00:01'],
};
const security = { mac: '52:54:00:00:00:01', addresses: ['10.0.0.5'] };

describe('security group scripts', () => {
  it('renders a group: its chains refilled, remote groups declared, members set in full', () => {
    const script = ensureGroupScript(web);
    expectGolden('sg-group-ensure.nft', script);
    // The remote group `admin` exists (empty) so the rule loads before that group is ensured.
    expect(script).toContain('add set bridge vmlink sg-admin-members');
    // Only its own objects change: no port chain, no other group's chain is flushed.
    expect(script.match(/^flush .*$/gm)).toEqual([
      'flush chain bridge vmlink sg-web-in',
      'flush chain bridge vmlink sg-web-out',
      'flush set bridge vmlink sg-web-members',
    ]);
  });

  it('changes members by their difference when it knows what was applied', () => {
    const next = { ...web, memberMacs: ['52:54:00:00:00:01', '52:54:00:00:00:03'] };
    const script = ensureGroupScript(next, web);
    expect(script).toContain('delete element bridge vmlink sg-web-members { 52:54:00:00:00:02 }');
    expect(script).toContain('add element bridge vmlink sg-web-members { 52:54:00:00:00:03 }');
    expect(script).not.toContain('flush set');
    expect(script).not.toMatch(/add element .* 52:54:00:00:00:01/);
  });

  it('matches the remote as source of ingress and destination of egress; host bits cleared', () => {
    const [tcpIn, icmpIn, anyIn] = groupChainRules(web, 'ingress');
    expect(tcpIn).toBe('ip protocol tcp tcp dport { 80, 8000-8100 } accept');
    expect(icmpIn).toBe('ip protocol icmp ether saddr @sg-admin-members accept');
    expect(anyIn).toBe('ether type ip ip saddr 10.1.2.0/24 accept');
    const out = groupChainRules(web, 'egress');
    expect(out[0]).toBe('ip protocol udp ip daddr 10.0.0.1/32 udp dport { 53 } accept');
    expect(out[1]).toBe('ether type ip ether daddr @sg-web-members accept');
    // A group with egress rules restricts its ports when none matched; one without leaves egress alone.
    expect(out.at(-1)).toBe('meta mark set meta mark | 0x01000000');
    expect(groupChainRules({ ...web, rules: web.rules.slice(0, 1) }, 'egress')).toEqual([]);
  });

  it('refuses what would not be a plain nftables token, and rules that make no sense', () => {
    const bad = (r: object) => () => ruleStatement({ direction: 'ingress', protocol: 'any', ...r }, 'x');
    expect(bad({ cidr: '10.0.0.0/24 accept' })).toThrow(InvalidRequestError);
    expect(bad({ group: 'Web; flush' })).toThrow(/not a security group name/);
    expect(bad({ protocol: 'tcp', ports: [{ from: 0, to: 10 }] })).toThrow(/out of range/);
    expect(bad({ protocol: 'tcp', ports: [{ from: 90, to: 80 }] })).toThrow(/reversed/);
    expect(bad({ protocol: 'icmp', ports: [{ from: 1, to: 1 }] })).toThrow(/no ports/);
    expect(bad({ cidr: '10.0.0.0/8', group: 'web' })).toThrow(/not both/);
    expect(() => ensureGroupScript({ ...web, memberMacs: ['52:54:00:00:00:01 }'] })).toThrow(/not a MAC/);
    expect(() => deleteGroupScript('../x')).toThrow(InvalidRequestError);
  });

  it('a port chain accepts replies, ARP, ND and DHCP, jumps to each group, then drops with its counter', () => {
    const rules = portSgRules('vlt-a', ['web', 'db'], 'ingress');
    expect(rules[0]).toBe('meta mark & 0x00400000 == 0x00400000 accept');
    expect(rules.filter((r) => r.startsWith('jump'))).toEqual(['jump sg-web-in', 'jump sg-db-in']);
    expect(rules.at(-1)).toBe('counter drop comment "sg:vlt-a ingress drop"');
    const out = portSgRules('vlt-a', ['web'], 'egress');
    expect(out.at(-1)).toBe(
      'meta mark & 0x01000000 == 0x01000000 counter drop comment "sg:vlt-a egress drop"',
    );
  });

  it('ports get their chains with their guard, lose them without groups or with the port', () => {
    const script = ensurePortsScript([
      { tap: 'vlt-a', bridge: 'vlb-a', mtu: 1500, security, securityGroups: ['web', 'db'] },
      { tap: 'vlt-b', bridge: 'vlb-a', mtu: 1500, security: { ...security, mac: '52:54:00:00:00:02' } },
    ]);
    expectGolden('sg-ports-ensure.nft', script);
    // The guard comes first: groups trust the addresses it lets out.
    expect(script.indexOf('port_guards { "vlt-a"')).toBeLessThan(script.indexOf('sg_ingress { "vlt-a"'));
    expect(script).toContain('delete element bridge vmlink sg_ingress { "vlt-b" }');
    expect(removePortsScript(['vlt-a'])).toContain('delete chain bridge vmlink sgp-in-vlt-a');
    expect(() =>
      ensurePortsScript([{ tap: 'vlt-c', bridge: 'vlb-a', mtu: 1500, securityGroups: ['web'] }]),
    ).toThrow(/need port security/);
    expect(() => portSgLines('vlt-a', ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'])).toThrow(/more than 8/);
  });
});
