// The HA engine replayed with a fake clock: each scenario runs rounds every 500 ms against a simulated cluster (a
// manager that carries out every action by compare-and-set, as manager.ts does against the owner records) and its
// decision log is compared with a golden file (golden/*.golden.txt). A property test checks the safety rules over
// random clusters and failure sequences.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TARGET_LEASE_MIN_AGE_MS } from '../../shared/cluster.js';
import { HOST_MEMORY_RESERVE_MIB } from '../../spec/admission.js';
import type { HaPolicy } from '../../spec/schema.js';
import { decide, FLAP_STABLE_MS, formatDecision } from './decide.js';
import type { HaAction, HaHostInput, HaMemory, HaVmInput } from './types.js';

const ROUND_MS = 500;

interface SimHost {
  name: string;
  live: boolean;
  /** When its current lease appeared (ms). */
  leaseSince: number;
  maintenance: boolean;
  capacity: { cpus: number; memoryMiB: number };
}

type SimVm = Omit<HaVmInput, 'policy'> & { policy?: Partial<HaPolicy> | undefined };

const policy = (p: Partial<HaPolicy> = {}): HaPolicy => ({ state: 'started', priority: 0, ...p });

/** A cluster, a manager that acts on every action, and the engine's log. */
class Sim {
  t = 0;
  memory: HaMemory = { hosts: {} };
  log: string[] = [];
  /** Every assign carried out: vm -> count. */
  assigns = new Map<string, number>();
  private token = 100;
  hosts: SimHost[];
  vms: SimVm[];

  constructor(
    hosts: Array<Partial<SimHost> & { name: string }>,
    vms: Array<Partial<SimVm> & { name: string; on?: string }>,
  ) {
    // Leases older than the target age at t=0 unless a scenario says otherwise.
    this.hosts = hosts.map((h) => ({
      live: true,
      leaseSince: -60_000,
      maintenance: false,
      capacity: { cpus: 4, memoryMiB: 4096 },
      ...h,
    }));
    this.vms = vms.map(({ on, ...v }) => ({
      cpus: 1,
      memoryMiB: 1024,
      userStopped: false,
      policy: undefined,
      ...v,
      ...(on ? { owner: { host: on, token: String(++this.token) } } : {}),
    }));
  }

  host(name: string): SimHost {
    const h = this.hosts.find((x) => x.name === name);
    if (!h) throw new Error(`no host ${name}`);
    return h;
  }

  vm(name: string): SimVm {
    const v = this.vms.find((x) => x.name === name);
    if (!v) throw new Error(`no vm ${name}`);
    return v;
  }

  /** The host's lease ends (killed, or partitioned and its lease ran out). */
  loseLease(name: string) {
    this.host(name).live = false;
  }

  /** The host holds a new lease from now. */
  newLease(name: string) {
    Object.assign(this.host(name), { live: true, leaseSince: this.t });
  }

  inputs() {
    const hosts: HaHostInput[] = this.hosts.map((h) => ({
      name: h.name,
      live: h.live,
      ...(h.live ? { leaseAgeMs: this.t - h.leaseSince } : {}),
      maintenance: h.maintenance,
      capacity: h.capacity,
    }));
    const vms: HaVmInput[] = this.vms.map((v) => ({ ...v, policy: v.policy ? policy(v.policy) : undefined }));
    return { now: this.t, hosts, vms, admissionHostFailures: 0 };
  }

  /** One round: decide, log, carry out the actions (compare-and-set on the token), advance the clock. */
  round(): HaAction[] {
    const r = decide(this.memory, this.inputs());
    this.memory = r.memory;
    for (const d of r.decisions) this.log.push(formatDecision(d));
    for (const a of r.actions) {
      if (a.kind !== 'assign') continue;
      const vm = this.vm(a.vm);
      if ((vm.owner?.token ?? null) !== a.expected) continue;
      vm.owner = { host: a.to, token: String(++this.token) };
      this.assigns.set(a.vm, (this.assigns.get(a.vm) ?? 0) + 1);
    }
    this.t += ROUND_MS;
    return r.actions;
  }

  /** Runs rounds until `endMs`, applying each event at the first round at or after its time. */
  run(endMs: number, events: Array<[number, (s: Sim) => void]> = []) {
    const pending = [...events].sort((a, b) => a[0] - b[0]);
    while (this.t <= endMs) {
      while (pending.length && pending[0]![0] <= this.t) pending.shift()![1](this);
      this.round();
    }
    return this;
  }

