import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadSpec } from '../spec/load.js';
import { resolveSpec } from './resolve.js';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

const spec = loadSpec(`
version: 1
hosts: [{ name: host1, uplink: enp1s0 }, { name: host2 }]
networks:
  - name: natnet
    host: host1
    mode: nat
    cidr: 10.10.0.0/24
    mtu: 1400
    forwards: [{ hostPort: 8080, vm: web1, vmPort: 80 }, { protocol: udp, hostPort: 53, vm: web1, vmPort: 53 }]
  - { name: iso, host: host1, mode: isolated, cidr: 10.20.0.0/28, gateway: 10.20.0.14 }
  - { name: lan, host: host1, mode: bridge }
  - { name: lan2, host: host2, mode: bridge, uplink: eth7 }
vms:
  - name: web1
    host: host1
    cpus: 2
    nics:
      - { network: natnet, ip: 10.10.0.10 }
      - { network: lan, ip: 192.168.1.50 }
      - { network: lan }
      - { network: iso, mac: 52:54:00:00:00:02, ip: 10.20.0.2 }
  - { name: db1, host: host1, state: stopped, disks: [{ name: data, sizeMiB: 100 }], nics: [{ network: iso }] }
lab:
  name: demo
  lan: { cidr: 192.168.1.0/24, gateway: 192.168.1.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.1 }
  hosts: [{ name: host1, address: 192.168.1.10 }, { name: host2, address: 192.168.1.11 }]
`);

describe('resolveSpec', () => {
  const d = resolveSpec(spec);

  it('gives every host an entry', () => {
    expect(Object.keys(d).sort()).toEqual(['host1', 'host2']);
    expect(d.host2!.vms).toEqual([]);
  });

  it('resolves a nat network', () => {
    expect(d.host1!.networks[0]).toEqual({
      name: 'natnet',
      mode: 'nat',
      backend: 'linux',
      bridge: 'vlb-natnet',
      mtu: 1400,
      uplink: 'enp1s0',
      subnet: {
        cidr: '10.10.0.0/24',
        gateway: '10.10.0.1',
        prefixLength: 24,
        dhcpStart: '10.10.0.100',
        dhcpEnd: '10.10.0.199',
        reservations: [{ mac: d.host1!.vms[0]!.nics[0]!.mac, ip: '10.10.0.10', hostname: 'web1' }],
      },
      forwards: [
        { protocol: 'tcp', hostPort: 8080, vm: 'web1', targetIp: '10.10.0.10', targetPort: 80 },
        { protocol: 'udp', hostPort: 53, vm: 'web1', targetIp: '10.10.0.10', targetPort: 53 },
      ],
    });
  });

  it('resolves an isolated network: no uplink, upper-half DHCP below an explicit gateway', () => {
    const iso = d.host1!.networks[1]!;
    expect(iso.uplink).toBeUndefined();
    expect(iso.subnet).toEqual({
      cidr: '10.20.0.0/28',
      gateway: '10.20.0.14',
      prefixLength: 28,
      dhcpStart: '10.20.0.8',
      dhcpEnd: '10.20.0.13',
      reservations: [{ mac: '52:54:00:00:00:02', ip: '10.20.0.2', hostname: 'web1' }],
    });
  });

  it('resolves bridge uplinks: network uplink, else host uplink', () => {
    expect(d.host1!.networks[2]).toMatchObject({ mode: 'bridge', uplink: 'enp1s0', forwards: [] });
    expect(d.host1!.networks[2]!.subnet).toBeUndefined();
    expect(d.host2!.networks[0]).toMatchObject({ uplink: 'eth7' });
  });

  it('resolves VM NICs: taps, stable MACs, mtu, static addresses on bridges, reservations behind a DHCP', () => {
    const web = d.host1!.vms[0]!;
    expect(web).toMatchObject({
      name: 'web1',
      cpus: 2,
      memoryMiB: 256,
      state: 'running',
      image: { kind: 'test-guest' },
      disks: [],
    });
    const h = sha('web1/0');
    expect(web.nics[0]).toEqual({
      network: 'natnet',
      backend: 'linux',
      bridge: 'vlb-natnet',
      tap: 'vlt-web1-0',
      mac: `52:54:00:${h.slice(0, 2)}:${h.slice(2, 4)}:${h.slice(4, 6)}`,
      mtu: 1400,
      // The nat network's DHCP reservation: the port guard allows it on any host.
      reservedIp: '10.10.0.10',
    });
    expect(web.nics[1]!.staticIp).toEqual({
      address: '192.168.1.50',
      prefixLength: 24,
      gateway: '192.168.1.1',
    });
    expect(web.nics[1]).not.toHaveProperty('reservedIp');
    expect(web.nics[2]!.staticIp).toBeUndefined();
    expect(web.nics[2]).not.toHaveProperty('reservedIp');
    expect(web.nics[3]!.staticIp).toBeUndefined();
    expect(web.nics[3]!.reservedIp).toBe('10.20.0.2');
    expect(new Set(web.nics.map((n) => n.tap)).size).toBe(4);
    expect(d.host1!.vms[1]).toMatchObject({
      name: 'db1',
      state: 'stopped',
      disks: [{ name: 'data', sizeMiB: 100 }],
    });
  });

  it('gives bridge addresses outside any lab a /24 and no gateway', () => {
    const s = loadSpec(`
version: 1
hosts: [{ name: h }]
networks: [{ name: lan, host: h, mode: bridge }]
vms: [{ name: v, host: h, nics: [{ network: lan, ip: 172.16.0.5 }] }]
`);
    expect(resolveSpec(s).h!.vms[0]!.nics[0]!.staticIp).toEqual({ address: '172.16.0.5', prefixLength: 24 });
  });

  it('does not depend on the order of VMs in the spec', () => {
    const reordered = { ...spec, vms: [...spec.vms].reverse() };
    expect(resolveSpec(reordered).host1!.networks).toEqual(d.host1!.networks);
  });
});

