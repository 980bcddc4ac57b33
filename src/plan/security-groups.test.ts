import { describe, expect, it } from 'vitest';
import { loadSpec } from '../spec/load.js';
import { derivedMac } from '../spec/net.js';
import { resolveSpec } from './resolve.js';
import { mergePorts } from './security-groups.js';

const spec = loadSpec(`
version: 1
hosts: [{ name: host1 }, { name: host2 }, { name: host3 }]
networks:
  - { name: iso, host: host1, mode: isolated, cidr: 10.20.0.0/24 }
  - { name: iso2, host: host2, mode: isolated, cidr: 10.30.0.0/24 }
  - { name: iso3, host: host3, mode: isolated, cidr: 10.40.0.0/24 }
securityGroups:
  - name: web
    description: front ends
    rules:
      - { protocol: tcp, ports: [443, "8000-8100", 80, 8050, 8101], cidr: 0.0.0.0/0, description: http }
      - { direction: egress, protocol: tcp, ports: [5432], group: db }
  - name: db
    rules: [{ protocol: tcp, ports: [5432], group: web }, { protocol: icmp, group: admin }]
  - name: admin
    rules: [{ protocol: tcp, ports: [22] }]
  - name: unused
vms:
  - name: web1
    host: host1
    nics: [{ network: iso, securityGroups: [web] }, { network: iso, mac: 52:54:00:00:00:09 }]
  - { name: web2, host: host2, nics: [{ network: iso2, mac: 52:54:00:00:00:01, securityGroups: [web, admin] }] }
  - { name: db1, host: host2, nics: [{ network: iso2, securityGroups: [db] }] }
  - { name: plain, host: host3, nics: [{ network: iso3 }] }
`);
const desired = resolveSpec(spec);
const names = (host: string) => desired[host]?.securityGroups?.map((g) => g.name);

describe('resolveSecurityGroups', () => {
  it("gives each host its NICs' groups and the remote groups their rules name, transitively, sorted", () => {
    // web names db, db names web and admin: all three reach host1, whose NICs are in web only.
    expect(names('host1')).toEqual(['admin', 'db', 'web']);
    expect(names('host2')).toEqual(['admin', 'db', 'web']);
    // No NIC with groups, no groups; a group nobody uses reaches no host.
    expect(desired.host3).not.toHaveProperty('securityGroups');
  });

  it('normalises rules: defaults filled, ports merged and sorted, descriptions dropped, spec order kept', () => {
    const web = desired.host1?.securityGroups?.find((g) => g.name === 'web');
    expect(web?.rules).toEqual([
      {
        direction: 'ingress',
        protocol: 'tcp',
        ports: [
          { from: 80, to: 80 },
          { from: 443, to: 443 },
          { from: 8000, to: 8101 },
        ],
        cidr: '0.0.0.0/0',
      },
      { direction: 'egress', protocol: 'tcp', ports: [{ from: 5432, to: 5432 }], group: 'db' },
    ]);
    expect(desired.host1?.securityGroups?.find((g) => g.name === 'admin')?.rules).toEqual([
      { direction: 'ingress', protocol: 'tcp', ports: [{ from: 22, to: 22 }] },
    ]);
  });

  it('member MACs are every NIC of the group on every host, sorted, and the same on each host', () => {
    const web = desired.host1?.securityGroups?.find((g) => g.name === 'web');
    expect(web?.memberMacs).toEqual(['52:54:00:00:00:01', derivedMac('web1', 0)].sort());
    expect(desired.host2?.securityGroups).toEqual(desired.host1?.securityGroups);
    expect(desired.host1?.securityGroups?.find((g) => g.name === 'db')?.memberMacs).toEqual([
      derivedMac('db1', 0),
    ]);
  });

  it("puts a NIC's groups on its config in spec order, and nothing on a NIC without", () => {
    const web2 = desired.host2?.vms.find((v) => v.name === 'web2');
    expect(web2?.nics[0]?.securityGroups).toEqual(['web', 'admin']);
    expect(desired.host1?.vms[0]?.nics[1]).not.toHaveProperty('securityGroups');
  });

  it('mergePorts merges overlapping and adjacent ranges', () => {
    expect(mergePorts([22, '20-21', 25, '24-30', 1000])).toEqual([
      { from: 20, to: 22 },
      { from: 24, to: 30 },
      { from: 1000, to: 1000 },
    ]);
  });
});
