import { describe, expect, it } from 'vitest';
import { InvalidSpecError } from '../shared/errors.js';
import { loadSpec } from '../spec/load.js';
import { SpecParser, SpecStore } from './spec-store.js';
import { SqliteStore } from './store/sqlite.js';

const text = (n: number) => `version: 1\nhosts: [{ name: host${n}, agent: "unix:///a" }]\n`;

describe('spec store', () => {
  it('parses a text once and hands out the same spec, keeping only the last few', () => {
    const p = new SpecParser();
    const first = p.parse(text(1), 'a.yaml');
    expect(p.parse(text(1), 'a.yaml')).toBe(first);
    // The source is part of the key: messages name it.
    expect(p.parse(text(1), 'b.yaml')).not.toBe(first);
    for (let i = 2; i <= 10; i++) p.parse(text(i), 'a.yaml');
    const again = p.parse(text(1), 'a.yaml');
    expect(again).not.toBe(first);
    expect(again).toEqual(first);
    expect(() => p.parse('version: 2\n', 'bad.yaml')).toThrow(InvalidSpecError);
  });

  it('places a known text again without parsing it, and still refuses a placement that breaks a rule', () => {
    const cluster = JSON.stringify({
      version: 1,
      cluster: { store: 'etcd', endpoints: ['https://10.0.0.9:2379'] },
      hosts: [
        { name: 'a', agent: 'unix:///a', address: '10.0.0.1' },
        { name: 'b', agent: 'unix:///b', address: '10.0.0.2' },
        { name: 's', agent: 'unix:///s', role: 'storage', address: '10.0.0.3' },
      ],
      networks: [{ name: 'ov', mode: 'vxlan', vni: 100, cidr: '10.20.0.0/16' }],
      vms: [
        { name: 'v1', host: 'a', nics: [{ network: 'ov' }], ha: {} },
        { name: 'v2', host: 'b', nics: [{ network: 'ov' }], ha: {} },
      ],
    });
    const p = new SpecParser();
    expect(p.parse(cluster, 'c.yaml').vms.map((v) => v.host)).toEqual(['a', 'b']);
    // An HA restart moved v1: placed anew from the same parse.
    const moved = p.parse(cluster, 'c.yaml', { v1: { host: 'b', source: 'owner' } });
    expect(moved.vms[0]).toMatchObject({ host: 'b', placedBy: 'owner', specHost: 'a' });
    expect(p.parse(cluster, 'c.yaml', { v1: { host: 'b', source: 'owner' } })).toBe(moved);
    expect(p.parsedTexts).toBe(1);
    // A placement that breaks a rule: refused with the very issues a whole load reports.
    const bad = { v2: { host: 's', source: 'owner' as const } };
    const whole = (() => {
      try {
        loadSpec(cluster, 'c.yaml', bad);
      } catch (e) {
        return (e as InvalidSpecError).issues;
      }
      return [];
    })();
    expect(whole.map((i) => i.path)).toContain('vms[1].host');
    try {
      p.parse(cluster, 'c.yaml', bad);
      expect.unreachable('a VM on a storage host must be refused');
    } catch (e) {
      expect(e).toBeInstanceOf(InvalidSpecError);
      expect((e as InvalidSpecError).issues).toEqual(whole);
    }
    expect(p.parsedTexts).toBe(1);
  });

  it('places a text by owner records once per placement, whichever copy of the text is read', () => {
    const cluster = (extra = '') =>
      JSON.stringify({
        version: 1,
        cluster: { store: 'etcd', endpoints: ['https://10.0.0.9:2379'] },
        hosts: [
          { name: 'a', agent: 'unix:///a', address: '10.0.0.1' },
          { name: 'b', agent: 'unix:///b', address: '10.0.0.2' },
        ],
        networks: [{ name: 'ov', mode: 'vxlan', vni: 100, cidr: '10.20.0.0/16' }],
        vms: [
          { name: 'v1', host: 'a', nics: [{ network: 'ov' }], ha: {} },
          { name: 'v2', host: 'b', nics: [{ network: 'ov' }], ha: {} },
        ],
      }) + extra;
    const p = new SpecParser();
    const plain = p.placed(cluster(), 'c.yaml', {});
    expect(plain).toBe(p.parse(cluster(), 'c.yaml'));
    // Owner records where the spec puts them: placed by them all the same (placedBy says so).
    const same = { v1: { host: 'a', specHost: 'a' }, v2: { host: 'b', specHost: 'b' } };
    const owned = p.placed(cluster(), 'c.yaml', same);
    expect(owned.vms.map((v) => [v.host, v.placedBy])).toEqual([
      ['a', 'owner'],
      ['b', 'owner'],
    ]);
    // Another copy of the same text (as each store read hands out) and equal records: the same object.
    expect(p.placed(`${cluster()}`, 'c.yaml', { ...same })).toBe(owned);
    const moved = p.placed(cluster(), 'c.yaml', { ...same, v1: { host: 'b', specHost: 'a' } });
    expect(moved.vms.map((v) => v.host)).toEqual(['b', 'b']);
    expect(p.placed(cluster(), 'c.yaml', same)).toBe(owned);
    // A record whose spec host is not the VM's (the spec moved it since) is not followed.
    expect(p.placed(cluster(), 'c.yaml', { v1: { host: 'b', specHost: 'x' } })).toBe(plain);
    // Texts read in turn are each still known.
    const other = p.placed(cluster('\n'), 'c.yaml', same);
    expect(other).not.toBe(owned);
    expect(p.placed(cluster(), 'c.yaml', same)).toBe(owned);
    expect(p.placed(cluster('\n'), 'c.yaml', same)).toBe(other);
    expect(p.parsedTexts).toBe(2);
  });

  it('reads the stored spec through the cache, and the last good one for hosts a failed apply dropped', async () => {
    const specs = new SpecStore(new SqliteStore(':memory:'));
    expect(await specs.current()).toBeUndefined();
    expect(await specs.previous()).toBeUndefined();
    await specs.recordAttempt(text(1), 'a.yaml');
    const cur = await specs.current();
    expect(cur?.spec.hosts[0]?.name).toBe('host1');
    expect((await specs.current())?.spec).toBe(cur?.spec);
    // No apply completed yet: the attempted one is all there is.
    expect((await specs.previous())?.hosts[0]?.name).toBe('host1');
    await specs.recordSuccess(text(1), 'a.yaml');
    await specs.recordAttempt(text(2), 'a.yaml');
    expect((await specs.current())?.spec.hosts[0]?.name).toBe('host2');
    expect((await specs.previous())?.hosts[0]?.name).toBe('host1');
    await specs.clear();
    expect(await specs.current()).toBeUndefined();
  });
});
