import { describe, expect, it } from 'vitest';
import { InvalidStateError } from '../../../shared/errors.js';
import type { VmConfig } from '../../../shared/model.js';
import { hypervisorConformance } from '../conformance.js';
import { hypervisorDrivers } from '../registry.js';
import { FakeHypervisorDriver } from './driver.js';

const vm = (name: string): VmConfig => ({
  name,
  cpus: 1,
  memoryMiB: 128,
  image: { kind: 'test-guest' },
  disks: [],
  nics: [],
  state: 'running',
});

// The in-memory hypervisor passes the suite the QEMU driver passes (test/integration/driver-contract.int.test.ts).
hypervisorConformance('fake', async () => ({ driver: new FakeHypervisorDriver(), vm }));

describe('fake hypervisor driver', () => {
  it('is registered', () => {
    expect(hypervisorDrivers.fake({ runner: undefined as never, stateDir: '/nonexistent' })).toBeInstanceOf(
      FakeHypervisorDriver,
    );
  });

  it('refuses a VM whose tap does not exist, as QEMU cannot open it', async () => {
    const d = new FakeHypervisorDriver({ tapExists: (t) => t === 'vlt-ok' });
    const nic = {
      network: 'n',
      bridge: 'vlb-n',
      mac: '52:54:00:00:00:01',
      mtu: 1500,
    };
    await expect(
      d.create({ ...vm('a'), nics: [{ ...nic, tap: 'vlt-gone' }] } as VmConfig, 'h'),
    ).rejects.toBeInstanceOf(InvalidStateError);
    await d.create({ ...vm('a'), nics: [{ ...nic, tap: 'vlt-ok' }] } as VmConfig, 'h');
    expect(await d.vmStats()).toMatchObject([
      { name: 'a', running: false, nics: [{ nic: 'nic0', tap: 'vlt-ok' }] },
    ]);
  });

  it('hot-plugs only a running VM', async () => {
    const d = new FakeHypervisorDriver();
    await d.create(vm('a'), 'h1');
    await expect(d.hotplug({ ...vm('a'), cpus: 1 }, 'h2')).rejects.toBeInstanceOf(InvalidStateError);
    await d.start('a');
    expect(await d.canHotplug('a')).toBe(true);
    await d.hotplug(vm('a'), 'h2');
    expect((await d.list())[0]).toMatchObject({ state: 'running', configHash: 'h2' });
  });
});
