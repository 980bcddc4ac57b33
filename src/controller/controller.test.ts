import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeFleet } from '../../test/helpers/fake-agents.js';
import { RecordingRunner } from '../exec/runner.js';
import { tapName } from '../spec/net.js';
import { Controller } from './controller.js';
import { Monitor } from './monitor.js';
import { SqliteStore } from './store/sqlite.js';
import type { TaskContext } from './tasks.js';
import { DESTRUCTIVE_PLAN_SUBJECT } from './wire.js';

const hostsYaml = (names: string[]) =>
  `hosts:\n${names.map((h) => `  - { name: ${h}, agent: "unix:///fake/${h}.sock", confirmTimeoutSeconds: 5 }`).join('\n')}\n`;

/** A spec with a NAT network and VMs on it; `extra` is appended under `vms:`. */
const spec = (o: { hosts?: string[]; vms?: string; networks?: string } = {}) =>
  `version: 1
${hostsYaml(o.hosts ?? ['h1'])}networks:
  - { name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }
${o.networks ?? ''}vms:
${o.vms ?? '  []'}
`;

const web = (extra = '') =>
  `  - { name: web1, host: h1, nics: [{ network: natnet }], disks: [{ name: data, sizeMiB: 64 }]${extra} }\n`;

function task(): TaskContext & { lines: string[] } {
  const lines: string[] = [];
  return { lines, progress: (m) => lines.push(m), signal: new AbortController().signal };
}

const fastConfirm = {
  minSendMs: 50,
  queryMs: 50,
  retryMs: 20,
  rollbackGraceMs: 50,
  rollbackPollMs: 3_000,
  progressEveryMs: 100,
};

