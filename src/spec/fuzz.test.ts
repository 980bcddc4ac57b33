import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { InvalidSpecError } from '../shared/errors.js';
import { loadSpec } from './load.js';
import { type RawSpec, validSpecArb } from './spec.arbitrary.js';

const runs = { numRuns: 300 };

function issuePaths(raw: RawSpec): string[] {
  try {
    loadSpec(JSON.stringify(raw));
  } catch (e) {
    if (e instanceof InvalidSpecError) return e.issues.map((i) => i.path);
    throw e;
  }
  return [];
}

const badNameArb = fc.oneof(
  fc.constantFrom(
    'a;b',
    'x$(id)',
    'a`id`',
    'a b',
    'a/b',
    'Web',
    'UPPER',
    'a'.repeat(32),
    '-a',
    '1a',
    '',
    'a\nb',
  ),
  fc
    .tuple(
      fc.stringMatching(/^[a-z][a-z0-9]{0,8}$/),
      fc.constantFrom(';', '$(', '`', ' ', '/', '|', '&', '>', '"', "'", 'A', '\\'),
    )
    .map(([n, m]) => `${n}${m}x`),
  fc.stringMatching(/^[a-z][a-z0-9-]{31,40}$/),
);

type Mutation = { apply: (s: RawSpec) => string | undefined; label: string };

/** Mutations that make a valid spec invalid; `apply` returns the path an issue must name (undefined: not applicable). */
const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.tuple(fc.constantFrom('hosts', 'networks', 'vms'), fc.nat(), badNameArb).map(([list, i, bad]) => ({
    label: `bad name ${JSON.stringify(bad)} in ${list}`,
    apply: (s: RawSpec) => {
      if (s[list].length === 0) return undefined;
      const k = i % s[list].length;
      s[list][k].name = bad;
      return `${list}[${k}].name`;
    },
  })),
  fc.nat().map((i) => ({
    label: 'overlapping cidr',
    apply: (s: RawSpec) => {
      const subnets = s.networks.filter((n: RawSpec) => n.host && n.cidr);
      const host = s.hosts[0].name;
      if (subnets.length === 0) {
        s.networks.push({ name: 'zz-a', host, mode: 'isolated', cidr: '172.16.0.0/24' });
        s.networks.push({ name: 'zz-b', host, mode: 'isolated', cidr: '172.16.0.128/25' });
      } else {
        const n = subnets[i % subnets.length];
        s.networks.push({
          name: 'zz-b',
          host: n.host,
          mode: 'isolated',
          cidr: `${n.cidr.split('.').slice(0, 2).join('.')}.0.0/12`,
        });
      }
      return `networks[${s.networks.length - 1}].cidr`;
    },
  })),
  fc.constantFrom('hosts', 'networks', 'vms').map((list) => ({
    label: `duplicate name in ${list}`,
    apply: (s: RawSpec) => {
      if (s[list].length === 0) return undefined;
      s[list].push(structuredClone(s[list][0]));
      return `${list}[${s[list].length - 1}].name`;
    },
  })),
  fc
    .tuple(fc.constantFrom('vm.host', 'network.host', 'nic.network', 'forward.vm'), fc.nat())
    .map(([what, i]) => ({
      label: `dangling ${what}`,
      apply: (s: RawSpec) => {
        if (what === 'vm.host' || what === 'nic.network') {
          if (s.vms.length === 0) return undefined;
          const k = i % s.vms.length;
          if (what === 'vm.host') {
            s.vms[k].host = 'zz-missing';
            return `vms[${k}].host`;
          }
          const j = i % s.vms[k].nics.length;
          delete s.vms[k].nics[j].trunk;
          s.vms[k].nics[j].network = 'zz-missing';
          return `vms[${k}].nics[${j}].network`;
        }
        if (what === 'network.host') {
          const k = i % s.networks.length;
          s.networks[k].host = 'zz-missing';
          return `networks[${k}].host`;
        }
        const k = s.networks.findIndex((n: RawSpec) => n.forwards?.length > 0);
        if (k < 0) return undefined;
        s.networks[k].forwards[0].vm = 'zz-missing';
        return `networks[${k}].forwards[0].vm`;
      },
    })),
  fc.tuple(fc.nat(), fc.constantFrom('172.31.255.5', '10.250.0.7', '0.0.0.1')).map(([i, ip]) => ({
    label: `fixed ip ${ip} outside the cidr`,
    apply: (s: RawSpec) => {
      const subnetNames = new Set(s.networks.filter((n: RawSpec) => n.cidr).map((n: RawSpec) => n.name));
      const nics: string[] = [];
      s.vms.forEach((vm: RawSpec, vi: number) => {
        vm.nics.forEach((nic: RawSpec, ni: number) => {
          if (subnetNames.has(nic.network)) nics.push(`${vi}/${ni}`);
        });
      });
      if (nics.length === 0) return undefined;
      const [vi, ni] = nics[i % nics.length]!.split('/').map(Number) as [number, number];
      s.vms[vi].nics[ni].ip = ip;
      return `vms[${vi}].nics[${ni}].ip`;
    },
  })),
);

