import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { HostReport, VmConfig, VmPowerState } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import { legacyTapName } from '../spec/net.js';
import { specPairArb } from '../spec/spec.arbitrary.js';
import { planChanges } from './diff.js';
import { networkConfigHash, vmConfigHash } from './hash.js';
import { type DesiredState, resolveSpec, resolveUplinks } from './resolve.js';
import { type Step, stepTarget } from './steps.js';
import { vmPoolVolumes } from './storage-changes.js';

const caps = {
  accelerator: 'tcg' as const,
  acceleratorReason: 'test',
  cpus: 4,
  memoryMiB: 4096,
  network: {},
  backends: ['linux' as const],
};
const report = (
  host: string,
  networks: HostReport['networks'] = [],
  vms: HostReport['vms'] = [],
): HostReport => ({
  host,
  agentVersion: 'test',
  capabilities: caps,
  networks,
  vms,
});

/** Applies steps to reported state the way agents would, checking each step's preconditions. */
function simulate(observed: HostReport[], steps: Step[], desired: DesiredState): HostReport[] {
  const state = new Map(observed.map((r) => [r.host, structuredClone(r)]));
  const hostOf = (h: string) => {
    let r = state.get(h);
    if (!r) {
      r = report(h);
      state.set(h, r);
    }
    return r;
  };
  // Which networks each VM is attached to, to check networks outlive their VMs.
  const attached = new Map<string, string[]>();
  for (const [h, d] of Object.entries(desired))
    for (const vm of d.vms)
      attached.set(
        `${h}/${vm.name}`,
        vm.nics.map((n) => n.network),
      );
  for (const s of steps) {
    const r = hostOf(s.host);
    switch (s.kind) {
      case 'uplink.configure': {
        r.uplink = {
          device: s.uplink.device,
          addressDevice: s.uplink.device,
          mtu: s.uplink.mtu ?? 1500,
          addresses: s.uplink.addresses ?? [],
          configHash: s.configHash,
        };
        break;
      }
      case 'network.create':
      case 'network.update': {
        r.networks = r.networks.filter((n) => n.name !== s.network.name);
        r.networks.push({
          name: s.network.name,
          bridge: s.network.bridge,
          configHash: s.configHash,
          problems: [],
        });
        break;
      }
      case 'network.delete': {
        for (const vm of r.vms) expect(attached.get(`${s.host}/${vm.name}`) ?? []).not.toContain(s.name);
        r.networks = r.networks.filter((n) => n.name !== s.name);
        break;
      }
      case 'vm.create': {
        expect(
          r.vms.find((v) => v.name === s.vm.name),
          `create ${s.vm.name}: exists`,
        ).toBeUndefined();
        for (const nic of s.vm.nics)
          expect(
            r.networks.map((n) => n.name),
            `create ${s.vm.name}: network`,
          ).toContain(nic.network);
        r.vms.push({
          name: s.vm.name,
          state: 'stopped',
          configHash: s.configHash,
          problems: [],
          config: s.vm,
        });
        break;
      }
      case 'vm.update': {
        const vm = r.vms.find((v) => v.name === s.vm.name);
        expect(vm, `update ${s.vm.name}: missing`).toBeDefined();
        if (vm!.configHash !== s.configHash)
          expect(vm!.state, `update ${s.vm.name}: must be stopped`).not.toBe('running');
        vm!.configHash = s.configHash;
        vm!.config = s.vm;
        vm!.problems = [];
        break;
      }
      case 'vm.hotplug': {
        // Only NICs and pool disks (plugged, unplugged or grown by their own step) may differ, on a running VM.
        const vm = r.vms.find((v) => v.name === s.vm.name);
        expect(vm?.state, `hotplug ${s.vm.name}: must be running`).toBe('running');
        const fixed = (c: VmConfig) => ({
          ...c,
          nics: [],
          state: 'running',
          disks: c.disks.filter((d) => !d.source),
        });
        expect(fixed(s.vm), `hotplug ${s.vm.name}: only NICs and pool disks change`).toEqual(
          fixed(vm!.config!),
        );
        for (const nic of s.vm.nics)
          expect(
            r.networks.map((n) => n.name),
            `hotplug ${s.vm.name}: network`,
          ).toContain(nic.network);
        vm!.configHash = s.configHash;
        vm!.config = s.vm;
        break;
      }
      case 'vm.start':
      case 'vm.stop': {
        const vm = r.vms.find((v) => v.name === s.name);
        expect(vm, `${s.kind} ${s.name}: missing`).toBeDefined();
        vm!.state = s.kind === 'vm.start' ? 'running' : 'stopped';
        break;
      }
      case 'vm.delete':
        r.vms = r.vms.filter((v) => v.name !== s.name);
        break;
      case 'pool.create':
      case 'pool.update': {
        const was = r.pools?.find((p) => p.name === s.pool.name);
        if (s.kind === 'pool.create') expect(was, `create pool ${s.pool.name}: exists`).toBeUndefined();
        r.pools = [
          ...(r.pools ?? []).filter((p) => p.name !== s.pool.name),
          {
            name: s.pool.name,
            type: s.pool.type,
            configHash: s.configHash,
            problems: [],
            config: s.pool,
            capacityMiB: 100_000,
            usedMiB: 0,
            freeMiB: 100_000,
            volumes: was?.volumes ?? [],
          },
        ];
        break;
      }
      case 'pool.delete':
        expect(
          r.pools?.find((p) => p.name === s.pool.name)?.volumes ?? [],
          `delete pool ${s.pool.name}`,
        ).toEqual([]);
        r.pools = (r.pools ?? []).filter((p) => p.name !== s.pool.name);
        break;
      case 'volume.create': {
        const pool = r.pools?.find((p) => p.name === s.volume.pool);
        expect(pool, `create volume ${s.volume.name}: pool ${s.volume.pool} on ${s.host}`).toBeDefined();
        if (s.volume.from)
          expect(
            pool!.volumes.map((v) => v.name),
            `clone ${s.volume.name}: template`,
          ).toContain(s.volume.from.volume);
        pool!.volumes.push({
          name: s.volume.name,
          format: s.volume.format,
          sizeMiB: s.volume.sizeMiB,
          allocatedMiB: 0,
          encrypted: !!s.volume.encryption,
          snapshots: [],
        });
        break;
      }
      case 'volume.resize':
      case 'volume.delete': {
        const pool = [...state.values()].flatMap((h) => h.pools ?? []).find((p) => p.name === s.pool);
        const v = pool?.volumes.find((x) => x.name === s.name);
        expect(v, `${s.kind} ${s.pool}/${s.name}: missing`).toBeDefined();
        const users = [...state.values()].flatMap((h) =>
          h.vms.filter(
            (vm) =>
              vm.config && vmPoolVolumes(vm.config).some((u) => u.pool === s.pool && u.volume === s.name),
          ),
        );
        if (s.kind === 'volume.delete') {
          expect(
            users.map((u) => u.name),
            `delete volume ${s.name}: in use`,
          ).toEqual([]);
          pool!.volumes = pool!.volumes.filter((x) => x !== v);
        } else {
          expect(s.sizeMiB).toBeGreaterThan(v!.sizeMiB);
          if (!s.vm) expect(users.filter((u) => u.state === 'running').map((u) => u.name)).toEqual([]);
          v!.sizeMiB = s.sizeMiB;
        }
        break;
      }
      case 'securityGroup.create':
      case 'securityGroup.update':
        r.securityGroups = [
          ...(r.securityGroups ?? []).filter((g) => g.name !== s.group.name),
          { name: s.group.name, configHash: s.configHash, problems: [], config: s.group },
        ];
        break;
      case 'securityGroup.delete':
        for (const vm of r.vms)
          for (const nic of vm.config?.nics ?? [])
            expect(nic.securityGroups ?? [], `delete group ${s.name}: used by ${vm.name}`).not.toContain(
              s.name,
            );
        r.securityGroups = (r.securityGroups ?? []).filter((g) => g.name !== s.name);
        break;
    }
    // A VM's volumes exist before it is made or changed.
    if (s.kind === 'vm.create' || s.kind === 'vm.hotplug' || s.kind === 'vm.update') {
      const volumes = [...state.values()].flatMap((h) =>
        (h.pools ?? []).flatMap((p) => p.volumes.map((v) => `${p.name}/${v.name}`)),
      );
      for (const u of vmPoolVolumes(s.vm))
        expect(volumes, `${s.vm.name}: volume`).toContain(`${u.pool}/${u.volume}`);
    }
    // A port's groups exist on its host before it is made or changed.
    if (s.kind === 'vm.create' || s.kind === 'vm.hotplug' || s.kind === 'vm.update')
      for (const nic of s.vm.nics)
        for (const g of nic.securityGroups ?? [])
          expect(r.securityGroups?.map((x) => x.name) ?? [], `${s.vm.name}: group ${g}`).toContain(g);
    // No VM may run on two hosts at once at any point.
    const running = [...state.values()].flatMap((h) =>
      h.vms.filter((v) => v.state === 'running').map((v) => v.name),
    );
    expect(new Set(running).size).toBe(running.length);
  }
  return [...state.values()];
}

