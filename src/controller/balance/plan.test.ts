// Golden plans (golden/*.golden.txt) pin the planner's choices scenario by scenario; a property test checks its rules
// over random clusters: pins, ha.hosts, groups and room are never broken, a spread out of bounds never grows and one
// within bounds never leaves them, and the plan does not depend on the order of its inputs.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HOST_MEMORY_RESERVE_MIB } from '../../spec/admission.js';
import { formatBalancePlan } from './format.js';
import { type BalanceHost, type BalanceInput, type BalanceVm, planBalance } from './plan.js';

/** A host of 4 CPUs and 8 GiB whose own processes use nothing: its load is its VMs'. */
function host(name: string, over: Partial<BalanceHost> = {}): BalanceHost {
  return { name, cpus: 4, memoryMiB: 8192, cpuBusy: 0, memoryUsedMiB: 0, ...over };
}

function vm(
  name: string,
  on: string,
  cpuBusy: number,
  memoryMiB: number,
  over: Partial<BalanceVm> = {},
): BalanceVm {
  return { name, host: on, cpus: 2, memoryMiB, cpuBusy, ...over };
}

/** Fills each host's measured figures with the sum of its VMs' plus a base use. */
function measured(hosts: BalanceHost[], vms: BalanceVm[], base = { cpu: 0.2, memMiB: 512 }): BalanceHost[] {
  return hosts.map((h) => {
    const mine = vms.filter((v) => v.host === h.name);
    return {
      ...h,
      cpuBusy: base.cpu + mine.reduce((a, v) => a + v.cpuBusy, 0),
      memoryUsedMiB: base.memMiB + mine.reduce((a, v) => a + (v.memoryUsedMiB ?? v.memoryMiB), 0),
    };
  });
}

function plan(hosts: BalanceHost[], vms: BalanceVm[], extra: Partial<BalanceInput> = {}): string {
  return formatBalancePlan(planBalance({ hosts: measured(hosts, vms), vms, ...extra }));
}

