// The drill runners against a scripted cluster: a small world of hosts, leases and VM processes that the fake
// faults change and a fake HA reacts to after set delays, sampled by the real Sampler. Checks what each runner
// measures, what it reports as broken, and that it repairs the lab.
import { describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../exec/runner.js';
import type { DrillReport } from '../../shared/cluster.js';
import { loadSpec } from '../../spec/load.js';
import { DrillControl, labClusterOps } from './control.js';
import { runDrill } from './drill.js';
import type { DrillBody } from './routes.js';
import { type SampledProcess, Sampler } from './sampler.js';
import type { ApplyRun, ClusterEvent, DrillEnv, DrillOptions } from './types.js';

const SPEC = `
version: 1
cluster: { store: etcd, heartbeatSeconds: 5 }
hosts: [{ name: host1 }, { name: host2 }, { name: host3 }]
networks: [{ name: app, mode: vxlan, vni: 1090, cidr: 10.90.0.0/24 }]
vms:
  - { name: web, host: host2, memoryMiB: 128, nics: [{ network: app, ip: 10.90.0.11 }], ha: { state: started } }
  - { name: db, host: host2, memoryMiB: 128, nics: [{ network: app, ip: 10.90.0.12 }], ha: { state: started } }
  - { name: tmp, host: host1, memoryMiB: 128, nics: [{ network: app, ip: 10.90.0.13 }] }
lab:
  name: dt
  lan: { cidr: 192.168.90.0/24, gateway: 192.168.90.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.90 }
  hosts:
    - { name: host1, address: 192.168.90.11 }
    - { name: host2, address: 192.168.90.12 }
    - { name: host3, address: 192.168.90.13 }
  etcd: [{ name: etcd1, address: 192.168.90.21 }, { name: etcd2, address: 192.168.90.22 }, { name: etcd3, address: 192.168.90.23 }]
  controllers: [{ name: ctl1, address: 192.168.90.31 }, { name: ctl2, address: 192.168.90.32 }]
`;

/** How the scripted cluster behaves (ms after the fault). */
interface Script {
  /** Lease gone, host-failed event. */
  detectMs: number;
  /** The HA manager starts the failed host's VMs on host3. */
  restartMs: number;
  /** Their guests answer. */
  guestMs: number;
  /** partition: the isolated host stops its VMs (undefined: it never does: a broken agent). */
  fenceMs?: number;
  /** host-failure: the kill leaves QEMU running (a broken kill). */
  killLeavesQemu?: boolean;
  /** Steps the plan keeps showing after the repair. */
  planSteps?: number;
  /** etcd-member-failure: a host loses its lease during the outage (a broken agent). */
  leaseLostInOutage?: string;
  takeoverMs: number;
}

const OK: Script = { detectMs: 60, restartMs: 120, guestMs: 200, fenceMs: 40, takeoverMs: 80 };

class World {
  procs: SampledProcess[] = [
    { host: 'host2', vm: 'web', pid: 200, startTime: 1, writes: ['file:1:10 /p/web.qcow2'] },
    { host: 'host2', vm: 'db', pid: 201, startTime: 1, writes: ['file:1:11 /p/db.qcow2'] },
    { host: 'host1', vm: 'tmp', pid: 100, startTime: 1, writes: [] },
  ];
  live = new Set(['host1', 'host2', 'host3']);
  members = new Map([
    ['etcd1', true],
    ['etcd2', true],
    ['etcd3', true],
  ]);
  active: string | undefined = 'ctl1';
  events: ClusterEvent[] = [];
  guests = new Set(['web', 'db', 'tmp']);
  calls: string[] = [];
  applies = 0;
  nextPid = 300;
  private timers: NodeJS.Timeout[] = [];

  constructor(readonly script: Script) {}

  later(ms: number, fn: () => void) {
    this.timers.push(setTimeout(fn, ms));
  }
  event(kind: string, message: string) {
    this.events.push({ id: this.events.length + 1, time: new Date().toISOString(), kind, message });
  }
  /** The fake HA manager: detects `host`, then restarts its VMs on host3. */
  failHost(host: string, vms: string[]) {
    this.later(this.script.detectMs, () => {
      this.live.delete(host);
      this.event('ha.host-failed', `${host}: lease expired`);
    });
    this.later(this.script.restartMs, () => {
      for (const vm of vms) {
        // Its disk is on shared storage: the same file as before, now open on host3.
        const writes = [`file:1:${vm === 'web' ? 10 : 11} /p/${vm}.qcow2`];
        this.procs.push({ host: 'host3', vm, pid: this.nextPid++, startTime: 2, writes });
        this.guests.delete(vm);
      }
    });
    this.later(this.script.guestMs, () => {
      for (const vm of vms) this.guests.add(vm);
    });
  }
  dispose() {
    for (const t of this.timers) clearTimeout(t);
  }
}

function envFor(world: World, options: DrillOptions = {}): DrillEnv {
  const spec = loadSpec(SPEC, 'drill.yaml');
  const s = world.script;
  const applyRun = (): ApplyRun => {
    world.applies++;
    const ok = world.active !== undefined;
    return { started: Promise.resolve(), done: Promise.resolve(ok ? 'succeeded' : 'lost') };
  };
  return {
    spec,
    sampler: new Sampler(
      async () => world.procs.map((p) => ({ ...p })),
      10,
      async (p) => world.procs.some((q) => q.pid === p.pid),
    ),
    progress: () => {},
    timing: { recoveryMs: 2_000, restoreMs: 1_000, pollMs: 10, outageMs: 250 },
    options,
    faults: {
      killHost: async (host) => {
        world.calls.push(`kill ${host}`);
        const vms = world.procs.filter((p) => p.host === host).map((p) => p.vm);
        if (!s.killLeavesQemu) world.procs = world.procs.filter((p) => p.host !== host);
        world.failHost(
          host,
          vms.filter((v) => v !== 'tmp'),
        );
        return { at: Date.now(), vms };
      },
      restartAgent: async (host) => {
        world.calls.push(`restart ${host}`);
        world.live.add(host);
      },
      partitionHost: async (host) => {
        world.calls.push(`cut ${host}`);
        const vms = world.procs.filter((p) => p.host === host).map((p) => p.vm);
        if (s.fenceMs !== undefined)
          world.later(s.fenceMs, () => {
            world.procs = world.procs.filter((p) => p.host !== host);
          });
        world.failHost(host, vms);
        return { at: Date.now() };
      },
      healPartition: async (host) => {
        world.calls.push(`heal ${host}`);
        world.live.add(host);
      },
      killController: async (name) => {
        world.calls.push(`kill ${name}`);
        world.active = undefined;
        world.later(s.takeoverMs, () => {
          world.active = name === 'ctl1' ? 'ctl2' : 'ctl1';
        });
        return { at: Date.now() };
      },
      restartController: async (name) => void world.calls.push(`start ${name}`),
      stopEtcdMember: async (name) => {
        world.calls.push(`stop ${name}`);
        world.later(30, () => world.members.set(name, false));
        if (s.leaseLostInOutage) world.later(50, () => world.live.delete(s.leaseLostInOutage!));
        return { at: Date.now() };
      },
      startEtcdMember: async (name) => {
        world.calls.push(`start ${name}`);
        world.members.set(name, true);
      },
    },
    cluster: {
      active: async () => (world.active ? { name: world.active, pid: 4242 } : undefined),
      liveHosts: async () => [...world.live],
      members: async () => [...world.members].map(([name, healthy]) => ({ name, healthy })),
      events: async (limit) => world.events.slice(-limit),
      guestAnswers: async (vm) => world.guests.has(vm) && world.procs.some((p) => p.vm === vm),
      plan: async () => ({
        steps: s.planSteps ?? 0,
        text: s.planSteps ? '+ start tmp on host1\n' : 'no changes',
      }),
      startApply: async () => applyRun(),
      // The storage host's target: two initiators on the volume while the failed host's copy still runs.
      iscsiTwoWriters: async () =>
        world.procs.filter((p) => p.vm === 'db').length > 1
          ? [{ pool: 'san', volume: 'db-data', addresses: ['192.168.90.12', '192.168.90.13'] }]
          : [],
    },
  };
}

async function drill(
  script: Script,
  kind: DrillReport['kind'],
  target: string,
  options: DrillOptions = {},
): Promise<{ r: DrillReport; world: World }> {
  const world = new World(script);
  try {
    const r = await runDrill(envFor(world, options), kind, target);
    return { r, world };
  } finally {
    world.dispose();
  }
}

const inv = (r: DrillReport) => Object.fromEntries(r.invariants.map((i) => [i.name, i.ok]));

describe('host-failure drill', () => {
  it('measures detection, restart and guest answer, checks the invariants and powers the host back on', async () => {
    const { r, world } = await drill(OK, 'host-failure', 'host2');
    expect(world.calls).toEqual(['kill host2', 'restart host2']);
    expect(r.detectedS).toBeGreaterThanOrEqual(0.04);
    expect(r.vms.map((v) => [v.vm, v.from, v.to])).toEqual([
      ['db', 'host2', 'host3'],
      ['web', 'host2', 'host3'],
    ]);
    for (const v of r.vms) {
      expect(v.restartedS).toBeGreaterThanOrEqual(0.1);
      expect(v.guestAnswersS).toBeGreaterThanOrEqual(v.restartedS!);
    }
    expect(inv(r)).toEqual({
      converged: true,
      'no-vm-twice': true,
      'no-disk-two-writers': true,
      'none-lost': true,
    });
    expect(r.restored).toBe(true);
    expect(r.samples.count).toBeGreaterThan(5);
  });

  it('reports a VM running twice when the killed host’s QEMU survived, with both hosts named', async () => {
    const { r } = await drill({ ...OK, killLeavesQemu: true }, 'host-failure', 'host2');
    const twice = r.invariants.find((i) => i.name === 'no-vm-twice')!;
    expect(twice.ok).toBe(false);
    expect(twice.detail).toMatch(/(web|db) ran twice: \w+ on host2 \(pid \d+\) and \w+ on host3/);
  });

  it('reports a plan that never empties as not converged, quoting its steps', async () => {
    const { r } = await drill({ ...OK, planSteps: 1 }, 'host-failure', 'host2');
    const c = r.invariants.find((i) => i.name === 'converged')!;
    expect(c).toMatchObject({ ok: false });
    expect(c.detail).toMatch(/1 step\(s\) left: \+ start tmp on host1/);
  });

  it('asks the iSCSI targets about their sessions when the spec has an iscsi pool, and reports two writers there', async () => {
    const world = new World({ ...OK, killLeavesQemu: true, restartMs: 60 });
    try {
      const env = envFor(world);
      // Only the pool's kind matters to the drill: it decides whether the targets are asked.
      env.spec.pools.push({ name: 'san', type: 'iscsi', host: 'host1' } as (typeof env.spec.pools)[number]);
      const r = await runDrill(env, 'host-failure', 'host2');
      const d = r.invariants.find((i) => i.name === 'no-disk-two-writers')!;
      expect(d.ok).toBe(false);
      expect(d.detail).toMatch(
        /iSCSI targets' sessions looked at \d+ time\(s\): san\/db-data has sessions from 192\.168\.90\.12 and 192\.168\.90\.13/,
      );
    } finally {
      world.dispose();
    }
  });

  it('refuses to start on an unhealthy cluster', async () => {
    const world = new World(OK);
    world.live.delete('host3');
    await expect(runDrill(envFor(world), 'host-failure', 'host2')).rejects.toThrow(
      /not healthy before the drill: host3/,
    );
    expect(world.calls).toEqual([]);
  });
});

describe('partition drill', () => {
  it('sees the isolated host stop its VMs before they start elsewhere, and heals the link', async () => {
    const { r, world } = await drill(OK, 'partition', 'host2');
    expect(world.calls).toEqual(['cut host2', 'heal host2']);
    for (const v of r.vms) {
      expect(v.stoppedS).toBeDefined();
      expect(v.stoppedS!).toBeLessThanOrEqual(v.restartedS!);
    }
    expect(inv(r)['no-vm-twice']).toBe(true);
    expect(r.restored).toBe(true);
  });

  it('fails no-vm-twice and no-disk-two-writers when the isolated host never fences', async () => {
    const { r } = await drill({ ...OK, fenceMs: undefined }, 'partition', 'host2');
    expect(inv(r)['no-vm-twice']).toBe(false);
    expect(r.invariants.find((i) => i.name === 'no-disk-two-writers')!.detail).toMatch(
      /\/p\/(web|db)\.qcow2 written by \w+ on host2 \(pid \d+\) and \w+ on host3/,
    );
    expect(r.notes.join('\n')).toMatch(/still running at the deadline/);
  });
});

describe('controller-failure drill', () => {
  it('measures the takeover, restarts the killed controller and checks the next apply converges', async () => {
    const { r, world } = await drill(OK, 'controller-failure', 'active', { duringApply: true });
    expect(world.calls).toEqual(['kill ctl1', 'start ctl1']);
    expect(r.takeoverS).toBeGreaterThanOrEqual(0.07);
    expect(r.detectedS).toBe(r.takeoverS);
    expect(world.applies).toBe(2);
    expect(r.invariants.find((i) => i.name === 'converged')).toMatchObject({
      ok: true,
      detail: 'the next apply succeeded and a plan of the spec is empty',
    });
    expect(r.notes.join('\n')).toMatch(/the apply interrupted on ctl1 ended: succeeded/);
  });

  it('refuses a target that is not the active controller', async () => {
    const world = new World(OK);
    await expect(runDrill(envFor(world), 'controller-failure', 'ctl2')).rejects.toThrow(
      /ctl2 is not the active controller \(ctl1 is\)/,
    );
    expect(world.calls).toEqual([]);
  });
});

describe('etcd-member-failure drill', () => {
  it('sees the member down, every host keeps its lease, a write succeeds, and the member comes back', async () => {
    const { r, world } = await drill(OK, 'etcd-member-failure', 'etcd2');
    expect(world.calls).toEqual(['stop etcd2', 'start etcd2']);
    expect(r.detectedS).toBeGreaterThanOrEqual(0.03);
    expect(inv(r)).toMatchObject({ 'no-host-failed': true, 'store-writes': true, 'none-lost': true });
    expect(r.invariants.find((i) => i.name === 'store-writes')!.detail).toMatch(
      /^an apply \(store writes\) succeeded [\d.]+ s after etcd2 stopped$/,
    );
    expect(r.restored).toBe(true);
  });

  it('reports a host that lost its lease while one member was down', async () => {
    const { r } = await drill({ ...OK, leaseLostInOutage: 'host1' }, 'etcd-member-failure', 'etcd2');
    const f = r.invariants.find((i) => i.name === 'no-host-failed')!;
    expect(f).toMatchObject({ ok: false, detail: 'host1 lost its lease' });
  });

  it('tries the write again while no controller is active, and says what came first', async () => {
    const world = new World(OK);
    try {
      const env = envFor(world);
      let calls = 0;
      env.cluster.startApply = async () => {
        if (++calls === 1)
          throw new Error('controller ctl2 is a standby and no controller is active right now');
        return { started: Promise.resolve(), done: Promise.resolve('succeeded' as const) };
      };
      const r = await runDrill(env, 'etcd-member-failure', 'etcd1');
      const w = r.invariants.find((i) => i.name === 'store-writes')!;
      expect(w.ok).toBe(true);
      expect(w.detail).toMatch(
        /succeeded [\d.]+ s after etcd1 stopped \(1 earlier attempt\(s\): refused: controller ctl2 is a standby/,
      );
    } finally {
      world.dispose();
    }
  });

  it('refuses a name that is no member', async () => {
    await expect(runDrill(envFor(new World(OK)), 'etcd-member-failure', 'etcd9')).rejects.toThrow(
      /etcd9 is no etcd member \(members: etcd1, etcd2, etcd3\)/,
    );
  });
});

describe('drill requests', () => {
  const control = new DrillControl({
    parse: (text, source) => loadSpec(text, source),
    runner: new RecordingRunner(),
    labOf: () => {
      throw new Error('not used');
    },
    cluster: labClusterOps(new RecordingRunner()),
  });
  const body = (over: Partial<DrillBody>): DrillBody => ({
    spec: SPEC,
    source: 'drill.yaml',
    kind: 'host-failure',
    target: 'host2',
    duringApply: false,
    ...over,
  });

  it('takes a cluster lab spec and a target of the kind', async () => {
    const c = await control.check(body({}));
    expect([c.kind, c.target, c.lab.name]).toEqual(['host-failure', 'host2', 'dt']);
    expect((await control.check(body({ kind: 'controller-failure', target: 'active' }))).target).toBe(
      'active',
    );
  });

  it('refuses a target the lab does not have, naming those it has', async () => {
    await expect(control.check(body({ kind: 'etcd-member-failure', target: 'host1' }))).rejects.toThrow(
      'etcd-member-failure needs one of etcd1, etcd2, etcd3 as its target, got host1',
    );
    await expect(control.check(body({ kind: 'partition', target: 'ctl1' }))).rejects.toThrow(
      /partition needs one of host1, host2, host3/,
    );
  });

  it('refuses a spec without a cluster lab', async () => {
    const plain = SPEC.replace(/^cluster:.*$/m, '')
      .replace(/^ {2}etcd:.*$/m, '')
      .replace(/^ {2}controllers:.*$/m, '')
      .replace(/ha: \{ state: started \}/g, '');
    await expect(control.check(body({ spec: plain }))).rejects.toThrow(/drills need a cluster lab/);
  });
});
