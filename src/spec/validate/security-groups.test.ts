import { describe, expect, it } from 'vitest';
import type { SpecIssue } from '../../shared/errors.js';
import { expectIssue, specIssues } from './issues.test-util.js';

// biome-ignore lint/suspicious/noExplicitAny: raw spec documents mutated freely.
type Raw = any;

function base(): Raw {
  return {
    version: 1,
    hosts: [{ name: 'host1' }],
    networks: [{ name: 'iso', host: 'host1', mode: 'isolated', cidr: '10.20.0.0/24' }],
    securityGroups: [
      { name: 'web', rules: [{ protocol: 'tcp', ports: [80, '8000-8100'], cidr: '0.0.0.0/0' }] },
      { name: 'db', rules: [{ protocol: 'tcp', ports: [5432], group: 'web' }, { protocol: 'icmp' }] },
    ],
    vms: [
      { name: 'web1', host: 'host1', nics: [{ network: 'iso', ip: '10.20.0.10', securityGroups: ['web'] }] },
      { name: 'db1', host: 'host1', nics: [{ network: 'iso', securityGroups: ['db', 'web'] }] },
    ],
  };
}

function issuesOf(mutate: (s: Raw) => void): SpecIssue[] {
  const s = base();
  mutate(s);
  return specIssues(s);
}

describe('security group validation', () => {
  it('accepts groups with tcp ports, cidr and remote-group rules on guarded NICs', () => {
    expect(issuesOf(() => {})).toEqual([]);
  });

  it('group names are unique', () =>
    expectIssue(
      issuesOf((s) => s.securityGroups.push({ name: 'web' })),
      'securityGroups[2].name',
      'duplicate security group name "web" (already used at securityGroups[0].name)',
    ));

  it("a NIC's groups exist", () =>
    expectIssue(
      issuesOf((s) => s.vms[1].nics[0].securityGroups.push('app')),
      'vms[1].nics[0].securityGroups[2]',
      'unknown security group "app" (groups: web, db); declare it under securityGroups:',
    ));

  it("a rule's remote group exists", () =>
    expectIssue(
      issuesOf((s) => (s.securityGroups[1].rules[0].group = 'cache')),
      'securityGroups[1].rules[0].group',
      'unknown security group "cache"',
    ));

  it('ports only with tcp or udp', () => {
    expectIssue(
      issuesOf((s) => (s.securityGroups[1].rules[1].ports = [7])),
      'securityGroups[1].rules[1].ports',
      'ports need protocol tcp or udp (this rule is icmp)',
    );
    expectIssue(
      issuesOf((s) => s.securityGroups[0].rules.push({ ports: [53] })),
      'securityGroups[0].rules[1].ports',
      'this rule is any',
    );
    expect(issuesOf((s) => s.securityGroups[0].rules.push({ protocol: 'udp', ports: [53] }))).toEqual([]);
  });

  it('at most one of cidr and group', () =>
    expectIssue(
      issuesOf((s) => (s.securityGroups[1].rules[0].cidr = '10.0.0.0/8')),
      'securityGroups[1].rules[0].group',
      'give at most one remote',
    ));

  it('a cidr is a network address', () =>
    expectIssue(
      issuesOf((s) => (s.securityGroups[0].rules[0].cidr = '10.20.0.5/24')),
      'securityGroups[0].rules[0].cidr',
      'has host bits set; write the network address, 10.20.0.0/24',
    ));

  it('a NIC with groups needs port security', () =>
    expectIssue(
      issuesOf((s) => (s.vms[0].nics[0].portSecurity = false)),
      'vms[0].nics[0].securityGroups',
      'security groups need port security',
    ));

  it('a trunk NIC cannot have groups', () => {
    const issues = issuesOf((s) => {
      // The trunk's own problems (no such vlan network) are reported too; the groups' is the one checked here.
      s.vms[0].nics[0] = { trunk: ['iso'], securityGroups: ['web'] };
    });
    expectIssue(issues, 'vms[0].nics[0].securityGroups', 'a trunk port is not filtered');
  });

  it('the schema bounds a NIC to distinct groups', () =>
    expectIssue(
      issuesOf((s) => (s.vms[0].nics[0].securityGroups = ['web', 'web'])),
      'vms[0].nics[0].securityGroups',
      'lists a group twice',
    ));
});