describe('planBalance: golden plans', () => {
  it('one busy host, one idle: one move balances', async () => {
    const vms = [vm('a1', 'h1', 1.5, 1024), vm('a2', 'h1', 1.0, 1024), vm('b1', 'h2', 0.2, 1024)];
    await expect(plan([host('h1'), host('h2')], vms)).toMatchFileSnapshot('golden/one-move.golden.txt');
  });

  it('already balanced: nothing to move', async () => {
    const vms = [vm('a1', 'h1', 1, 1024), vm('b1', 'h2', 1.1, 1024)];
    await expect(plan([host('h1'), host('h2')], vms)).toMatchFileSnapshot('golden/balanced.golden.txt');
  });

  it('pinned VMs stay: the movable one goes, and the note says why the rest stay', async () => {
    const vms = [
      vm('db', 'h1', 2.0, 2048, { pinned: 'cpu.pin [2, 3]' }),
      vm('gpu', 'h1', 1.0, 1024, { pinned: 'passthrough device 0000:01:00.0' }),
      vm('web', 'h1', 0.5, 512),
      vm('idle', 'h2', 0.1, 512),
    ];
    await expect(plan([host('h1'), host('h2')], vms)).toMatchFileSnapshot('golden/pinned.golden.txt');
  });

  it('anti-affinity: a VM never joins a member of its group', async () => {
    const vms = [
      vm('web1', 'h1', 1.6, 1024, { group: 'web' }),
      vm('web2', 'h2', 0.2, 1024, { group: 'web' }),
      vm('app', 'h1', 1.0, 1024),
      vm('x', 'h3', 0.6, 1024),
    ];
    await expect(plan([host('h1'), host('h2'), host('h3')], vms)).toMatchFileSnapshot(
      'golden/anti-affinity.golden.txt',
    );
  });

  it('ha.hosts limits the targets', async () => {
    const vms = [
      vm('big', 'h1', 1.2, 1024, { hosts: ['h1', 'h3'] }),
      vm('small', 'h1', 1.2, 1024, { hosts: ['h1'] }),
      vm('other', 'h3', 0.8, 1024),
    ];
    await expect(plan([host('h1'), host('h2'), host('h3')], vms)).toMatchFileSnapshot(
      'golden/ha-hosts.golden.txt',
    );
  });

  it('memory: the idlest host is full, the next one takes it', async () => {
    const vms = [
      vm('m1', 'h1', 0.2, 3072),
      vm('m2', 'h1', 0.2, 3072),
      vm('f1', 'h2', 0.2, 7500, { memoryUsedMiB: 1024 }),
      vm('s1', 'h3', 0.2, 1024),
    ];
    await expect(plan([host('h1'), host('h2'), host('h3')], vms)).toMatchFileSnapshot(
      'golden/memory-room.golden.txt',
    );
  });

  it('four hosts, several moves, hosts of different sizes', async () => {
    const hosts = [
      host('h1', { cpus: 8, memoryMiB: 16384 }),
      host('h2'),
      host('h3'),
      host('h4', { cpus: 2 }),
    ];
    const vms = [
      vm('v1', 'h1', 1.8, 2048),
      vm('v2', 'h1', 1.5, 2048),
      vm('v3', 'h1', 1.2, 1024),
      vm('v4', 'h1', 0.9, 1024),
      vm('v5', 'h2', 1.4, 2048),
      vm('v6', 'h2', 1.1, 1024),
      vm('v7', 'h3', 0.1, 512),
    ];
    await expect(plan(hosts, vms)).toMatchFileSnapshot('golden/four-hosts.golden.txt');
  });

  it('nothing movable: not balanced, the note names each VM and why', async () => {
    const vms = [
      vm('solo', 'h1', 3.0, 1024, { hosts: ['h1'] }),
      vm('g1', 'h1', 0.5, 1024, { group: 'g' }),
      vm('g2', 'h2', 0.1, 1024, { group: 'g' }),
    ];
    await expect(plan([host('h1'), host('h2')], vms)).toMatchFileSnapshot('golden/stuck.golden.txt');
  });

  it('a custom threshold and a move limit', async () => {
    const vms = [
      vm('a', 'h1', 1, 1024),
      vm('b', 'h1', 1, 1024),
      vm('c', 'h1', 1, 1024),
      vm('d', 'h2', 0, 1024),
    ];
    await expect(
      plan([host('h1'), host('h2'), host('h3')], vms, { thresholdPoints: 5, maxMoves: 1 }),
    ).toMatchFileSnapshot('golden/threshold-limit.golden.txt');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Property: the rules hold over random clusters.

const arbCluster = fc
  .record({
    hosts: fc.array(
      fc.record({
        cpus: fc.constantFrom(2, 4, 8),
        memoryMiB: fc.constantFrom(4096, 8192),
        base: fc.double({ min: 0, max: 1, noNaN: true }),
      }),
      { minLength: 2, maxLength: 6 },
    ),
    vms: fc.array(
      fc.record({
        host: fc.nat(5),
        cpuBusy: fc.double({ min: 0, max: 2, noNaN: true }),
        memoryMiB: fc.constantFrom(256, 512, 1024, 2048),
        pinned: fc.boolean(),
        group: fc.option(fc.constantFrom('g1', 'g2'), { nil: undefined }),
        hosts: fc.option(fc.uniqueArray(fc.nat(5), { minLength: 1, maxLength: 3 }), { nil: undefined }),
      }),
      { maxLength: 16 },
    ),
    threshold: fc.constantFrom(5, 10, 20),
  })
  .map(({ hosts, vms, threshold }) => {
    const hs = hosts.map((h, i) => host(`h${i}`, { cpus: h.cpus, memoryMiB: h.memoryMiB, cpuBusy: h.base }));
    const n = hs.length;
    // Start from a placement that respects groups and room, as the scheduler would have made it.
    const committed = new Map<string, number>();
    const groupsAt = new Set<string>();
    const list: BalanceVm[] = [];
    vms.forEach((v, i) => {
      const on = `h${v.host % n}`;
      const used = committed.get(on) ?? 0;
      const cap = hs[v.host % n]!.memoryMiB - HOST_MEMORY_RESERVE_MIB;
      if (used + v.memoryMiB > cap) return;
      if (v.group && groupsAt.has(`${v.group}@${on}`)) return;
      if (v.group) groupsAt.add(`${v.group}@${on}`);
      committed.set(on, used + v.memoryMiB);
      const allowed = v.hosts?.map((x) => `h${x % n}`);
      list.push(
        vm(`v${i}`, on, v.cpuBusy, v.memoryMiB, {
          cpus: 1,
          ...(v.pinned ? { pinned: 'cpu.pin' } : {}),
          ...(v.group ? { group: v.group } : {}),
          ...(allowed ? { hosts: [...new Set([on, ...allowed])] } : {}),
        }),
      );
    });
    const measuredHosts = hs.map((h) => {
      const mine = list.filter((v) => v.host === h.name);
      return {
        ...h,
        cpuBusy: h.cpuBusy + mine.reduce((a, v) => a + v.cpuBusy, 0),
        memoryUsedMiB: 300 + mine.reduce((a, v) => a + v.memoryMiB, 0),
      };
    });
    return { hosts: measuredHosts, vms: list, thresholdPoints: threshold } satisfies BalanceInput;
  });

describe('planBalance: properties', () => {
  it('never breaks pins, ha.hosts, groups or room; never widens a spread out of bounds; order-independent', () => {
    fc.assert(
      fc.property(arbCluster, fc.integer(), (input, seed) => {
        const p = planBalance(input);
        const t = input.thresholdPoints;
        const where = new Map(input.vms.map((v) => [v.name, v.host] as const));
        const byName = new Map(input.vms.map((v) => [v.name, v] as const));
        const mem = new Map<string, number>();
        for (const v of input.vms) mem.set(v.host, (mem.get(v.host) ?? 0) + v.memoryMiB);
        for (const m of p.moves) {
          const v = byName.get(m.vm)!;
          expect(v.pinned).toBeUndefined();
          expect(where.get(m.vm)).toBe(m.from);
          expect(m.to).not.toBe(m.from);
          if (v.hosts) expect(v.hosts).toContain(m.to);
          if (v.group)
            for (const [other, h] of where)
              if (h === m.to && other !== m.vm) expect(byName.get(other)!.group).not.toBe(v.group);
          where.set(m.vm, m.to);
          mem.set(m.from, mem.get(m.from)! - v.memoryMiB);
          mem.set(m.to, (mem.get(m.to) ?? 0) + v.memoryMiB);
          const cap = input.hosts.find((h) => h.name === m.to)!.memoryMiB - HOST_MEMORY_RESERVE_MIB;
          expect(mem.get(m.to)!).toBeLessThanOrEqual(cap);
        }
        // 0.1: the plan's figures are rounded.
        expect(p.after.spread.cpu).toBeLessThanOrEqual(Math.max(p.before.spread.cpu, t) + 0.1);
        expect(p.after.spread.memory).toBeLessThanOrEqual(Math.max(p.before.spread.memory, t) + 0.1);
        if (p.balanced) {
          expect(p.after.spread.cpu).toBeLessThanOrEqual(t + 0.1);
          expect(p.after.spread.memory).toBeLessThanOrEqual(t + 0.1);
        }
        // The same cluster given in another order plans the same moves.
        const shuffle = <T>(xs: readonly T[]) =>
          xs
            .map((x, i) => ({ x, k: (Math.imul(i + 1, 2654435761) ^ seed) >>> 0 }))
            .sort((a, b) => a.k - b.k)
            .map((e) => e.x);
        const q = planBalance({ ...input, hosts: shuffle(input.hosts), vms: shuffle(input.vms) });
        expect(q.moves).toEqual(p.moves);
      }),
      { numRuns: 300 },
    );
  });

  it('plans 1,000 hosts x 20 VMs in bounded steps (the fleet bench times it)', () => {
    const hosts: BalanceHost[] = [];
    const vms: BalanceVm[] = [];
    for (let i = 0; i < 1000; i++) {
      const name = `h${String(i).padStart(4, '0')}`;
      hosts.push(host(name, { cpus: 32, memoryMiB: 262144 }));
      for (let j = 0; j < 20; j++)
        vms.push(vm(`${name}-v${j}`, name, ((i * 7 + j * 13) % 17) / 10 + (i < 10 ? 1 : 0), 4096));
    }
    const p = planBalance({ hosts: measured(hosts, vms), vms });
    expect(p.moves.length).toBeGreaterThan(0);
    expect(p.moves.length).toBeLessThanOrEqual(32);
    expect(p.after.spread.cpu).toBeLessThan(p.before.spread.cpu);
  });
});
