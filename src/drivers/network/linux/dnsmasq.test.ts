import { describe, expect, it } from 'vitest';
import {
  activeLeases,
  dnsmasqArgv,
  dnsmasqPaths,
  netmask,
  parseLeases,
  renderDnsmasqConf,
} from './dnsmasq.js';
import { bridgedNet, isolatedNet, natNet, natNoUplink } from './fixtures.test-util.js';
import { expectGolden } from './golden.test-util.js';

describe('dnsmasq config', () => {
  it('computes netmasks', () => {
    expect(netmask(24)).toBe('255.255.255.0');
    expect(netmask(16)).toBe('255.255.0.0');
    expect(netmask(30)).toBe('255.255.255.252');
    expect(netmask(0)).toBe('0.0.0.0');
    expect(netmask(32)).toBe('255.255.255.255');
  });

  it('renders nat, isolated and non-default-mtu networks', () => {
    expectGolden('dnsmasq-nat.conf', renderDnsmasqConf(natNet));
    expectGolden('dnsmasq-isolated.conf', renderDnsmasqConf(isolatedNet));
    expect(renderDnsmasqConf(natNoUplink)).toContain('dhcp-option=option:mtu,1400\n');
  });

  it('refuses bridge mode and unsafe values', () => {
    expect(() => renderDnsmasqConf(bridgedNet)).toThrow(/nat or isolated/);
    const r = { ...natNet.subnet!.reservations[0]!, hostname: 'web1\ndhcp-script=/tmp/x' };
    expect(() => renderDnsmasqConf({ ...natNet, subnet: { ...natNet.subnet!, reservations: [r] } })).toThrow(
      /reservations\[0\]\.hostname/,
    );
  });

  it('runs in the foreground on the bridge only, with our files only', () => {
    const paths = dnsmasqPaths('/var/lib/vmlink/network-linux/web');
    expect(dnsmasqArgv(natNet, paths)).toEqual([
      'dnsmasq',
      '--keep-in-foreground',
      '--log-facility=-',
      '--conf-file=/var/lib/vmlink/network-linux/web/dnsmasq.conf',
      '--pid-file=/var/lib/vmlink/network-linux/web/dnsmasq.pid',
      '--dhcp-leasefile=/var/lib/vmlink/network-linux/web/dnsmasq.leases',
      '--bind-interfaces',
      '--interface=vlb-0a1b2c3d',
      '--except-interface=lo',
    ]);
  });

  it('parses lease files', () => {
    expect(
      parseLeases(
        '1700000000 52:54:00:12:34:56 10.10.0.10 web1 01:52:54:00:12:34:56\n1700000001 52:54:00:00:00:01 10.10.0.101 * *\n',
      ),
    ).toEqual([
      { expires: 1700000000, mac: '52:54:00:12:34:56', ip: '10.10.0.10', hostname: 'web1' },
      { expires: 1700000001, mac: '52:54:00:00:00:01', ip: '10.10.0.101' },
    ]);
  });
});

describe('active leases', () => {
  it('keeps unexpired and infinite leases, as a report lists them', () => {
    const leases = parseLeases(
      '1700000100 52:54:00:00:00:01 10.0.0.10 web1 01:52:54:00:00:00:01\n' +
        '1699999000 52:54:00:00:00:02 10.0.0.11 * *\n' +
        '0 52:54:00:00:00:03 10.0.0.12 * *\n',
    );
    expect(activeLeases(leases, 1_700_000_000)).toEqual([
      { mac: '52:54:00:00:00:01', ip: '10.0.0.10', hostname: 'web1' },
      { mac: '52:54:00:00:00:03', ip: '10.0.0.12' },
    ]);
  });
});
