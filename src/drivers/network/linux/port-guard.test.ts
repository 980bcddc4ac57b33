import { describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../../shared/errors.js';
import { expectGolden } from './golden.test-util.js';
import { ensurePortsScript, portGuardRules, removePortsScript } from './port-guard.js';

const security = { mac: '52:54:00:00:00:01', addresses: ['10.0.0.5'] };

describe('port guard', () => {
  it('lets out only its MAC and addresses, drops DHCP and RA servers, and lets RARP announces through', () => {
    const rules = portGuardRules('vlt-a', security);
    expect(rules[0]).toBe('ether saddr != 52:54:00:00:00:01 counter drop comment "port:vlt-a mac"');
    expect(rules).toContain('udp sport { 67, 547 } counter drop comment "port:vlt-a dhcp server"');
    expect(rules).toContain('ip saddr { 10.0.0.5 } accept');
    expect(rules).toContain('ether type 0x8035 accept');
    expect(rules.at(-1)).toBe('counter drop comment "port:vlt-a address"');
    // Server drops come before any accept: a guest cannot answer DHCP from its own address either.
    const firstAccept = rules.findIndex((r) => r.endsWith('accept'));
    expect(rules.findIndex((r) => r.includes('dhcp server'))).toBeLessThan(firstAccept);
  });

  it('a port without fixed addresses relies on what DHCP gave its MAC', () => {
    const rules = portGuardRules('vlt-a', { mac: security.mac, addresses: [] });
    expect(rules.some((r) => r.startsWith('ip saddr {'))).toBe(false);
    expect(rules).toContain('ether type ip @ll,48,48 . @nh,96,32 @dhcp_learned accept');
  });

  it('refuses values that would not be plain nftables tokens', () => {
    expect(() => portGuardRules('vlt-a', { ...security, mac: '52:54:00:00:00:01 accept' })).toThrow(
      InvalidRequestError,
    );
    expect(() => portGuardRules('vlt-a', { ...security, addresses: ['10.0.0.5 } accept'] })).toThrow(
      /not an IPv4 address/,
    );
    expect(() => ensurePortsScript([{ tap: 'x"; flush ruleset', bridge: 'vlb-a', mtu: 1500 }])).toThrow();
  });

  it('an unguarded port (trunk, portSecurity: false) is marked as a VM port and loses any guard it had', () => {
    const script = ensurePortsScript([
      { tap: 'vlt-a', bridge: 'vlb-a', mtu: 1500, security },
      { tap: 'vlt-b', bridge: 'vlb-a', mtu: 1500 },
    ]);
    expectGolden('port-guard-mixed.nft', script);
    expect(script).toContain('add element bridge vmlink vm_ports { "vlt-b" }');
    expect(script).toContain('delete element bridge vmlink port_guards { "vlt-b" }');
    expect(script).not.toContain('add rule bridge vmlink port-vlt-b');
    expect(removePortsScript(['vlt-a'])).toContain('delete chain bridge vmlink port-vlt-a');
  });

  it("seeds the addresses the host's dnsmasq leased to guarded MACs, skipping malformed leases", () => {
    const script = ensurePortsScript(
      [{ tap: 'vlt-a', bridge: 'vlb-a', mtu: 1500, security }],
      [
        { mac: '52:54:00:ab:76:5b', ip: '10.87.0.162' },
        { mac: 'garbage', ip: '10.87.0.1' },
      ],
    );
    expect(script).toContain('add element bridge vmlink dhcp_learned { 0x525400ab765b . 0x0a5700a2 }');
    expect(script).not.toContain('garbage');
  });
});
