// Load balancers against real HAProxy, Keepalived, bridges and nftables (issue 15), on the guest-less testbed of
// test/helpers/lb-testbed.ts: two "host" namespaces joined by a veth, one LB driver per host, two backends (busybox
// httpd naming itself) and a client. No guest boots: the LB path from the driver down is what runs here;
// docs/load-balancers.md says how the agent wires it to specs (verify-multihost.int runs a spec's LB with guests).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LB_INNER_DEV } from '../../src/drivers/lb/config.js';
import { lbPortName } from '../../src/drivers/lb/driver.js';
import { portDropComment } from '../../src/drivers/network/linux/port-guard.js';
import { Ip } from '../../src/exec/ip.js';
import { pollUntil } from '../../src/shared/time.js';
import { type Host, LB, LbTestbed, otherHost, VIP } from '../helpers/lb-testbed.js';

const bed = new LbTestbed('lbt');
const drivers = bed.drivers;
const inNs = bed.inNs.bind(bed);
const get = () => bed.get();
const holder = () => bed.holder();
/** The host holding the VIP at the start: which one wins depends on which Keepalived came up first (nopreempt). */
let active: Host;

beforeAll(() => bed.open(), 60_000);
afterAll(() => bed.close(), 60_000);

describe('load balancer (HAProxy + Keepalived)', () => {
  it('holds the VIP on one host and answers from both backends', async () => {
    const who = await pollUntil(holder, { timeoutMs: 10_000, intervalMs: 100 });
    expect(who).toBeDefined();
    active = who as Host;
    const both = await pollUntil(
      async () => {
        const o = await drivers[active]!.observe(LB);
        return o.backendsUp?.length === 2 ? o : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    expect(both).toMatchObject({ haproxy: true, keepalived: true, holdsVip: true, problems: [] });
    const seen = new Set<string>();
    for (let i = 0; i < 8; i++) seen.add((await get()) ?? 'failed');
    expect([...seen].sort()).toEqual(['b1', 'b2']);
  });

  it('applies the same config again without restarting anything', async () => {
    const before = await drivers.h1!.processes(LB);
    await bed.ensure('h1');
    expect(await drivers.h1!.processes(LB)).toEqual(before);
  });

  it('lets the VIP and the LB address out of the LB port, and no other address', async () => {
    // From the VIP holder's namespace (only there is the VIP a local address to send from).
    const lbNs = drivers[active]!.netnsOf(LB);
    const hostNs = bed.hostNs(active);
    await inNs(lbNs, ['ip', 'addr', 'add', '10.66.0.99/24', 'dev', LB_INNER_DEV]);
    try {
      const spoofed = await inNs(lbNs, [
        '/bin/busybox',
        'ping',
        '-c',
        '1',
        '-W',
        '1',
        '-I',
        '10.66.0.99',
        '10.66.0.20',
      ]);
      expect(spoofed.code).not.toBe(0);
      const r = await inNs(hostNs, ['nft', 'list', 'chain', 'bridge', 'vmlink', `port-${lbPortName(LB)}`]);
      const m = new RegExp(`counter packets (\\d+) .*"${portDropComment(lbPortName(LB), 'address')}"`).exec(
        r.stdout,
      );
      expect(Number(m?.[1])).toBeGreaterThan(0);
      const fromVip = await inNs(lbNs, [
        '/bin/busybox',
        'ping',
        '-c',
        '1',
        '-W',
        '2',
        '-I',
        VIP,
        '10.66.0.20',
      ]);
      expect(fromVip.code).toBe(0);
    } finally {
      await inNs(lbNs, ['ip', 'addr', 'del', '10.66.0.99/24', 'dev', LB_INNER_DEV]);
    }
  });

  it('takes a stopped backend out: no request is answered by it', async () => {
    await bed.stopHttpd('b2');
    const out = await pollUntil(
      async () => {
        const o = await drivers[active]!.observe(LB);
        return o.backendsUp?.join() === 'b1' ? o : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    expect(out?.backendsUp).toEqual(['b1']);
    const loop = await bed.requestLoop(1500, 40);
    expect(loop.failed).toBe(0);
    expect(Object.keys(loop.bodies)).toEqual(['b1']);
    await bed.startHttpd('b2');
    const back = await pollUntil(
      async () => ((await drivers[active]!.observe(LB)).backendsUp?.length === 2 ? true : undefined),
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    expect(back).toBe(true);
  });

  /** The standby of the start (it holds the VIP after the first failover). */
  let standby: Host;
  /** Kills what makes `from` the active LB while a request loop runs; reports the failover. */
  async function failover(what: string, from: Host, kill: () => Promise<void>) {
    const r = await bed.failover(from, kill);
    console.log(
      `failover (${what}): VIP seen on ${otherHost(from)} ${r.movedMs ?? '?'} ms after; ${r.result.failed} of ${r.result.total} requests failed (failures spread over ${r.failSpreadMs} ms)`,
    );
    return r;
  }

  it('moves the VIP to the other host when the active host loses HAProxy and Keepalived (SIGKILL)', async () => {
    expect(await holder()).toBe(active);
    standby = otherHost(active);
    const { result, movedMs } = await failover('processes killed', active, () => bed.kill(active, true));
    expect(movedMs).toBeDefined();
    expect(await get()).toMatch(/^b[12]$/);
    expect(result.bodies.b1 ?? 0).toBeGreaterThan(0);
    expect(result.bodies.b2 ?? 0).toBeGreaterThan(0);
  });

  it('repairs the failed host without taking the VIP back (nopreempt)', async () => {
    const seen = await drivers[active]!.observe(LB);
    expect(seen.problems).toEqual(
      expect.arrayContaining(['HAProxy is not running', 'Keepalived is not running']),
    );
    await bed.ensure(active);
    const repaired = await drivers[active]!.observe(LB);
    // The VIP a killed Keepalived left on its interface is gone: only the standby holds it.
    expect(repaired).toMatchObject({ problems: [], holdsVip: false });
    // A few advertisement intervals later the repaired host is still backup.
    await new Promise((r) => setTimeout(r, 2000));
    expect(await holder()).toBe(standby);
  });

  it("moves the VIP when the holder's HAProxy alone dies (Keepalived tracks it: FAULT), and back once repaired", async () => {
    expect(await holder()).toBe(standby);
    const { movedMs } = await failover('HAProxy alone killed', standby, () => bed.kill(standby, false));
    expect(movedMs).toBeDefined();
    expect(await get()).toMatch(/^b[12]$/);
    // Its Keepalived still runs, in FAULT: it gave the VIP up and does not hold it.
    const seen = await drivers[standby]!.observe(LB);
    expect(seen).toMatchObject({ haproxy: false, keepalived: true, holdsVip: false });
    await bed.ensure(standby);
    expect(await drivers[standby]!.observe(LB)).toMatchObject({ problems: [], holdsVip: false });
    expect(await holder()).toBe(active);
  });

  it('moves the VIP back when the holder is cut off the network', async () => {
    const cut = active;
    try {
      const { movedMs } = await failover('link cut', cut, () => bed.setPort(cut, false));
      expect(movedMs).toBeDefined();
      expect(await get()).toMatch(/^b[12]$/);
    } finally {
      await bed.setPort(cut, true);
    }
    // Rejoined, the two Keepalived hear each other again and one of them keeps the VIP.
    expect(await pollUntil(holder, { timeoutMs: 10_000, intervalMs: 100 })).toBeDefined();
  });

  it('removes the load balancer without leaving anything behind', async () => {
    const gone = (await holder()) as Host;
    const stays = otherHost(gone);
    await drivers[gone]!.delete(LB);
    // Keepalived stopped by SIGTERM hands the VIP over with a priority-0 advertisement.
    expect(
      await pollUntil(async () => ((await holder()) === stays ? true : undefined), { timeoutMs: 10_000 }),
    ).toBe(true);
    const ns = drivers[gone]!.netnsOf(LB);
    expect(await new Ip(bed.runner).namespaces.list()).not.toContain(ns);
    expect(await new Ip(bed.runner, bed.hostNs(gone)).link.get(lbPortName(LB))).toBeUndefined();
    expect(await drivers[gone]!.list()).toEqual([]);
  });
});
