// Load balancers against real HAProxy, Keepalived, bridges and nftables (issue 15): two "host" namespaces with a
// network bridge each, joined by a veth (the overlay's stand-in), one LB driver per host, two backends (busybox httpd
// naming itself, in namespaces on either host's bridge) and a client on the first host's bridge. No guest boots: the
// LB path from the driver down is what runs here; docs/load-balancers.md says how the agent wires it to specs.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LB_INNER_DEV } from '../../src/drivers/lb/config.js';
import { LbDriver, lbPortName } from '../../src/drivers/lb/driver.js';
import { portDropComment } from '../../src/drivers/network/linux/port-guard.js';
import { Ip } from '../../src/exec/ip.js';
import { SystemRunner } from '../../src/exec/runner.js';
import type { LbConfig } from '../../src/shared/lb.js';
import { identify, type ProcessIdentity, signalProcess, terminate } from '../../src/shared/process.js';
import { pollUntil } from '../../src/shared/time.js';

const runner = new SystemRunner();
const tag = randomBytes(2).toString('hex');
const H1 = `lbt-h1-${tag}`;
const H2 = `lbt-h2-${tag}`;
const B1 = `lbt-b1-${tag}`;
const B2 = `lbt-b2-${tag}`;
const C = `lbt-c-${tag}`;
const NAMESPACES = [H1, H2, B1, B2, C];
const BRIDGE = 'vlb-lbt';
const VIP = '10.66.0.50';
const LB = 'web';

const inNs = (ns: string, argv: string[], timeoutMs = 15_000) =>
  runner.run(argv, { netns: ns, allowFailure: true, timeoutMs });

