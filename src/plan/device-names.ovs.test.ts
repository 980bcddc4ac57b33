import { describe, expect, it } from 'vitest';
import type { HostReport } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import { legacyOvsVlanBridgeName, ovsVlanBridgeName } from '../spec/net.js';
import { canonicalNetworkNames, canonicalVmNames } from './device-names.js';
import { planChanges } from './diff.js';
import { configHash } from './hash.js';
import { resolveSpec } from './resolve.js';

const SPEC = `
version: 1
site:
  environments: [{ name: production, vlans: [{ from: 100, to: 199 }] }, { name: test, vlans: [{ from: 200, to: 299 }] }]
hosts:
  - { name: host2, segments: { trunk: eth5 } }
  - { name: host3, segments: { trunk: eth5 } }
networks:
  - { name: ov2, mode: vxlan, hosts: [host3, host2], vni: 1002, cidr: 10.21.0.0/24, backend: ovs }
  - { name: prod100, mode: vlan, vlan: 100, environment: production, segment: trunk, hosts: [host2, host3], backend: ovs, cidr: 10.100.0.0/24, gateway: { host: host2 } }
  - { name: test200, mode: vlan, vlan: 200, environment: test, segment: trunk, hosts: [host2, host3], backend: ovs }
vms:
  - { name: r1, host: host3, nics: [{ network: prod100 }, { trunk: [test200, prod100] }, { network: ov2 }] }
lab:
  name: ovsn
  lan: { cidr: 192.168.50.0/24, gateway: 192.168.50.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.10 }
  hosts: [{ name: host2, address: 192.168.50.9 }, { name: host3, address: 192.168.50.12 }]
  segments: [{ name: trunk }]
`;

/**
 * What the agents of a vmlink from before readable names report for `spec`: every derived name in its legacy
 * (hashed) form - the canonical form hashes see - and the hashes stored over those configs.
 */
function legacyReports(spec: string): HostReport[] {
  const desired = resolveSpec(loadSpec(spec));
  return Object.entries(desired).map(([host, want]) => ({
    host,
    agentVersion: '0.1.0',
    capabilities: {
      accelerator: 'tcg',
      acceleratorReason: 'test',
      cpus: 4,
      memoryMiB: 4096,
      network: {},
      backends: ['linux', 'ovs'],
    },
    networks: want.networks.map((n) => {
      const old = canonicalNetworkNames(n);
      return { name: n.name, bridge: old.bridge, configHash: configHash(old), problems: [] };
    }),
    vms: want.vms.map((vm) => {
      const { state: _s, ...rest } = canonicalVmNames(vm);
      return { name: vm.name, state: 'running' as const, configHash: configHash(rest), problems: [] };
    }),
  }));
}

describe('readable OVS vlan bridge names on hosts realised with hashed ones', () => {
  it('names the bridge of a trunk NIC after the NIC; its legacy form is the hash', () => {
    const want = resolveSpec(loadSpec(SPEC)).host3!;
    expect(want.networks.filter((n) => n.mode === 'vlan').map((n) => n.bridge)).toEqual([
      'vlo-eth5',
      'vlo-eth5',
    ]);
    expect(want.vms[0]!.nics.map((n) => n.bridge)).toEqual(['vlo-eth5', 'vlo-eth5', 'vlb-ov2']);
    expect(legacyOvsVlanBridgeName('eth5')).toMatch(/^vlo-[0-9a-f]{8}$/);
    // The legacy form really is what the reports below carry, not the readable one.
    const legacy = legacyReports(SPEC).find((r) => r.host === 'host3')!;
    expect(legacy.networks.map((n) => n.bridge)).toContain(legacyOvsVlanBridgeName('eth5'));
    expect(legacy.networks.map((n) => n.bridge)).not.toContain('vlo-eth5');
  });

  it('plans nothing for an unchanged spec: no VM restarts, no network is rebuilt', () => {
    expect(planChanges(resolveSpec(loadSpec(SPEC)), legacyReports(SPEC)).steps).toEqual([]);
  });

  it('puts a new vlan network and new NICs on the trunk NIC bridge the host already has', () => {
    const changed = SPEC.replace(
      'vms:\n',
      'vms:\n  - { name: r2, host: host3, nics: [{ network: test201 }, { network: prod100 }] }\n',
    ).replace(
      'networks:\n',
      'networks:\n  - { name: test201, mode: vlan, vlan: 201, environment: test, segment: trunk, hosts: [host3], backend: ovs }\n',
    );
    const steps = planChanges(resolveSpec(loadSpec(changed)), legacyReports(SPEC)).steps;
    const old = legacyOvsVlanBridgeName('eth5');
    expect(steps.map((s) => s.kind).sort()).toEqual(['network.create', 'vm.create', 'vm.start']);
    expect(steps.find((s) => s.kind === 'network.create')).toMatchObject({
      host: 'host3',
      network: { name: 'test201', bridge: old },
    });
    expect(steps.find((s) => s.kind === 'vm.create')).toMatchObject({
      vm: { name: 'r2', nics: [{ bridge: old }, { bridge: old }] },
    });
  });

  it('gives a host without the legacy bridge the readable one', () => {
    const reports = legacyReports(SPEC).filter((r) => r.host !== 'host2');
    const steps = planChanges(resolveSpec(loadSpec(SPEC)), reports).steps;
    const creates = steps.filter((s) => s.kind === 'network.create' && s.host === 'host2');
    expect(creates.map((s) => (s.kind === 'network.create' ? s.network.bridge : ''))).toEqual(
      expect.arrayContaining(['vlo-eth5', 'vlb-ov2']),
    );
  });

  it('keeps a changed bridge name a change', () => {
    const n = resolveSpec(loadSpec(SPEC)).host3!.networks.find((x) => x.name === 'prod100')!;
    expect(canonicalNetworkNames(n).bridge).toBe(legacyOvsVlanBridgeName('eth5'));
    expect(canonicalNetworkNames({ ...n, bridge: ovsVlanBridgeName('eth6') }).bridge).toBe('vlo-eth6');
  });
});