describe('guest filter fields', () => {
  const s = loadSpec(`
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: iso, host: host1, mode: isolated, cidr: 10.20.0.0/24, hostServices: [{ protocol: udp, port: 123 }, { protocol: tcp, port: 22 }] }
  - { name: lan, host: host1, mode: bridge }
vms:
  - name: v1
    host: host1
    nics:
      - { network: iso, allowedAddresses: [10.20.0.60, 10.20.0.50] }
      - { network: lan, portSecurity: false }
      - { network: lan }
      - { network: iso, ip: 10.20.0.7, portSecurity: false }
`);
  const host = resolveSpec(s).host1!;

  it('carries hostServices sorted, and leaves the field out where a network opens nothing', () => {
    expect(host.networks.find((n) => n.name === 'iso')?.hostServices).toEqual([
      { protocol: 'tcp', port: 22 },
      { protocol: 'udp', port: 123 },
    ]);
    expect(host.networks.find((n) => n.name === 'lan')).not.toHaveProperty('hostServices');
  });

  it('carries a NIC’s exceptions only where the spec makes one (older configs keep their hash)', () => {
    const [iso, open, plain] = host.vms[0]!.nics;
    expect(iso?.allowedAddresses).toEqual(['10.20.0.50', '10.20.0.60']);
    expect(iso).not.toHaveProperty('portSecurity');
    expect(open?.portSecurity).toBe(false);
    expect(plain).not.toHaveProperty('portSecurity');
    expect(plain).not.toHaveProperty('allowedAddresses');
    // An unguarded NIC's reservation has no guard to go to.
    const unguarded = host.vms[0]!.nics[3];
    expect(unguarded).toMatchObject({ portSecurity: false });
    expect(unguarded).not.toHaveProperty('reservedIp');
  });
});
