import { describe, expect, it } from 'vitest';
import { networkContract } from '../conformance-contract.js';
import { networkDrivers } from '../registry.js';
import { FakeNetworkDriver } from './driver.js';

// The in-memory backend passes the same contract as the linux backend (test/integration/driver-contract.int.test.ts).
networkContract('fake', async () => ({ driver: new FakeNetworkDriver() }));

describe('fake network driver', () => {
  it('is registered, and keeps each instance apart (one per simulated host)', async () => {
    const a = networkDrivers.fake({ runner: undefined as never, stateDir: '/nonexistent' });
    const b = new FakeNetworkDriver();
    expect(a).toBeInstanceOf(FakeNetworkDriver);
    await a.ensureNetwork(
      { name: 'n', mode: 'isolated', backend: 'linux', bridge: 'vlb-n', mtu: 1500, forwards: [] },
      'h',
    );
    expect(await b.listNetworks()).toEqual([]);
  });

  it('answers hasPort for the fake hypervisor, and a deleted network detaches its ports', async () => {
    const d = new FakeNetworkDriver();
    await d.ensureNetwork(
      { name: 'n', mode: 'isolated', backend: 'linux', bridge: 'vlb-n', mtu: 1500, forwards: [] },
      'h',
    );
    await d.ensurePort({ tap: 'vlt-1', bridge: 'vlb-n', mtu: 1500 });
    expect(d.hasPort('vlt-1')).toBe(true);
    await d.deleteNetwork('n');
    expect(await d.portAttached('vlt-1', 'vlb-n')).toBe(false);
    expect((await d.portMasters()).get('vlt-1')).toBeUndefined();
  });
});
