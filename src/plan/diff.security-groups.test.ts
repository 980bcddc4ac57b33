import { describe, expect, it } from 'vitest';
import type { HostReport } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import { planChanges } from './diff.js';
import { formatPlan } from './format.js';
import { securityGroupConfigHash, vmConfigHash } from './hash.js';
import { type DesiredState, resolveSpec } from './resolve.js';
import { type Step, stepTarget } from './steps.js';

const caps = {
  accelerator: 'tcg' as const,
  acceleratorReason: 'test',
  cpus: 4,
  memoryMiB: 4096,
  network: {},
  backends: ['linux' as const],
};

const specText = (webRules: string, db1Groups = '[db]') => `
version: 1
hosts: [{ name: host1 }, { name: host2 }]
networks:
  - { name: iso, host: host1, mode: isolated, cidr: 10.20.0.0/24 }
  - { name: iso2, host: host2, mode: isolated, cidr: 10.30.0.0/24 }
securityGroups:
  - name: web
    rules: ${webRules}
  - name: db
    rules: [{ protocol: tcp, ports: [5432], group: web }]
vms:
  - { name: web1, host: host1, nics: [{ network: iso, ip: 10.20.0.10, mac: 52:54:00:00:00:01, securityGroups: [web] }] }
  - { name: db1, host: host2, nics: [{ network: iso2, mac: 52:54:00:00:00:02, securityGroups: ${db1Groups} }] }
`;
const base = resolveSpec(loadSpec(specText('[{ protocol: tcp, ports: [80], cidr: 0.0.0.0/0 }]')));

/** What the agents report once `desired` is realised, every VM running. */
function realised(desired: DesiredState): HostReport[] {
  return Object.entries(desired).map(([host, d]) => ({
    host,
    agentVersion: 'test',
    capabilities: caps,
    networks: d.networks.map((n) => ({
      name: n.name,
      bridge: n.bridge,
      configHash: '',
      problems: [],
      config: n,
    })),
    vms: d.vms.map((v) => ({
      name: v.name,
      state: 'running' as const,
      configHash: vmConfigHash(v),
      problems: [],
      config: v,
    })),
    securityGroups: (d.securityGroups ?? []).map((g) => ({
      name: g.name,
      configHash: securityGroupConfigHash(g),
      problems: [],
      config: g,
    })),
  }));
}
/** Networks as realised, so that only group and VM steps remain. */
const withNetworks = (desired: DesiredState, reports: HostReport[]) =>
  planChanges(desired, reports).steps.filter((s) => !s.kind.startsWith('network.'));
const brief = (steps: Step[]) => steps.map((s) => `${s.kind} ${s.host}/${stepTarget(s)}`);

describe('security group plan', () => {
  it('creates each host’s groups before the VMs that use them', () => {
    const steps = planChanges(base, []).steps;
    expect(brief(steps)).toEqual([
      'network.create host1/iso',
      'securityGroup.create host1/web',
      'network.create host2/iso2',
      'securityGroup.create host2/db',
      'securityGroup.create host2/web',
      'vm.create host1/web1',
      'vm.create host2/db1',
      'vm.start host1/web1',
      'vm.start host2/db1',
    ]);
    const text = formatPlan({ steps, unchanged: [] });
    expect(text).toContain('+ securityGroup web on host1 (1 rule, 1 member)');
    expect(text).toContain('Plan: 7 to create, 0 to update, 0 to delete, 2 to start, 0 to stop.');
  });

  it('converges: nothing to do once the hosts report what was applied', () => {
    const plan = planChanges(base, realised(base));
    expect(plan.steps.filter((s) => !s.kind.startsWith('network.'))).toEqual([]);
    expect(plan.unchanged).toContain('securityGroup web on host1');
    expect(plan.unchanged).toContain('securityGroup db on host2');
  });

  it('updates a changed rule in place on every host that holds the group, VMs untouched', () => {
    const next = resolveSpec(
      loadSpec(specText('[{ protocol: tcp, ports: [80, 443], cidr: 0.0.0.0/0 }, { protocol: icmp }]')),
    );
    const steps = withNetworks(next, realised(base));
    expect(brief(steps)).toEqual(['securityGroup.update host1/web', 'securityGroup.update host2/web']);
    expect(formatPlan({ steps, unchanged: [] }).split('\n')[0]).toBe(
      '~ securityGroup web on host1: rules +tcp/80,443 from 0.0.0.0/0, +icmp from any, -tcp/80 from 0.0.0.0/0',
    );
  });

  it('changes a running VM’s groups on its port without a restart, then deletes the group it left', () => {
    // db1 leaves db for web: web gains a member everywhere, db goes from host2 once db1's port has changed.
    const next = resolveSpec(
      loadSpec(specText('[{ protocol: tcp, ports: [80], cidr: 0.0.0.0/0 }]', '[web]')),
    );
    const steps = withNetworks(next, realised(base));
    expect(brief(steps)).toEqual([
      'securityGroup.update host1/web',
      'securityGroup.update host2/web',
      'vm.hotplug host2/db1',
      'securityGroup.delete host2/db',
    ]);
    const text = formatPlan({ steps, unchanged: [] });
    expect(text).toContain('~ securityGroup web on host1: members +52:54:00:00:00:02');
    expect(text).toContain('~ vm db1 on host2: nics iso2 securityGroups db -> web (in place)');
    expect(text).toContain('- securityGroup db on host2 (no NIC on the host uses it)');
    expect(steps.some((s) => s.kind === 'vm.stop')).toBe(false);
  });

  it('repairs a group a backend lacks, and ensures a group reported without a hash history', () => {
    const reports = realised(base);
    const web = reports[0]!.securityGroups![0]!;
    web.problems = ['not on the ovs backend'];
    const { config: _c, ...bare } = reports[1]!.securityGroups![1]!;
    reports[1]!.securityGroups![1] = { ...bare, configHash: 'ffffffff' };
    const steps = withNetworks(base, reports);
    expect(steps).toMatchObject([
      { kind: 'securityGroup.update', host: 'host1', reason: 'repair: not on the ovs backend' },
      { kind: 'securityGroup.update', host: 'host2', reason: 'configuration changed' },
    ]);
    expect(formatPlan({ steps, unchanged: [] })).toContain(
      '~ securityGroup web on host2 (configuration changed; 1 rule, 1 member)',
    );
  });

  it('a restart-needing change together with a group change takes the restart path', () => {
    const next = structuredClone(base);
    const db1 = next.host2!.vms[0]!;
    db1.memoryMiB += 64;
    db1.nics[0]!.securityGroups = [];
    const steps = withNetworks(next, realised(base));
    expect(brief(steps)).toEqual(['vm.stop host2/db1', 'vm.update host2/db1', 'vm.start host2/db1']);
  });
});
