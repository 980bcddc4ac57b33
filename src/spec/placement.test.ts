import { describe, expect, it } from 'vitest';
import { fallbackPlacement, placementFromOwners, placeSpec } from './placement.js';
import { SpecSchema, type UnplacedSpec } from './schema.js';

// biome-ignore lint/suspicious/noExplicitAny: raw spec documents.
type Raw = any;

function spec(
  vms: Raw[],
  hosts: Raw[] = [{ name: 'host1' }, { name: 'host2' }, { name: 'host3' }],
): UnplacedSpec {
  return SpecSchema.parse({
    version: 1,
    hosts,
    networks: [{ name: 'ov', mode: 'vxlan', vni: 100, cidr: '10.9.0.0/24' }],
    vms: vms.map((v) => ({ nics: [{ network: 'ov' }], ...v })),
    cluster: { store: 'etcd' },
  });
}

describe('placementFromOwners', () => {
  it('follows a record written for the same spec host, else the spec host, else leaves the VM out', () => {
    const s = spec([
      { name: 'moved', host: 'host1' },
      { name: 'respecced', host: 'host2' },
      { name: 'scheduled' },
      { name: 'fresh', host: 'host3' },
      { name: 'unplaced' },
    ]);
    const p = placementFromOwners(s, {
      moved: { host: 'host2', specHost: 'host1' },
      // The user moved it in the spec since the record was written: the spec wins.
      respecced: { host: 'host3', specHost: 'host1' },
      scheduled: { host: 'host3' },
    });
    expect(p).toEqual({
      moved: { host: 'host2', source: 'owner' },
      respecced: { host: 'host2', source: 'spec' },
      scheduled: { host: 'host3', source: 'owner' },
      fresh: { host: 'host3', source: 'spec' },
    });
  });

  it('ignores a record naming a host the spec no longer has', () => {
    const s = spec([{ name: 'a', host: 'host1' }, { name: 'b' }]);
    expect(placementFromOwners(s, { a: { host: 'gone', specHost: 'host1' }, b: { host: 'gone' } })).toEqual({
      a: { host: 'host1', source: 'spec' },
    });
  });
});

describe('fallbackPlacement', () => {
  it('spreads by memory placed, in spec order, on compute hosts only, ties to the first host', () => {
    const s = spec(
      [
        { name: 'big', host: 'host1', memoryMiB: 2048 },
        { name: 'a', memoryMiB: 512 },
        { name: 'b' },
        { name: 'c' },
      ],
      [{ name: 'host1' }, { name: 'san', role: 'storage' }, { name: 'host2' }, { name: 'host3' }],
    );
    expect(fallbackPlacement(s, { big: { host: 'host1', source: 'spec' } })).toEqual({
      a: { host: 'host2', source: 'scheduler' },
      b: { host: 'host3', source: 'scheduler' },
      c: { host: 'host3', source: 'scheduler' },
    });
  });

  it('honours ha.hosts, and keeps a group apart while another host is possible', () => {
    const s = spec([
      { name: 'db1', host: 'host1', memoryMiB: 64, ha: { group: 'db' } },
      { name: 'db2', memoryMiB: 4096, ha: { group: 'db' } },
      { name: 'db3', ha: { group: 'db' } },
      { name: 'db4', ha: { group: 'db', hosts: ['host1', 'host2'] } },
      { name: 'only3', ha: { hosts: ['host3'] } },
    ]);
    const known = { db1: { host: 'host1', source: 'spec' as const } };
    const p = fallbackPlacement(s, known);
    expect(p.db2?.host).toBe('host2');
    expect(p.db3?.host).toBe('host3');
    // Every allowed host holds the group: it goes to the least used allowed host anyway (validation refuses this).
    expect(p.db4?.host).toBe('host1');
    expect(p.only3?.host).toBe('host3');
  });
});

describe('placeSpec', () => {
  it('places every VM: placement first, then the spec host, then the fallback, and keeps the spec host apart', () => {
    const s = spec([{ name: 'a', host: 'host1' }, { name: 'b', host: 'host1' }, { name: 'c' }]);
    const placed = placeSpec(s, { a: { host: 'host3', source: 'owner' } });
    expect(placed.vms.map((v) => [v.name, v.host, v.placedBy, v.specHost])).toEqual([
      ['a', 'host3', 'owner', 'host1'],
      ['b', 'host1', 'spec', 'host1'],
      ['c', 'host2', 'scheduler', undefined],
    ]);
    expect('specHost' in placed.vms[2]!).toBe(false);
  });

  it('leaves the host empty when there is no compute host at all', () => {
    const s = spec([{ name: 'a' }], [{ name: 'san', role: 'storage' }]);
    expect(placeSpec(s).vms[0]).toMatchObject({ host: '', placedBy: 'scheduler' });
  });
});
