// Automatic balancing replayed round by round: a spike does nothing, a lasting imbalance moves VMs, and loads that
// swing back and forth never move a VM back and forth (hysteresis band, persistence, cooldown).
import { describe, expect, it } from 'vitest';
import {
  AUTO_COOLDOWN_MS,
  AUTO_INTERVAL_MS,
  type AutoMemory,
  autoBalanceRound,
  emptyAutoMemory,
} from './auto.js';
import { type BalanceHost, type BalanceVm, planBalance } from './plan.js';

/** Two or three 4-CPU hosts whose load is their VMs' plus a small base. */
function cluster(load: Record<string, number>, where: Record<string, string>, hostNames = ['h1', 'h2']) {
  const vms: BalanceVm[] = Object.entries(where).map(([name, host]) => ({
    name,
    host,
    cpus: 1,
    memoryMiB: 512,
    cpuBusy: load[name] ?? 0,
  }));
  const hosts: BalanceHost[] = hostNames.map((name) => {
    const mine = vms.filter((v) => v.host === name);
    return {
      name,
      cpus: 4,
      memoryMiB: 8192,
      cpuBusy: 0.1 + mine.reduce((a, v) => a + v.cpuBusy, 0),
      memoryUsedMiB: 1024 + mine.length * 512,
    };
  });
  return { hosts, vms };
}

describe('autoBalanceRound', () => {
  it('a one-round spike does nothing; a lasting imbalance moves a VM', () => {
    const where = { a: 'h1', b: 'h1', c: 'h2' };
    let mem: AutoMemory = emptyAutoMemory();
    const spike = autoBalanceRound(mem, cluster({ a: 1.5, b: 1.5, c: 0 }, where), 0);
    expect(spike.moves).toEqual([]);
    expect(spike.reason).toMatch(/acts once it lasts 2/);
    mem = autoBalanceRound(spike.memory, cluster({ a: 0.1, b: 0.1, c: 0.1 }, where), AUTO_INTERVAL_MS).memory;
    expect(mem.overRounds).toBe(0);
    const r1 = autoBalanceRound(mem, cluster({ a: 1.5, b: 1.5, c: 0 }, where), 2 * AUTO_INTERVAL_MS);
    expect(r1.moves).toEqual([]);
    const r2 = autoBalanceRound(r1.memory, cluster({ a: 1.5, b: 1.5, c: 0 }, where), 3 * AUTO_INTERVAL_MS);
    expect(r2.moves.map((m) => `${m.vm} ${m.from}->${m.to}`)).toEqual(['a h1->h2']);
  });

  it('a spread inside threshold + margin is left alone', () => {
    // 0.5 CPU apart on 4 CPUs: 12.5 points, above 10 but within the margin.
    const r = autoBalanceRound(emptyAutoMemory(), cluster({ a: 0.6, b: 0.1 }, { a: 'h1', b: 'h2' }), 0);
    expect(r.plan.before.spread.cpu).toBeGreaterThan(10);
    expect(r.moves).toEqual([]);
    expect(r.reason).toMatch(/within the threshold/);
  });

  it('loads that swing back and forth never move a VM back (no ping-pong)', () => {
    // web's load swings between the two hosts' other VMs every few rounds; a naive balancer would chase it.
    const where: Record<string, string> = { web: 'h1', x: 'h1', y: 'h2' };
    let mem = emptyAutoMemory();
    const history: string[] = [];
    for (let round = 0; round < 60; round++) {
      const phase = Math.floor(round / 3) % 2;
      const load = phase ? { web: 1.6, x: 0.1, y: 1.6 } : { web: 1.6, x: 1.6, y: 0.1 };
      const r = autoBalanceRound(mem, cluster(load, where), round * AUTO_INTERVAL_MS);
      mem = r.memory;
      for (const m of r.moves) {
        history.push(`${round}:${m.vm}:${m.from}->${m.to}`);
        where[m.vm] = m.to;
      }
    }
    // Each VM moves at most once per cooldown window, and never straight back to where it came from within it.
    const rounds = AUTO_COOLDOWN_MS / AUTO_INTERVAL_MS;
    const last = new Map<string, { round: number; from: string }>();
    for (const h of history) {
      const [r, vm, path] = h.split(':') as [string, string, string];
      const [from, to] = path.split('->') as [string, string];
      const prev = last.get(vm);
      if (prev) expect(Number(r) - prev.round).toBeGreaterThanOrEqual(rounds);
      void to;
      last.set(vm, { round: Number(r), from });
    }
    expect(history.length).toBeGreaterThan(0);
    // Without the hysteresis, re-planning every round chases the swing: many more moves, VMs going back and forth.
    const naiveWhere: Record<string, string> = { web: 'h1', x: 'h1', y: 'h2' };
    let naive = 0;
    for (let round = 0; round < 60; round++) {
      const phase = Math.floor(round / 3) % 2;
      const load = phase ? { web: 1.6, x: 0.1, y: 1.6 } : { web: 1.6, x: 1.6, y: 0.1 };
      for (const m of planBalance(cluster(load, naiveWhere)).moves) {
        naiveWhere[m.vm] = m.to;
        naive++;
      }
    }
    expect(naive).toBeGreaterThan(2 * history.length);
  });
});
