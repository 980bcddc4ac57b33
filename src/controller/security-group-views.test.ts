import { describe, expect, it } from 'vitest';
import { securityGroupConfigHash } from '../plan/hash.js';
import { resolveSpec } from '../plan/resolve.js';
import type { HostReport } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import { securityGroupViews } from './security-group-views.js';
import type { HostStatus } from './views.js';

const spec = loadSpec(`
version: 1
hosts: [{ name: host1 }, { name: host2 }, { name: host3 }]
networks:
  - { name: iso, host: host1, mode: isolated, cidr: 10.20.0.0/24 }
  - { name: iso2, host: host2, mode: isolated, cidr: 10.30.0.0/24 }
securityGroups:
  - { name: web, description: front ends, rules: [{ protocol: tcp, ports: [80] }, { protocol: icmp }] }
  - { name: db, rules: [{ protocol: tcp, ports: [5432], group: web }] }
vms:
  - { name: web1, host: host1, nics: [{ network: iso, securityGroups: [web] }] }
  - { name: web2, host: host2, nics: [{ network: iso2, securityGroups: [web] }] }
  - { name: db1, host: host2, nics: [{ network: iso2, securityGroups: [db] }] }
`);
const desired = resolveSpec(spec);
const hashOf = (host: string, name: string) =>
  securityGroupConfigHash(desired[host]!.securityGroups!.find((g) => g.name === name)!);

const status = (name: string, groups?: HostReport['securityGroups']): HostStatus => ({
  name,
  address: '',
  reachable: groups !== undefined,
  state: 'up',
  ...(groups
    ? {
        report: {
          host: name,
          agentVersion: 't',
          capabilities: {
            accelerator: 'tcg',
            acceleratorReason: '',
            cpus: 1,
            memoryMiB: 1,
            network: {},
            backends: ['linux'],
          },
          networks: [],
          vms: [],
          securityGroups: groups,
        },
      }
    : {}),
});

describe('securityGroupViews', () => {
  it('shows each group on the hosts that hold it: applied, outdated, missing or unknown', () => {
    const hosts = [
      status('host1', [{ name: 'web', configHash: hashOf('host1', 'web'), problems: [] }]),
      status('host2', [
        { name: 'web', configHash: hashOf('host2', 'web'), problems: ['not on the ovs backend'] },
      ]),
      status('host3'),
    ];
    expect(securityGroupViews(spec, desired, hosts)).toEqual([
      {
        name: 'web',
        description: 'front ends',
        rules: 2,
        members: 2,
        hosts: [
          { host: 'host1', state: 'applied' },
          { host: 'host2', state: 'outdated', problems: ['not on the ovs backend'] },
        ],
      },
      { name: 'db', rules: 1, members: 1, hosts: [{ host: 'host2', state: 'missing' }] },
    ]);
    // No report from a host: its state is unknown.
    expect(securityGroupViews(spec, desired, [status('host1')])[0]?.hosts[0]).toEqual({
      host: 'host1',
      state: 'unknown',
    });
  });
});
