import { describe, expect, it } from 'vitest';
import type { SpecIssue } from '../../shared/errors.js';
import { expectIssue, specIssues } from './issues.test-util.js';

// biome-ignore lint/suspicious/noExplicitAny: raw spec documents mutated freely.
type Raw = any;

/** A cluster lab: three hosts, three etcd members, two controllers. */
function base(): Raw {
  return {
    version: 1,
    hosts: [{ name: 'host1' }, { name: 'host2' }, { name: 'host3' }],
    cluster: { store: 'etcd', heartbeatSeconds: 5 },
    lab: {
      name: 'cl',
      lan: { cidr: '192.168.77.0/24', gateway: '192.168.77.1' },
      upstream: { cidr: '203.0.113.0/24', address: '203.0.113.1' },
      hosts: [
        { name: 'host1', address: '192.168.77.11' },
        { name: 'host2', address: '192.168.77.12' },
        { name: 'host3', address: '192.168.77.13' },
      ],
      etcd: [
        { name: 'etcd1', address: '192.168.77.21' },
        { name: 'etcd2', address: '192.168.77.22' },
        { name: 'etcd3', address: '192.168.77.23' },
      ],
      controllers: [
        { name: 'ctl1', address: '192.168.77.31' },
        { name: 'ctl2', address: '192.168.77.32' },
      ],
    },
  };
}

function issuesOf(mutate: (s: Raw) => void): SpecIssue[] {
  const s = base();
  mutate(s);
  return specIssues(s);
}

describe('lab validation: etcd members and cluster controllers', () => {
  it('accepts a cluster lab with 3 members and 2 controllers, and a 1-member etcd without controllers', () => {
    expect(issuesOf(() => {})).toEqual([]);
    expect(
      issuesOf((s) => {
        s.lab.etcd = [s.lab.etcd[0]];
        s.lab.controllers = [];
      }),
    ).toEqual([]);
  });

  it('refuses a member count without a useful quorum (2, 4), saying why', () => {
    expectIssue(
      issuesOf((s) => s.lab.etcd.pop()),
      'lab.etcd',
      'use 1, 3 or 5: etcd needs a majority',
    );
    expectIssue(
      issuesOf((s) => s.lab.etcd.push({ name: 'etcd4', address: '192.168.77.24' })),
      'lab.etcd',
      'has 4 members',
    );
  });

  it('refuses names used by another lab machine, and the etcd users of vmlink as names', () => {
    expectIssue(
      issuesOf((s) => {
        s.lab.etcd[1].name = 'host2';
      }),
      'lab.etcd[1].name',
      'duplicate lab machine name "host2" (already used at lab.hosts[1].name)',
    );
    expectIssue(
      issuesOf((s) => {
        s.lab.controllers[0].name = 'etcd3';
      }),
      'lab.controllers[0].name',
      'already used at lab.etcd[2].name',
    );
    expectIssue(
      issuesOf((s) => {
        s.lab.etcd[0].name = 'root';
      }),
      'lab.etcd[0].name',
      'is an etcd user of vmlink',
    );
  });

  it('refuses addresses taken by another machine, outside the LAN, or the management address', () => {
    expectIssue(
      issuesOf((s) => {
        s.lab.etcd[2].address = '192.168.77.12';
      }),
      'lab.etcd[2].address',
      'duplicate address 192.168.77.12 (already used at lab.hosts[1].address)',
    );
    expectIssue(
      issuesOf((s) => {
        s.lab.controllers[1].address = '10.9.9.9';
      }),
      'lab.controllers[1].address',
      'is outside 192.168.77.0/24',
    );
    expectIssue(
      issuesOf((s) => {
        s.lab.controllers[1].address = '192.168.77.254';
      }),
      'lab.controllers[1].address',
      "lab's management address",
    );
  });

  it('refuses controllers without a cluster on etcd or without members, and a cluster lab without etcd', () => {
    expectIssue(
      issuesOf((s) => {
        s.cluster = undefined;
      }),
      'lab.controllers',
      'add cluster: { store: etcd }',
    );
    expectIssue(
      issuesOf((s) => {
        s.cluster.store = 'sqlite';
      }),
      'lab.controllers',
      'it says store: sqlite',
    );
    const noEtcd = issuesOf((s) => {
      s.lab.etcd = [];
    });
    expectIssue(noEtcd, 'lab.controllers', "need the lab's etcd");
    expectIssue(noEtcd, 'lab.etcd', 'a cluster on etcd in a lab needs etcd members');
    expect(
      issuesOf((s) => {
        s.lab.etcd = [];
        s.lab.controllers = [];
        s.cluster.endpoints = ['https://192.168.1.5:2379'];
      }),
    ).toEqual([]);
  });
});
