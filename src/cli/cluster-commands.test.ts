import { describe, expect, it } from 'vitest';
import { defaultControllerName } from '../controller/main.js';
import type { ClusterView } from '../controller/wire-cluster.js';
import { renderCluster } from './cluster-commands.js';
import { daemonClusterArgs } from './program.js';

const self = {
  id: 'ctl2/42/ab',
  name: 'ctl2',
  address: 'unix:///run/ctl2.sock',
  since: '2026-12-01T10:00:00.000Z',
  pid: 42,
  role: 'standby' as const,
  roleSince: '2026-12-01T10:00:01.000Z',
};

describe('vmlink cluster status', () => {
  it('shows the roles, the members with their health, the leases and what could not be learnt', () => {
    const v: ClusterView = {
      store: 'etcd',
      self,
      active: {
        id: 'ctl1/41/cd',
        name: 'ctl1',
        address: 'unix:///run/ctl1.sock',
        since: self.since,
        pid: 41,
      },
      members: [
        { name: 'e1', endpoint: 'https://10.0.0.1:2379', healthy: true, isLeader: true, hasLeader: true },
        { name: 'e2', endpoint: 'https://10.0.0.2:2379', healthy: false, error: 'connect ECONNREFUSED' },
      ],
      hosts: [{ host: 'host1', leaseId: '77', heartbeatSeconds: 5, since: self.since, ageMs: 12_345 }],
      problems: ["the hosts' leases: partly read"],
    };
    const text = renderCluster(v);
    expect(text).toMatch(/this controller: ctl2 \(pid 42, unix:\/\/\/run\/ctl2.sock\): standby since/);
    expect(text).toMatch(/active controller: ctl1 \(pid 41\) at unix:\/\/\/run\/ctl1.sock/);
    expect(text).toMatch(/e1 +https:\/\/10.0.0.1:2379 +healthy +leader/);
    expect(text).toMatch(/e2 +https:\/\/10.0.0.2:2379 +UNHEALTHY .*ECONNREFUSED/);
    expect(text).toMatch(/host1 +77 +5s +12.3s/);
    expect(text).toMatch(/problems:\n {2}the hosts' leases: partly read/);
  });

  it('says when no controller is active, and shows no etcd parts with SQLite', () => {
    const text = renderCluster({
      store: 'sqlite',
      self: { ...self, role: 'active' },
      members: [],
      hosts: [],
      problems: [],
    });
    expect(text).toMatch(/active controller: none known/);
    expect(text).not.toMatch(/etcd members/);
  });
});

describe('vmlink daemon cluster flags', () => {
  it('takes sqlite and etcd locations and a cluster name; refuses others', () => {
    expect(daemonClusterArgs({ store: 'etcd://10.0.0.1:2379,10.0.0.2:2379', name: 'ctl1' })).toEqual({
      store: 'etcd://10.0.0.1:2379,10.0.0.2:2379',
      name: 'ctl1',
    });
    expect(daemonClusterArgs({ store: 'sqlite:///var/lib/vmlink/vmlink.db' }).store).toBe(
      'sqlite:///var/lib/vmlink/vmlink.db',
    );
    expect(() => daemonClusterArgs({ store: 'redis://x' })).toThrow(/--store must be sqlite:\/\/PATH, etcd/);
    expect(() => daemonClusterArgs({ name: 'Ctl/1' })).toThrow(/--name must be/);
  });

  it("names a controller after the machine's host name by default", () => {
    expect(defaultControllerName('Node-7.example.org')).toBe('node-7');
    expect(defaultControllerName('ctl_1')).toBe('ctl-1');
    expect(defaultControllerName('')).toBe('controller');
  });
});
