import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bridgeName,
  cidrsOverlap,
  defaultDhcpRange,
  derivedMac,
  formatIpv4,
  formatRange,
  hasHostBits,
  legacyBridgeName,
  legacyTapName,
  parseCidr,
  parseIpv4,
  tapName,
} from './net.js';

describe('net', () => {
  it('parses and formats IPv4', () => {
    expect(parseIpv4('10.0.0.1')).toBe(0x0a000001);
    expect(parseIpv4('255.255.255.255')).toBe(0xffffffff);
    expect(formatIpv4(0xffffffff)).toBe('255.255.255.255');
    for (const bad of ['1.2.3', '1.2.3.256', '01.2.3.4', 'a.b.c.d', '1.2.3.4.5'])
      expect(parseIpv4(bad)).toBeUndefined();
  });

  it('parses CIDRs, clearing host bits', () => {
    expect(parseCidr('10.0.0.7/24')).toEqual({
      network: 0x0a000000,
      prefix: 24,
      broadcast: 0x0a0000ff,
      size: 256,
    });
    expect(hasHostBits('10.0.0.7/24')).toBe(true);
    expect(hasHostBits('10.0.0.0/24')).toBe(false);
    expect(parseCidr('10.0.0.0/33')).toBeUndefined();
  });

  it('detects overlap', () => {
    const c = (s: string) => parseCidr(s)!;
    expect(cidrsOverlap(c('10.0.0.0/24'), c('10.0.0.128/25'))).toBe(true);
    expect(cidrsOverlap(c('10.0.0.0/24'), c('10.0.1.0/24'))).toBe(false);
    expect(cidrsOverlap(c('10.0.0.0/8'), c('10.200.0.0/16'))).toBe(true);
  });

  it('picks default DHCP ranges', () => {
    const r = (cidr: string, gw: string) => formatRange(defaultDhcpRange(parseCidr(cidr)!, parseIpv4(gw)!));
    expect(r('10.0.0.0/24', '10.0.0.1')).toBe('10.0.0.100-10.0.0.199');
    expect(r('10.0.0.0/16', '10.0.0.1')).toBe('10.0.0.100-10.0.0.199');
    expect(r('10.0.0.0/25', '10.0.0.1')).toBe('10.0.0.64-10.0.0.126');
    expect(r('10.0.0.0/28', '10.0.0.1')).toBe('10.0.0.8-10.0.0.14');
    expect(r('10.0.0.0/30', '10.0.0.1')).toBe('10.0.0.2-10.0.0.2');
    // A gateway inside the default range splits it; the larger side wins.
    expect(r('10.0.0.0/24', '10.0.0.120')).toBe('10.0.0.121-10.0.0.199');
    expect(r('10.0.0.0/24', '10.0.0.180')).toBe('10.0.0.100-10.0.0.179');
  });

  it('derives stable device names and MACs', () => {
    expect(bridgeName('natnet')).toBe('vlb-natnet');
    expect(tapName('web1', 0)).toBe('vlt-web1-0');
    expect(tapName('web1', 0)).not.toBe(tapName('web1', 1));
    expect(derivedMac('web1', 0)).toMatch(/^52:54:00:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$/);
  });

  it('names devices after their network or VM when that fits in 15 characters, else by a hash', () => {
    expect(bridgeName('lan-11chars')).toBe('vlb-lan-11chars');
    expect(bridgeName('lan-12charss')).toBe(legacyBridgeName('lan-12charss'));
    expect(legacyBridgeName('natnet')).toMatch(/^vlb-[0-9a-f]{8}$/);
    // A network named like a hash would look like another network's hashed bridge: it is hashed too.
    expect(bridgeName('abcdef12')).toBe(legacyBridgeName('abcdef12'));
    expect(tapName('router-01', 3)).toBe('vlt-router-01-3');
    expect(tapName('router-01', 10)).toBe(legacyTapName('router-01', 10));
    expect(legacyTapName('web1', 0)).toMatch(/^vlt-[0-9a-f]{8}$/);
  });

  it('never gives two networks or two NICs the same device name, and every name is a valid interface name', () => {
    const ifname = /^[a-zA-Z0-9_.-]{1,15}$/;
    const name = fc.stringMatching(/^[a-z][a-z0-9-]{0,30}$/);
    fc.assert(
      fc.property(name, name, (a, b) => {
        expect(bridgeName(a)).toMatch(ifname);
        if (a !== b) expect(bridgeName(a)).not.toBe(bridgeName(b));
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(name, fc.nat(40), name, fc.nat(40), (a, i, b, j) => {
        expect(tapName(a, i)).toMatch(ifname);
        if (a !== b || i !== j) expect(tapName(a, i)).not.toBe(tapName(b, j));
      }),
      { numRuns: 500 },
    );
    // Near misses a random draw rarely finds: a dash in the VM name against a longer index.
    expect(new Set([tapName('a-1', 0), tapName('a', 10), tapName('a-10', 0), tapName('a-1-0', 0)]).size).toBe(
      4,
    );
  });
});
