import { describe, expect, it } from 'vitest';
import type { SpecIssue } from '../../shared/errors.js';
import { nfsExportId } from '../../shared/storage.js';
import { expectIssue, specIssues } from './issues.test-util.js';

// biome-ignore lint/suspicious/noExplicitAny: raw spec documents mutated freely.
type Raw = any;

/** A lab with two compute hosts and a storage machine serving an iscsi and an nfs pool, plus a dir pool. */
function base(): Raw {
  return {
    version: 1,
    hosts: [
      { name: 'host1', passthrough: { usb: ['046d:*', '1050:0407'] } },
      { name: 'host2' },
      { name: 'san1', role: 'storage' },
    ],
    networks: [
      { name: 'iso', host: 'host1', mode: 'isolated', cidr: '10.20.0.0/24' },
      { name: 'iso2', host: 'host2', mode: 'isolated', cidr: '10.21.0.0/24' },
    ],
    pools: [
      { name: 'local', type: 'dir', host: 'host1' },
      { name: 'san', type: 'iscsi', host: 'san1', chap: { user: 'vmlink', secret: 'san-chap' } },
      { name: 'nas', type: 'nfs', host: 'san1', clients: ['192.168.50.0/24'] },
    ],
    volumes: [
      { name: 'tmpl', pool: 'nas', sizeMiB: 2048 },
      { name: 'data', pool: 'san', sizeMiB: 512 },
      { name: 'copy', pool: 'nas', from: { volume: 'tmpl' } },
    ],
    vms: [
      {
        name: 'web1',
        host: 'host1',
        image: { kind: 'volume', pool: 'nas', volume: 'tmpl', clone: true },
        disks: [
          { name: 'scratch', sizeMiB: 64 },
          { name: 'logs', pool: 'local', sizeMiB: 128 },
          { name: 'data', pool: 'san', volume: 'data' },
          { name: 'install', pool: 'nas', volume: 'debian-iso', media: 'cdrom' },
        ],
        devices: [{ usb: '046d:c52b' }],
        nics: [{ network: 'iso' }],
      },
    ],
    lab: {
      name: 'st',
      lan: { cidr: '192.168.50.0/24', gateway: '192.168.50.1' },
      upstream: { cidr: '203.0.113.0/24', address: '203.0.113.1' },
      hosts: [
        { name: 'host1', address: '192.168.50.10' },
        { name: 'host2', address: '192.168.50.11' },
      ],
      storage: [{ name: 'san1', address: '192.168.50.20' }],
    },
  };
}

function issuesOf(mutate: (s: Raw) => void): SpecIssue[] {
  const s = base();
  mutate(s);
  return specIssues(s);
}

