import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../controller/agents.js';
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import { createHttpApp, listen } from '../shared/http/server.js';
import { addVersionGate } from '../shared/http/version-gate.js';
import type { ObservedVm } from '../shared/model.js';
import type { GuestInterface } from '../shared/results.js';
import { listGuestInterfaces, registerGuestListRoute } from './guest-list.js';
import {
  GUEST_LIST_MAX_ADDRESSES,
  GUEST_LIST_MAX_INTERFACES,
  GUEST_LIST_MAX_VMS,
  GuestListSchema,
} from './wire-guests.js';

type Hv = Pick<HypervisorDriver, 'list' | 'guestInterfaces'>;

/** A hypervisor of `vms` (name -> state) whose guests answer with `answer(name)`. */
const hv = (vms: Record<string, string>, answer: (vm: string) => Promise<GuestInterface[]>): Hv => ({
  list: async () => Object.entries(vms).map(([name, state]) => ({ name, state }) as unknown as ObservedVm),
  guestInterfaces: answer,
});
const nic = (mac: string, ...addresses: string[]): GuestInterface => ({ name: 'eth0', mac, addresses });

describe('every guest’s interfaces in one answer', () => {
  it('lists running VMs by name; a guest that fails or is late is listed with why', async () => {
    const r = await listGuestInterfaces(
      hv({ web: 'running', db: 'running', slow: 'running', off: 'stopped' }, async (vm) => {
        if (vm === 'db') throw new Error('guest agent of db: connection refused');
        if (vm === 'slow') return new Promise(() => {}); // never answers
        return [nic('52:54:00:00:00:01', '10.0.0.5/24')];
      }),
      { vmTimeoutMs: 50, deadlineMs: 5_000 },
    );
    expect(r).toEqual({
      vms: [
        { name: 'db', error: 'guest agent of db: connection refused' },
        { name: 'slow', error: 'its guest agent did not answer within 1 s' },
        { name: 'web', interfaces: [nic('52:54:00:00:00:01', '10.0.0.5/24')] },
      ],
      truncated: false,
    });
    expect(GuestListSchema.parse(r)).toEqual(r);
  });

  it('bounds what a guest names: interfaces, addresses, their lengths', async () => {
    const r = await listGuestInterfaces(
      hv({ web: 'running' }, async () =>
        Array.from({ length: GUEST_LIST_MAX_INTERFACES + 10 }, (_, i) => ({
          name: `eth${i}`,
          mac: '52:54:00:00:00:02',
          addresses: [
            'x'.repeat(500),
            ...Array.from({ length: GUEST_LIST_MAX_ADDRESSES + 10 }, (_, j) => `10.0.${i}.${j}/24`),
          ],
        })),
      ),
    );
    const ifs = r.vms[0]!.interfaces!;
    expect(ifs).toHaveLength(GUEST_LIST_MAX_INTERFACES);
    expect(ifs[0]!.addresses).toHaveLength(GUEST_LIST_MAX_ADDRESSES);
    expect(ifs[0]!.addresses[0]).toBe('10.0.0.0/24'); // the overlong one left out
    expect(() => GuestListSchema.parse(r)).not.toThrow();
  });

  it('lists at most GUEST_LIST_MAX_VMS VMs, and says it left some out', async () => {
    const many = Array.from({ length: GUEST_LIST_MAX_VMS + 5 }, (_, i) => [`vm${i}`, 'running']);
    const r = await listGuestInterfaces(hv(Object.fromEntries(many), async () => []));
    expect(r.truncated).toBe(true);
    expect(r.vms).toHaveLength(GUEST_LIST_MAX_VMS);
    expect(() => GuestListSchema.parse(r)).not.toThrow();
  });

  it('stops asking once its deadline passed: the VMs not asked are listed as such', async () => {
    const r = await listGuestInterfaces(
      hv(
        Object.fromEntries(
          Array.from({ length: 20 }, (_, i) => [`vm${String(i).padStart(2, '0')}`, 'running']),
        ),
        () => new Promise((res) => setTimeout(() => res([]), 40)),
      ),
      { vmTimeoutMs: 1_000, deadlineMs: 60 },
    );
    // The first batch (GUEST_LIST_CONCURRENCY) answered; the second ran into the deadline; the rest were not asked.
    expect(r.vms.filter((v) => v.interfaces)).toHaveLength(8);
    expect(r.vms.filter((v) => v.error)).toHaveLength(12);
    expect(r.vms.filter((v) => v.error?.startsWith('not asked')).length).toBeGreaterThan(0);
  });

  it('the controller’s schema refuses an answer past its bounds or naming both interfaces and an error', () => {
    const ok = { name: 'web', interfaces: [nic('52:54:00:00:00:01', '10.0.0.5/24')] };
    expect(GuestListSchema.safeParse({ vms: [ok], truncated: false }).success).toBe(true);
    const bad = [
      { vms: [{ ...ok, error: 'x' }], truncated: false },
      { vms: [{ name: 'web' }], truncated: false },
      { vms: [{ ...ok, name: '../etc' }], truncated: false },
      { vms: [ok], truncated: false, extra: 1 },
      { vms: Array.from({ length: GUEST_LIST_MAX_VMS + 1 }, () => ok), truncated: true },
      {
        vms: [{ name: 'web', interfaces: [nic('52:54:00:00:00:01', 'a'.repeat(65))] }],
        truncated: false,
      },
    ];
    for (const b of bad)
      expect(GuestListSchema.safeParse(b).success, JSON.stringify(b).slice(0, 80)).toBe(false);
  });
});

describe('the controller’s client of the route', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-guest-list-'));
  const withRoute = createHttpApp();
  const without = createHttpApp();
  beforeAll(async () => {
    addVersionGate(withRoute, 'wire', 'agent of h1');
    addVersionGate(without, 'wire', 'agent of h2');
    registerGuestListRoute(
      withRoute,
      hv({ web: 'running' }, async () => [nic('52:54:00:00:00:01', '10.0.0.5/24')]),
    );
    await listen(withRoute, `unix://${join(dir, 'h1.sock')}`);
    await listen(without, `unix://${join(dir, 'h2.sock')}`);
  });
  afterAll(async () => {
    await withRoute.close();
    await without.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads the answer through its schema; an agent without the route (404) gives undefined', async () => {
    expect(await new AgentClient('h1', `unix://${join(dir, 'h1.sock')}`).guestList()).toEqual({
      vms: [{ name: 'web', interfaces: [nic('52:54:00:00:00:01', '10.0.0.5/24')] }],
      truncated: false,
    });
    expect(await new AgentClient('h2', `unix://${join(dir, 'h2.sock')}`).guestList()).toBeUndefined();
  });
});
