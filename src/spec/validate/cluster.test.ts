import { describe, expect, it } from 'vitest';
import { InvalidSpecError, type SpecIssue } from '../../shared/errors.js';
import { loadSpec } from '../load.js';
import type { Placement } from '../placement.js';

// biome-ignore lint/suspicious/noExplicitAny: raw spec documents mutated freely.
type Raw = any;

/** A cluster on etcd: three compute hosts, a storage host, a vxlan network on all, a nat network on host1. */
function base(): Raw {
  return {
    version: 1,
    hosts: [
      { name: 'host1', address: '192.168.50.11' },
      { name: 'host2', address: '192.168.50.12' },
      { name: 'host3', address: '192.168.50.13' },
      { name: 'san1', role: 'storage', address: '192.168.50.20' },
    ],
    networks: [
      { name: 'ov', mode: 'vxlan', vni: 100, cidr: '10.9.0.0/24' },
      { name: 'ov12', mode: 'vxlan', vni: 101, cidr: '10.8.0.0/24', hosts: ['host1', 'host2'] },
      { name: 'nat1', mode: 'nat', host: 'host1', cidr: '10.30.0.0/24' },
    ],
    pools: [
      { name: 'local', type: 'dir', host: 'host1' },
      { name: 'nas', type: 'nfs', host: 'san1' },
    ],
    vms: [
      { name: 'web', ha: {}, nics: [{ network: 'ov' }], disks: [{ name: 'data', pool: 'nas', sizeMiB: 64 }] },
      { name: 'db1', host: 'host1', ha: { group: 'db' }, nics: [{ network: 'ov' }] },
      { name: 'db2', host: 'host2', ha: { group: 'db' }, nics: [{ network: 'ov' }] },
      {
        name: 'pet',
        host: 'host1',
        nics: [{ network: 'nat1' }],
        disks: [{ name: 'd', pool: 'local', sizeMiB: 64 }],
      },
    ],
    cluster: { store: 'etcd', endpoints: ['https://10.0.0.1:2379'] },
  };
}

function issuesOf(mutate: (s: Raw) => void, placement?: Placement): SpecIssue[] {
  const s = base();
  mutate(s);
  try {
    loadSpec(JSON.stringify(s), undefined, placement);
  } catch (e) {
    if (e instanceof InvalidSpecError) return e.issues;
    throw e;
  }
  return [];
}

function expectIssue(issues: SpecIssue[], path: string, fragment: string) {
  expect(issues, JSON.stringify(issues, null, 1)).toContainEqual({
    path,
    message: expect.stringContaining(fragment),
  });
}

