import { describe, expect, it } from 'vitest';
import type { HostReport } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import { analyzeDestruction, formatLoss } from './destroy.js';
import { planChanges } from './diff.js';
import { networkConfigHash, vmConfigHash } from './hash.js';
import { type DesiredState, resolveSpec } from './resolve.js';

const caps = {
  accelerator: 'tcg' as const,
  acceleratorReason: 'test',
  cpus: 4,
  memoryMiB: 4096,
  network: {},
  backends: ['linux' as const],
};

const BEFORE = `version: 1
hosts: [{ name: h1, agent: "unix:///a" }, { name: h2, agent: "unix:///b" }]
networks:
  - { name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }
  - { name: spare, host: h1, mode: isolated, cidr: 10.11.0.0/24 }
  - { name: net2, host: h2, mode: isolated, cidr: 10.12.0.0/24 }
vms:
  - name: web1
    host: h1
    image: { kind: qcow2, path: /img/debian.qcow2 }
    nics: [{ network: natnet }]
    disks: [{ name: data, sizeMiB: 1024 }, { name: logs, sizeMiB: 64 }]
  - { name: app1, host: h1, nics: [{ network: natnet }] }
  - { name: db1, host: h2, nics: [{ network: net2 }] }
`;

/** What agents report once `state` is realised everywhere, VMs running. */
function realised(state: DesiredState): HostReport[] {
  return Object.entries(state).map(([host, d]) => ({
    host,
    agentVersion: 'test',
    capabilities: caps,
    networks: d.networks.map((n) => ({
      name: n.name,
      bridge: n.bridge,
      configHash: networkConfigHash(n),
      problems: [],
    })),
    vms: d.vms.map((v) => ({
      name: v.name,
      state: 'running' as const,
      configHash: vmConfigHash(v),
      problems: [],
    })),
  }));
}

const before = resolveSpec(loadSpec(BEFORE, 'before.yaml'));
const analyse = (afterYaml: string, protectedVms: string[] = []) => {
  const plan = planChanges(resolveSpec(loadSpec(afterYaml, 'after.yaml')), realised(before));
  return analyzeDestruction(plan, before, new Set(protectedVms));
};

describe('destroy analysis', () => {
  it('finds nothing to lose in a plan that only adds and changes', () => {
    const a = analyse(BEFORE.replace('sizeMiB: 64 }]', 'sizeMiB: 64 }]\n    memoryMiB: 512'));
    expect(a).toEqual({ losses: [], protectedDeletions: [], kept: [] });
  });

  it('lists a deleted VM with its root overlay and disks, and a network VMs that stay used', () => {
    // web1 goes, app1 moves to another network, natnet goes.
    const after = BEFORE.replace(/ {2}- name: web1[\s\S]*?logs, sizeMiB: 64 }]\n/, '')
      .replace(
        '{ name: app1, host: h1, nics: [{ network: natnet }] }',
        '{ name: app1, host: h1, nics: [{ network: spare }] }',
      )
      .replace('  - { name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }\n', '');
    const a = analyse(after);
    expect(a.losses).toEqual([
      {
        kind: 'vm',
        host: 'h1',
        name: 'web1',
        disks: ['root (overlay of /img/debian.qcow2)', 'data (1024 MiB)', 'logs (64 MiB)'],
      },
      { kind: 'network', host: 'h1', name: 'natnet', usedBy: ['app1'] },
    ]);
    expect(a.losses.map(formatLoss)).toEqual([
      'vm web1 on h1 and its disks: root (overlay of /img/debian.qcow2), data (1024 MiB), logs (64 MiB)',
      'network natnet on h1, used by vm app1 (their NICs on it go down)',
    ]);
  });

  it('does not list a network whose VMs all go with it: the VMs are listed', () => {
    const after = BEFORE.replace(/ {2}- name: web1[\s\S]*?logs, sizeMiB: 64 }]\n/, '')
      .replace('  - { name: app1, host: h1, nics: [{ network: natnet }] }\n', '')
      .replace('  - { name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }\n', '');
    const a = analyse(after);
    expect(a.losses.map(formatLoss)).toEqual([
      'vm app1 on h1 (it has no disks)',
      'vm web1 on h1 and its disks: root (overlay of /img/debian.qcow2), data (1024 MiB), logs (64 MiB)',
    ]);
  });

  it('does not list a deleted network no VM used', () => {
    const a = analyse(
      BEFORE.replace('  - { name: spare, host: h1, mode: isolated, cidr: 10.11.0.0/24 }\n', ''),
    );
    expect(a.losses).toEqual([]);
  });

  it('says a moved VM loses its disks on the old host, and refuses a protected one', () => {
    const after = BEFORE.replace(
      '{ name: db1, host: h2, nics: [{ network: net2 }] }',
      '{ name: db1, host: h1, nics: [{ network: natnet }] }',
    );
    const a = analyse(after, ['db1']);
    // net2 stays in the spec, so only the VM is lost on h2.
    expect(a.losses).toEqual([{ kind: 'vm', host: 'h2', name: 'db1', disks: [], movedTo: 'h1' }]);
    expect(formatLoss(a.losses[0]!)).toBe(
      'vm db1 on h2 (it has no disks), moving to h1: nothing is copied over',
    );
    expect(a.protectedDeletions).toEqual([{ host: 'h2', name: 'db1' }]);
  });

  it('keeps a disk removed from a VM and names it; an unknown VM loses its whole directory', () => {
    const after = BEFORE.replace(', { name: logs, sizeMiB: 64 }', '');
    const a = analyse(after);
    expect(a.losses).toEqual([]);
    expect(a.kept).toEqual([
      "disk logs of vm web1 on h1 is detached, not deleted: its file stays in the VM's directory (name it again to reattach it)",
    ]);
    // A VM no known spec describes (left over on the host): all of its directory goes.
    const plan = planChanges({ h1: { networks: [], vms: [] } }, [
      {
        host: 'h1',
        agentVersion: 't',
        capabilities: caps,
        networks: [],
        vms: [{ name: 'stray', state: 'stopped', configHash: 'x', problems: [] }],
      },
    ]);
    const stray = analyzeDestruction(plan, {}, new Set());
    expect(stray.losses.map(formatLoss)).toEqual(['vm stray on h1 and every disk in its directory']);
  });
});