describe('storage validation: pools', () => {
  it('accepts dir, iscsi (CHAP) and nfs pools, volumes, pool disks, a cloned boot volume and an allowed USB device', () => {
    expect(issuesOf(() => {})).toEqual([]);
  });

  it('pool names are unique', () =>
    expectIssue(
      issuesOf((s) => s.pools.push({ name: 'local', type: 'dir', host: 'host2' })),
      'pools[3].name',
      'duplicate pool name "local" (already used at pools[0].name)',
    ));

  it('a pool names a known host', () =>
    expectIssue(
      issuesOf((s) => {
        s.pools[0].host = 'host9';
      }),
      'pools[0].host',
      'unknown host "host9"',
    ));

  it('a dir pool is on a compute host, iscsi and nfs pools on storage hosts', () => {
    const issues = issuesOf((s) => {
      s.pools[0].host = 'san1';
      s.pools[2].host = 'host2';
    });
    expectIssue(issues, 'pools[0].host', 'a dir pool lives on the compute host whose VMs use it');
    expectIssue(issues, 'pools[2].host', 'nfs pools are served by a storage host; "host2" is role: compute');
  });

  it('an iscsi pool needs CHAP unless clients restrict it; CHAP only on iscsi', () => {
    expectIssue(
      issuesOf((s) => {
        delete s.pools[1].chap;
      }),
      'pools[1].chap',
      'open to any initiator on the network: add chap',
    );
    expect(
      issuesOf((s) => {
        delete s.pools[1].chap;
        s.pools[1].clients = ['192.168.50.0/24'];
      }),
    ).toEqual([]);
    expectIssue(
      issuesOf((s) => {
        s.pools[2].chap = { user: 'x', secret: 'y' };
      }),
      'pools[2].chap',
      "CHAP is iSCSI's login; nfs pools do not take it",
    );
  });

  it('a CHAP secret is a secret name, never a value', () =>
    expectIssue(
      issuesOf((s) => {
        s.pools[1].chap.secret = 'Hunter2!';
      }),
      'pools[1].chap.secret',
      'must match',
    ));

  it('dir pools take no clients or address', () => {
    const issues = issuesOf((s) => {
      s.pools[0].clients = ['10.0.0.0/24'];
      s.pools[0].address = '192.168.50.10';
    });
    expectIssue(issues, 'pools[0].clients', 'a dir pool is opened on its own host only');
    expectIssue(issues, 'pools[0].address', 'a dir pool is opened on its own host only');
  });

  it('an iscsi or nfs pool needs an address VM hosts reach it at', () => {
    const issues = issuesOf((s) => {
      delete s.lab;
    });
    expectIssue(issues, 'pools[1].address', 'VM hosts need an address to reach iscsi pool "san"');
    expect(
      issuesOf((s) => {
        delete s.lab;
        s.hosts[2].address = '10.1.1.1';
      }),
    ).toEqual([]);
  });

  it('two nfs pools of one storage host must not share an export id', () => {
    // Find two names whose derived ids collide (the id space is small enough to find one quickly).
    const seen = new Map<number, string>();
    let pair: [string, string] | undefined;
    for (let i = 0; !pair; i++) {
      const n = `p${i}`;
      const id = nfsExportId(n);
      const o = seen.get(id);
      if (o) pair = [o, n];
      else seen.set(id, n);
    }
    expectIssue(
      issuesOf((s) => {
        s.pools.push(
          { name: pair[0], type: 'nfs', host: 'san1' },
          { name: pair[1], type: 'nfs', host: 'san1' },
        );
      }),
      'pools[4].name',
      `get the same export id ${nfsExportId(pair[0])} on host "san1" (derived from their names); rename one`,
    );
  });

  it('pools of one host do not share or nest directories', () =>
    expectIssue(
      issuesOf((s) => {
        s.pools.push({ name: 'inner', type: 'dir', host: 'host1', path: '/var/lib/vmlink/pools/local/x' });
      }),
      'pools[3].path',
      'overlaps pool "local" (pools[0], /var/lib/vmlink/pools/local) on host "host1"',
    ));
});

describe('storage validation: volumes', () => {
  it('names are unique per pool, the pool exists', () => {
    const issues = issuesOf((s) => {
      s.volumes.push({ name: 'data', pool: 'san', sizeMiB: 1 }, { name: 'x', pool: 'nope', sizeMiB: 1 });
    });
    expectIssue(issues, 'volumes[3].name', 'duplicate volume "data" in pool "san" (already at volumes[1])');
    expectIssue(issues, 'volumes[4].pool', 'unknown pool "nope" (pools: local, san, nas)');
  });

  it('a volume needs a size unless it is a clone', () =>
    expectIssue(
      issuesOf((s) => s.volumes.push({ name: 'v', pool: 'nas' })),
      'volumes[3].sizeMiB',
      'needs a size: set sizeMiB, or from',
    ));

  it('a clone names a template of its own pool, not itself, without cycles', () => {
    expectIssue(
      issuesOf((s) => s.volumes.push({ name: 'v', pool: 'nas', from: { volume: 'v' } })),
      'volumes[3].from.volume',
      'cannot be a clone of itself',
    );
    expectIssue(
      issuesOf((s) => s.volumes.push({ name: 'v', pool: 'nas', from: { volume: 'data' } })),
      'volumes[3].from.volume',
      'template "data" is in pool "san", not "nas"',
    );
    const cycle = issuesOf((s) =>
      s.volumes.push(
        { name: 'a', pool: 'nas', from: { volume: 'b' } },
        { name: 'b', pool: 'nas', from: { volume: 'a' } },
      ),
    );
    expectIssue(cycle, 'volumes[3].from.volume', 'templates form a cycle: a <- b <- a');
  });

  it('linked clones and encryption only where the backend has them, with its reason', () => {
    const issues = issuesOf((s) => {
      s.volumes.push({ name: 'c', pool: 'san', from: { volume: 'data' } });
      s.volumes[1].encryption = { secret: 'k' };
    });
    expectIssue(
      issues,
      'volumes[3].from.linked',
      'iscsi pools cannot make linked clones: iSCSI LUNs are raw: linked clones need qcow2 (a full clone works); set linked: false',
    );
    expectIssue(issues, 'volumes[1].encryption', 'iscsi pools cannot encrypt volumes: iSCSI LUNs are raw');
    expect(
      issuesOf((s) => s.volumes.push({ name: 'c', pool: 'san', from: { volume: 'data', linked: false } })),
    ).toEqual([]);
  });

  it('a clone is not smaller than its template', () =>
    expectIssue(
      issuesOf((s) => {
        s.volumes[2].sizeMiB = 100;
      }),
      'volumes[2].sizeMiB',
      '100 MiB is smaller than template "tmpl" (2048 MiB)',
    ));
});

