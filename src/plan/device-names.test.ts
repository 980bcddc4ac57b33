import { describe, expect, it } from 'vitest';
import type { HostReport, NetworkConfig, VmConfig } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import { legacyBridgeName, legacyTapName } from '../spec/net.js';
import { planChanges } from './diff.js';
import { configHash, networkConfigHash, vmConfigHash } from './hash.js';
import { resolveSpec } from './resolve.js';

const SPEC = `
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: natnet, host: host1, mode: nat, cidr: 10.10.0.0/24 }
  - { name: lan, host: host1, mode: bridge }
vms:
  - { name: web1, host: host1, nics: [{ network: natnet }] }
  - { name: app1, host: host1, nics: [{ network: lan }, { network: natnet }] }
`;

/** A config as vmlink named its devices before readable names. */
const legacyNet = (n: NetworkConfig): NetworkConfig => ({ ...n, bridge: legacyBridgeName(n.name) });
const legacyVm = (vm: VmConfig): VmConfig => ({
  ...vm,
  nics: vm.nics.map((nic, i) => ({
    ...nic,
    tap: legacyTapName(vm.name, i),
    bridge: legacyBridgeName(nic.network),
  })),
});
/** What an agent that realised `SPEC` with a vmlink from before readable names reports. */
function legacyReport(spec: string): HostReport {
  const want = resolveSpec(loadSpec(spec)).host1!;
  return {
    host: 'host1',
    agentVersion: '0.1.0',
    capabilities: {
      accelerator: 'tcg',
      acceleratorReason: 'test',
      cpus: 4,
      memoryMiB: 4096,
      network: {},
      backends: ['linux'],
    },
    networks: want.networks.map((n) => ({
      name: n.name,
      bridge: legacyBridgeName(n.name),
      // The old hash: over the config with its hashed names, as stored by the agent.
      configHash: configHash(legacyNet(n)),
      problems: [],
    })),
    vms: want.vms.map((vm) => {
      const { state: _s, ...rest } = legacyVm(vm);
      return { name: vm.name, state: 'running', configHash: configHash(rest), problems: [] };
    }),
  };
}

describe('readable device names on hosts realised with hashed ones', () => {
  it('resolves readable names for new objects', () => {
    const want = resolveSpec(loadSpec(SPEC)).host1!;
    expect(want.networks.map((n) => n.bridge)).toEqual(['vlb-natnet', 'vlb-lan']);
    expect(want.vms.find((v) => v.name === 'app1')!.nics.map((n) => n.tap)).toEqual([
      'vlt-app1-0',
      'vlt-app1-1',
    ]);
  });

  it('hashes a config the same whether its derived names are readable or hashed', () => {
    const want = resolveSpec(loadSpec(SPEC)).host1!;
    for (const n of want.networks) expect(networkConfigHash(n)).toBe(networkConfigHash(legacyNet(n)));
    for (const vm of want.vms) expect(vmConfigHash(vm)).toBe(vmConfigHash(legacyVm(vm)));
    // A name that is not derived from the object still counts.
    const n = want.networks[0]!;
    expect(networkConfigHash({ ...n, bridge: 'br-other' })).not.toBe(networkConfigHash(n));
  });

  it('plans nothing for an unchanged spec: no VM restarts, no network is rebuilt', () => {
    const plan = planChanges(resolveSpec(loadSpec(SPEC)), [legacyReport(SPEC)]);
    expect(plan.steps).toEqual([]);
  });

  it('keeps an old bridge for a changed network and for NICs of new VMs on it; new taps are readable', () => {
    const changed = SPEC.replace('cidr: 10.10.0.0/24 }', 'cidr: 10.10.0.0/24, mtu: 1400 }').replace(
      'vms:\n',
      'vms:\n  - { name: db1, host: host1, nics: [{ network: natnet }] }\n',
    );
    const steps = planChanges(resolveSpec(loadSpec(changed)), [legacyReport(SPEC)]).steps;
    const update = steps.find((s) => s.kind === 'network.update');
    expect(update).toMatchObject({
      network: { name: 'natnet', bridge: legacyBridgeName('natnet'), mtu: 1400 },
    });
    const create = steps.find((s) => s.kind === 'vm.create');
    expect(create).toMatchObject({
      vm: { name: 'db1', nics: [{ tap: 'vlt-db1-0', bridge: legacyBridgeName('natnet'), mtu: 1400 }] },
    });
  });
});