/** One GET of the VIP from the client: the body (the backend's name) or undefined. */
async function get(): Promise<string | undefined> {
  const r = await inNs(C, ['curl', '-s', '--max-time', '2', `http://${VIP}/`]);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

// A bounded loop of requests from inside the client's namespace (one process: no spawn per request), each with a
// hard 300 ms budget (a timer, not the socket's idle timeout: a reply whose body stalls when HAProxy is killed
// mid-response must end the request too); prints what answered and when requests failed.
const LOOP = `
const http = require('node:http');
const [url, maxMs, maxN] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const start = Date.now(); const out = { total: 0, failed: 0, firstFailMs: null, lastFailMs: null, bodies: {} };
const once = () => new Promise((res) => {
  let done = false;
  const finish = (v) => { if (!done) { done = true; clearTimeout(timer); res(v); } };
  const req = http.get(url, { agent: false }, (r) => {
    let b = '';
    r.on('data', (d) => { if (b.length < 256) b += d; });
    r.on('end', () => finish(r.statusCode === 200 ? b.trim() : null));
    r.on('error', () => finish(null));
    r.on('close', () => finish(null));
  });
  req.on('error', () => finish(null));
  const timer = setTimeout(() => { finish(null); req.destroy(); }, 300);
});
(async () => {
  while (Date.now() - start < maxMs && out.total < maxN) {
    const t = Date.now() - start;
    const body = await once();
    out.total++;
    if (body === null) { out.failed++; out.firstFailMs ??= t; out.lastFailMs = t; }
    else out.bodies[body] = (out.bodies[body] ?? 0) + 1;
    await new Promise((r) => setTimeout(r, 20));
  }
  console.log(JSON.stringify(out));
})();`;

interface LoopResult {
  total: number;
  failed: number;
  firstFailMs: number | null;
  lastFailMs: number | null;
  bodies: Record<string, number>;
}
function requestLoop(maxMs: number, maxN = 2000): Promise<LoopResult> {
  return inNs(
    C,
    [process.execPath, '-e', LOOP, `http://${VIP}/`, String(maxMs), String(maxN)],
    maxMs + 15_000,
  ).then((r) => {
    try {
      return JSON.parse(r.stdout) as LoopResult;
    } catch {
      throw new Error(`the request loop printed no result (exit ${r.code}): ${r.stderr.slice(-500)}`);
    }
  });
}

let dir: string;
const drivers: Record<string, LbDriver> = {};
const httpd: Record<string, ProcessIdentity> = {};

function config(host: 'h1' | 'h2'): LbConfig {
  const mine = host === 'h1' ? '10.66.0.51' : '10.66.0.52';
  const other = host === 'h1' ? '10.66.0.52' : '10.66.0.51';
  return {
    name: LB,
    network: 'lbt',
    bridge: BRIDGE,
    mtu: 1500,
    prefix: 24,
    vip: VIP,
    vrid: 66,
    address: mine,
    priority: host === 'h1' ? 150 : 140,
    peers: [other],
    frontends: [{ port: 80, protocol: 'http', backendPort: 80 }],
    backends: [
      { vm: 'b1', address: '10.66.0.11' },
      { vm: 'b2', address: '10.66.0.12' },
    ],
    healthCheck: { intervalMs: 200, rise: 2, fall: 2, path: '/' },
  };
}

async function startHttpd(ns: string, name: string): Promise<void> {
  const www = join(dir, `www-${name}`);
  await mkdir(www, { recursive: true });
  await writeFile(join(www, 'index.html'), `${name}\n`);
  const pid = await runner.spawnDetached(['/bin/busybox', 'httpd', '-f', '-p', '80', '-h', www], {
    netns: ns,
  });
  const id = await identify(pid);
  if (!id) throw new Error(`httpd of ${name} did not start`);
  httpd[name] = id;
}

type Host = 'h1' | 'h2';
const holder = async (): Promise<Host | undefined> => {
  const [a, b] = await Promise.all([drivers.h1!.observe(LB), drivers.h2!.observe(LB)]);
  return a.holdsVip && !b.holdsVip ? 'h1' : b.holdsVip && !a.holdsVip ? 'h2' : undefined;
};
const otherHost = (h: Host): Host => (h === 'h1' ? 'h2' : 'h1');
/** The host holding the VIP at the start: which one wins depends on which Keepalived came up first (nopreempt). */
let active: Host;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-lbt-'));
  const root = new Ip(runner);
  for (const ns of NAMESPACES) await root.namespaces.add(ns);
  for (const ns of NAMESPACES) await new Ip(runner, ns).link.set('lo', { up: true });
  for (const h of [H1, H2]) await new Ip(runner, h).link.add({ name: BRIDGE, kind: 'bridge' });
  // The two hosts' bridges joined: the network reaches across hosts (an overlay does this between real hosts).
  await new Ip(runner, H1).link.add({ name: 'lbt-x', kind: 'veth', peer: 'lbt-x', peerNetns: H2 });
  const attach = async (host: string, ns: string, port: string, cidr: string) => {
    await new Ip(runner, host).link.add({ name: port, kind: 'veth', peer: 'eth0', peerNetns: ns });
    await new Ip(runner, host).link.set(port, { master: BRIDGE, up: true });
    await new Ip(runner, ns).link.set('eth0', { up: true });
    await new Ip(runner, ns).addr.add('eth0', cidr);
  };
  for (const h of [H1, H2]) {
    await new Ip(runner, h).link.set('lbt-x', { master: BRIDGE, up: true });
    await new Ip(runner, h).link.set(BRIDGE, { up: true });
  }
  await attach(H1, B1, 'lbt-b1', '10.66.0.11/24');
  await attach(H2, B2, 'lbt-b2', '10.66.0.12/24');
  await attach(H1, C, 'lbt-c', '10.66.0.20/24');
  await startHttpd(B1, 'b1');
  await startHttpd(B2, 'b2');
  for (const [h, ns] of [
    ['h1', H1],
    ['h2', H2],
  ] as const)
    drivers[h] = new LbDriver({ runner, stateDir: join(dir, h), hostKey: `${ns}`, netns: ns });
  await Promise.all([drivers.h1!.ensure(config('h1'), 'v1'), drivers.h2!.ensure(config('h2'), 'v1')]);
}, 60_000);