const spec1 = loadSpec(`
version: 1
hosts: [{ name: host1 }, { name: host2 }]
networks:
  - { name: natnet, host: host1, mode: nat, cidr: 10.10.0.0/24, forwards: [{ hostPort: 8080, vm: web1, vmPort: 80 }] }
  - { name: lan, host: host2, mode: bridge }
vms:
  - { name: web1, host: host1, nics: [{ network: natnet, ip: 10.10.0.10 }] }
  - { name: db1, host: host1, state: stopped, nics: [{ network: natnet }] }
  - { name: app1, host: host2, nics: [{ network: lan }] }
`);
const desired = resolveSpec(spec1);
const net = (h: string, i: number) => desired[h]!.networks[i]!;
const vm = (h: string, i: number) => desired[h]!.vms[i]!;
const obsNet = (h: string, i: number, over: object = {}) => ({
  name: net(h, i).name,
  bridge: net(h, i).bridge,
  configHash: networkConfigHash(net(h, i)),
  problems: [],
  ...over,
});
const obsVm = (h: string, i: number, state: VmPowerState, over: object = {}) => ({
  name: vm(h, i).name,
  state,
  configHash: vmConfigHash(vm(h, i)),
  problems: [],
  ...over,
});
const converged = (): HostReport[] => [
  report('host1', [obsNet('host1', 0)], [obsVm('host1', 0, 'running'), obsVm('host1', 1, 'stopped')]),
  report('host2', [obsNet('host2', 0)], [obsVm('host2', 0, 'running')]),
];
const brief = (steps: Step[]) =>
  steps.map((s) => `${s.kind} ${s.host}/${stepTarget(s)}${s.kind === 'vm.stop' ? ` force=${s.force}` : ''}`);