  /** The log with the owners at the end, as the golden files hold it. */
  text(): string {
    const owners = this.vms
      .map((v) => `${v.name}@${v.owner?.host ?? '-'}#${v.owner?.token ?? '-'}`)
      .join(' ');
    return `${this.log.join('\n')}\nend t=${(this.t / 1000).toFixed(1)}s owners: ${owners}\n`;
  }
}

const three = () => [{ name: 'host1' }, { name: 'host2' }, { name: 'host3' }];

describe('decide: golden decision logs', () => {
  it('one host lost: started VMs restart by priority, stopped ones move, unprotected ones stay down', async () => {
    const sim = new Sim(three(), [
      { name: 'app', on: 'host1', policy: {} },
      { name: 'web', on: 'host2', policy: {} },
      { name: 'db', on: 'host2', policy: { priority: 10 }, memoryMiB: 2048 },
      { name: 'batch', on: 'host2', policy: { state: 'stopped' } },
      { name: 'scratch', on: 'host2' },
      { name: 'legacy', on: 'host2', policy: { state: 'disabled' } },
    ]).run(10_000, [[5_000, (s) => s.loseLease('host2')]]);
    expect(sim.vm('web').owner?.host).not.toBe('host2');
    expect(sim.vm('db').owner?.host).not.toBe('host2');
    expect(sim.vm('scratch').owner?.host).toBe('host2');
    expect(Math.max(...sim.assigns.values())).toBe(1);
    await expect(sim.text()).toMatchFileSnapshot('golden/one-host-lost.golden.txt');
  });

  it('partition: the isolated host is failed once its lease ends, recovers later, and nothing restarts twice', async () => {
    const sim = new Sim(three(), [
      { name: 'web', on: 'host3', policy: {} },
      { name: 'api', on: 'host3', policy: { group: 'front' } },
      { name: 'api2', on: 'host1', policy: { group: 'front' } },
    ]).run(40_000, [
      // Partitioned at t=2s: its agent self-fences at ~t=10s, etcd ends its lease at ~t=12s.
      [12_000, (s) => s.loseLease('host3')],
      [25_000, (s) => s.newLease('host3')],
    ]);
    expect([...sim.assigns.values()].every((n) => n === 1)).toBe(true);
    expect(sim.vm('api').owner?.host).toBe('host2');
    expect(sim.log.filter((l) => l.includes('host-recovered'))).toHaveLength(1);
    await expect(sim.text()).toMatchFileSnapshot('golden/partition.golden.txt');
  });

  it('flapping: a host failing 3 times in 10 minutes is no target until up 2 minutes', async () => {
    const sim = new Sim(three(), [
      { name: 'web', on: 'host2', policy: {} },
      { name: 'pinned', on: 'host1', policy: { hosts: ['host1', 'host2'] } },
    ]).run(160_000, [
      [2_000, (s) => s.loseLease('host2')],
      [6_000, (s) => s.newLease('host2')],
      [10_000, (s) => s.loseLease('host2')],
      [14_000, (s) => s.newLease('host2')],
      [18_000, (s) => s.loseLease('host2')],
      [22_000, (s) => s.newLease('host2')],
      [30_000, (s) => s.loseLease('host1')],
    ]);
    // pinned may only go to host2, which is damped until t = 22 s + 2 min.
    const restart = sim.log.find((l) => l.includes('restart pinned'));
    expect(restart).toBeDefined();
    expect(Number(/^t=([\d.]+)s/.exec(restart!)![1]) * 1000).toBeGreaterThanOrEqual(22_000 + FLAP_STABLE_MS);
    expect(sim.log.filter((l) => l.includes('wait pinned'))).toHaveLength(1);
    await expect(sim.text()).toMatchFileSnapshot('golden/flapping.golden.txt');
  });

  it('two failures in a row: VMs moved once move again, and those without room wait', async () => {
    const sim = new Sim(three(), [
      { name: 'a', on: 'host1', policy: {}, memoryMiB: 1536 },
      { name: 'b', on: 'host1', policy: {}, memoryMiB: 1536 },
      { name: 'c', on: 'host2', policy: {}, memoryMiB: 1024 },
      { name: 'd', on: 'host3', policy: {}, memoryMiB: 1024 },
    ]).run(20_000, [
      [3_000, (s) => s.loseLease('host1')],
      [10_000, (s) => s.loseLease('host2')],
    ]);
    await expect(sim.text()).toMatchFileSnapshot('golden/two-failures.golden.txt');
  });

  it('no capacity left: said once, retried every round, restarted when a new host has held its lease 3 s', async () => {
    const sim = new Sim(
      [...three(), { name: 'host4', live: false }],
      [
        { name: 'big1', on: 'host1', policy: {}, memoryMiB: 3072 },
        { name: 'big2', on: 'host2', policy: {}, memoryMiB: 3072 },
        { name: 'big3', on: 'host3', policy: {}, memoryMiB: 3072 },
      ],
    ).run(20_000, [
      [2_000, (s) => s.loseLease('host3')],
      [10_000, (s) => s.newLease('host4')],
    ]);
    expect(sim.log.filter((l) => l.includes('no-capacity big3'))).toHaveLength(1);
    expect(sim.vm('big3').owner?.host).toBe('host4');
    await expect(sim.text()).toMatchFileSnapshot('golden/no-capacity.golden.txt');
  });

  it('anti-affinity: a restart that would share a host with its group waits', async () => {
    const sim = new Sim(three(), [
      { name: 'db1', on: 'host1', policy: { group: 'db' } },
      { name: 'db2', on: 'host2', policy: { group: 'db' } },
      { name: 'db3', on: 'host3', policy: { group: 'db' } },
      { name: 'web', on: 'host1', policy: {} },
    ]).run(12_000, [
      [2_000, (s) => s.loseLease('host1')],
      [8_000, (s) => s.newLease('host1')],
    ]);
    expect(sim.vm('db1').owner?.host).toBe('host1');
    await expect(sim.text()).toMatchFileSnapshot('golden/anti-affinity.golden.txt');
  });

  it('priority order under short capacity: higher first, the rest waits', async () => {
    const sim = new Sim(three(), [
      { name: 'low', on: 'host3', policy: { priority: 1 }, memoryMiB: 2048 },
      { name: 'mid', on: 'host3', policy: { priority: 50 }, memoryMiB: 2048 },
      { name: 'high', on: 'host3', policy: { priority: 100 }, memoryMiB: 2048 },
      { name: 'fill1', on: 'host1', policy: {}, memoryMiB: 1536 },
      { name: 'fill2', on: 'host2', policy: {}, memoryMiB: 1536 },
    ]).run(5_000, [[1_000, (s) => s.loseLease('host3')]]);
    expect(sim.vm('low').owner?.host).toBe('host3');
    expect(sim.vm('high').owner?.host).not.toBe('host3');
    expect(sim.vm('mid').owner?.host).not.toBe('host3');
    await expect(sim.text()).toMatchFileSnapshot('golden/priority.golden.txt');
  });

  it('maintenance drain: protected VMs move off, unprotected ones are named, nothing comes back on', async () => {
    const sim = new Sim(three(), [
      { name: 'web', on: 'host1', policy: {} },
      { name: 'off', on: 'host1', policy: { state: 'stopped' } },
      { name: 'pet', on: 'host1' },
      { name: 'api', on: 'host2', policy: {} },
    ]).run(12_000, [
      [2_000, (s) => Object.assign(s.host('host1'), { maintenance: true })],
      [5_000, (s) => s.loseLease('host2')],
      [10_000, (s) => Object.assign(s.host('host1'), { maintenance: false })],
    ]);
    expect(sim.vm('api').owner?.host).toBe('host3');
    expect(sim.vm('web').owner?.host).not.toBe('host1');
    await expect(sim.text()).toMatchFileSnapshot('golden/maintenance.golden.txt');
  });

  it('a user-stopped VM is not restarted: its owner moves, it stays stopped', async () => {
    const sim = new Sim(three(), [
      { name: 'web', on: 'host2', policy: {}, userStopped: true },
      { name: 'api', on: 'host2', policy: {} },
    ]).run(5_000, [[1_000, (s) => s.loseLease('host2')]]);
    expect(sim.vm('web').owner?.host).not.toBe('host2');
    expect(sim.log.some((l) => l.startsWith('t=1.0s keep-stopped web'))).toBe(true);
    expect(sim.log.some((l) => l.includes('restart web'))).toBe(false);
    await expect(sim.text()).toMatchFileSnapshot('golden/user-stopped.golden.txt');
  });

  it('a new active controller: leases younger than 3 s are waited for before any restart', async () => {
    const sim = new Sim(
      [
        { name: 'host1', leaseSince: -500 },
        { name: 'host2', live: false },
        { name: 'host3', leaseSince: 0 },
      ],
      [{ name: 'web', on: 'host2', policy: {} }],
    ).run(6_000);
    const restart = sim.log.find((l) => l.includes('restart web'));
    expect(restart).toMatch(/^t=2\.5s restart web host2 -> host1/);
    await expect(sim.text()).toMatchFileSnapshot('golden/young-lease.golden.txt');
  });
});