describe('controller with fake agents', () => {
  let fleet: FakeFleet;
  let store: SqliteStore;
  let controller: Controller;
  beforeEach(() => {
    fleet = new FakeFleet();
    store = new SqliteStore(':memory:');
    controller = new Controller(store, new RecordingRunner(), {
      agents: fleet.agents,
      confirmTiming: fastConfirm,
    });
  });
  afterEach(async () => {
    fleet.close();
    await store.close();
  });

  const events = async (kind: string) =>
    (await store.events(100)).filter((e) => e.kind === kind).map((e) => e.message);

  it('applies a plan in dependency order, records the spec and an event, and converges to no changes', async () => {
    const text = spec({ vms: web() });
    const r = await controller.apply(text, 'site.yaml', task());
    expect(r.applied).toBe(3);
    expect(fleet.sent()).toEqual(['h1: network.ensure natnet', 'h1: vm.create web1', 'h1: vm.start web1']);
    expect((await controller.currentSpec())?.text).toBe(text);
    expect(await events('apply')).toEqual(['site.yaml: 3 change(s) applied']);
    fleet.clearSent();
    const again = await controller.apply(text, 'site.yaml', task());
    expect(again.applied).toBe(0);
    expect(again.text).toContain('No changes.');
    expect(fleet.sent()).toEqual([]);
  });

  it('refuses --flows on a kernel-bridge network up front instead of reporting its hosts as down', async () => {
    await controller.apply(spec({ vms: web() }), 'site.yaml', task());
    const refused = await controller.networkShow('natnet', true).catch((e: unknown) => e);
    expect(refused).toMatchObject({ kind: 'unsupported' });
    expect(String(refused)).toMatch(/linux backend.* no OpenFlow rules; --flows is for backend: ovs/);
    const shown = await controller.networkShow('natnet', false);
    expect(shown.hosts.map((h) => [h.host, h.error])).toEqual([['h1', undefined]]);
  });

  it('stops at a failing step, names it, records the failure and starts nothing after it', async () => {
    fleet.host('h1').failOn = (a) => (a.kind === 'vm.create' ? 'qemu-img: disk full' : undefined);
    const err = await controller.apply(spec({ vms: web() }), 'site.yaml', task()).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^step 2\/3 failed \(\+ vm web1 on h1 .*\): qemu-img: disk full/);
    expect((err as Error).message).toContain('No step started after it');
    expect(fleet.sent()).toEqual(['h1: network.ensure natnet', 'h1: vm.create web1']);
    expect((await events('apply.failed'))[0]).toMatch(/^\+ vm web1 on h1 .*: qemu-img: disk full$/);
    expect(await events('apply')).toEqual([]);
    // The next apply converges from where it stopped.
    fleet.host('h1').failOn = undefined;
    fleet.clearSent();
    const r = await controller.apply(spec({ vms: web() }), 'site.yaml', task());
    expect(fleet.sent()).toEqual(['h1: vm.create web1', 'h1: vm.start web1']);
    expect(r.applied).toBe(2);
  });

  it('removes a VM it created whose first start fails (a disk it cannot open), and only such a VM', async () => {
    fleet.host('h1').failOn = (a) =>
      a.kind === 'vm.start'
        ? 'iSCSI: Failed to log in to target. Status: Authentication failure(513)'
        : undefined;
    const err = await controller.apply(spec({ vms: web() }), 'site.yaml', task()).catch((e: Error) => e);
    expect((err as Error).message).toMatch(
      /Authentication failure\(513\)\nVM web1 was created by this apply and has been removed again/,
    );
    expect(fleet.sent()).toEqual([
      'h1: network.ensure natnet',
      'h1: vm.create web1',
      'h1: vm.start web1',
      'h1: vm.delete web1',
    ]);
    expect(fleet.host('h1').vms.has('web1')).toBe(false);
    expect(await events('apply.undone')).toEqual(['vm web1 on h1: created by this apply, removed again']);
    // A VM that existed before this apply is never deleted for a failed start.
    fleet.host('h1').failOn = undefined;
    await controller.apply(spec({ vms: web() }), 'site.yaml', task());
    fleet.host('h1').vms.get('web1')!.state = 'stopped';
    fleet.host('h1').failOn = (a) => (a.kind === 'vm.start' ? 'portal down' : undefined);
    fleet.clearSent();
    await expect(controller.apply(spec({ vms: web() }), 'site.yaml', task())).rejects.toThrow(/portal down/);
    expect(fleet.sent()).toEqual(['h1: vm.start web1']);
    expect(fleet.host('h1').vms.has('web1')).toBe(true);
  });

  it('sends each host its steps of a phase in one request, and reports each step of a batch that failed midway', async () => {
    const net2 = '  - { name: net2, host: h2, mode: nat, cidr: 10.20.0.0/24 }\n';
    const vms = ['a1', 'a2', 'a3']
      .map((n) => `  - { name: ${n}, host: h1, nics: [{ network: natnet }] }\n`)
      .concat(['  - { name: b1, host: h2, nics: [{ network: net2 }] }\n'])
      .join('');
    fleet.host('h1').failOn = (a) => (a.kind === 'vm.create' && a.vm.name === 'a2' ? 'tap busy' : undefined);
    const t = task();
    const err = await controller
      .apply(spec({ hosts: ['h1', 'h2'], vms, networks: net2 }), 'site.yaml', t)
      .catch((e: Error) => e);
    expect((err as Error).message).toMatch(/^step \d+\/\d+ failed \(\+ vm a2 on h1 .*\): tap busy/);
    // One request for h1's VM creations (a1 done, a2 failed, a3 never tried), none of the start phase.
    expect(fleet.host('h1').batches).toEqual([3]);
    expect(fleet.sent().filter((x) => x.startsWith('h1: vm.'))).toEqual([
      'h1: vm.create a1',
      'h1: vm.create a2',
    ]);
    expect(fleet.sent()).not.toContain('h1: vm.start a1');
    expect(t.lines.filter((l) => /^\[\d+\/\d+\] \+ vm a1/.test(l))).toHaveLength(1);
    expect(t.lines.some((l) => /\+ vm a3/.test(l) && /^\[/.test(l))).toBe(false);
    fleet.host('h1').failOn = undefined;
    fleet.clearSent();
    const r = await controller.apply(spec({ hosts: ['h1', 'h2'], vms, networks: net2 }), 'site.yaml', task());
    expect(fleet.sent().filter((x) => x.startsWith('h1: vm.start'))).toEqual([
      'h1: vm.start a1',
      'h1: vm.start a2',
      'h1: vm.start a3',
    ]);
    expect(r.applied).toBeGreaterThan(3);
  });

  it('refuses an agent answer that does not match the batch it was sent, naming the agent', async () => {
    for (const extra of [1, -1]) {
      const lying = new Controller(new SqliteStore(':memory:'), new RecordingRunner(), {
        agents: (spec, host) => {
          const real = fleet.agents(spec, host);
          return {
            ...real,
            actBatch: async (actions) => {
              const r = await real.actBatch(actions);
              return extra > 0 ? [...r, { ok: true as const }] : r.slice(0, -1);
            },
          };
        },
        confirmTiming: fastConfirm,
      });
      const two =
        '  - { name: v1, host: h1, nics: [{ network: natnet }] }\n  - { name: v2, host: h1, nics: [{ network: natnet }] }\n';
      const err = await lying.apply(spec({ vms: two }), 'site.yaml', task()).catch((e: Error) => e);
      expect(err).toMatchObject({ kind: 'bad-response' });
      expect((err as Error).message).toMatch(/the agent of h1 answered \d+ of 2 steps/);
    }
  });

  it('still drops the hosts a failed apply was dropping on the next apply', async () => {
    const both = spec({
      hosts: ['h1', 'h2'],
      networks: '  - { name: h2net, host: h2, mode: isolated, cidr: 10.30.0.0/24 }\n',
      vms: `${web()}  - { name: db1, host: h2, nics: [{ network: h2net }] }\n`,
    });
    await controller.apply(both, 'site.yaml', task());
    // Drop h2 (and its VM) while a step on h1 fails: the apply stops before h2 is emptied.
    const onlyH1 = spec({
      networks: '  - { name: extra, host: h1, mode: isolated, cidr: 10.40.0.0/24 }\n',
      vms: web(),
    });
    fleet.host('h1').failOn = (a) =>
      a.kind === 'network.ensure' && a.network.name === 'extra' ? 'boom' : undefined;
    await expect(controller.apply(onlyH1, 'site.yaml', task(), { allowDestroy: true })).rejects.toThrow(
      /boom/,
    );
    expect(fleet.host('h2').vms.has('db1')).toBe(true);
    fleet.host('h1').failOn = undefined;
    const r = await controller.apply(onlyH1, 'site.yaml', task(), { allowDestroy: true });
    expect(r.plan.steps.map((s) => `${s.kind} ${s.host}`)).toContain('vm.delete h2');
    expect(fleet.host('h2').vms.size).toBe(0);
    expect(fleet.host('h2').networks.size).toBe(0);
  });

  it('refuses an apply that deletes a VM unless destruction is allowed, and says what would be lost', async () => {
    await controller.apply(spec({ vms: web() }), 'site.yaml', task());
    fleet.clearSent();
    const without = spec();
    const err = await controller.apply(without, 'site.yaml', task()).catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'conflict', subject: DESTRUCTIVE_PLAN_SUBJECT });
    expect((err as Error).message).toContain('vm web1 on h1 and its disks: data (64 MiB)');
    expect((err as Error).message).toContain('--allow-destroy');
    expect(fleet.sent()).toEqual([]);
    expect(await events('apply.refused')).toEqual([
      'site.yaml: would destroy vm web1 on h1 and its disks: data (64 MiB)',
    ]);
    // The refused spec is not recorded as applied.
    expect((await controller.currentSpec())?.text).toBe(spec({ vms: web() }));
    const plan = await controller.plan(without, 'site.yaml');
    expect(plan.losses).toEqual([{ kind: 'vm', host: 'h1', name: 'web1', disks: ['data (64 MiB)'] }]);
    expect(plan.text).toContain('This plan destroys:\n  - vm web1 on h1 and its disks: data (64 MiB)');
    const r = await controller.apply(without, 'site.yaml', task(), { allowDestroy: true });
    expect(r.applied).toBe(1);
    expect(fleet.sent()).toEqual(['h1: vm.delete web1']);
  });

  it('refuses to delete a protected VM even when destruction is allowed, by apply and by destroy', async () => {
    const guarded = spec({ vms: web(', protected: true') });
    await controller.apply(guarded, 'site.yaml', task());
    fleet.clearSent();
    const err = await controller
      .apply(spec(), 'site.yaml', task(), { allowDestroy: true })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'conflict', subject: 'vm/web1' });
    expect((err as Error).message).toMatch(/vm web1 on h1 is protected .*protected: false/);
    await expect(controller.destroy(undefined, 'site.yaml', task())).rejects.toThrow(
      /vm web1 on h1 is protected/,
    );
    expect((await controller.plan(spec(), 'site.yaml')).text).toContain(
      '! vm web1 on h1 is protected: apply refuses to delete it',
    );
    expect(fleet.sent()).toEqual([]);
    // Unprotecting is an apply that changes nothing on the host; then the VM may go.
    const r = await controller.apply(spec({ vms: web(', protected: false') }), 'site.yaml', task());
    expect(r.applied).toBe(0);
    const d = await controller.destroy(undefined, 'site.yaml', task());
    expect(d.applied).toBe(2);
    expect(fleet.sent()).toEqual(['h1: vm.delete web1', 'h1: network.delete natnet']);
    expect(await controller.currentSpec()).toBeUndefined();
  });

  it("names the disks of a VM no spec describes from its host's report", async () => {
    await controller.apply(spec({ vms: web() }), 'site.yaml', task());
    // A VM created outside this controller's specs (say, under a store that was lost).
    fleet.host('h1').vms.set('stray', {
      name: 'stray',
      state: 'running',
      configHash: 'abcdef12',
      problems: [],
      config: {
        name: 'stray',
        cpus: 1,
        memoryMiB: 128,
        image: { kind: 'test-guest' },
        disks: [{ name: 'scratch', sizeMiB: 32 }],
        nics: [],
        state: 'running',
      },
    });
    const plan = await controller.plan(spec({ vms: web() }), 'site.yaml');
    expect(plan.losses).toEqual([{ kind: 'vm', host: 'h1', name: 'stray', disks: ['scratch (32 MiB)'] }]);
  });

  it('lists a deleted network that VMs use among the losses', async () => {
    await controller.apply(spec({ vms: web() }), 'site.yaml', task());
    const moved = `version: 1
${hostsYaml(['h1'])}networks:
  - { name: other, host: h1, mode: isolated, cidr: 10.20.0.0/24 }
vms:
  - { name: web1, host: h1, nics: [{ network: other }], disks: [{ name: data, sizeMiB: 64 }] }
`;
    const plan = await controller.plan(moved, 'site.yaml');
    expect(plan.losses).toEqual([{ kind: 'network', host: 'h1', name: 'natnet', usedBy: ['web1'] }]);
    await expect(controller.apply(moved, 'site.yaml', task())).rejects.toMatchObject({
      subject: DESTRUCTIVE_PLAN_SUBJECT,
    });
  });

  it('keeps a disk removed from a VM, says so, and does not ask to allow destruction', async () => {
    await controller.apply(spec({ vms: web() }), 'site.yaml', task());
    const noDisk = spec({ vms: '  - { name: web1, host: h1, nics: [{ network: natnet }] }\n' });
    const r = await controller.apply(noDisk, 'site.yaml', task());
    expect(r.losses).toEqual([]);
    expect(r.kept).toEqual([
      "disk data of vm web1 on h1 is detached, not deleted: its file stays in the VM's directory (name it again to reattach it)",
    ]);
    expect(r.text).toContain('= disk data of vm web1 on h1 is detached, not deleted');
    expect(fleet.sent().filter((s) => s.includes('delete'))).toEqual([]);
  });

  it('reports a risky step rolled back when its confirmation cannot be delivered, and runs nothing after it', async () => {
    const h1 = fleet.host('h1');
    // The bridge network takes the host's uplink: the change cuts the management path until the host reverts it.
    h1.cutsPath = (a) => a.kind === 'network.ensure' && a.network.name === 'lan';
    const text = spec({ networks: '  - { name: lan, host: h1, mode: bridge }\n', vms: web() });
    const t = task();
    const started = Date.now();
    const err = await controller.apply(text, 'site.yaml', t).catch((e: unknown) => e);
    expect(Date.now() - started).toBeGreaterThanOrEqual(5_000);
    expect(err).toMatchObject({ kind: 'unavailable', subject: 'host/h1' });
    expect((err as Error).message).toMatch(
      /^step 1\/4 \(\+ network lan on h1 .*\[commit-confirm 5 s\]\) cut h1's management path; h1 rolled it back by itself after 5 s\. Nothing after it was applied\.$/,
    );
    expect(t.lines.join('\n')).toContain('h1 did not confirm within 5 s');
    expect(h1.networks.has('lan')).toBe(false);
    expect(h1.actions.map((a) => a.kind)).toEqual(['network.ensure']);
    expect(await events('apply.failed')).toHaveLength(1);
    // The host answers again and the next plan still wants the change.
    const plan = await controller.plan(text, 'site.yaml');
    expect(plan.text).toContain('+ network lan on h1');
  }, 15_000);

  it('status asks a host the heartbeats gave up on, and shows it reachable once it answers again', async () => {
    await controller.apply(spec({ hosts: ['h1', 'h2'] }), 'site.yaml', task());
    const monitor = new Monitor(store, async () => (await controller.currentSpec())?.spec, {
      client: fleet.agents,
    });
    fleet.host('h2').down = true;
    for (let i = 0; i < 3; i++) await monitor.tick();
    let st = await controller.status();
    expect(st.hosts.find((h) => h.name === 'h2')).toMatchObject({ state: 'unreachable', reachable: false });
    expect(st.hosts.find((h) => h.name === 'h2')?.error).toMatch(/^missed 3 heartbeats .*ECONNREFUSED/);
    expect(st.hosts.find((h) => h.name === 'h1')).toMatchObject({ state: 'up', reachable: true });
    fleet.host('h2').down = false;
    st = await controller.status();
    expect(st.hosts.find((h) => h.name === 'h2')).toMatchObject({ state: 'unreachable', reachable: true });
    expect(st.hosts.find((h) => h.name === 'h2')?.report?.host).toBe('h2');
  });

  it("shows a VM's CPU pinning and quota as asked and as its host observes them; nothing for a VM without", async () => {
    fleet.host('h1').capabilities = {
      resources: {
        onlineCpus: [0, 1],
        cpuQuota: { available: true, reason: 'cgroup v2 delegated' },
        hugepages: { available: false, reason: 'none free', pageSizeKiB: 2048, free: 0 },
      },
    };
    const text = spec({
      vms: `${web(', cpus: 2, cpu: { pin: [1, 0], quota: "50%" }')}  - { name: app1, host: h1, nics: [{ network: natnet }] }\n`,
    });
    await controller.apply(text, 'site.yaml', task());
    const seen = fleet.host('h1').vms.get('web1')!;
    seen.vcpus = [
      { vcpu: 0, thread: 4321, cpus: '1' },
      { vcpu: 1, thread: 4322, cpus: '0' },
    ];
    seen.cpuMax = '100000 100000';
    const vms = await controller.vms();
    expect(vms.find((v) => v.name === 'web1')?.cpu).toEqual({
      pin: [1, 0],
      quota: '50%',
      vcpus: seen.vcpus,
      cpuMax: '100000 100000',
    });
    expect(vms.find((v) => v.name === 'app1')).not.toHaveProperty('cpu');
  });

  it('shows each NIC with its tap and addresses: guest agent first, else the DHCP lease', async () => {
    const text = spec({
      vms: `${web()}  - { name: app1, host: h1, nics: [{ network: natnet, mac: "52:54:00:aa:bb:01" }] }\n`,
    });
    await controller.apply(text, 'site.yaml', task());
    const h1 = fleet.host('h1');
    const webMac = (await controller.vms()).find((v) => v.name === 'web1')!.nics[0]!.mac;
    h1.guests.set('web1', [
      { name: 'lo', mac: '00:00:00:00:00:00', addresses: ['127.0.0.1/8'] },
      { name: 'eth0', mac: webMac.toUpperCase(), addresses: ['10.10.0.57/24', 'fe80::5054:ff:fe00:1/64'] },
    ]);
    h1.leases.set('natnet', [
      { mac: webMac, ip: '10.10.0.99' },
      { mac: '52:54:00:aa:bb:01', ip: '10.10.0.58', hostname: 'app1' },
    ]);
    const vms = await controller.vms();
    expect(vms.map((v) => [v.name, v.nics])).toEqual([
      [
        'app1',
        [
          {
            network: 'natnet',
            tap: tapName('app1', 0),
            mac: '52:54:00:aa:bb:01',
            addresses: ['10.10.0.58'],
            addressSource: 'dhcp-lease',
          },
        ],
      ],
      [
        'web1',
        [
          {
            network: 'natnet',
            tap: tapName('web1', 0),
            mac: webMac,
            addresses: ['10.10.0.57/24'],
            addressSource: 'guest-agent',
          },
        ],
      ],
    ]);
  });
});