const pick = (s: RawSpec, i: number, test: (n: RawSpec) => boolean): number | undefined => {
  const ks = s.networks.flatMap((n: RawSpec, k: number) => (test(n) ? [k] : []));
  return ks.length === 0 ? undefined : ks[i % ks.length];
};

/** Mutations of multi-host networks: bad VLAN ids, VLANs outside their environment, duplicate VNIs, MTUs. */
const multiHostMutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.tuple(fc.nat(), fc.constantFrom(0, 4095, 5000, -3, 1.5)).map(([i, id]) => ({
    label: `bad VLAN id ${id}`,
    apply: (s: RawSpec) => {
      const k = pick(s, i, (n) => n.mode === 'vlan');
      if (k === undefined) return undefined;
      s.networks[k].vlan = id;
      return `networks[${k}].vlan`;
    },
  })),
  fc.nat().map((i) => ({
    label: 'VLAN outside its environment',
    apply: (s: RawSpec) => {
      const k = pick(s, i, (n) => n.mode === 'vlan' && n.environment);
      if (k === undefined) return undefined;
      const n = s.networks[k];
      n.vlan = n.environment === 'production' ? 250 : 150;
      return `networks[${k}].vlan`;
    },
  })),
  fc.nat().map((i) => ({
    label: 'unknown environment',
    apply: (s: RawSpec) => {
      const k = pick(s, i, (n) => n.mode === 'vlan');
      if (k === undefined) return undefined;
      s.networks[k].environment = 'zz-env';
      return `networks[${k}].environment`;
    },
  })),
  fc.nat().map((i) => ({
    label: 'duplicate VNI',
    apply: (s: RawSpec) => {
      const k = pick(s, i, (n) => n.mode === 'vxlan');
      if (k === undefined) return undefined;
      s.networks.push({ ...structuredClone(s.networks[k]), name: 'zz-dup' });
      return `networks[${s.networks.length - 1}].vni`;
    },
  })),
  fc.tuple(fc.nat(), fc.constantFrom(9000, 8951)).map(([i, mtu]) => ({
    label: `vxlan MTU ${mtu} beyond the underlay`,
    apply: (s: RawSpec) => {
      const k = pick(s, i, (n) => n.mode === 'vxlan');
      if (k === undefined) return undefined;
      s.networks[k].mtu = mtu;
      return `networks[${k}].mtu`;
    },
  })),
  fc.nat().map((i) => ({
    label: 'NIC on a multi-host network that does not reach its VM host',
    apply: (s: RawSpec) => {
      const k = pick(s, i, (n) => n.hosts?.length > 0 && n.hosts.length < s.hosts.length);
      if (k === undefined) return undefined;
      const out = s.hosts.find((h: RawSpec) => !s.networks[k].hosts.includes(h.name)).name;
      s.vms.push({ name: 'zz-vm', host: out, nics: [{ network: s.networks[k].name }] });
      return `vms[${s.vms.length - 1}].nics[0].network`;
    },
  })),
);

/** Mutations of storage: dangling pools, iscsi without CHAP, volumes without a size, VMs on a storage host, shared volumes. */
const storageMutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.nat().map((i) => ({
    label: 'pool disk in an unknown pool',
    apply: (s: RawSpec) => {
      const disks = s.vms.flatMap((vm: RawSpec, k: number) =>
        (vm.disks ?? []).flatMap((d: RawSpec, j: number) => (d.pool ? [[k, j]] : [])),
      );
      if (disks.length === 0) return undefined;
      const [k, j] = disks[i % disks.length];
      s.vms[k].disks[j].pool = 'zz-missing';
      return `vms[${k}].disks[${j}].pool`;
    },
  })),
  fc.constant({
    label: 'iscsi pool open to anyone',
    apply: (s: RawSpec) => {
      const k = (s.pools ?? []).findIndex((p: RawSpec) => p.type === 'iscsi');
      if (k < 0) return undefined;
      delete s.pools[k].chap;
      return `pools[${k}].chap`;
    },
  }),
  fc.constant({
    label: 'volume without a size',
    apply: (s: RawSpec) => {
      if (!s.volumes?.length) return undefined;
      delete s.volumes[0].sizeMiB;
      return 'volumes[0].sizeMiB';
    },
  }),
  fc.nat().map((i) => ({
    label: 'VM on a storage host',
    apply: (s: RawSpec) => {
      const storage = s.hosts.find((h: RawSpec) => h.role === 'storage');
      if (!storage || s.vms.length === 0) return undefined;
      const k = i % s.vms.length;
      s.vms[k].host = storage.name;
      return `vms[${k}].host`;
    },
  })),
  fc.constant({
    label: 'one volume attached by two VMs',
    apply: (s: RawSpec) => {
      if (!s.volumes?.some((v: RawSpec) => v.name === 'shared') || s.vms.length === 0) return undefined;
      const k = s.vms.length - 1;
      s.vms[k].disks = [...(s.vms[k].disks ?? []), { name: 'zz-a', pool: 'piscsi', volume: 'shared' }];
      s.vms[k].disks.push({ name: 'zz-b', pool: 'piscsi', volume: 'shared' });
      return `vms[${k}].disks[${s.vms[k].disks.length - 1}]`;
    },
  }),
);

