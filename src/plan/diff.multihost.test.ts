import { describe, expect, it } from 'vitest';
import type { HostReport, ObservedUplink } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import { ovsVlanBridgeName } from '../spec/net.js';
import { DEFAULT_CONFIRM_TIMEOUT_MS, planChanges, touchesUplink } from './diff.js';
import { formatPlan, formatStep } from './format.js';
import { networkConfigHash, uplinkConfigHash, vmConfigHash } from './hash.js';
import { resolveSpec, resolveUplinks } from './resolve.js';
import { stepTarget } from './steps.js';

const caps = {
  accelerator: 'tcg' as const,
  acceleratorReason: 'test',
  cpus: 4,
  memoryMiB: 4096,
  network: {},
  backends: ['linux' as const, 'ovs' as const],
};

const spec = loadSpec(`
version: 1
hosts:
  - name: host1
    network: { mtu: 9000, addresses: [192.168.50.10/24], gateway: 192.168.50.1 }
    confirmTimeoutSeconds: 30
  - { name: host2, segments: { trunk: eth1 } }
networks:
  - { name: lan, host: host1, mode: bridge }
  - { name: ov1, mode: vxlan, vni: 1001, mtu: 1450 }
  - { name: v100, mode: vlan, vlan: 100, hosts: [host2], backend: ovs }
  - { name: v200, mode: vlan, vlan: 200, hosts: [host2], backend: ovs, segment: trunk }
  - { name: ovx, mode: vxlan, vni: 1002, backend: ovs, hosts: [host2] }
vms:
  - { name: a1, host: host2, nics: [{ network: ov1 }] }
lab:
  name: mh
  lan: { cidr: 192.168.50.0/24, gateway: 192.168.50.1, mtu: 9000 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.10 }
  hosts: [{ name: host1, address: 192.168.50.10 }, { name: host2, address: 192.168.50.11 }]
`);
const desired = resolveSpec(spec);
const uplinks = resolveUplinks(spec);

const converged = (uplink?: ObservedUplink): HostReport[] =>
  Object.entries(desired).map(([host, d]) => ({
    host,
    agentVersion: 'test',
    capabilities: caps,
    networks: d.networks.map((n) => ({
      name: n.name,
      bridge: n.bridge,
      configHash: networkConfigHash(n),
      problems: [],
    })),
    vms: d.vms.map((v) => ({ name: v.name, state: 'running', configHash: vmConfigHash(v), problems: [] })),
    ...(host === 'host1' && uplink ? { uplink } : {}),
  }));

const brief = (steps: ReturnType<typeof planChanges>['steps']) =>
  steps.map(
    (s) =>
      `${s.kind} ${s.host}/${stepTarget(s)}${'risky' in s && s.risky ? ` risky ${s.confirmTimeoutMs}` : ''}`,
  );

const observedUplink = (configHash?: string): ObservedUplink => ({
  device: 'eth0',
  addressDevice: desired.host1!.networks[0]!.bridge,
  mtu: 9000,
  addresses: ['192.168.50.10/24'],
  gateway: '192.168.50.1',
  ...(configHash ? { configHash } : {}),
});