describe('storage validation: disks and boot volumes', () => {
  it('a disk takes one of three forms', () => {
    const issues = issuesOf((s) => {
      s.vms[0].disks.push(
        { name: 'a' },
        { name: 'b', volume: 'data' },
        { name: 'c', pool: 'local' },
        { name: 'd', pool: 'san', volume: 'data', sizeMiB: 9 },
      );
    });
    expectIssue(issues, 'vms[0].disks[4].sizeMiB', "a disk in the VM's directory needs sizeMiB");
    expectIssue(issues, 'vms[0].disks[5].volume', 'a volume lives in a pool: add pool');
    expectIssue(
      issues,
      'vms[0].disks[6]',
      'give sizeMiB (a volume made for this VM in pool "local") or volume',
    );
    expectIssue(issues, 'vms[0].disks[7].sizeMiB', 'the size of volume "data" is the volume\'s own');
  });

  it('the pool exists and a dir pool is on the VM’s host', () => {
    const issues = issuesOf((s) => {
      s.vms.push({
        name: 'web2',
        host: 'host2',
        disks: [
          { name: 'a', pool: 'local', sizeMiB: 1 },
          { name: 'b', pool: 'gone', sizeMiB: 1 },
        ],
        nics: [{ network: 'iso2' }],
      });
    });
    expectIssue(
      issues,
      'vms[1].disks[0].pool',
      'dir pool "local" is on host "host1" but VM "web2" runs on "host2"; a dir pool is opened only on its own host',
    );
    expectIssue(issues, 'vms[1].disks[1].pool', 'unknown pool "gone"');
  });

  it('a spec volume is attached by one VM, naming both', () =>
    expectIssue(
      issuesOf((s) =>
        s.vms.push({
          name: 'web2',
          host: 'host2',
          disks: [{ name: 'd', pool: 'san', volume: 'data' }],
          nics: [{ network: 'iso2' }],
        }),
      ),
      'vms[1].disks[0]',
      'volume "data" of pool "san" is attached by VM "web1" (vms[0].disks[2]) and VM "web2"',
    ));

  it('an ISO may sit in many CD-ROM drives; a template is cloned, never attached', () => {
    const issues = issuesOf((s) => {
      s.vms.push({
        name: 'web2',
        host: 'host2',
        image: { kind: 'volume', pool: 'nas', volume: 'tmpl', clone: true },
        disks: [
          { name: 'install', pool: 'nas', volume: 'debian-iso', media: 'cdrom' },
          { name: 't', pool: 'nas', volume: 'tmpl' },
        ],
        nics: [{ network: 'iso2' }],
      });
    });
    expect(issues.filter((i) => i.path !== 'vms[1].disks[1]')).toEqual([]);
    expectIssue(issues, 'vms[1].disks[1]', 'volume "tmpl" of pool "nas" is a template');
  });

  it('a CD-ROM shows an imported ISO, not a size or a spec volume', () => {
    const issues = issuesOf((s) => {
      s.vms[0].disks.push(
        { name: 'c1', media: 'cdrom' },
        { name: 'c2', pool: 'nas', sizeMiB: 5, media: 'cdrom' },
        { name: 'c3', pool: 'nas', volume: 'copy', media: 'cdrom' },
      );
    });
    expectIssue(issues, 'vms[0].disks[4].media', 'a CD-ROM shows an ISO image');
    expectIssue(issues, 'vms[0].disks[5].media', 'name an imported ISO');
    expectIssue(issues, 'vms[0].disks[6].media', 'volume "copy" (volumes[2]) is a qcow2 disk, not an ISO');
  });

  it('encryption: on the volume for named volumes, only where the pool can', () => {
    const issues = issuesOf((s) => {
      s.vms[0].disks[2].encryption = { secret: 'k' };
      s.vms[0].disks.push({ name: 'e', pool: 'san', sizeMiB: 10, encryption: { secret: 'k' } });
    });
    expectIssue(issues, 'vms[0].disks[2].encryption', 'set encryption on volumes[1] instead');
    expectIssue(issues, 'vms[0].disks[4].encryption', 'iscsi pools cannot encrypt volumes');
  });

  it('a volume made for a VM must not collide with another name', () =>
    expectIssue(
      issuesOf((s) => s.volumes.push({ name: 'web1-logs', pool: 'local', sizeMiB: 1 })),
      'vms[0].disks[1]',
      'VM "web1" makes volume "web1-logs" in pool "local" (<vm>-<disk>), but volumes[3] already names it',
    ));

  it('the name of a volume made for a VM fits a volume name', () =>
    expectIssue(
      issuesOf((s) => {
        s.vms[0].name = 'a-very-long-virtual-machine-nam';
        s.vms[0].disks[1].name = 'logs-of-the-web-server';
      }),
      'vms[0].disks[1]',
      'would be named "a-very-long-virtual-machine-nam-logs-of-the-web-server" (<vm>-<disk>), longer than the 31 characters',
    ));

  it('no boot from an encrypted volume (or a clone of one)', () =>
    expectIssue(
      issuesOf((s) => {
        s.volumes[0].encryption = { secret: 'k' };
      }),
      'vms[0].image.volume',
      'volume "tmpl" is encrypted; a VM cannot boot from an encrypted volume yet',
    ));

  it('linked-clone boot only where the pool has linked clones', () =>
    expectIssue(
      issuesOf((s) => {
        s.vms[0].image = { kind: 'volume', pool: 'san', volume: 'data', clone: true };
        s.vms[0].disks.splice(2, 1);
      }),
      'vms[0].image.clone',
      'iscsi pools cannot make linked clones',
    ));
});

