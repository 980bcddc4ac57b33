import { describe, expect, it } from 'vitest';
import { admitSpec } from './admission.js';
import { loadSpec } from './load.js';

describe('admitSpec', () => {
  // Valid on its own: validation passes, only the hosts' reports can refuse it.
  const spec = loadSpec(`version: 1
hosts: [{ name: h1, address: 10.0.0.1 }, { name: h2, address: 10.0.0.2 }]
networks:
  - { name: v100, mode: vlan, vlan: 100, hosts: [h1, h2] }
  - { name: n1, host: h1, mode: isolated, cidr: 10.9.0.0/24 }
vms:
  - { name: a, host: h1, cpus: 4, memoryMiB: 512, nics: [{ network: n1 }] }
`);
  const roomy = { cpus: 8, memoryMiB: 8192, backends: ['linux', 'ovs'], network: { vlan: true } };

  it('admits what the hosts can run', () => {
    expect(admitSpec(spec, { h1: roomy, h2: roomy })).toEqual([]);
  });

  it('refuses on capacity and on host support in one answer, naming the fields', () => {
    const issues = admitSpec(spec, {
      h1: { ...roomy, cpus: 2 },
      h2: { ...roomy, network: { vlan: false } },
    });
    expect(issues.map((i) => i.path)).toEqual(['vms[0].cpus', 'networks[0].backend']);
    expect(issues[1]!.message).toMatch(/host "h2"'s kernel has no 802\.1Q/);
  });

  it('checks no host that sent no report', () => {
    expect(admitSpec(spec, {})).toEqual([]);
  });
});
