import { describe, expect, it } from 'vitest';
import { loadSpec } from '../spec/load.js';
import { planChanges } from './diff.js';
import { formatPlan, NO_CHANGES } from './format.js';
import { networkConfigHash } from './hash.js';
import { resolveSpec } from './resolve.js';

const desired = resolveSpec(
  loadSpec(`
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: natnet, host: host1, mode: nat, cidr: 10.10.0.0/24 }
  - { name: lan, host: host1, mode: bridge }
vms:
  - { name: web1, host: host1, cpus: 2, memoryMiB: 512, nics: [{ network: natnet }, { network: lan }] }
`),
);
const caps = {
  accelerator: 'tcg' as const,
  acceleratorReason: '',
  cpus: 1,
  memoryMiB: 1024,
  network: {},
  backends: ['linux' as const],
};

describe('formatPlan', () => {
  it('says so when there is nothing to do', () => {
    expect(formatPlan({ steps: [], unchanged: ['vm web1 on host1'] })).toBe(NO_CHANGES);
    expect(NO_CHANGES).toBe('No changes. Infrastructure matches the spec.');
  });

  it('renders a creation plan', () => {
    expect(formatPlan(planChanges(desired, []))).toBe(
      [
        '+ network lan on host1 (bridge on eth0) [commit-confirm 60 s]',
        '+ network natnet on host1 (nat 10.10.0.0/24)',
        '+ vm web1 on host1 (2 cpus, 512 MiB, test-guest, nics: natnet, lan)',
        '> vm web1 start on host1',
        '',
        'Plan: 3 to create, 0 to update, 0 to delete, 1 to start, 0 to stop.',
      ].join('\n'),
    );
  });

  it('renders updates, in-place VM changes, stops and deletes', () => {
    const plan = planChanges(desired, [
      {
        host: 'host1',
        agentVersion: '',
        capabilities: caps,
        networks: [
          { name: 'natnet', bridge: 'x', configHash: 'old', problems: [] },
          { name: 'lan', bridge: 'x', configHash: 'old', problems: ['bridge missing'] },
          { name: 'old', bridge: 'x', configHash: 'old', problems: [] },
        ],
        vms: [
          { name: 'web1', state: 'running', configHash: 'old', problems: [] },
          { name: 'stray', state: 'stopped', configHash: 'x', problems: [] },
        ],
      },
    ]);
    expect(formatPlan(plan)).toBe(
      [
        '~ network lan on host1 (repair: bridge missing) [commit-confirm 60 s]',
        '~ network natnet on host1 (configuration changed)',
        '- vm stray on host1 (not in the spec)',
        '< vm web1 stop on host1 (configuration changed)',
        '~ vm web1 on host1 (configuration changed; 2 cpus, 512 MiB, test-guest, nics: natnet, lan)',
        '> vm web1 start on host1',
        '- network old on host1 (not in the spec)',
        '',
        'Plan: 0 to create, 3 to update, 2 to delete, 1 to start, 1 to stop.',
      ].join('\n'),
    );
  });

  it('says what changed, field by field, and how each change is applied', () => {
    const web1 = desired.host1!.vms[0]!;
    const oneNic = { ...web1, nics: web1.nics.slice(0, 1) };
    const obs = (config: typeof web1, state: 'running' | 'stopped') => [
      {
        host: 'host1',
        agentVersion: '',
        capabilities: caps,
        networks: desired.host1!.networks.map((n) => ({
          name: n.name,
          bridge: n.bridge,
          configHash: networkConfigHash(n),
          problems: [],
        })),
        vms: [{ name: 'web1', state, configHash: 'old', problems: [], config }],
      },
    ];
    expect(formatPlan(planChanges(desired, obs(oneNic, 'running')))).toBe(
      [
        '~ vm web1 on host1: nics +lan (hot-plug)',
        '',
        'Plan: 0 to create, 1 to update, 0 to delete, 0 to start, 0 to stop.',
      ].join('\n'),
    );
    expect(formatPlan(planChanges(desired, obs({ ...oneNic, memoryMiB: 256, cpus: 1 }, 'running')))).toBe(
      [
        '< vm web1 stop on host1 (configuration changed)',
        '~ vm web1 on host1: cpus 1 -> 2 (restart), memoryMiB 256 -> 512 (restart), nics +lan (restart)',
        '> vm web1 start on host1',
        '',
        'Plan: 0 to create, 1 to update, 0 to delete, 1 to start, 1 to stop.',
      ].join('\n'),
    );
  });
});
