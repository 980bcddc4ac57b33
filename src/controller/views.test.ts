import { describe, expect, it } from 'vitest';
import type { HostReport, NicConfig } from '../shared/model.js';
import { leaseIndex, nicView } from './views.js';

/** A report with only the networks' leases set (what the lease index reads). */
const report = (networks: Array<{ name: string; leases?: Array<{ mac: string; ip: string }> }>) =>
  ({ networks }) as unknown as HostReport;

const nic = (network: string, mac: string, extra: Partial<NicConfig> = {}): NicConfig =>
  ({ network, mac, tap: 'vm-t0', backend: 'linux', bridge: 'br0', mtu: 1500, ...extra }) as NicConfig;

describe('vm list addresses', () => {
  it('indexes every host’s leases once: by network and MAC (any case), each address once', () => {
    const leases = leaseIndex([
      report([{ name: 'lan', leases: [{ mac: '52:54:00:AA:00:01', ip: '10.0.0.5' }] }]),
      report([
        { name: 'lan', leases: [{ mac: '52:54:00:aa:00:01', ip: '10.0.0.5' }] },
        { name: 'dmz', leases: [{ mac: '52:54:00:aa:00:01', ip: '10.9.0.7' }] },
        { name: 'empty' },
      ]),
    ]);
    expect(nicView(nic('lan', '52:54:00:aa:00:01'), undefined, leases)).toMatchObject({
      addresses: ['10.0.0.5'],
      addressSource: 'dhcp-lease',
    });
    expect(nicView(nic('dmz', '52:54:00:AA:00:01'), undefined, leases).addresses).toEqual(['10.9.0.7']);
    // The guest agent's answer wins; else the spec's fixed address; else nothing.
    const guest = new Map([['52:54:00:aa:00:01', ['10.0.0.9/24']]]);
    expect(nicView(nic('lan', '52:54:00:aa:00:01'), guest, leases).addressSource).toBe('guest-agent');
    const fixed = nic('other', '52:54:00:aa:00:02', { staticIp: { address: '10.1.0.2', prefixLength: 24 } });
    expect(nicView(fixed, undefined, leases)).toMatchObject({
      addresses: ['10.1.0.2/24'],
      addressSource: 'spec',
    });
    expect(nicView(nic('other', '52:54:00:aa:00:03'), undefined, leases)).toMatchObject({
      addresses: [],
      addressSource: 'none',
    });
  });
});
