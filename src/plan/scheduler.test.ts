import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HOST_MEMORY_RESERVE_MIB } from '../spec/admission.js';
import { SpecSchema, type UnplacedSpec } from '../spec/schema.js';
import { ADMISSION_SETS_MAX, admissionIssues, type ScheduleHost, scheduleVms } from './scheduler.js';

// biome-ignore lint/suspicious/noExplicitAny: test fixtures are raw spec documents.
type Raw = any;

/** A cluster spec: `hosts` compute hosts of 4 CPUs and `mem` MiB, a vxlan network, and `vms`. */
function spec(
  vms: Raw[],
  opts: { hosts?: number; mem?: number; hostFailures?: number; extra?: Raw } = {},
): UnplacedSpec {
  const n = opts.hosts ?? 3;
  return SpecSchema.parse({
    version: 1,
    hosts: Array.from({ length: n }, (_, i) => ({
      name: `host${i + 1}`,
      capacity: { cpus: 4, memoryMiB: opts.mem ?? 4096 },
    })),
    networks: [{ name: 'ov', mode: 'vxlan', vni: 100, cidr: '10.9.0.0/24' }],
    vms: vms.map((v) => ({ nics: [{ network: 'ov' }], ...v })),
    cluster: { store: 'etcd', admission: { hostFailures: opts.hostFailures ?? 0 } },
    ...opts.extra,
  });
}

const live = (name: string, extra: Partial<ScheduleHost> = {}): ScheduleHost => ({
  name,
  live: true,
  maintenance: false,
  ...extra,
});