describe('storage validation: storage hosts and the lab', () => {
  it('a storage host runs no VMs or networks', () => {
    const issues = issuesOf((s) => {
      s.vms[0].host = 'san1';
      s.networks.push({ name: 'n2', host: 'san1', mode: 'isolated', cidr: '10.30.0.0/24' });
    });
    expectIssue(issues, 'vms[0].host', '"san1" is a storage host (role: storage) only serves pools');
    expectIssue(issues, 'networks[2].host', '"san1" is a storage host');
  });

  it('multi-host networks default to compute hosts only', () => {
    expect(
      issuesOf((s) => s.networks.push({ name: 'ov', mode: 'vxlan', vni: 10, cidr: '10.40.0.0/24' })),
    ).toEqual([]);
    expectIssue(
      issuesOf((s) => s.networks.push({ name: 'ov', mode: 'vxlan', vni: 10, hosts: ['host1', 'san1'] })),
      'networks[2].hosts[1]',
      'remove it from the list',
    );
  });

  it('lab.storage machines are the storage hosts, and share names and addresses with the other machines', () => {
    let issues = issuesOf((s) => {
      s.hosts[2].role = 'compute';
    });
    expectIssue(issues, 'lab.storage[0].name', 'host "san1" is role: compute');
    issues = issuesOf((s) => {
      s.lab.storage = [];
    });
    expectIssue(issues, 'hosts[2].name', 'storage host "san1" has no machine in lab.storage');
    issues = issuesOf((s) => {
      s.lab.storage.push({ name: 'host1', address: '192.168.50.10' });
    });
    expectIssue(issues, 'lab.storage[1].name', 'duplicate lab machine name "host1"');
    expectIssue(issues, 'lab.storage[1].address', 'duplicate address 192.168.50.10');
    issues = issuesOf((s) => {
      s.lab.storage.push({ name: 'nas9', address: '192.168.50.30' });
    });
    expectIssue(issues, 'lab.storage[1].name', 'lab storage machine "nas9" is not in hosts');
  });
});

describe('storage validation: devices', () => {
  it('a host device goes to one VM of its host', () =>
    expectIssue(
      issuesOf((s) => {
        s.vms[0].devices.push({ pci: '0000:65:00.0' });
        s.vms.push({
          name: 'web2',
          host: 'host1',
          devices: [{ pci: '0000:65:00.0' }],
          nics: [{ network: 'iso' }],
        });
      }),
      'vms[1].devices[0]',
      'pci 0000:65:00.0 on host "host1" is already passed to VM "web1" (vms[0].devices[1])',
    ));

  it('USB devices come from the host’s allow-list', () => {
    expect(issuesOf((s) => s.vms[0].devices.push({ usb: '1050:0407' }))).toEqual([]);
    expectIssue(
      issuesOf((s) => s.vms[0].devices.push({ usb: '1050:0408' })),
      'vms[0].devices[1].usb',
      'USB device 1050:0408 is not in host "host1"\'s allow-list (hosts[0].passthrough.usb: 046d:*, 1050:0407)',
    );
  });
});
