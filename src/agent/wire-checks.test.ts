// The agent's wire schema bounds and types every field and lets an action name only devices vmlink owns; and
// everything a valid spec resolves to still passes it (so the checks refuse attacks, never real plans).
import { randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isolatedNet, natNet, vlanNet } from '../drivers/network/linux/fixtures.test-util.js';
import { adoptObservedBridges } from '../plan/device-names.js';
import { resolveSpec, resolveUplinks } from '../plan/resolve.js';
import { NETWORK_MTU_MAX, PORT_MAX, VM_NICS_MAX, VXLAN_REMOTES_MAX } from '../shared/limits.js';
import type { NetworkConfig, VmConfig } from '../shared/model.js';
import { loadSpec, loadSpecFile } from '../spec/load.js';
import {
  bridgeName,
  legacyBridgeName,
  legacyOvsVlanBridgeName,
  legacyTapName,
  tapName,
  vxlanDeviceName,
} from '../spec/net.js';
import type { Spec } from '../spec/schema.js';
import { validSpecArb } from '../spec/spec.arbitrary.js';
import { AgentActionSchema, AgentBatchSchema } from './wire.js';

/** The messages of a refused action, each prefixed by its path; [] when accepted. */
function refusals(action: unknown): string[] {
  const r = AgentActionSchema.safeParse(action);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

const ensure = (network: NetworkConfig) => ({ kind: 'network.ensure', network, configHash: 'abcdef01' });
const create = (vm: VmConfig) => ({ kind: 'vm.create', vm, configHash: 'abcdef01' });

// Fixtures named as a plan names them.
const web: NetworkConfig = { ...natNet, bridge: bridgeName(natNet.name) };
const back: NetworkConfig = { ...isolatedNet, bridge: bridgeName(isolatedNet.name) };
const vm1: VmConfig = {
  name: 'web1',
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  disks: [],
  nics: [
    {
      network: 'web',
      backend: 'linux',
      bridge: bridgeName('web'),
      tap: tapName('web1', 0),
      mac: '52:54:00:12:34:56',
      mtu: 1500,
    },
  ],
  state: 'running',
};

/** Every action a spec's plan can send an agent: each network, VM and uplink config of each host. */
function actionsOf(spec: Spec): unknown[] {
  const uplinks = resolveUplinks(spec);
  return Object.entries(resolveSpec(spec)).flatMap(([host, want]) => [
    ...want.networks.map(ensure),
    ...want.vms.map(create),
    ...want.vms.map((vm) => ({ kind: 'vm.hotplug', vm, configHash: 'abcdef01' })),
    ...(want.pools ?? []).map((pool) => ({ kind: 'pool.ensure', pool, configHash: 'abcdef01' })),
    ...(want.volumes ?? []).map((v) => ({ kind: 'volume.ensure', volume: v.config })),
    ...(uplinks[host] ? [{ kind: 'uplink.configure', uplink: uplinks[host], configHash: 'abcdef01' }] : []),
  ]);
}

describe('the agent takes every action a valid spec resolves to', () => {
  it('fuzzed specs (fast-check)', () => {
    fc.assert(
      fc.property(validSpecArb, (raw) => {
        const actions = actionsOf(loadSpec(JSON.stringify(raw)));
        for (const a of actions) expect(refusals(a), JSON.stringify(a)).toEqual([]);
      }),
      { numRuns: 200 },
    );
  });

  it.each(
    readdirSync(fileURLToPath(new URL('../../examples/', import.meta.url))).filter((f) => /\.ya?ml$/.test(f)),
  )('examples/%s', (file) => {
    const spec = loadSpecFile(fileURLToPath(new URL(`../../examples/${file}`, import.meta.url)));
    const actions = actionsOf(spec);
    expect(actions.length).toBeGreaterThan(0);
    for (const a of actions) expect(refusals(a), JSON.stringify(a)).toEqual([]);
  });

  it('devices kept under their legacy (hashed) names', () => {
    expect(refusals(ensure({ ...web, bridge: legacyBridgeName('web') }))).toEqual([]);
    const nic = vm1.nics[0]!;
    const legacy = { ...nic, tap: legacyTapName('web1', 0), bridge: legacyBridgeName('web') };
    expect(refusals(create({ ...vm1, nics: [legacy] }))).toEqual([]);
    // An OVS vlan bridge a host keeps under its trunk NIC's hashed name (adoptObservedBridges).
    const ovs: NetworkConfig = { ...vlanNet, backend: 'ovs', bridge: legacyOvsVlanBridgeName('eth1') };
    const kept = adoptObservedBridges(
      { networks: [ovs], vms: [] },
      {
        host: 'h',
        agentVersion: '0',
        capabilities: {
          accelerator: 'tcg',
          acceleratorReason: '',
          cpus: 1,
          memoryMiB: 1,
          network: {},
          backends: [],
        },
        networks: [{ name: 'other', bridge: legacyOvsVlanBridgeName('eth1'), configHash: 'x', problems: [] }],
        vms: [],
      },
    );
    expect(refusals(ensure({ ...kept.networks[0]!, vlan: { id: 100, trunk: 'eth1' } }))).toEqual([]);
    expect(
      refusals(
        create({ ...vm1, nics: [{ ...nic, backend: 'ovs', bridge: legacyOvsVlanBridgeName('eth1') }] }),
      ),
    ).toEqual([]);
  });
});

describe('the agent refuses devices vmlink does not own', () => {
  it('a host NIC, or another network, as a network bridge', () => {
    expect(refusals(ensure({ ...web, bridge: 'eth0' }))).toEqual([
      `network.bridge: network web may only be realised on its own bridge vlb-web or ${legacyBridgeName('web')}, not eth0`,
    ]);
    expect(refusals(ensure({ ...web, bridge: bridgeName('backend') }))[0]).toMatch(
      /^network\.bridge: .* not vlb-backend$/,
    );
  });

  it('a host NIC as a VXLAN device, and a vmlink device as an uplink, trunk or underlay', () => {
    const ov: NetworkConfig = {
      name: 'ov1',
      mode: 'vxlan',
      backend: 'linux',
      bridge: bridgeName('ov1'),
      mtu: 1450,
      vxlan: {
        vni: 42,
        device: vxlanDeviceName('ov1'),
        local: '192.168.1.1',
        remotes: ['192.168.1.2'],
        port: 4789,
        underlay: 'eth0',
      },
      forwards: [],
    };
    expect(refusals(ensure(ov))).toEqual([]);
    expect(refusals(ensure({ ...ov, vxlan: { ...ov.vxlan!, device: 'eth0' } }))[0]).toMatch(
      /^network\.vxlan\.device: network ov1's VXLAN device is vlx-[0-9a-f]{8}, not eth0$/,
    );
    expect(refusals(ensure({ ...ov, vxlan: { ...ov.vxlan!, underlay: bridgeName('web') } }))).toEqual([
      'network.vxlan.underlay: must name a host NIC, not a device vmlink creates (vl?-...)',
    ]);
    expect(refusals(ensure({ ...web, uplink: bridgeName('backend') }))).toHaveLength(1);
    expect(
      refusals(ensure({ ...vlanNet, bridge: bridgeName(vlanNet.name), vlan: { id: 10, trunk: 'vlt-x-0' } })),
    ).toHaveLength(1);
    expect(
      refusals({ kind: 'uplink.configure', uplink: { device: 'vlb-web' }, configHash: 'abcdef01' }),
    ).toHaveLength(1);
  });

  it("a host NIC or another VM's tap as a VM's tap, a host NIC as the bridge it joins", () => {
    const nic = vm1.nics[0]!;
    expect(refusals(create({ ...vm1, nics: [{ ...nic, tap: 'eth0' }] }))).toEqual([
      `vm.nics.0.tap: NIC 0 of VM web1 has tap vlt-web1-0 or ${legacyTapName('web1', 0)}, not eth0`,
    ]);
    expect(refusals(create({ ...vm1, nics: [{ ...nic, tap: tapName('db1', 0) }] }))).toHaveLength(1);
    expect(refusals(create({ ...vm1, nics: [{ ...nic, bridge: 'eth0' }] }))[0]).toMatch(
      /^vm\.nics\.0\.bridge: /,
    );
    // Not even through an OVS-looking name on a linux NIC, nor a vlo- name that is no trunk NIC's.
    expect(refusals(create({ ...vm1, nics: [{ ...nic, bridge: 'vlo-eth1' }] }))).toHaveLength(1);
    expect(
      refusals({
        kind: 'vm.hotplug',
        vm: { ...vm1, nics: [{ ...nic, tap: 'eth0' }] },
        configHash: 'abcdef01',
      }),
    ).toHaveLength(1);
    // Inside a batch too.
    expect(
      AgentBatchSchema.safeParse({ actions: [create({ ...vm1, nics: [{ ...nic, bridge: 'eth0' }] })] })
        .success,
    ).toBe(false);
  });
});

describe('the agent refuses malformed and out-of-range values', () => {
  const sub = web.subnet!;
  it.each([
    [
      'a CIDR with a 33-bit prefix',
      ensure({ ...web, subnet: { ...sub, cidr: '10.10.0.0/33' } }),
      'network.subnet.cidr',
    ],
    [
      'a CIDR with host bits',
      ensure({ ...web, subnet: { ...sub, cidr: '10.10.0.5/24' } }),
      'network.subnet.cidr',
    ],
    [
      'a CIDR with a command in it',
      ensure({ ...web, subnet: { ...sub, cidr: '10.10.0.0/24;id' } }),
      'network.subnet.cidr',
    ],
    [
      "a prefix that is not the CIDR's",
      ensure({ ...web, subnet: { ...sub, prefixLength: 16 } }),
      'network.subnet.prefixLength',
    ],
    [
      'a gateway outside the subnet',
      ensure({ ...web, subnet: { ...sub, gateway: '10.99.0.1' } }),
      'network.subnet.gateway',
    ],
    [
      'the broadcast address as gateway',
      ensure({ ...web, subnet: { ...sub, gateway: '10.10.0.255' } }),
      'network.subnet.gateway',
    ],
    [
      'an octet above 255',
      ensure({ ...web, subnet: { ...sub, gateway: '10.10.0.256' } }),
      'network.subnet.gateway',
    ],
    [
      'an empty DHCP range',
      ensure({ ...web, subnet: { ...sub, dhcpStart: '10.10.0.200', dhcpEnd: '10.10.0.100' } }),
      'network.subnet.dhcpEnd',
    ],
    [
      'a reservation MAC that is not one',
      ensure({
        ...web,
        subnet: { ...sub, reservations: [{ mac: '52:54:00:zz:00:01', ip: '10.10.0.10', hostname: 'a' }] },
      }),
      'network.subnet.reservations.0.mac',
    ],
    [
      'a multicast reservation MAC',
      ensure({
        ...web,
        subnet: { ...sub, reservations: [{ mac: '01:00:5e:00:00:01', ip: '10.10.0.10', hostname: 'a' }] },
      }),
      'network.subnet.reservations.0.mac',
    ],
    ['an MTU above the maximum', ensure({ ...web, mtu: NETWORK_MTU_MAX + 1 }), 'network.mtu'],
    [
      'a forward port above 65535',
      ensure({ ...web, forwards: [{ ...web.forwards[0]!, hostPort: PORT_MAX + 1 }] }),
      'network.forwards.0.hostPort',
    ],
    [
      'a forward to an address off the network',
      ensure({ ...web, forwards: [{ ...web.forwards[0]!, targetIp: '8.8.8.8' }] }),
      'network.forwards.0.targetIp',
    ],
    [
      'too many VXLAN remotes',
      ensure({
        ...back,
        mode: 'vxlan',
        vxlan: {
          vni: 1,
          device: vxlanDeviceName(back.name),
          local: '10.0.0.1',
          remotes: Array(VXLAN_REMOTES_MAX + 1).fill('10.0.0.2'),
          port: 4789,
          underlay: 'eth0',
        },
      }),
      'network.vxlan.remotes',
    ],
    [
      'a NIC MAC in capitals',
      create({ ...vm1, nics: [{ ...vm1.nics[0]!, mac: '52:54:00:AB:CD:EF' }] }),
      'vm.nics.0.mac',
    ],
    [
      'a NIC MTU below the minimum',
      create({ ...vm1, nics: [{ ...vm1.nics[0]!, mtu: 68 }] }),
      'vm.nics.0.mtu',
    ],
    ['too many NICs', create({ ...vm1, nics: Array(VM_NICS_MAX + 1).fill(vm1.nics[0]) }), 'vm.nics'],
    ['1 PiB of memory', create({ ...vm1, memoryMiB: 1024 ** 3 }), 'vm.memoryMiB'],
    [
      'a static address prefix of 40',
      create({ ...vm1, nics: [{ ...vm1.nics[0]!, staticIp: { address: '10.0.0.5', prefixLength: 40 } }] }),
      'vm.nics.0.staticIp.prefixLength',
    ],
    [
      'a DHCP reservation that is no address',
      create({ ...vm1, nics: [{ ...vm1.nics[0]!, reservedIp: '10.0.0.300' }] }),
      'vm.nics.0.reservedIp',
    ],
    [
      'a DHCP reservation beside a fixed address',
      create({
        ...vm1,
        nics: [
          { ...vm1.nics[0]!, reservedIp: '10.0.0.6', staticIp: { address: '10.0.0.5', prefixLength: 24 } },
        ],
      }),
      'vm.nics.0.reservedIp',
    ],
    [
      'a DHCP reservation on an unguarded NIC',
      create({ ...vm1, nics: [{ ...vm1.nics[0]!, reservedIp: '10.0.0.6', portSecurity: false }] }),
      'vm.nics.0.reservedIp',
    ],
    [
      'an uplink address that is no address',
      {
        kind: 'uplink.configure',
        uplink: { device: 'eth0', addresses: ['300.1.1.1/24'] },
        configHash: 'abcdef01',
      },
      'uplink.addresses.0',
    ],
  ])('%s', (_what, action, path) => {
    const found = refusals(action);
    expect(found.length, JSON.stringify(found)).toBeGreaterThan(0);
    expect(found.map((f) => f.split(':')[0])).toContain(path);
  });

  it("a commit-confirm window outside the spec's", () => {
    const confirm = { id: randomUUID(), timeoutMs: 10 };
    expect(refusals({ kind: 'network.delete', name: 'web', confirm })[0]).toMatch(/^confirm\.timeoutMs: /);
  });
});
