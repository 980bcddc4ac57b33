import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import type { AppliedSecurityGroup, NetworkDriver, PortConfig } from '../drivers/network/types.js';
import { RecordingRunner } from '../exec/runner.js';
import type { NetworkBackend, NicConfig, VmConfig } from '../shared/model.js';
import { SECURITY_GROUP_MEMBERS_MAX, type SecurityGroupConfig } from '../shared/security-groups.js';
import { Agent } from './agent.js';
import { AgentActionSchema } from './wire.js';

const web: SecurityGroupConfig = {
  name: 'web',
  rules: [{ direction: 'ingress', protocol: 'tcp', ports: [{ from: 80, to: 80 }], cidr: '0.0.0.0/0' }],
  memberMacs: ['52:54:00:00:00:01'],
};

/** A network driver that records calls and keeps groups in memory; `groups: false` makes one without them. */
function fakeDriver(name: string, calls: string[], groups = true): NetworkDriver {
  const held = new Map<string, AppliedSecurityGroup>();
  const d: NetworkDriver = {
    ensureNetwork: async () => {},
    deleteNetwork: async () => {},
    listNetworks: async () => [],
    appliedConfig: async () => undefined,
    ensurePort: async (p: PortConfig) => {
      calls.push(`${name} port ${p.tap} groups=${p.securityGroups?.join(',') ?? '-'}`);
    },
    deletePort: async () => {},
    portAttached: async () => true,
    capabilities: async () => ({}),
  };
  if (!groups) return d;
  return {
    ...d,
    ensureSecurityGroup: async (g, hash) => {
      calls.push(`${name} ensure ${g.name} ${hash}`);
      held.set(g.name, { config: g, configHash: hash });
    },
    deleteSecurityGroup: async (g) => {
      calls.push(`${name} delete ${g}`);
      held.delete(g);
    },
    listSecurityGroups: async () => [...held.values()],
  };
}

const nic = (i: number, extra: Partial<NicConfig> = {}): NicConfig => ({
  network: 'lan',
  backend: 'linux',
  bridge: 'vlb-lan',
  tap: `vlt-v${i}-0`,
  mac: `52:54:00:00:00:0${i}`,
  mtu: 1500,
  ...extra,
});
const vmWith = (i: number, n: NicConfig): VmConfig => ({
  name: `v${i}`,
  cpus: 1,
  memoryMiB: 128,
  image: { kind: 'test-guest' },
  disks: [],
  state: 'stopped',
  nics: [n],
});

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function agentWith(networks: Partial<Record<NetworkBackend, NetworkDriver>>, vms: VmConfig[] = []): Agent {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-agent-sg-'));
  dirs.push(dir);
  const configs = new Map(vms.map((v) => [v.name, v]));
  const hypervisor = {
    adopt: async () => {},
    list: async () =>
      [...configs.values()].map((v) => ({
        name: v.name,
        state: 'stopped',
        configHash: 'x',
        problems: [],
        config: v,
      })),
    config: async (name: string) => configs.get(name),
    create: async (v: VmConfig) => void configs.set(v.name, v),
    accelerator: async () => ({ accelerator: 'tcg', acceleratorReason: 'test' }),
  } as unknown as HypervisorDriver;
  return new Agent({ host: 'host1', runner: new RecordingRunner(), networks, hypervisor, stateDir: dir });
}