describe('cluster validation', () => {
  it('accepts a cluster with scheduled and HA VMs on shared networks and pools, and pinned VMs on local ones', () => {
    expect(issuesOf(() => {})).toEqual([]);
  });

  it('needs cluster: for a VM without a host', () => {
    const issues = issuesOf((s) => {
      delete s.cluster;
      s.vms = [{ name: 'web', nics: [{ network: 'ov' }] }];
    });
    expect(issues).toEqual([
      {
        path: 'vms[0].host',
        message:
          'VM "web" names no host: give it a host (hosts: host1, host2, host3), or add cluster: so the scheduler places it',
      },
    ]);
  });

  it('needs cluster.store etcd for ha.state started or stopped, not for disabled', () => {
    const noCluster = issuesOf((s) => {
      delete s.cluster;
      s.vms = [
        { name: 'a', host: 'host1', ha: {}, nics: [{ network: 'ov' }] },
        { name: 'b', host: 'host1', ha: { state: 'stopped' }, nics: [{ network: 'ov' }] },
        { name: 'c', host: 'host1', ha: { state: 'disabled' }, nics: [{ network: 'ov' }] },
      ];
    });
    expect(noCluster.map((i) => i.path)).toEqual(['vms[0].ha.state', 'vms[1].ha.state']);
    expectIssue(
      noCluster,
      'vms[0].ha.state',
      'ha.state started needs cluster: { store: etcd } (fencing needs etcd leases)',
    );
    const sqlite = issuesOf((s) => {
      s.cluster = { store: 'sqlite' };
    });
    expectIssue(sqlite, 'vms[0].ha.state', 'cluster.store is sqlite');
  });

  it('needs etcd endpoints or a lab, and endpoints only with etcd', () => {
    expectIssue(
      issuesOf((s) => {
        delete s.cluster.endpoints;
      }),
      'cluster.endpoints',
      'cluster.store etcd needs etcd',
    );
    const sqlite = issuesOf((s) => {
      s.cluster.store = 'sqlite';
      s.vms = s.vms.map((v: Raw) => ({ ...v, ha: undefined }));
      s.vms[0].host = 'host2';
    });
    expect(sqlite).toEqual([
      { path: 'cluster.endpoints', message: expect.stringContaining('they need cluster.store: etcd') },
    ]);
  });

  it('refuses host names that are etcd users, in a cluster only', () => {
    const rename = (s: Raw) => {
      s.hosts[2].name = 'root';
      s.hosts.push({ name: 'vmlink-controller', address: '192.168.50.14' });
    };
    const issues = issuesOf(rename);
    expectIssue(issues, 'hosts[2].name', '"root" is an etcd user of the cluster');
    expectIssue(issues, 'hosts[4].name', '"vmlink-controller" is an etcd user');
    const plain = issuesOf((s) => {
      rename(s);
      delete s.cluster;
      s.vms = [s.vms[3]];
    });
    expect(plain).toEqual([]);
  });

  it('checks ha.hosts: known, compute, once, and holding the spec host', () => {
    const issues = issuesOf((s) => {
      s.vms[0].ha.hosts = ['host1', 'nope', 'san1', 'host1'];
      s.vms[1].ha.hosts = ['host2', 'host3'];
    });
    expectIssue(issues, 'vms[0].ha.hosts[1]', 'unknown host "nope" (compute hosts: host1, host2, host3)');
    expectIssue(issues, 'vms[0].ha.hosts[2]', '"san1" is a storage host');
    expectIssue(issues, 'vms[0].ha.hosts[3]', 'host "host1" is listed twice (already at vms[0].ha.hosts[0])');
    expectIssue(issues, 'vms[1].host', 'host "host1" is not in ha.hosts (host2, host3)');
  });

  it('refuses a group that cannot run on distinct hosts, counting what each member may use', () => {
    const four = issuesOf((s) => {
      s.vms.push({ name: 'db3', ha: { group: 'db' }, nics: [{ network: 'ov' }] });
      s.vms.push({ name: 'db4', ha: { group: 'db' }, nics: [{ network: 'ov' }] });
    });
    expect(four).toEqual([
      {
        path: 'vms[5].ha.group',
        message: expect.stringContaining(
          'group "db" has 4 VMs (db1, db2, db3, db4) that cannot all run on distinct hosts: between them they may use 3 (host1, host2, host3)',
        ),
      },
    ]);
    // Three hosts exist but the three members may only use two of them.
    const narrow = issuesOf((s) => {
      s.vms[1].ha.hosts = ['host1', 'host2'];
      s.vms[2].ha.hosts = ['host1', 'host2'];
      s.vms.push({ name: 'db3', ha: { group: 'db', hosts: ['host2', 'host1'] }, nics: [{ network: 'ov' }] });
    });
    expect(narrow.map((i) => i.path)).toEqual(['vms[4].ha.group']);
    // A member HA does not move counts on its own host only.
    const fixed = issuesOf((s) => {
      s.vms[1].ha.state = 'disabled';
      s.vms[2].ha.hosts = ['host1'];
    });
    expect(fixed.map((i) => i.path)).toEqual(['vms[2].host', 'vms[2].ha.group']);
  });

  it('refuses two VMs of a group that the spec puts on one host', () => {
    const issues = issuesOf((s) => {
      s.vms[2].host = 'host1';
    });
    expectIssue(
      issues,
      'vms[2].host',
      'VM "db2" and VM "db1" (vms[1]) are both in group "db" on host "host1"',
    );
  });

  it('refuses a scheduled VM that needs a fixed host: single-host network, dir pool, passthrough', () => {
    const issues = issuesOf((s) => {
      s.vms[0].nics = [{ network: 'nat1' }, { network: 'ov12' }];
      s.vms[0].disks = [{ name: 'scratch', pool: 'local', sizeMiB: 64 }];
      s.vms[0].devices = [{ usb: '046d:c52b' }];
    });
    expectIssue(
      issues,
      'vms[0].nics[0].network',
      'network "nat1" is a nat network of host "host1" only, but the scheduler may place it on host2, host3: give it a host: host1',
    );
    expectIssue(
      issues,
      'vms[0].nics[1].network',
      'network "ov12" does not reach host3, of the hosts the scheduler may place it on: add it to networks[1].hosts',
    );
    expectIssue(issues, 'vms[0].disks[0]', 'dir pool "local", whose files live on host "host1" only');
    expectIssue(issues, 'vms[0].devices', 'passthrough devices belong to one host');
  });

  it('refuses an HA VM that needs a fixed host unless ha.hosts keeps it there', () => {
    const moved = issuesOf((s) => {
      s.vms[3].ha = {};
    });
    expectIssue(
      moved,
      'vms[3].nics[0].network',
      'but HA may restart or move it to host2, host3: limit ha.hosts to [host1], or set ha.state: disabled',
    );
    expectIssue(moved, 'vms[3].disks[0]', 'dir pool "local"');
    expect(
      issuesOf((s) => {
        s.vms[3].ha = { hosts: ['host1'] };
      }),
    ).toEqual([]);
    // A scheduled VM limited to one host may use that host's network.
    expect(
      issuesOf((s) => {
        s.vms[0] = { name: 'web', ha: { hosts: ['host1'] }, nics: [{ network: 'nat1' }] };
      }),
    ).toEqual([]);
  });

  it('tells a spec host from an owner record host', () => {
    // The owner record moved db1 to host3; the spec's host (host1) is what the ha.hosts check reads.
    const issues = issuesOf(
      (s) => {
        s.vms[1].ha.hosts = ['host2', 'host3'];
      },
      { db1: { host: 'host3', source: 'owner' } },
    );
    expectIssue(issues, 'vms[1].host', 'host "host1" is not in ha.hosts (host2, host3)');
    // A VM the spec places nowhere stays "scheduled" when an owner record places it.
    const owned = issuesOf(
      (s) => {
        s.vms[0].nics = [{ network: 'nat1' }];
      },
      { web: { host: 'host1', source: 'owner' } },
    );
    expectIssue(owned, 'vms[0].nics[0].network', 'give it a host: host1');
  });
});
