import { describe, expect, it } from 'vitest';
import type { SpecIssue } from '../../shared/errors.js';
import { expectIssue, specIssues } from './issues.test-util.js';

// biome-ignore lint/suspicious/noExplicitAny: raw spec documents mutated freely.
type Raw = any;

/** Two compute hosts, two backup machines, an isolated restore network on host1, and the docs/backup.md policy. */
function base(): Raw {
  return {
    version: 1,
    hosts: [{ name: 'host1' }, { name: 'host2' }, { name: 'backup1', role: 'storage' }, { name: 'backup2' }],
    networks: [
      { name: 'natnet', host: 'host1', mode: 'nat', cidr: '10.10.0.0/24' },
      { name: 'restore-net', host: 'host1', mode: 'isolated', cidr: '10.20.0.0/24' },
      { name: 'iso2', host: 'host2', mode: 'isolated', cidr: '10.21.0.0/24' },
    ],
    vms: [
      { name: 'web1', host: 'host1', nics: [{ network: 'natnet' }] },
      { name: 'db', host: 'host1', nics: [{ network: 'natnet' }] },
      { name: 'app', host: 'host2', nics: [{ network: 'iso2' }] },
    ],
    backupStores: [
      { name: 'site', host: 'backup1' },
      { name: 'vault', host: 'backup2', offsite: true, pullFrom: 'site' },
    ],
    backups: [
      {
        name: 'nightly',
        vms: ['web1', 'db'],
        store: 'site',
        schedule: 'every 10m',
        retention: { last: 3, hourly: 24, daily: 7, weekly: 4, monthly: 6 },
        encryption: { key: 'backup-key' },
        rpoMinutes: 15,
        rtoMinutes: 30,
        rule: '3-2-1',
        restoreTest: { schedule: 'every 1d', network: 'restore-net' },
      },
    ],
  };
}

function issuesOf(mutate: (s: Raw) => void): SpecIssue[] {
  const s = base();
  mutate(s);
  return specIssues(s);
}

describe('backup validation: stores', () => {
  it("accepts docs/backup.md's example", () => {
    expect(issuesOf(() => {})).toEqual([]);
  });
  it('store names are unique', () =>
    expectIssue(
      issuesOf((s) => s.backupStores.push({ name: 'site', host: 'backup2' })),
      'backupStores[2].name',
      'duplicate backup store name "site" (already used at backupStores[0].name)',
    ));
  it('a store names an existing host', () =>
    expectIssue(
      issuesOf((s) => {
        s.backupStores[0].host = 'nas9';
      }),
      'backupStores[0].host',
      'unknown host "nas9" (hosts: host1, host2, backup1, backup2)',
    ));
  it('two stores in one directory of one host are refused; the same path on two hosts is fine', () => {
    const issues = issuesOf((s) => {
      s.backupStores.push(
        { name: 'a', host: 'backup2', path: '/srv/b' },
        { name: 'b', host: 'backup2', path: '/srv/b/' },
      );
      s.backupStores.push({ name: 'c', host: 'backup1', path: '/srv/b' });
    });
    expect(issues).toHaveLength(1);
    expectIssue(
      issues,
      'backupStores[3].path',
      'uses the directory /srv/b/ on backup2 like backupStores[2] ("a")',
    );
  });
  it('an offsite store needs pullFrom, naming an on-site store', () => {
    expectIssue(
      issuesOf((s) => {
        delete s.backupStores[1].pullFrom;
      }),
      'backupStores[1].pullFrom',
      'offsite store "vault" is filled only by pulls: add pullFrom: site',
    );
    expectIssue(
      issuesOf((s) => {
        s.backupStores[1].pullFrom = 'nowhere';
      }),
      'backupStores[1].pullFrom',
      'unknown backup store "nowhere" (on-site stores: site)',
    );
  });
  it('offsite from offsite (and so any cycle) is refused', () => {
    const issues = issuesOf((s) => {
      s.backupStores.push({ name: 'far', host: 'host2', offsite: true, pullFrom: 'vault' });
      s.backupStores.push({ name: 'x', host: 'host1', offsite: true, pullFrom: 'y' });
      s.backupStores.push({ name: 'y', host: 'host2', offsite: true, pullFrom: 'x' });
    });
    expectIssue(
      issues,
      'backupStores[2].pullFrom',
      'offsite store "far" pulls from "vault", which is offsite too',
    );
    expectIssue(issues, 'backupStores[3].pullFrom', 'offsite store "x" pulls from "y", which is offsite too');
    expectIssue(issues, 'backupStores[4].pullFrom', 'offsite store "y" pulls from "x", which is offsite too');
  });
  it('an offsite store on the same machine as its source is refused', () =>
    expectIssue(
      issuesOf((s) => {
        s.backupStores[1].host = 'backup1';
      }),
      'backupStores[1].host',
      'offsite store "vault" is on backup1 like its source "site": an offsite copy must be on another machine',
    ));
  it('pullFrom and retention belong to offsite stores', () => {
    const issues = issuesOf((s) => {
      s.backupStores.push({ name: 'other', host: 'backup2', pullFrom: 'site', retention: { daily: 3 } });
    });
    expectIssue(issues, 'backupStores[2].pullFrom', 'only an offsite store pulls');
    expectIssue(issues, 'backupStores[2].retention', 'store retention applies to offsite stores only');
    expect(issuesOf((s) => (s.backupStores[1].retention = { weekly: 8 }))).toEqual([]);
  });
});