describe('agent: security groups', () => {
  it('ensures a group on every backend that has groups and reports it once, merged', async () => {
    const calls: string[] = [];
    const agent = agentWith({ linux: fakeDriver('linux', calls), ovs: fakeDriver('ovs', calls) });
    await agent.execute({ kind: 'securityGroup.ensure', group: web, configHash: 'abcdef01' });
    expect(calls).toEqual(['linux ensure web abcdef01', 'ovs ensure web abcdef01']);
    expect((await agent.report()).securityGroups).toEqual([
      { name: 'web', configHash: 'abcdef01', problems: [], config: web },
    ]);
  });

  it('reports a group one backend lacks or holds in another version, so the plan ensures it again', async () => {
    const calls: string[] = [];
    const linux = fakeDriver('linux', calls);
    const ovs = fakeDriver('ovs', calls);
    const agent = agentWith({ linux, ovs });
    await linux.ensureSecurityGroup?.(web, 'abcdef01');
    await linux.ensureSecurityGroup?.({ ...web, name: 'db' }, 'abcdef02');
    await ovs.ensureSecurityGroup?.({ ...web, name: 'db' }, 'abcdef03');
    const report = await agent.report();
    expect(report.securityGroups?.map((g) => [g.name, g.problems])).toEqual([
      ['db', ['the ovs backend holds another version']],
      ['web', ['not on the ovs backend']],
    ]);
  });

  it('refuses a group where no backend has groups, saying what to do', async () => {
    const agent = agentWith({ linux: fakeDriver('linux', [], false) });
    await expect(
      agent.execute({ kind: 'securityGroup.ensure', group: web, configHash: 'abcdef01' }),
    ).rejects.toThrow(/security group web: no network backend of host host1 supports security groups/);
    // No groups, no report entry.
    expect(await agent.report()).not.toHaveProperty('securityGroups');
  });

  it('refuses to delete a group a VM of the host still names; deletes it from every backend otherwise', async () => {
    const calls: string[] = [];
    const agent = agentWith({ linux: fakeDriver('linux', calls), ovs: fakeDriver('ovs', calls) }, [
      vmWith(1, nic(1, { securityGroups: ['web'] })),
    ]);
    await expect(agent.execute({ kind: 'securityGroup.delete', name: 'web' })).rejects.toThrow(
      /security group web is still used by VM\(s\) v1/,
    );
    await agent.execute({ kind: 'securityGroup.delete', name: 'db' });
    expect(calls).toEqual(['linux delete db', 'ovs delete db']);
  });

  it("gives a NIC's groups to its port, and refuses a port with groups on a backend without them", async () => {
    const calls: string[] = [];
    const agent = agentWith({ linux: fakeDriver('linux', calls), ovs: fakeDriver('ovs', calls, false) });
    await agent.execute({
      kind: 'vm.create',
      vm: vmWith(1, nic(1, { securityGroups: ['web', 'db'] })),
      configHash: 'abcdef01',
    });
    expect(calls).toEqual(['linux port vlt-v1-0 groups=web,db']);
    const onOvs = vmWith(2, nic(2, { backend: 'ovs', securityGroups: ['web'] }));
    await expect(agent.execute({ kind: 'vm.create', vm: onOvs, configHash: 'abcdef02' })).rejects.toThrow(
      /NIC vlt-v2-0 of network lan has security groups \(web\), which the ovs network backend of host host1 does not support/,
    );
    // The batch path (ports of several VMs in one call) refuses it too, before any port is made.
    calls.length = 0;
    const results = await agent.executeBatch([
      { kind: 'vm.create', vm: vmWith(3, nic(3, { backend: 'ovs' })), configHash: 'abcdef03' },
      { kind: 'vm.create', vm: onOvs, configHash: 'abcdef02' },
    ]);
    expect(results.some((r) => !r.ok)).toBe(true);
    expect(calls.some((c) => c.includes('vlt-v2-0'))).toBe(false);
  });
});

describe('wire: security group actions', () => {
  const ensure = (group: unknown) =>
    AgentActionSchema.safeParse({ kind: 'securityGroup.ensure', group, configHash: 'abcdef01' });
  const rule = (over: object) => ({ ...web, rules: [{ ...web.rules[0], ...over }] });
  const messages = (r: ReturnType<typeof ensure>) =>
    r.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`);

  it('takes a resolved group', () => {
    expect(ensure(web).success).toBe(true);
    expect(ensure({ ...web, rules: [{ direction: 'egress', protocol: 'any', group: 'db' }] }).success).toBe(
      true,
    );
  });

  it('refuses what a spec cannot produce', () => {
    expect(messages(ensure(rule({ protocol: 'icmp' })))).toEqual([
      'group.rules.0.ports: ports need protocol tcp or udp, not icmp',
    ]);
    expect(messages(ensure(rule({ ports: [{ from: 90, to: 80 }] })))).toEqual([
      'group.rules.0.ports.0: range 90-80 is empty',
    ]);
    expect(messages(ensure(rule({ group: 'db' })))).toEqual([
      'group.rules.0: a rule has at most one remote: cidr or group',
    ]);
    expect(messages(ensure(rule({ cidr: '10.0.0.1/8' })))).toEqual([
      'group.rules.0.cidr: 10.0.0.1/8 is not a network address',
    ]);
    expect(messages(ensure({ ...web, memberMacs: ['52:54:00:00:00:01', '52:54:00:00:00:01'] }))).toEqual([
      'group.memberMacs: lists a MAC twice',
    ]);
    expect(ensure(rule({ cidr: '10.0.0.0/33' })).success).toBe(false);
    expect(ensure(rule({ ports: [{ from: 0, to: 80 }] })).success).toBe(false);
    expect(ensure(rule({ action: 'accept' })).success).toBe(false);
    expect(ensure({ ...web, name: '../etc' }).success).toBe(false);
  });

  it('bounds rules, ports and members', () => {
    const many = <T>(n: number, f: (i: number) => T) => Array.from({ length: n }, (_, i) => f(i));
    expect(ensure({ ...web, rules: many(129, () => web.rules[0]) }).success).toBe(false);
    expect(ensure(rule({ ports: many(33, (i) => ({ from: i + 1, to: i + 1 })) })).success).toBe(false);
    const mac = (i: number) =>
      `52:54:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
    expect(ensure({ ...web, memberMacs: many(SECURITY_GROUP_MEMBERS_MAX, mac) }).success).toBe(true);
    expect(ensure({ ...web, memberMacs: many(SECURITY_GROUP_MEMBERS_MAX + 1, mac) }).success).toBe(false);
  });
});