describe('decide: rounds', () => {
  it('is idempotent: a round whose actions were not carried out decides the same again, one that was decides nothing', () => {
    const sim = new Sim(three(), [{ name: 'web', on: 'host2', policy: {} }]);
    sim.loseLease('host2');
    const inputs = sim.inputs();
    const first = decide({ hosts: {} }, inputs);
    expect(first.actions).toEqual([
      {
        kind: 'assign',
        vm: 'web',
        to: 'host1',
        from: 'host2',
        expected: sim.vm('web').owner!.token,
        start: true,
      },
    ]);
    const again = decide(first.memory, { ...inputs, now: inputs.now + ROUND_MS });
    expect(again.actions).toEqual(first.actions);
    expect(again.decisions.map((d) => d.kind)).toEqual(['restart']);
    const moved = inputs.vms.map((v) => ({ ...v, owner: { host: 'host1', token: '999' } }));
    const after = decide(first.memory, { ...inputs, vms: moved, now: inputs.now + ROUND_MS });
    expect(after.actions).toEqual([]);
    expect(after.decisions).toEqual([]);
  });

  it('a VM whose only allowed host failed waits for it, said once, and stays owned there', () => {
    const sim = new Sim(three(), [{ name: 'web', on: 'host2', policy: { hosts: ['host2'] } }]).run(3_000, [
      [1_000, (s) => s.loseLease('host2')],
    ]);
    expect(sim.log.filter((l) => l.includes('web'))).toEqual([
      't=1.0s wait web host2: host2 failed; no host can take it now: no other host it may run on',
    ]);
    expect(sim.assigns.size).toBe(0);
  });

  it('treats an owner host the spec no longer has as failed for protected VMs', () => {
    const sim = new Sim(three(), [
      { name: 'web', on: 'gone', policy: {} },
      { name: 'pet', on: 'gone' },
    ]).run(1_000);
    expect(sim.log).toEqual([
      't=0.0s keep-stopped pet gone: HA is disabled for it: it stays down with gone, no longer a host of the spec',
      't=0.0s restart web gone -> host1: gone is no longer a host of the spec: host1 has the most room (2816 MiB free after it, 1/16 vCPUs)',
    ]);
  });

  it('restarts the more constrained VM first among equal priorities', () => {
    const sim = new Sim(
      [{ name: 'host1' }, { name: 'host2' }, { name: 'host3', capacity: { cpus: 4, memoryMiB: 8192 } }],
      [
        { name: 'a', on: 'host3', policy: {}, memoryMiB: 3000 },
        { name: 'b', on: 'host3', policy: { hosts: ['host1', 'host3'] }, memoryMiB: 3000 },
      ],
    ).run(1_000, [[0, (s) => s.loseLease('host3')]]);
    expect(sim.vm('b').owner?.host).toBe('host1');
    expect(sim.vm('a').owner?.host).toBe('host2');
  });

  it('never targets a host whose lease is younger than the minimum', () => {
    const sim = new Sim(
      [{ name: 'host1', leaseSince: 0 }, { name: 'host2' }],
      [{ name: 'web', on: 'host2', policy: {} }],
    );
    sim.loseLease('host2');
    sim.t = TARGET_LEASE_MIN_AGE_MS - 1;
    expect(sim.round()).toEqual([]);
    expect(sim.round()).toHaveLength(1);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Property: safety over random clusters and failure sequences.

const hostNames = ['h1', 'h2', 'h3', 'h4', 'h5'];

const clusterArb = fc.record({
  hosts: fc.integer({ min: 2, max: 5 }).chain((n) =>
    fc.tuple(
      ...hostNames.slice(0, n).map((name) =>
        fc.record({
          name: fc.constant(name),
          capacity: fc.record({
            cpus: fc.integer({ min: 1, max: 8 }),
            memoryMiB: fc.integer({ min: 512, max: 8192 }),
          }),
        }),
      ),
    ),
  ),
  vms: fc.array(
    fc.record({
      cpus: fc.integer({ min: 1, max: 4 }),
      memoryMiB: fc.integer({ min: 128, max: 3072 }),
      host: fc.integer({ min: 0, max: 4 }),
      state: fc.constantFrom('started', 'stopped', 'disabled', undefined),
      priority: fc.integer({ min: 0, max: 3 }),
      group: fc.constantFrom(undefined, 'g1', 'g2'),
      allowed: fc.option(fc.subarray(hostNames, { minLength: 1 }), { nil: undefined }),
      userStopped: fc.boolean(),
    }),
    { maxLength: 12 },
  ),
  // Per step: a host index and what happens to it; steps are 500 ms apart, some steps wait several rounds.
  steps: fc.array(
    fc.record({
      host: fc.integer({ min: 0, max: 4 }),
      event: fc.constantFrom('lose', 'lease', 'maintenance-on', 'maintenance-off', 'nothing'),
      rounds: fc.integer({ min: 1, max: 12 }),
    }),
    { minLength: 1, maxLength: 25 },
  ),
});

describe('decide: safety properties', () => {
  it('never two owners, never a failed, drained or young target, never over capacity, never a group shared; settles', () => {
    fc.assert(
      fc.property(clusterArb, ({ hosts, vms, steps }) => {
        const sim = new Sim(
          hosts,
          vms.map((v, i) => ({
            name: `vm${i}`,
            on: hosts[v.host % hosts.length]!.name,
            cpus: v.cpus,
            memoryMiB: v.memoryMiB,
            userStopped: v.userStopped,
            policy:
              v.state === undefined
                ? undefined
                : { state: v.state, priority: v.priority, group: v.group, hosts: v.allowed },
          })),
        );
        for (const step of steps) {
          const h = sim.hosts[step.host % sim.hosts.length]!;
          if (step.event === 'lose') sim.loseLease(h.name);
          else if (step.event === 'lease' && !h.live) sim.newLease(h.name);
          else if (step.event === 'maintenance-on') h.maintenance = true;
          else if (step.event === 'maintenance-off') h.maintenance = false;
          for (let r = 0; r < step.rounds; r++) {
            const before = sim.inputs();
            const actions = sim.round();
            const assigned = actions.filter((a) => a.kind === 'assign');
            // One action per VM per round: never two owners.
            expect(new Set(assigned.map((a) => a.vm)).size).toBe(assigned.length);
            for (const a of assigned) {
              const target = before.hosts.find((x) => x.name === a.to)!;
              expect(target.live).toBe(true);
              expect(target.maintenance).toBe(false);
              expect(target.leaseAgeMs!).toBeGreaterThanOrEqual(TARGET_LEASE_MIN_AGE_MS);
              expect(a.to).not.toBe(a.from);
              const vm = before.vms.find((v) => v.name === a.vm)!;
              expect(vm.owner?.token).toBe(a.expected);
              expect(vm.policy?.hosts === undefined || vm.policy.hosts.includes(a.to)).toBe(true);
              expect(a.start).toBe(vm.policy?.state === 'started' && !vm.userStopped);
              const after = sim.vms.filter((v) => v.owner?.host === a.to);
              if (vm.policy?.group)
                expect(after.filter((v) => v.policy?.group === vm.policy!.group).map((v) => v.name)).toEqual([
                  vm.name,
                ]);
              if (a.start) {
                const used = after
                  .filter((v) => !v.userStopped && v.policy?.state !== 'stopped')
                  .reduce((s, v) => s + v.memoryMiB, 0);
                expect(used).toBeLessThanOrEqual(target.capacity.memoryMiB - HOST_MEMORY_RESERVE_MIB);
              }
            }
          }
        }
        // Once nothing changes (leases old, flapping over), rounds settle: nothing decided or done again.
        sim.t += FLAP_STABLE_MS + 60_000;
        for (let r = 0; r < 2; r++) sim.round();
        const logged = sim.log.length;
        expect(sim.round()).toEqual([]);
        expect(sim.log.slice(logged)).toEqual([]);
      }),
      { numRuns: 150 },
    );
  });
});
