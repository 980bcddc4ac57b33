import { describe, expect, it } from 'vitest';
import type { SpecIssue } from '../../shared/errors.js';
import { expectIssue, specIssues } from './issues.test-util.js';

// biome-ignore lint/suspicious/noExplicitAny: raw spec documents mutated freely.
type Raw = any;

/** One host with a dir pool (a named volume, a VM disk volume) and an iscsi pool on a storage host, and two rules. */
function base(): Raw {
  return {
    version: 1,
    hosts: [{ name: 'host1' }, { name: 'san', role: 'storage' }],
    networks: [{ name: 'natnet', host: 'host1', mode: 'nat', cidr: '10.10.0.0/24' }],
    pools: [
      { name: 'data', type: 'dir', host: 'host1' },
      {
        name: 'lun',
        type: 'iscsi',
        host: 'san',
        address: '192.168.50.9',
        chap: { user: 'u', secret: 'chap' },
      },
    ],
    volumes: [
      { name: 'logs', pool: 'data', sizeMiB: 256 },
      { name: 'db', pool: 'lun', sizeMiB: 256 },
    ],
    vms: [
      {
        name: 'web1',
        host: 'host1',
        nics: [{ network: 'natnet' }],
        disks: [
          { name: 'scratch', pool: 'data', sizeMiB: 64 },
          { name: 'db', pool: 'lun', volume: 'db' },
        ],
      },
    ],
    alerts: [
      {
        name: 'host-cpu',
        expr: 'vmlink_host_cpu_utilization',
        threshold: 0.85,
        for: '5m',
        summary: 'CPU of {{host}} at {{value}}',
      },
      {
        name: 'pool-full',
        expr: 'vmlink_pool_utilization{pool="data"}',
        threshold: 0.8,
        actions: [{ type: 'log' }, { type: 'scale', volume: 'data/logs', growByMiB: 128, maxMiB: 1024 }],
      },
    ],
  };
}

function issuesOf(mutate: (s: Raw) => void): SpecIssue[] {
  const s = base();
  mutate(s);
  return specIssues(s);
}

describe('alerts: validation', () => {
  it('accepts the base spec (a VM disk volume is a scale target too)', () => {
    expect(issuesOf(() => {})).toEqual([]);
    expect(
      issuesOf((s) => {
        s.alerts[1].actions[1].volume = 'data/web1-scratch';
      }),
    ).toEqual([]);
  });

  it('refuses duplicate names, expressions that do not parse or name what the catalog lacks', () => {
    expectIssue(
      issuesOf((s) => {
        s.alerts[1].name = 'host-cpu';
      }),
      'alerts[1].name',
      'duplicate alert rule name "host-cpu"',
    );
    expectIssue(
      issuesOf((s) => {
        s.alerts[0].expr = 'vmlink_host_cpu_utilisation';
      }),
      'alerts[0].expr',
      'unknown metric "vmlink_host_cpu_utilisation" (did you mean vmlink_host_cpu_utilization?)',
    );
    expectIssue(
      issuesOf((s) => {
        s.alerts[0].expr = 'vmlink_host_cpu_utilization{vm="x"}';
      }),
      'alerts[0].expr',
      'vmlink_host_cpu_utilization has no label vm (its labels: host)',
    );
    expectIssue(
      issuesOf((s) => {
        s.alerts[0].expr = 'vmlink_host_cpu_utilization{host=~"(h.*)*"}';
      }),
      'alerts[0].expr',
      'repeats a group that itself repeats',
    );
  });

  it('refuses a summary naming a label the instances lack, and a share threshold that never holds', () => {
    expectIssue(
      issuesOf((s) => {
        s.alerts[0].summary = '{{vm}} is hot';
      }),
      'alerts[0].summary',
      "{{vm}} is not a label of this rule's instances (their labels: host;",
    );
    expectIssue(
      issuesOf((s) => {
        s.alerts[0].threshold = 85;
      }),
      'alerts[0].threshold',
      'never holds: write 0.85 for 85 %',
    );
  });

  it('refuses scale actions on unknown pools or volumes, a maxMiB under the size, and a pool that cannot grow it', () => {
    expectIssue(
      issuesOf((s) => {
        s.alerts[1].actions[1].volume = 'nope/logs';
      }),
      'alerts[1].actions[1].volume',
      'unknown pool "nope" (pools: data, lun)',
    );
    expectIssue(
      issuesOf((s) => {
        s.alerts[1].actions[1].volume = 'data/nope';
      }),
      'alerts[1].actions[1].volume',
      'pool "data" has no volume "nope" in the spec (its volumes: logs, web1-scratch)',
    );
    expectIssue(
      issuesOf((s) => {
        s.alerts[1].actions[1].maxMiB = 256;
      }),
      'alerts[1].actions[1].maxMiB',
      'volume data/logs is 256 MiB already, so maxMiB 256 lets it never grow',
    );
    expectIssue(
      issuesOf((s) => {
        s.alerts[1].actions[1].volume = 'lun/db';
      }),
      'alerts[1].actions[1].volume',
      'volume lun/db is used by VM web1, and tgtd cannot grow a LUN while a VM has it open',
    );
  });

  it('refuses what the schema bounds: an unknown action, a bad duration, a webhook that is not http(s)', () => {
    expect(
      issuesOf((s) => {
        s.alerts[0].for = '5 minutes';
        s.alerts[0].actions = [{ type: 'webhook', url: 'file:///etc/passwd' }];
      }).map((i) => i.path),
    ).toEqual(expect.arrayContaining(['alerts[0].for', 'alerts[0].actions[0].url']));
  });
});