describe('planChanges', () => {
  it('creates everything on empty hosts in dependency order', () => {
    const plan = planChanges(desired, []);
    expect(brief(plan.steps)).toEqual([
      'network.create host1/natnet',
      'network.create host2/lan',
      'vm.create host1/db1',
      'vm.create host1/web1',
      'vm.create host2/app1',
      'vm.start host1/web1',
      'vm.start host2/app1',
    ]);
    const create = plan.steps[0]!;
    expect(create.kind === 'network.create' && create.configHash).toBe(networkConfigHash(net('host1', 0)));
    expect(plan.unchanged).toEqual([]);
  });

  it('plans nothing for a converged state and lists what is unchanged', () => {
    const plan = planChanges(desired, converged());
    expect(plan.steps).toEqual([]);
    expect(plan.unchanged).toEqual([
      'network lan on host2',
      'network natnet on host1',
      'vm app1 on host2',
      'vm db1 on host1',
      'vm web1 on host1',
    ]);
  });

  it('updates a network whose hash differs or that has problems', () => {
    const obs = converged();
    obs[0]!.networks[0]!.configHash = 'old';
    obs[1]!.networks[0]!.problems = ['bridge missing', 'uplink detached'];
    const plan = planChanges(desired, obs);
    expect(plan.steps).toEqual([
      expect.objectContaining({ kind: 'network.update', host: 'host1', reason: 'configuration changed' }),
      expect.objectContaining({
        kind: 'network.update',
        host: 'host2',
        reason: 'repair: bridge missing; uplink detached',
      }),
    ]);
  });

  it('reconfigures a changed VM in place, keeping its disks: stop, update, start (never delete)', () => {
    const obs = converged();
    obs[0]!.vms[0]!.configHash = 'old';
    const plan = planChanges(desired, obs);
    expect(brief(plan.steps)).toEqual([
      'vm.stop host1/web1 force=false',
      'vm.update host1/web1',
      'vm.start host1/web1',
    ]);
    expect(plan.steps.every((s) => s.reason === 'configuration changed' || s.kind === 'vm.start')).toBe(true);
  });

  it('hot-plugs and unplugs NICs of a running VM without restarting it', () => {
    const two = resolveSpec(
      loadSpec(`
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: natnet, host: host1, mode: nat, cidr: 10.10.0.0/24 }
  - { name: isonet, host: host1, mode: isolated, cidr: 10.20.0.0/24 }
vms:
  - { name: web1, host: host1, nics: [{ network: natnet }, { network: isonet }] }
`),
    );
    const one = structuredClone(two);
    one.host1!.vms[0]!.nics.pop();
    const nets = two.host1!.networks.map((n) => ({
      name: n.name,
      bridge: n.bridge,
      configHash: networkConfigHash(n),
      problems: [],
    }));
    const running = (cfg: typeof one.host1) =>
      report('host1', nets, [
        {
          name: 'web1',
          state: 'running',
          configHash: vmConfigHash(cfg!.vms[0]!),
          problems: [],
          config: cfg!.vms[0]!,
        },
      ]);
    const plug = planChanges(two, [running(one.host1)]);
    expect(plug.steps).toEqual([
      expect.objectContaining({ kind: 'vm.hotplug', changes: ['nics +isonet (hot-plug)'] }),
    ]);
    expect(planChanges(two, simulate([running(one.host1)], plug.steps, two)).steps).toEqual([]);
    const unplug = planChanges(one, [running(two.host1)]);
    expect(unplug.steps).toEqual([
      expect.objectContaining({ kind: 'vm.hotplug', changes: ['nics -isonet (hot-unplug)'] }),
    ]);
    // A stopped VM takes the same change while stopped; memory needs a restart, and then so do the NICs.
    const stopped = running(one.host1);
    stopped.vms[0]!.state = 'stopped';
    expect(planChanges(two, [stopped]).steps).toEqual([
      expect.objectContaining({ kind: 'vm.update', changes: ['nics +isonet (VM stopped)'] }),
      expect.objectContaining({ kind: 'vm.start' }),
    ]);
    const bigger = structuredClone(two);
    bigger.host1!.vms[0]!.memoryMiB = 320;
    expect(brief(planChanges(bigger, [running(one.host1)]).steps)).toEqual([
      'vm.stop host1/web1 force=false',
      'vm.update host1/web1',
      'vm.start host1/web1',
    ]);
    expect(planChanges(bigger, [running(one.host1)]).steps[1]).toMatchObject({
      changes: ['memoryMiB 256 -> 320 (restart)', 'nics +isonet (restart)'],
    });
  });

  it('counts a NIC on its hashed tap name from before readable names as the same NIC', () => {
    const two = resolveSpec(
      loadSpec(`
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: natnet, host: host1, mode: nat, cidr: 10.10.0.0/24 }
  - { name: isonet, host: host1, mode: isolated, cidr: 10.20.0.0/24 }
vms:
  - { name: web1, host: host1, nics: [{ network: natnet }, { network: isonet }] }
`),
    );
    const running = structuredClone(two.host1!.vms[0]!);
    running.nics = running.nics.slice(0, 1).map((n, i) => ({ ...n, tap: legacyTapName('web1', i) }));
    const obs = report(
      'host1',
      two.host1!.networks.map((n) => ({
        name: n.name,
        bridge: n.bridge,
        configHash: networkConfigHash(n),
        problems: [],
      })),
      [{ name: 'web1', state: 'running', configHash: vmConfigHash(running), problems: [], config: running }],
    );
    expect(planChanges(two, [obs]).steps).toEqual([
      expect.objectContaining({ kind: 'vm.hotplug', changes: ['nics +isonet (hot-plug)'] }),
    ]);
  });

  it('names the changed fields of a network when its host reports the config', () => {
    const obs = converged();
    const old = structuredClone(net('host1', 0));
    old.mtu = 1400;
    obs[0]!.networks[0] = { ...obs[0]!.networks[0]!, configHash: 'old', config: old };
    expect(planChanges(desired, obs).steps[0]).toMatchObject({
      kind: 'network.update',
      changes: ['mtu 1400 -> 1500 (in place)'],
    });
  });

  it('reconfigures a stopped VM without stopping it, and does not start a VM meant to be stopped', () => {
    const obs = converged();
    obs[0]!.vms[1]!.configHash = 'old';
    expect(brief(planChanges(desired, obs).steps)).toEqual(['vm.update host1/db1']);
  });

  it('repairs detached ports of a running VM without restarting it', () => {
    const obs = converged();
    obs[1]!.vms[0]!.problems = ['port vlt-1 is not attached to vlb-1'];
    const plan = planChanges(desired, obs);
    expect(brief(plan.steps)).toEqual(['vm.update host2/app1']);
    expect(plan.steps[0]!.reason).toBe('repair: port vlt-1 is not attached to vlb-1');
  });

  it('leaves problems it cannot repair to the operator instead of rebuilding the VM', () => {
    const obs = converged();
    obs[1]!.vms[0]!.problems = ['QMP not answering'];
    expect(planChanges(desired, obs).steps).toEqual([]);
  });

  it('does not rebuild a VM for a power-state change', () => {
    expect(vmConfigHash({ ...vm('host1', 0), state: 'stopped' })).toBe(vmConfigHash(vm('host1', 0)));
  });

  it('starts a stopped or crashed VM that should run', () => {
    const obs = converged();
    obs[0]!.vms[0]!.state = 'stopped';
    obs[1]!.vms[0]!.state = 'crashed';
    const plan = planChanges(desired, obs);
    expect(brief(plan.steps)).toEqual(['vm.start host1/web1', 'vm.start host2/app1']);
    expect(plan.steps[1]!.reason).toBe('desired state is running, observed crashed');
  });

  it('stops a running VM that should be stopped, gracefully', () => {
    const obs = converged();
    obs[0]!.vms[1]!.state = 'running';
    expect(brief(planChanges(desired, obs).steps)).toEqual(['vm.stop host1/db1 force=false']);
  });

  it('deletes VMs and networks that are not in the spec: VMs first, networks last', () => {
    const obs = converged();
    obs[0]!.networks.push({ name: 'oldnet', bridge: 'vlb-00000000', configHash: 'x', problems: [] });
    obs[0]!.vms.push({ name: 'oldvm', state: 'running', configHash: 'x', problems: [] });
    obs.push(report('host3', [{ name: 'gone', bridge: 'vlb-1', configHash: 'x', problems: [] }], []));
    const plan = planChanges(desired, obs);
    expect(brief(plan.steps)).toEqual([
      'vm.delete host1/oldvm',
      'network.delete host1/oldnet',
      'network.delete host3/gone',
    ]);
    expect(plan.steps[0]!.reason).toBe('not in the spec');
  });

  it('moves a VM between hosts: delete on the old host before create on the new one', () => {
    const obs = converged();
    obs[1]!.vms.push({ name: 'web1', state: 'running', configHash: 'x', problems: [] });
    obs[0]!.vms.splice(0, 1);
    const plan = planChanges(desired, obs);
    expect(brief(plan.steps)).toEqual([
      'vm.delete host2/web1',
      'vm.create host1/web1',
      'vm.start host1/web1',
    ]);
    expect(planChanges(desired, simulate(obs, plan.steps, desired)).steps).toEqual([]);
  });

  it('treats a desired host missing from the reports as empty', () => {
    const plan = planChanges(desired, [converged()[0]!]);
    expect(brief(plan.steps)).toEqual([
      'network.create host2/lan',
      'vm.create host2/app1',
      'vm.start host2/app1',
    ]);
  });

  it('is deterministic whatever the order of reports', () => {
    const obs = converged();
    obs[0]!.vms[0]!.configHash = 'old';
    obs[1]!.vms[0]!.state = 'stopped';
    expect(planChanges(desired, [...obs].reverse())).toEqual(planChanges(desired, obs));
  });

  it('converges: a second plan against the simulated result is empty', () => {
    const obs = converged();
    obs[0]!.vms[0]!.configHash = 'old';
    obs[0]!.vms[1]!.state = 'crashed';
    obs[1]!.networks[0]!.problems = ['x'];
    obs[1]!.vms.push({ name: 'stray', state: 'paused', configHash: 'x', problems: [] });
    const plan = planChanges(desired, obs);
    expect(planChanges(desired, simulate(obs, plan.steps, desired)).steps).toEqual([]);
  });

  it('converges from any reported state to any valid spec (property)', () => {
    const stateArb = fc.constantFrom<VmPowerState>('running', 'stopped', 'paused', 'crashed');
    // Which step kinds the runs produced: the pairs must exercise updates and stops, not only create/delete.
    const seen = new Map<Step['kind'], number>();
    fc.assert(
      fc.property(
        specPairArb,
        fc.array(fc.tuple(stateArb, fc.boolean(), fc.boolean()), { maxLength: 10 }),
        ([rawA, rawB], perturb) => {
          // Realise spec A, perturb it, then converge to spec B (A changed in place, or a different world).
          const specA = loadSpec(JSON.stringify(rawA));
          const a = resolveSpec(specA);
          const upA = resolveUplinks(specA);
          let obs = simulate([], planChanges(a, [], upA).steps, a);
          expect(planChanges(a, obs, upA).steps).toEqual([]);
          const vms = obs.flatMap((r) => r.vms);
          perturb.forEach(([state, stale, broken], i) => {
            const v = vms[i % Math.max(vms.length, 1)];
            if (!v) return;
            v.state = state;
            if (stale) v.configHash = 'stale';
            if (broken) v.problems = ['broken'];
          });
          const specB = loadSpec(JSON.stringify(rawB));
          const b = resolveSpec(specB);
          const upB = resolveUplinks(specB);
          const plan = planChanges(b, obs, upB);
          for (const s of plan.steps) seen.set(s.kind, (seen.get(s.kind) ?? 0) + 1);
          // Uplinks are configured before anything else, and every risky step has a confirm window.
          const firstOther = plan.steps.findIndex((s) => s.kind !== 'uplink.configure');
          expect(plan.steps.slice(Math.max(firstOther, 0)).some((s) => s.kind === 'uplink.configure')).toBe(
            false,
          );
          for (const s of plan.steps)
            if ('risky' in s && s.risky) expect(s.confirmTimeoutMs).toBeGreaterThanOrEqual(5000);
          obs = simulate(obs, plan.steps, b);
          expect(planChanges(b, obs, upB).steps).toEqual([]);
        },
      ),
      { numRuns: 150 },
    );
    for (const kind of [
      'network.update',
      'vm.update',
      'vm.hotplug',
      'vm.stop',
      'vm.create',
      'vm.delete',
      'pool.create',
      'volume.create',
      'volume.delete',
    ] as const)
      expect(seen.get(kind) ?? 0, `${kind} steps across the runs`).toBeGreaterThan(0);
  });
});
