import { describe, expect, it } from 'vitest';
import { type Endpoint, expectForward, expectReachable } from './expect.js';

const host: Endpoint = { id: 'h1', kind: 'host', host: 'h1', address: '192.168.50.10' };
const host2: Endpoint = { id: 'h2', kind: 'host', host: 'h2', address: '192.168.50.11' };
const peer: Endpoint = { id: 'pc', kind: 'peer', ns: 'x', address: '192.168.50.20' };
const up: Endpoint = { id: 'upstream', kind: 'upstream', ns: 'y', address: '203.0.113.10' };
const vm = (id: string, mode: 'nat' | 'bridge' | 'isolated', network = id, h = 'h1'): Endpoint => ({
  id,
  kind: 'vm',
  vm: id,
  host: h,
  network,
  mode,
  mac: '',
});
const nat = vm('nat1', 'nat', 'natnet');
const nat2 = vm('nat2', 'nat', 'natnet');
const natOther = vm('nat3', 'nat', 'othernat');
const br = vm('br1', 'bridge', 'lan');
const iso = vm('iso1', 'isolated', 'iso');
const iso2 = vm('iso2', 'isolated', 'iso');

describe('expected reachability', () => {
  it('a nat VM reaches the LAN, the upstream and its host, but only its host and its network reach it', () => {
    for (const d of [host, peer, up, br, nat2]) expect(expectReachable(nat, d), d.id).toBe(true);
    expect(expectReachable(host, nat)).toBe(true);
    expect(expectReachable(nat2, nat)).toBe(true);
    for (const s of [peer, up, br, natOther, host2, iso]) expect(expectReachable(s, nat), s.id).toBe(false);
  });

  it('a bridged VM is a LAN member: it and the peer reach each other directly', () => {
    expect(expectReachable(br, peer)).toBe(true);
    expect(expectReachable(peer, br)).toBe(true);
    expect(expectReachable(br, up)).toBe(true);
    expect(expectReachable(up, br)).toBe(false);
    expect(expectReachable(br, nat)).toBe(false);
  });

  it('an isolated VM reaches only its own network; its host reaches it', () => {
    expect(expectReachable(iso, iso2)).toBe(true);
    expect(expectReachable(host, iso)).toBe(true);
    for (const d of [host, peer, up, br, nat, host2]) expect(expectReachable(iso, d), d.id).toBe(false);
  });

  it('the upstream reaches nothing behind the router; everything on the LAN reaches it', () => {
    for (const d of [host, peer, br, nat]) expect(expectReachable(up, d), d.id).toBe(false);
    for (const s of [host, peer, br, nat]) expect(expectReachable(s, up), s.id).toBe(true);
  });

  it('forwards answer from the LAN, not from the upstream', () => {
    expect(expectForward(peer)).toBe(true);
    expect(expectForward(host)).toBe(true);
    expect(expectForward(up)).toBe(false);
  });
});
