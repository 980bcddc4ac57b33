// The NetworkDriver contract as the agent relies on it, asserted through the interface only (conformance.ts checks
// what the real backends realise in a namespace: bridges, addresses, dnsmasq). Every backend passes it, the
// in-memory fake (unit test) and the linux backend in a namespace (integration test) alike:
//   networkContract('fake', async () => ({ driver: new FakeNetworkDriver() }));
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetworkBackend, NetworkConfig } from '../../shared/model.js';
import type { NetworkDriver } from './types.js';

/** What a suite run gets from the backend under test. */
export interface NetworkContractEnv {
  driver: NetworkDriver;
  /** Removes what the env made (namespace, state directory) after the suite deleted its networks. */
  cleanup?(): Promise<void>;
}

/** Registers the contract suite for the backend `make` builds (vitest describe/it). */
export function networkContract(
  name: string,
  make: () => Promise<NetworkContractEnv>,
  opts: { backend?: NetworkBackend; timeoutMs?: number } = {},
): void {
  const t = opts.timeoutMs ?? 30_000;
  const backend = opts.backend ?? 'linux';
  const iso = (n: string, bridge: string, third: number): NetworkConfig => ({
    name: n,
    mode: 'isolated',
    backend,
    bridge,
    mtu: 1500,
    subnet: {
      cidr: `10.239.${third}.0/24`,
      gateway: `10.239.${third}.1`,
      prefixLength: 24,
      dhcpStart: `10.239.${third}.100`,
      dhcpEnd: `10.239.${third}.150`,
      reservations: [],
    },
    forwards: [],
  });
  const one = iso('ctr-one', 'vlb-ctr00001', 1);
  const two = iso('ctr-two', 'vlb-ctr00002', 2);
  const port = (tap: string, bridge = one.bridge) => ({ tap, bridge, mtu: 1500 });

  describe(`network driver contract: ${name}`, () => {
    let env: NetworkContractEnv;
    let d: NetworkDriver;
    const names = async () => (await d.listNetworks()).map((n) => n.name).sort();

    beforeAll(async () => {
      env = await make();
      d = env.driver;
    }, t);

    afterAll(async () => {
      try {
        for (const tap of ['vlt-ctr00001', 'vlt-ctr00002', 'vlt-ctr00003'])
          await d?.deletePort(tap).catch(() => undefined);
        for (const n of [one.name, two.name]) await d?.deleteNetwork(n).catch(() => undefined);
      } finally {
        await env?.cleanup?.();
      }
    }, t);

    it('reports capabilities as booleans, the same twice', async () => {
      const caps = await d.capabilities();
      for (const v of Object.values(caps)) expect(typeof v).toBe('boolean');
      expect(await d.capabilities()).toEqual(caps);
    });

    it(
      'creates a network, lists it with its hash and config, and remembers what it applied',
      async () => {
        expect(await names()).toEqual([]);
        expect(await d.appliedConfig(one.name)).toBeUndefined();
        await d.ensureNetwork(one, 'c1');
        expect((await d.listNetworks()).find((n) => n.name === one.name)).toMatchObject({
          name: one.name,
          bridge: one.bridge,
          configHash: 'c1',
          problems: [],
          config: one,
        });
        expect(await d.appliedConfig(one.name)).toEqual({ config: one, configHash: 'c1' });
      },
      t,
    );

    it(
      'is idempotent, and updates in place',
      async () => {
        await d.ensureNetwork(one, 'c1');
        expect(await names()).toEqual([one.name]);
        const wider = { ...one, mtu: 1400 };
        await d.ensureNetwork(wider, 'c2');
        expect(await d.appliedConfig(one.name)).toEqual({ config: wider, configHash: 'c2' });
        await d.ensureNetwork(one, 'c1');
      },
      t,
    );

    it(
      'refuses a second network on a bridge that is taken, changing nothing',
      async () => {
        await expect(d.ensureNetwork({ ...two, bridge: one.bridge }, 'x')).rejects.toThrow(/belongs to/);
        expect(await names()).toEqual([one.name]);
      },
      t,
    );

    it(
      'creates, re-ensures and deletes ports; a missing port is no error to delete',
      async () => {
        const p = port('vlt-ctr00001');
        expect(await d.portAttached(p.tap, p.bridge)).toBe(false);
        await d.ensurePort(p);
        await d.ensurePort(p);
        expect(await d.portAttached(p.tap, p.bridge)).toBe(true);
        expect(await d.portAttached(p.tap, two.bridge)).toBe(false);
        if (d.portMasters) expect((await d.portMasters()).get(p.tap)).toBe(p.bridge);
        await d.deletePort(p.tap);
        await d.deletePort(p.tap);
        expect(await d.portAttached(p.tap, p.bridge)).toBe(false);
      },
      t,
    );

    it(
      'refuses a port on a missing bridge and makes nothing',
      async () => {
        await expect(d.ensurePort(port('vlt-ctr00002', 'vlb-missing0'))).rejects.toThrow(/not found/);
        expect(await d.portAttached('vlt-ctr00002', 'vlb-missing0')).toBe(false);
      },
      t,
    );

    it(
      'bulk forms: the same outcome as one by one; ports all or nothing',
      async () => {
        if (d.ensureNetworks) {
          const r = await d.ensureNetworks([
            { cfg: one, configHash: 'c1' },
            { cfg: two, configHash: 't1' },
          ]);
          expect(r).toEqual([{ ok: true }, { ok: true }]);
        } else await d.ensureNetwork(two, 't1');
        expect(await names()).toEqual([one.name, two.name]);
        if (d.ensurePorts) {
          await expect(
            d.ensurePorts([port('vlt-ctr00002'), port('vlt-ctr00003', 'vlb-missing0')]),
          ).rejects.toThrow();
          expect(await d.portAttached('vlt-ctr00002', one.bridge)).toBe(false);
          await d.ensurePorts([port('vlt-ctr00002'), port('vlt-ctr00003', two.bridge)]);
          expect(await d.portAttached('vlt-ctr00002', one.bridge)).toBe(true);
          expect(await d.portAttached('vlt-ctr00003', two.bridge)).toBe(true);
        }
        if (d.deletePorts) {
          await d.deletePorts(['vlt-ctr00002', 'vlt-ctr00003']);
          expect(await d.portAttached('vlt-ctr00002', one.bridge)).toBe(false);
        }
      },
      t,
    );

    it(
      'deletes networks; a missing one is no error',
      async () => {
        if (d.deleteNetworks) expect(await d.deleteNetworks([two.name])).toEqual([{ ok: true }]);
        else await d.deleteNetwork(two.name);
        await d.deleteNetwork(one.name);
        await d.deleteNetwork(one.name);
        expect(await names()).toEqual([]);
        expect(await d.appliedConfig(one.name)).toBeUndefined();
      },
      t,
    );
  });
}