describe('backup validation: policies', () => {
  it('policy names are unique', () =>
    expectIssue(
      issuesOf((s) =>
        s.backups.push({ ...base().backups[0], vms: ['app'], restoreTest: undefined, rtoMinutes: undefined }),
      ),
      'backups[1].name',
      'duplicate backup policy name "nightly"',
    ));
  it('names existing VMs', () =>
    expectIssue(
      issuesOf((s) => s.backups[0].vms.push('mail')),
      'backups[0].vms[2]',
      'unknown VM "mail" (vms: web1, db, app)',
    ));
  it('a VM in two policies of the same store is refused, naming the first', () => {
    const second = {
      name: 'hourly',
      vms: ['app', 'db'],
      store: 'site',
      schedule: 'every 1h',
      retention: { last: 2 },
      encryption: { key: 'k' },
    };
    expectIssue(
      issuesOf((s) => s.backups.push(second)),
      'backups[1].vms[1]',
      'VM "db" is already backed up to store "site" by backups[0].vms[1] ("nightly")',
    );
    expect(
      issuesOf((s) => {
        s.backupStores.push({ name: 'site2', host: 'backup2' });
        s.backups.push({ ...second, store: 'site2' });
      }),
    ).toEqual([]);
    expectIssue(
      issuesOf((s) => s.backups[0].vms.push('web1')),
      'backups[0].vms[2]',
      'VM "web1" is already backed up to store "site" by backups[0].vms[0]',
    );
  });
  it('names an existing, on-site store', () => {
    expectIssue(
      issuesOf((s) => {
        s.backups[0].store = 'nope';
      }),
      'backups[0].store',
      'unknown backup store "nope" (on-site stores: site)',
    );
    expectIssue(
      issuesOf((s) => {
        s.backups[0].store = 'vault';
      }),
      'backups[0].store',
      'store "vault" is offsite: it is filled only by its own pulls; write to its source "site" instead',
    );
  });
  it('rule 3-2-1 without an offsite store pulling from the policy store says what to add', () => {
    const issues = issuesOf((s) => s.backupStores.pop());
    expect(issues).toEqual([
      {
        path: 'backups[0].rule',
        message:
          'rule 3-2-1 needs an offsite copy of store "site": add { name: site-offsite, host: host1, offsite: true, pullFrom: site } to backupStores',
      },
    ]);
    expect(issuesOf((s) => (s.backups[0].rule = 'none'))).toEqual([]);
  });
  it('an RPO the schedule can never meet is refused', () => {
    expectIssue(
      issuesOf((s) => {
        s.backups[0].schedule = 'every 15m';
      }),
      'backups[0].rpoMinutes',
      'rpoMinutes 15 can never hold with schedule "every 15m"',
    );
    expectIssue(
      issuesOf((s) => {
        s.backups[0].schedule = '02:00-04:00';
        s.backups[0].rpoMinutes = 1440;
      }),
      'backups[0].rpoMinutes',
      '(a snapshot up to 1440 min old is normal)',
    );
    expect(
      issuesOf((s) => {
        s.backups[0].schedule = '02:00-04:00';
        s.backups[0].rpoMinutes = 1500;
      }),
    ).toEqual([]);
  });
  it('an RTO needs a restore test to be measured', () =>
    expectIssue(
      issuesOf((s) => {
        delete s.backups[0].restoreTest;
      }),
      'backups[0].rtoMinutes',
      'rtoMinutes is measured by restore tests: add restoreTest',
    ));
  it('the restore test network is an existing isolated network on the boot host', () => {
    expectIssue(
      issuesOf((s) => {
        s.backups[0].restoreTest.network = 'nope';
      }),
      'backups[0].restoreTest.network',
      'unknown network "nope" (isolated networks: restore-net, iso2)',
    );
    expectIssue(
      issuesOf((s) => {
        s.backups[0].restoreTest.network = 'natnet';
      }),
      'backups[0].restoreTest.network',
      'network "natnet" is nat: a restored copy must boot on an isolated network',
    );
    expectIssue(
      issuesOf((s) => {
        s.backups[0].vms.push('app');
      }),
      'backups[0].restoreTest.network',
      'isolated network "restore-net" is on host1, but the restore test boots on host2 (its VM\'s host): set restoreTest.host: host1',
    );
    expect(
      issuesOf((s) => {
        s.backups[0].vms.push('app');
        s.backups[0].restoreTest.host = 'host1';
      }),
    ).toEqual([]);
  });
  it('the restore test host exists', () =>
    expectIssue(
      issuesOf((s) => {
        s.backups[0].restoreTest.host = 'host9';
      }),
      'backups[0].restoreTest.host',
      'unknown host "host9"',
    ));
  it('schema errors name the spec path', () => {
    expectIssue(
      issuesOf((s) => {
        s.backups[0].schedule = 'nightly';
      }),
      'backups[0].schedule',
      'must be "every N"',
    );
    expectIssue(
      issuesOf((s) => {
        s.backups[0].retention = { daily: 0 };
      }),
      'backups[0].retention',
      'keeps nothing',
    );
  });
});