afterAll(async () => {
  for (const d of Object.values(drivers)) await d.delete(LB).catch(() => undefined);
  for (const id of Object.values(httpd)) await terminate(id, { graceMs: 1000, killMs: 1000 });
  const root = new Ip(runner);
  for (const ns of NAMESPACES) await root.namespaces.del(ns);
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

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
    await drivers.h1!.ensure(config('h1'), 'v1');
    expect(await drivers.h1!.processes(LB)).toEqual(before);
  });

  it('lets the VIP and the LB address out of the LB port, and no other address', async () => {
    // From the VIP holder's namespace (only there is the VIP a local address to send from).
    const lbNs = drivers[active]!.netnsOf(LB);
    const hostNs = active === 'h1' ? H1 : H2;
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
    await terminate(httpd.b2!, { graceMs: 1000, killMs: 1000 });
    const out = await pollUntil(
      async () => {
        const o = await drivers[active]!.observe(LB);
        return o.backendsUp?.join() === 'b1' ? o : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    expect(out?.backendsUp).toEqual(['b1']);
    const loop = await requestLoop(1500, 40);
    expect(loop.failed).toBe(0);
    expect(Object.keys(loop.bodies)).toEqual(['b1']);
    await startHttpd(B2, 'b2');
    const back = await pollUntil(
      async () => ((await drivers[active]!.observe(LB)).backendsUp?.length === 2 ? true : undefined),
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    expect(back).toBe(true);
  });

  /** The standby of the start (it holds the VIP after the first failover). */
  let standby: Host;
  /** Kills what makes `host` the active LB while a request loop runs; reports the failover. */
  async function failover(
    what: string,
    from: Host,
    kill: () => Promise<void>,
  ): Promise<{ result: LoopResult; movedMs: number | undefined }> {
    const to = otherHost(from);
    const loop = requestLoop(7000);
    loop.catch(() => undefined); // awaited below; this only keeps a failure from being reported as unhandled meanwhile
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = Date.now();
    await kill();
    // Moved: the other host holds the VIP (the failed one may still have it on its cut-off interface).
    const moved = await pollUntil(
      async () => ((await drivers[to]!.observe(LB)).holdsVip ? Date.now() - t0 : undefined),
      { timeoutMs: 10_000, intervalMs: 50 },
    );
    const result = await loop;
    const spread = result.firstFailMs === null ? 0 : (result.lastFailMs ?? 0) - result.firstFailMs;
    console.log(
      `failover (${what}): VIP seen on ${to} ${moved ?? '?'} ms after; ${result.failed} of ${result.total} requests failed (failures spread over ${spread} ms)`,
    );
    return { result, movedMs: moved };
  }

  it('moves the VIP to the other host when the active host loses HAProxy and Keepalived (SIGKILL)', async () => {
    expect(await holder()).toBe(active);
    standby = otherHost(active);
    const { result, movedMs } = await failover('processes killed', active, async () => {
      // The VRRP child first: killed hard, it sends no goodbye (a graceful stop would hand over at once).
      const vrrp = await drivers[active]!.vrrpProcess(LB);
      const procs = await drivers[active]!.processes(LB);
      for (const p of [vrrp, procs.keepalived, procs.haproxy]) if (p) await signalProcess(p, 'SIGKILL');
    });
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
    await drivers[active]!.ensure(config(active), 'v1');
    const repaired = await drivers[active]!.observe(LB);
    // The VIP a killed Keepalived left on its interface is gone: only the standby holds it.
    expect(repaired).toMatchObject({ problems: [], holdsVip: false });
    // A few advertisement intervals later the repaired host is still backup.
    await new Promise((r) => setTimeout(r, 2000));
    expect(await holder()).toBe(standby);
  });

  it('moves the VIP back when the holder is cut off the network', async () => {
    const cut = standby === 'h1' ? H1 : H2;
    const port = lbPortName(LB);
    try {
      const { movedMs } = await failover('link cut', standby, async () => {
        await new Ip(runner, cut).link.set(port, { up: false });
      });
      expect(movedMs).toBeDefined();
      expect(await get()).toMatch(/^b[12]$/);
    } finally {
      await new Ip(runner, cut).link.set(port, { up: true });
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
    expect(await new Ip(runner).namespaces.list()).not.toContain(ns);
    expect(await new Ip(runner, gone === 'h1' ? H1 : H2).link.get(lbPortName(LB))).toBeUndefined();
    expect(await drivers[gone]!.list()).toEqual([]);
  });
});