function expectOnlyInvalidSpecError(text: string) {
  try {
    loadSpec(text);
  } catch (e) {
    if (!(e instanceof InvalidSpecError))
      throw new Error(`loadSpec threw ${String(e)} for ${JSON.stringify(text)}`);
    expect(e.issues.length).toBeGreaterThan(0);
  }
}

describe('spec properties', () => {
  it('random valid specs always validate, as JSON and as YAML', () => {
    fc.assert(
      fc.property(validSpecArb, (raw) => {
        expect(issuePaths(raw)).toEqual([]);
        expect(loadSpec(stringify(raw)).hosts.length).toBe(raw.hosts.length);
      }),
      runs,
    );
  });

  it('mutated specs are refused with an issue naming the field', () => {
    fc.assert(
      fc.property(validSpecArb, mutationArb, (raw, m) => {
        const path = m.apply(raw);
        fc.pre(path !== undefined);
        expect(issuePaths(raw), m.label).toContain(path);
      }),
      { numRuns: 500 },
    );
  });

  it('mutated multi-host networks are refused at the right path', () => {
    fc.assert(
      fc.property(validSpecArb, multiHostMutationArb, (raw, m) => {
        const path = m.apply(raw);
        fc.pre(path !== undefined);
        expect(issuePaths(raw), m.label).toContain(path);
      }),
      { numRuns: 400 },
    );
  });

  it('mutated storage is refused at the right path', () => {
    fc.assert(
      fc.property(validSpecArb, storageMutationArb, (raw, m) => {
        const path = m.apply(raw);
        fc.pre(path !== undefined);
        expect(issuePaths(raw), m.label).toContain(path);
      }),
      { numRuns: 300 },
    );
  });

  it('generates multi-host specs often enough to matter', () => {
    const samples = fc.sample(validSpecArb, { numRuns: 200, seed: 42 });
    const modes = new Set(samples.flatMap((s: RawSpec) => s.networks.map((n: RawSpec) => n.mode)));
    expect([...modes].sort()).toEqual(['bridge', 'isolated', 'nat', 'vlan', 'vxlan']);
    expect(
      samples.some((s: RawSpec) => s.vms.some((v: RawSpec) => v.nics.some((n: RawSpec) => n.trunk))),
    ).toBe(true);
  });

  it('loadSpec throws nothing but InvalidSpecError on arbitrary text', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 200 }), expectOnlyInvalidSpecError), runs);
    fc.assert(
      fc.property(
        fc.array(
          fc.constantFrom(
            '{',
            '}',
            '[',
            ']',
            ':',
            '- ',
            '\n',
            '  ',
            '&a ',
            '*a',
            '!!',
            'version',
            '1',
            'hosts',
            '"',
            '#',
            ',',
            '? ',
            '|',
            'x',
          ),
        ),
        (parts) => expectOnlyInvalidSpecError(parts.join('')),
      ),
      runs,
    );
  });

  it('loadSpec throws nothing but InvalidSpecError on arbitrary JSON-ish values', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        expectOnlyInvalidSpecError(JSON.stringify(v) ?? '');
        expectOnlyInvalidSpecError(stringify(v));
      }),
      runs,
    );
  });

  it('loadSpec throws nothing but InvalidSpecError when any node of a valid spec is replaced', () => {
    fc.assert(
      fc.property(
        validSpecArb,
        fc.array(fc.nat(), { minLength: 1, maxLength: 6 }),
        fc.jsonValue({ maxDepth: 2 }),
        (raw, picks, value) => {
          let node: RawSpec = raw;
          for (const [d, p] of picks.entries()) {
            const keys = Object.keys(node);
            if (keys.length === 0) break;
            const key = Array.isArray(node) ? p % node.length : keys[p % keys.length]!;
            const child = node[key];
            if (d === picks.length - 1 || child === null || typeof child !== 'object') {
              node[key] = value;
              break;
            }
            node = child;
          }
          expectOnlyInvalidSpecError(JSON.stringify(raw));
        },
      ),
      runs,
    );
  });
});
