import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeFleet } from '../../test/helpers/fake-agents.js';
import { RecordingRunner } from '../exec/runner.js';
import { InvalidSpecError } from '../shared/errors.js';
import { Controller } from './controller.js';
import { SqliteStore } from './store/sqlite.js';

/** One host with a dir pool; `vm` is the VM's YAML flow mapping fields after name and host. */
const spec = (vm: string) => `version: 1
hosts: [{ name: h1, agent: "unix:///fake/h1.sock" }]
networks: [{ name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }]
pools: [{ name: local, type: dir, host: h1 }]
vms:
  - { name: web1, host: h1, nics: [{ network: natnet }], ${vm} }
`;

describe('planning checks storage and devices against the hosts', () => {
  let fleet: FakeFleet;
  let store: SqliteStore;
  let controller: Controller;
  beforeEach(() => {
    fleet = new FakeFleet();
    store = new SqliteStore(':memory:');
    controller = new Controller(store, new RecordingRunner(), { agents: fleet.agents });
  });
  afterEach(async () => {
    fleet.close();
    await store.close();
  });

  it('refuses a volume the spec does not declare and its pool does not hold, before anything is sent', async () => {
    const err = await controller
      .plan(spec('disks: [{ name: d, pool: local, volume: golden }]'), 'site.yaml')
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidSpecError);
    expect((err as InvalidSpecError).issues).toEqual([
      {
        path: 'vms[0].disks[0].volume',
        message: expect.stringContaining('volume "golden" is not in pool "local" on host "h1"'),
      },
    ]);
    expect(fleet.sent()).toEqual([]);
  });

  it('refuses a device on a host that reports no inventory', async () => {
    const err = await controller
      .plan(spec('devices: [{ pci: "0000:65:00.0" }]'), 'site.yaml')
      .catch((e: unknown) => e);
    expect((err as InvalidSpecError).issues).toEqual([
      { path: 'vms[0].devices[0]', message: expect.stringContaining('host "h1" did not report its devices') },
    ]);
  });

  it('plans the pool and the VM’s own volume before the VM', async () => {
    const plan = await controller.plan(spec('disks: [{ name: d, pool: local, sizeMiB: 8 }]'), 'site.yaml');
    expect(plan.text.split('\n').slice(0, 5)).toEqual([
      '+ network natnet on h1 (nat 10.10.0.0/24)',
      '+ pool local on h1 (dir, /var/lib/vmlink/pools/local)',
      '+ volume local/web1-d on h1 (8 MiB qcow2)',
      '+ vm web1 on h1 (1 cpu, 256 MiB, test-guest, nics: natnet, disks: d (local/web1-d))',
      '> vm web1 start on h1',
    ]);
  });
});