describe('scheduleVms', () => {
  it('places VMs without a host on the host with the most free memory, each in turn', () => {
    const s = spec([
      { name: 'pinned', host: 'host1', memoryMiB: 2048 },
      { name: 'a', memoryMiB: 1024 },
      { name: 'b', memoryMiB: 1024 },
      { name: 'c', memoryMiB: 1024 },
    ]);
    const r = scheduleVms({ spec: s, placed: {}, hosts: ['host1', 'host2', 'host3'].map((h) => live(h)) });
    expect(r.issues).toEqual([]);
    // a -> host2 (tie with host3, spec order), b -> host3, c -> host2 or host3 (both 2816 free; host2 first).
    expect(r.placement).toEqual({
      a: { host: 'host2', source: 'scheduler' },
      b: { host: 'host3', source: 'scheduler' },
      c: { host: 'host2', source: 'scheduler' },
    });
    expect(r.decisions.map((d) => [d.kind, d.vm, d.to])).toEqual([
      ['place', 'a', 'host2'],
      ['place', 'b', 'host3'],
      ['place', 'c', 'host2'],
    ]);
    expect(r.decisions[0]!.reason).toMatch(/host2 has the most room \(2816 MiB free after it/);
  });

  it('counts placed VMs where their owner records put them, not where the spec did', () => {
    const s = spec([
      { name: 'moved', host: 'host1', memoryMiB: 3072 },
      { name: 'new', memoryMiB: 1024 },
    ]);
    const r = scheduleVms({
      spec: s,
      placed: { moved: { host: 'host2', source: 'owner' } },
      hosts: ['host1', 'host2', 'host3'].map((h) => live(h)),
    });
    expect(r.placement.new?.host).toBe('host1');
  });

  it('never chooses a failed host, one in maintenance, a storage host or one outside ha.hosts', () => {
    const s = spec([{ name: 'a', ha: { hosts: ['host1', 'host2', 'host3'] } }], { hosts: 4 });
    const withStorage = {
      ...s,
      hosts: [...s.hosts, { ...s.hosts[0]!, name: 'store1', role: 'storage' as const }],
    };
    const r = scheduleVms({
      spec: withStorage,
      placed: {},
      hosts: [
        live('host1', { live: false }),
        live('host2', { maintenance: true }),
        live('host3'),
        live('host4'),
      ],
    });
    // host4 is as roomy but outside ha.hosts; host3 is the only allowed host that is live and not drained.
    expect(r.placement.a?.host).toBe('host3');
  });

  it('keeps a group apart and refuses, with the spec path, a VM no host can take', () => {
    const s = spec(
      [
        { name: 'db1', ha: { group: 'db' } },
        { name: 'db2', ha: { group: 'db' } },
        { name: 'db3', ha: { group: 'db' } },
        { name: 'huge', memoryMiB: 8192 },
      ],
      { hosts: 2 },
    );
    const r = scheduleVms({ spec: s, placed: {}, hosts: [live('host1'), live('host2')] });
    expect(r.placement.db1?.host).not.toBe(r.placement.db2?.host);
    expect(r.placement.db3).toBeUndefined();
    expect(r.placement.huge).toBeUndefined();
    expect(r.issues.map((i) => i.path)).toEqual(['vms[2].host', 'vms[3].host']);
    expect(r.issues[0]!.message).toMatch(/host1: holds db1 of group db; host2: holds db2 of group db/);
    expect(r.issues[1]!.message).toMatch(
      /host1: 3584 MiB free, needs 8192; host2: 3584 MiB free, needs 8192/,
    );
    expect(r.decisions.filter((d) => d.kind !== 'place').map((d) => [d.kind, d.vm])).toEqual([
      ['wait', 'db3'],
      ['no-capacity', 'huge'],
    ]);
  });

  it('places higher priority first when room is short', () => {
    const s = spec(
      [
        { name: 'low', memoryMiB: 3000, ha: { priority: 1 } },
        { name: 'high', memoryMiB: 3000, ha: { priority: 9 } },
      ],
      { hosts: 1 },
    );
    const r = scheduleVms({ spec: s, placed: {}, hosts: [live('host1')] });
    expect(Object.keys(r.placement)).toEqual(['high']);
    expect(r.issues.map((i) => i.path)).toEqual(['vms[0].host']);
  });

  it('places the more constrained VM first among equal priorities', () => {
    const s = spec(
      [
        { name: 'db1', ha: { group: 'db', hosts: ['host1', 'host2'] } },
        { name: 'db2', ha: { group: 'db', hosts: ['host1'] } },
      ],
      { hosts: 2 },
    );
    const r = scheduleVms({ spec: s, placed: {}, hosts: [live('host1'), live('host2')] });
    expect(r.issues).toEqual([]);
    expect(r.placement).toEqual({
      db2: { host: 'host1', source: 'scheduler' },
      db1: { host: 'host2', source: 'scheduler' },
    });
  });

  it('limits vCPUs to 4x the host CPUs and one VM to the host CPUs', () => {
    const s = spec(
      [
        { name: 'a', cpus: 8, memoryMiB: 128 },
        { name: 'b', cpus: 4, memoryMiB: 128 },
      ],
      { hosts: 1 },
    );
    const r = scheduleVms({ spec: s, placed: {}, hosts: [live('host1', { usedCpus: 14 })] });
    expect(r.issues.map((i) => i.message)).toEqual([
      expect.stringMatching(/host1: 4 CPUs, needs 8/),
      expect.stringMatching(/host1: 14 vCPUs on 4 CPUs already \(at most 4x\), needs 4 more/),
    ]);
  });

  it('does not count a stopped VM against memory, and uses the reported capacity without a spec one', () => {
    const s = spec([
      { name: 'off', host: 'host1', memoryMiB: 3000, state: 'stopped' },
      { name: 'kept', host: 'host1', memoryMiB: 3000, ha: { state: 'stopped' } },
      { name: 'new', memoryMiB: 3000 },
    ]);
    const noCap = { ...s, hosts: s.hosts.map(({ capacity: _c, ...h }) => h) };
    const r = scheduleVms({
      spec: noCap,
      placed: {},
      hosts: [
        live('host1', { capacity: { cpus: 4, memoryMiB: 4096 } }),
        live('host2', { capacity: { cpus: 4, memoryMiB: 2048 } }),
        live('host3', { capacity: { cpus: 4, memoryMiB: 2048 } }),
      ],
    });
    expect(r.placement.new?.host).toBe('host1');
  });

  it('without any capacity known spreads by memory placed, as the offline fallback does', () => {
    const s = spec([{ name: 'a', host: 'host1' }, { name: 'b' }, { name: 'c' }]);
    const noCap = { ...s, hosts: s.hosts.map(({ capacity: _c, ...h }) => h) };
    const r = scheduleVms({ spec: noCap, placed: {}, hosts: [] });
    expect(r.placement).toEqual({
      b: { host: 'host2', source: 'scheduler' },
      c: { host: 'host3', source: 'scheduler' },
    });
  });

  it('is deterministic whatever the order of the host list', () => {
    const s = spec(Array.from({ length: 9 }, (_, i) => ({ name: `v${i}`, memoryMiB: 256 + 100 * i })));
    const hosts = ['host1', 'host2', 'host3'].map((h) => live(h));
    const a = scheduleVms({ spec: s, placed: {}, hosts });
    const b = scheduleVms({ spec: s, placed: {}, hosts: [...hosts].reverse() });
    expect(b).toEqual(a);
  });
});

describe('admissionIssues', () => {
  const placed = (s: UnplacedSpec) =>
    Object.fromEntries(s.vms.map((v) => [v.name, { host: v.host!, source: 'spec' as const }]));

  it('is off at 0 and passes when every HA VM of any one host fits on the others', () => {
    const s = spec(
      [
        { name: 'a', host: 'host1', memoryMiB: 1024, ha: {} },
        { name: 'b', host: 'host2', memoryMiB: 1024, ha: {} },
        { name: 'c', host: 'host3', memoryMiB: 1024, ha: {} },
      ],
      { hostFailures: 1 },
    );
    expect(admissionIssues(s, placed(s), {})).toEqual([]);
    expect(admissionIssues(s, placed(s), {}, 2)).toEqual([]);
    expect(admissionIssues(s, placed(s), {}, 0)).toEqual([]);
  });

  it('names each VM that would not restart, the failed hosts and the shortfall in MiB', () => {
    const free = 4096 - HOST_MEMORY_RESERVE_MIB; // 3840 per host
    const s = spec(
      [
        { name: 'a', host: 'host1', memoryMiB: 3000, ha: {} },
        { name: 'b', host: 'host2', memoryMiB: 3000, ha: {} },
        { name: 'c', host: 'host3', memoryMiB: 2000, ha: { priority: 5 } },
        { name: 'plain', host: 'host3', memoryMiB: 1500 },
      ],
      { hostFailures: 1 },
    );
    const issues = admissionIssues(s, placed(s), {});
    // host1 fails: a (3000) needs a host with 3000 free: host2 has 840, host3 has 340 -> short by 2160.
    expect(issues).toEqual([
      {
        path: 'vms[0]',
        message: expect.stringMatching(
          new RegExp(
            `"a" .*could not restart if host1 failed: host2: ${free - 3000} MiB free, needs 3000; host3: ${free - 3500} MiB free, needs 3000; short by ${3000 - (free - 3000)} MiB`,
          ),
        ),
      },
      { path: 'vms[1]', message: expect.stringMatching(/"b" .*if host2 failed/) },
      { path: 'vms[2]', message: expect.stringMatching(/"c" .*if host3 failed.*short by 1160 MiB/) },
    ]);
  });

  it('honours ha.hosts and groups, and places by priority within one failure', () => {
    const s = spec(
      [
        { name: 'db1', host: 'host1', ha: { group: 'db' } },
        { name: 'db2', host: 'host2', ha: { group: 'db' } },
        { name: 'only', host: 'host3', ha: { hosts: ['host3'] } },
      ],
      { hosts: 3, hostFailures: 1 },
    );
    const issues = admissionIssues(s, placed(s), {});
    expect(issues.map((i) => i.path)).toEqual(['vms[2]']);
    expect(issues[0]!.message).toMatch(/no other host it may run on/);
    const s2 = spec(
      [
        { name: 'db1', host: 'host1', ha: { group: 'db' } },
        { name: 'db2', host: 'host2', ha: { group: 'db' } },
      ],
      { hosts: 2, hostFailures: 1 },
    );
    expect(admissionIssues(s2, placed(s2), {}).map((i) => i.message)).toEqual([
      expect.stringMatching(/"db1" .*if host1 failed: host2: holds db2 of group db/),
      expect.stringMatching(/"db2" .*if host2 failed: host1: holds db1 of group db/),
    ]);
  });

  it('uses placement over the spec host, reported capacity without a spec one, and no room on an unknown one', () => {
    const s = spec([{ name: 'a', host: 'host1', memoryMiB: 2000, ha: {} }], { hosts: 2, hostFailures: 1 });
    const noCap = { ...s, hosts: s.hosts.map(({ capacity: _c, ...h }) => h) };
    expect(
      admissionIssues(noCap, { a: { host: 'host2', source: 'owner' } }, {}).map((i) => i.message),
    ).toEqual([expect.stringMatching(/if host2 failed: host1: capacity unknown/)]);
    expect(
      admissionIssues(
        noCap,
        { a: { host: 'host2', source: 'owner' } },
        { host1: { cpus: 2, memoryMiB: 4096 } },
      ),
    ).toEqual([]);
  });

  it('refuses more failures than hosts, and only when there is an HA VM', () => {
    const s = spec([{ name: 'a', host: 'host1', ha: {} }], { hosts: 2, hostFailures: 2 });
    expect(admissionIssues(s, placed(s), {})).toEqual([
      {
        path: 'cluster.admission.hostFailures',
        message: expect.stringMatching(/would leave none of the 2 compute host/),
      },
    ]);
    const s2 = spec([{ name: 'a', host: 'host1' }], { hosts: 2, hostFailures: 2 });
    expect(admissionIssues(s2, placed(s2), {})).toEqual([]);
  });

  it('beyond ADMISSION_SETS_MAX sets tries the hosts with the most HA memory and says so', () => {
    // C(40, 3) = 9880 sets > 1000.
    const vms = [
      { name: 'big', host: 'host7', memoryMiB: 3800, ha: {} },
      { name: 'fill', host: 'host1', memoryMiB: 100, ha: {} },
    ];
    const s = spec(vms, { hosts: 40, mem: 4096, hostFailures: 3 });
    expect(ADMISSION_SETS_MAX).toBeLessThan(9880);
    expect(admissionIssues(s, placed(s), {})).toEqual([]);
    const tight = spec(
      [
        ...vms,
        ...Array.from({ length: 38 }, (_, i) => ({ name: `x${i}`, host: `host${i + 3}`, memoryMiB: 3700 })),
      ],
      { hosts: 40, mem: 4096, hostFailures: 3 },
    );
    const issues = admissionIssues(tight, placed(tight), {});
    expect(issues.map((i) => i.path)).toEqual(['vms[0]']);
    expect(issues[0]!.message).toMatch(
      /the 3 host\(s\) with the most HA memory \(host7, host1, host2\) failed \(too many host sets/,
    );
  });
});

describe('scheduleVms: properties', () => {
  it('never over memory or vCPUs, never a group shared, never a failed, drained or disallowed host', () => {
    const arb = fc.record({
      hosts: fc.array(
        fc.record({
          mem: fc.integer({ min: 512, max: 8192 }),
          cpus: fc.integer({ min: 1, max: 8 }),
          live: fc.boolean(),
          maintenance: fc.boolean(),
        }),
        { minLength: 1, maxLength: 5 },
      ),
      vms: fc.array(
        fc.record({
          mem: fc.integer({ min: 128, max: 4096 }),
          cpus: fc.integer({ min: 1, max: 8 }),
          pinned: fc.option(fc.nat(), { nil: undefined }),
          group: fc.constantFrom(undefined, 'g1', 'g2'),
          allowed: fc.option(fc.array(fc.nat({ max: 4 }), { minLength: 1, maxLength: 3 }), {
            nil: undefined,
          }),
          priority: fc.nat({ max: 3 }),
        }),
        { maxLength: 14 },
      ),
    });
    fc.assert(
      fc.property(arb, ({ hosts, vms }) => {
        const names = hosts.map((_, i) => `host${i + 1}`);
        const s = SpecSchema.parse({
          version: 1,
          hosts: hosts.map((h, i) => ({ name: names[i], capacity: { cpus: h.cpus, memoryMiB: h.mem } })),
          vms: vms.map((v, i) => ({
            name: `v${i}`,
            memoryMiB: v.mem,
            cpus: v.cpus,
            nics: [{ network: 'x' }],
            ...(v.pinned === undefined ? {} : { host: names[v.pinned % names.length] }),
            ha: {
              priority: v.priority,
              ...(v.group ? { group: v.group } : {}),
              ...(v.allowed ? { hosts: [...new Set(v.allowed.map((k) => names[k % names.length]!))] } : {}),
            },
          })),
        });
        const input = hosts.map((h, i) => ({ name: names[i]!, live: h.live, maintenance: h.maintenance }));
        const r = scheduleVms({ spec: s, placed: {}, hosts: input });
        const unplaced = s.vms.filter((v) => v.host === undefined);
        expect(Object.keys(r.placement).length + r.issues.length).toBe(unplaced.length);
        for (const [vm, p] of Object.entries(r.placement)) {
          const i = names.indexOf(p.host);
          expect(hosts[i]!.live && !hosts[i]!.maintenance).toBe(true);
          const spec = s.vms.find((v) => v.name === vm)!;
          expect(spec.ha?.hosts === undefined || spec.ha.hosts.includes(p.host)).toBe(true);
          expect(spec.cpus).toBeLessThanOrEqual(hosts[i]!.cpus);
        }
        // What the scheduler added to a host fits in the room the pinned VMs left there.
        names.forEach((h, i) => {
          const pinned = s.vms.filter((v) => v.host === h);
          const added = s.vms.filter((v) => r.placement[v.name]?.host === h);
          if (!added.length) return;
          const all = [...pinned, ...added];
          const mem = all.reduce((n, v) => n + v.memoryMiB, 0);
          const cpus = all.reduce((n, v) => n + v.cpus, 0);
          expect(mem).toBeLessThanOrEqual(hosts[i]!.mem - HOST_MEMORY_RESERVE_MIB);
          expect(cpus).toBeLessThanOrEqual(hosts[i]!.cpus * 4);
          for (const v of added)
            if (v.ha?.group)
              expect(all.filter((o) => o.ha?.group === v.ha!.group).map((o) => o.name)).toEqual([v.name]);
        });
      }),
      { numRuns: 200 },
    );
  });
});