describe('planChanges: uplinks and risky steps', () => {
  it('configures the uplink first, commit-confirmed with the host window; marks uplink-touching networks risky', () => {
    const plan = planChanges(desired, [], uplinks);
    expect(brief(plan.steps)).toEqual([
      'uplink.configure host1/eth0 risky 30000',
      'network.create host1/lan risky 30000',
      'network.create host1/ov1',
      'network.create host2/ov1',
      'network.create host2/ovx risky 60000',
      'network.create host2/v100 risky 60000',
      'network.create host2/v200',
      'vm.create host2/a1',
      'vm.start host2/a1',
    ]);
    expect(plan.steps[0]).toEqual({
      kind: 'uplink.configure',
      host: 'host1',
      uplink: { device: 'eth0', mtu: 9000, addresses: ['192.168.50.10/24'], gateway: '192.168.50.1' },
      configHash: uplinkConfigHash(uplinks.host1!),
      reason: 'not reported by the host',
      risky: true,
      confirmTimeoutMs: 30_000,
    });
    // Steps that do not touch the uplink carry no risky field at all.
    expect(plan.steps[2]).not.toHaveProperty('risky');
    expect(plan.steps[2]).not.toHaveProperty('confirmTimeoutMs');
  });

  it('keeps existing call sites: no uplink steps without uplinks', () => {
    expect(planChanges(desired, []).steps.some((s) => s.kind === 'uplink.configure')).toBe(false);
  });

  it('leaves a configured uplink alone and lists it as unchanged', () => {
    const plan = planChanges(desired, converged(observedUplink(uplinkConfigHash(uplinks.host1!))), uplinks);
    expect(plan.steps).toEqual([]);
    expect(plan.unchanged).toContain('uplink of host1');
  });

  it('says why the uplink is configured again', () => {
    const reasons = (o?: ObservedUplink) =>
      planChanges(desired, converged(o), uplinks).steps.map((s) => s.reason);
    expect(reasons(observedUplink())).toEqual(['not configured by vmlink yet']);
    expect(reasons(observedUplink('0123456789abcdef'))).toEqual(['configuration changed']);
    expect(reasons(undefined)).toEqual(['not reported by the host']);
  });

  it('marks updates and deletes of the bridge carrying the management address risky', () => {
    const obs = converged(observedUplink(uplinkConfigHash(uplinks.host1!)));
    obs[0]!.networks[0]!.configHash = 'old';
    obs[0]!.networks.push({ name: 'oldbr', bridge: 'vlb-0000beef', configHash: 'x', problems: [] });
    obs[0]!.uplink!.addressDevice = 'vlb-0000beef';
    const plan = planChanges(desired, obs, uplinks);
    expect(brief(plan.steps)).toEqual([
      'network.update host1/lan risky 30000',
      'network.delete host1/oldbr risky 30000',
    ]);
    expect(formatPlan(plan)).toBe(
      [
        '~ network lan on host1 (configuration changed) [commit-confirm 30 s]',
        '- network oldbr on host1 (not in the spec) [commit-confirm 30 s]',
        '',
        'Plan: 0 to create, 1 to update, 1 to delete, 0 to start, 0 to stop.',
      ].join('\n'),
    );
  });

  it('marks the delete of an OVS bridge network on the uplink risky', () => {
    const obs = converged();
    obs[1]!.networks.push({ name: 'gone', bridge: ovsVlanBridgeName('eth0'), configHash: 'x', problems: [] });
    obs[1]!.networks.push({
      name: 'gone2',
      bridge: ovsVlanBridgeName('eth1'),
      configHash: 'x',
      problems: [],
    });
    expect(brief(planChanges(desired, obs).steps)).toEqual([
      `network.delete host2/gone risky ${DEFAULT_CONFIRM_TIMEOUT_MS}`,
      'network.delete host2/gone2',
    ]);
  });

  it('deletes everything on a host that left the spec, and leaves its uplink alone', () => {
    const obs = converged(observedUplink('feed'));
    obs.push({
      host: 'host9',
      agentVersion: 'test',
      capabilities: caps,
      networks: [{ name: 'ov1', bridge: 'vlb-1', configHash: 'x', problems: [] }],
      vms: [{ name: 'z1', state: 'running', configHash: 'x', problems: [] }],
      uplink: { device: 'eth0', addressDevice: 'eth0', mtu: 1500, addresses: [] },
    });
    const plan = planChanges(desired, obs, { ...uplinks, host9: { device: 'eth0', mtu: 9000 } });
    expect(brief(plan.steps)).toEqual([
      'uplink.configure host1/eth0 risky 30000',
      'vm.delete host9/z1',
      'network.delete host9/ov1',
    ]);
  });
});

describe('touchesUplink', () => {
  const n = (host: string, name: string) => desired[host]!.networks.find((x) => x.name === name)!;
  it('is true for bridges on the uplink and OVS networks that take it as a port', () => {
    expect(touchesUplink(n('host1', 'lan'), 'eth0')).toBe(true);
    expect(touchesUplink(n('host1', 'lan'), 'eth9')).toBe(false);
    expect(touchesUplink(n('host1', 'ov1'), 'eth0')).toBe(false);
    expect(touchesUplink(n('host2', 'ovx'), 'eth0')).toBe(true);
    expect(touchesUplink(n('host2', 'v100'), 'eth0')).toBe(true);
    expect(touchesUplink(n('host2', 'v200'), 'eth0')).toBe(false);
    expect(touchesUplink(n('host1', 'lan'), undefined)).toBe(false);
  });
});

describe('formatStep: multi-host', () => {
  it('renders uplink steps, overlays and vlans', () => {
    const plan = planChanges(desired, [], uplinks);
    const lines = plan.steps.map(formatStep);
    expect(lines).toEqual([
      '~ uplink of host1 (mtu 9000, 192.168.50.10/24, gateway 192.168.50.1) [commit-confirm 30 s]',
      '+ network lan on host1 (bridge on eth0) [commit-confirm 30 s]',
      '+ network ov1 on host1 (vxlan vni 1001 to 192.168.50.11)',
      '+ network ov1 on host2 (vxlan vni 1001 to 192.168.50.10)',
      '+ network ovx on host2 (vxlan vni 1002, ovs) [commit-confirm 60 s]',
      '+ network v100 on host2 (vlan 100 on eth0, ovs) [commit-confirm 60 s]',
      '+ network v200 on host2 (vlan 200 on eth1, ovs)',
      '+ vm a1 on host2 (1 cpu, 256 MiB, test-guest, nics: ov1)',
      '> vm a1 start on host2',
    ]);
    expect(formatPlan(plan).split('\n').at(-1)).toBe(
      'Plan: 7 to create, 1 to update, 0 to delete, 1 to start, 0 to stop.',
    );
  });

  it('renders an uplink with only an mtu as in the docs', () => {
    expect(
      formatStep({
        kind: 'uplink.configure',
        host: 'host1',
        uplink: { device: 'eth0', mtu: 9000 },
        configHash: 'x',
        reason: 'r',
        risky: true,
        confirmTimeoutMs: 60_000,
      }),
    ).toBe('~ uplink of host1 (mtu 9000) [commit-confirm 60 s]');
  });
});
