import { describe, expect, it } from 'vitest';
import type { NetworkConfig, NicConfig, VmConfig } from '../shared/model.js';
import {
  allLive,
  formatChange,
  networkFieldChanges,
  nicChanges,
  vmChangesAsApplied,
  vmFieldChanges,
} from './changes.js';

const nic = (i: number, network: string, extra: Partial<NicConfig> = {}): NicConfig => ({
  network,
  backend: 'linux',
  bridge: `vlb-${network}`,
  tap: `vlt-app1-${i}`,
  mac: `52:54:00:00:00:0${i}`,
  mtu: 1500,
  ...extra,
});
const vm: VmConfig = {
  name: 'app1',
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  disks: [{ name: 'data', sizeMiB: 1024 }],
  nics: [nic(0, 'lan')],
  state: 'running',
};
const texts = (from: VmConfig, to: VmConfig) => vmFieldChanges(from, to).map(formatChange);

describe('vmFieldChanges', () => {
  it('finds nothing in equal configs, whatever the power state', () => {
    expect(vmFieldChanges(vm, { ...structuredClone(vm), state: 'stopped' })).toEqual([]);
  });

  it('names a confidential kind or a disk secret that changed (a restart; the host keeps the key a disk was made with)', () => {
    const enc = { ...vm, disks: [{ name: 'data', sizeMiB: 1024, encryption: { secret: 'k1' } }] };
    expect(texts(vm, { ...enc, confidential: 'sev-snp' })).toEqual([
      'confidential none -> sev-snp (restart)',
      'disks data secret none -> k1 (restart)',
    ]);
    expect(vmFieldChanges(enc, structuredClone(enc))).toEqual([]);
  });

  it('names each changed field with its old and new value and how it is applied', () => {
    expect(
      texts(vm, {
        ...vm,
        cpus: 2,
        memoryMiB: 320,
        image: { kind: 'qcow2', path: '/img/debian.qcow2', cloudInit: { sshAuthorizedKeys: [] } },
        disks: [
          { name: 'data', sizeMiB: 2048 },
          { name: 'logs', sizeMiB: 64 },
        ],
        nics: [nic(0, 'lan'), nic(1, 'natnet')],
      }),
    ).toEqual([
      'cpus 1 -> 2 (restart)',
      'memoryMiB 256 -> 320 (restart)',
      'image test-guest -> qcow2 /img/debian.qcow2 (restart)',
      'disks data 1024 -> 2048 MiB (restart)',
      'disks +logs (restart)',
      'nics +natnet (hot-plug)',
    ]);
    expect(texts(vm, { ...vm, disks: [] })).toEqual(['disks -data (restart)']);
  });

  it('matches NICs by tap: plugged, unplugged, or changed and plugged again', () => {
    const two = [nic(0, 'lan'), nic(1, 'natnet')];
    expect(nicChanges(two, [nic(0, 'lan')]).map(formatChange)).toEqual(['nics -natnet (hot-unplug)']);
    expect(
      nicChanges(two, [
        nic(0, 'lan'),
        nic(1, 'natnet', { mtu: 9000, staticIp: { address: '10.0.0.5', prefixLength: 24 } }),
      ]).map(formatChange),
    ).toEqual(['nics natnet mtu 1500 -> 9000, staticIp none -> 10.0.0.5/24 (re-plug)']);
    // A DHCP reservation is the port guard's (the guest asks DHCP as before): changed on the port in place.
    expect(
      nicChanges(two, [nic(0, 'lan'), nic(1, 'natnet', { reservedIp: '10.0.0.6' })]).map(formatChange),
    ).toEqual(['nics natnet reservedIp none -> 10.0.0.6 (in place)']);
    expect(
      nicChanges([nic(0, 'lan', { trunk: { networks: ['a', 'b'], vlans: [10, 20] } })], [nic(0, 'lan')]).map(
        formatChange,
      ),
    ).toEqual(['nics lan trunk 10,20 -> none (re-plug)']);
  });
});

describe('vmChangesAsApplied', () => {
  const plug = vmFieldChanges(vm, { ...vm, nics: [nic(0, 'lan'), nic(1, 'natnet')] });
  const mem = vmFieldChanges(vm, { ...vm, memoryMiB: 512, nics: [nic(0, 'lan'), nic(1, 'natnet')] });

  it('keeps NIC changes live only when nothing else changed', () => {
    expect(allLive(plug)).toBe(true);
    expect(allLive(mem)).toBe(false);
    expect(allLive([])).toBe(false);
    expect(vmChangesAsApplied(plug, true).map((c) => c.how)).toEqual(['hot-plug']);
    expect(vmChangesAsApplied(mem, true).map((c) => c.how)).toEqual(['restart', 'restart']);
  });

  it('says a stopped VM takes every change while stopped', () => {
    expect(vmChangesAsApplied(mem, false).map(formatChange)).toEqual([
      'memoryMiB 256 -> 512 (VM stopped)',
      'nics +natnet (VM stopped)',
    ]);
  });
});

describe('networkFieldChanges', () => {
  const natnet: NetworkConfig = {
    name: 'natnet',
    mode: 'nat',
    backend: 'linux',
    bridge: 'vlb-natnet',
    mtu: 1500,
    nat: true,
    subnet: {
      cidr: '10.10.0.0/24',
      gateway: '10.10.0.1',
      prefixLength: 24,
      dhcpStart: '10.10.0.100',
      dhcpEnd: '10.10.0.200',
      reservations: [],
    },
    forwards: [],
  };

  it('names nested fields, in place or by recreating the network', () => {
    const changed = structuredClone(natnet);
    changed.mtu = 9000;
    changed.mode = 'isolated';
    changed.subnet!.dhcpEnd = '10.10.0.250';
    changed.forwards = [
      { protocol: 'tcp', hostPort: 8080, vm: 'web1', targetIp: '10.10.0.10', targetPort: 80 },
    ];
    expect(networkFieldChanges(natnet, changed).map(formatChange)).toEqual([
      'forwards [] -> [tcp 8080 -> 10.10.0.10:80] (in place)',
      'mode nat -> isolated (recreate)',
      'mtu 1500 -> 9000 (in place)',
      'subnet.dhcpEnd 10.10.0.200 -> 10.10.0.250 (in place)',
    ]);
    expect(networkFieldChanges(natnet, structuredClone(natnet))).toEqual([]);
  });
});
