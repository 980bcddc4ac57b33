// VLAN conformance suite for network backends that realise `vlan` networks (ovs): run by `networkConformance`
// when the backend lists the mode.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ip } from '../../exec/ip.js';
import { SystemRunner } from '../../exec/runner.js';
import type { NetworkConfig } from '../../shared/model.js';
import { type ConformanceEnv, type ConformanceOptions, pidsMentioning } from './conformance-env.js';
import type { NetworkDriver } from './types.js';

/** VLAN networks: two VLANs sharing one trunk NIC (a veth end), access and trunk ports, conflicts, cleanup. */
export function vlanConformance(
  name: string,
  makeDriver: (env: ConformanceEnv) => NetworkDriver,
  opts: ConformanceOptions = {},
): void {
  describe(`network driver conformance (vlan): ${name}`, () => {
    const runner = new SystemRunner();
    const netns = `vltest-nv-${randomBytes(3).toString('hex')}`;
    const ip = new Ip(runner, netns);
    let env: ConformanceEnv;
    let d: NetworkDriver;
    const bridge = 'vlo-c0nf0100';
    const v100: NetworkConfig = {
      name: 'conf-v100',
      mode: 'vlan',
      backend: 'ovs',
      bridge,
      mtu: 1500,
      vlan: { id: 100, trunk: 'trk0' },
      forwards: [],
    };
    const v200: NetworkConfig = { ...v100, name: 'conf-v200', vlan: { id: 200, trunk: 'trk0' } };
    const names = async () => (await d.listNetworks()).map((n) => [n.name, n.problems]);

    beforeAll(async () => {
      await ip.namespaces.add(netns);
      await ip.link.set('lo', { up: true });
      await ip.link.add({ name: 'trk0', kind: 'veth', peer: 'trk1' });
      await ip.link.set('trk1', { up: true });
      env = { runner, stateDir: await mkdtemp(join(tmpdir(), 'vmlink-netconf-vlan-')), netns };
      d = makeDriver(env);
    });

    afterAll(async () => {
      try {
        for (const n of (await d?.listNetworks().catch(() => [])) ?? [])
          await d.deleteNetwork(n.name).catch(() => undefined);
      } finally {
        for (const pid of await pidsMentioning(env?.stateDir || '/nonexistent-vmlink'))
          process.kill(pid, 'SIGKILL');
        await ip.namespaces.del(netns);
        if (env?.stateDir) await rm(env.stateDir, { recursive: true, force: true });
      }
    });

    it('creates two VLAN networks on one trunk, idempotently', async () => {
      expect(await d.listNetworks()).toEqual([]);
      await d.ensureNetwork(v100, 'h100');
      await d.ensureNetwork(v100, 'h100');
      await d.ensureNetwork(v200, 'h200');
      expect(await names()).toEqual([
        [v100.name, []],
        [v200.name, []],
      ]);
      expect((await d.listNetworks()).map((n) => [n.bridge, n.configHash])).toEqual([
        [bridge, 'h100'],
        [bridge, 'h200'],
      ]);
    });

    it('refuses a second network for a VLAN that is taken, changing nothing', async () => {
      await expect(d.ensureNetwork({ ...v100, name: 'conf-dup' }, 'h')).rejects.toThrow(/already belongs/);
      expect((await d.listNetworks()).map((n) => n.name)).toEqual([v100.name, v200.name]);
    });

    it('access and trunk ports: create, re-ensure, retag, detach behind its back, delete', async () => {
      const access = { tap: 'vlt-c0nfa001', bridge, mtu: 1500, vlan: 100 };
      const trunk = { tap: 'vlt-c0nft001', bridge, mtu: 1500, trunks: [100, 200] };
      expect(await d.portAttached(access.tap, bridge)).toBe(false);
      await d.ensurePort(access);
      await d.ensurePort(access);
      await d.ensurePort(trunk);
      expect(await d.portAttached(access.tap, bridge)).toBe(true);
      expect(await d.portAttached(trunk.tap, bridge)).toBe(true);
      expect(await d.portAttached(access.tap, 'vlo-other')).toBe(false);
      await d.ensurePort({ ...access, vlan: 200 });
      expect(await d.portAttached(access.tap, bridge)).toBe(true);
      if (opts.detachPort) await opts.detachPort(env, access.tap);
      else await ip.link.set(access.tap, { master: null });
      expect(await d.portAttached(access.tap, bridge)).toBe(false);
      await d.ensurePort(access);
      expect(await d.portAttached(access.tap, bridge)).toBe(true);
      for (const p of [access, trunk]) {
        await d.deletePort(p.tap);
        await d.deletePort(p.tap);
        expect(await d.portAttached(p.tap, bridge)).toBe(false);
        expect(await ip.link.get(p.tap)).toBeUndefined();
      }
      await expect(
        d.ensurePort({ tap: 'vlt-c0nf0002', bridge: 'vlo-missing0', mtu: 1500, vlan: 100 }),
      ).rejects.toThrow(/not found/);
      expect(await ip.link.get('vlt-c0nf0002')).toBeUndefined();
    });

    it('deleting one VLAN keeps the other; deleting both leaves nothing', async () => {
      await d.deleteNetwork(v100.name);
      expect(await names()).toEqual([[v200.name, []]]);
      await d.deleteNetwork(v200.name);
      await d.deleteNetwork(v200.name);
      await d.deleteNetwork('never-existed');
      expect(await d.listNetworks()).toEqual([]);
      expect(await ip.link.get(bridge)).toBeUndefined();
      expect((await ip.link.get('trk0'))?.master).toBeUndefined();
      expect(await pidsMentioning(env.stateDir)).toEqual([]);
    });
  });
}
