// A load balancer against real HAProxy, Keepalived, bridges and nftables without guests (lb.int.test.ts and
// bench/lb-failover.ts): two "host" namespaces with a network bridge each, joined by a veth (the overlay's
// stand-in), one LB driver per host, two backends (busybox httpd naming itself, in namespaces on either host's
// bridge) and a client on the first host's bridge looping requests. Everything lives in namespaces named
// `<prefix>-<role>-<hex>`; `close()` removes them all.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LbDriver, lbPortName } from '../../src/drivers/lb/driver.js';
import { Ip } from '../../src/exec/ip.js';
import { SystemRunner } from '../../src/exec/runner.js';
import type { LbConfig } from '../../src/shared/lb.js';
import { identify, type ProcessIdentity, signalProcess, terminate } from '../../src/shared/process.js';
import { pollUntil } from '../../src/shared/time.js';

export type Host = 'h1' | 'h2';
export const otherHost = (h: Host): Host => (h === 'h1' ? 'h2' : 'h1');
export const LB = 'web';
export const VIP = '10.66.0.50';

/** What one bounded request loop saw. */
export interface LoopResult {
  total: number;
  failed: number;
  firstFailMs: number | null;
  lastFailMs: number | null;
  bodies: Record<string, number>;
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

/** The testbed: namespaces, bridges, backends, client and one LB driver per host. */
export class LbTestbed {
  readonly runner = new SystemRunner();
  readonly ns: { h1: string; h2: string; b1: string; b2: string; c: string };
  readonly drivers = {} as Record<Host, LbDriver>;
  readonly bridge: string;
  private readonly httpd: Record<string, ProcessIdentity> = {};
  private dir = '';

  constructor(
    /** Namespace prefix (a few letters: `lbt` for the test, `lbv` for the bench). */
    readonly prefix: string,
  ) {
    const tag = randomBytes(2).toString('hex');
    const n = (role: string) => `${prefix}-${role}-${tag}`;
    this.ns = { h1: n('h1'), h2: n('h2'), b1: n('b1'), b2: n('b2'), c: n('c') };
    this.bridge = `vlb-${prefix}`;
  }

  inNs(ns: string, argv: string[], timeoutMs = 15_000) {
    return this.runner.run(argv, { netns: ns, allowFailure: true, timeoutMs });
  }

  /** The host namespace of `h`. */
  hostNs(h: Host): string {
    return this.ns[h];
  }

  /** The LB config of `host`: HTTP on 80 to b1 and b2, checks every 200 ms. */
  config(host: Host): LbConfig {
    const mine = host === 'h1' ? '10.66.0.51' : '10.66.0.52';
    const other = host === 'h1' ? '10.66.0.52' : '10.66.0.51';
    return {
      name: LB,
      network: this.prefix,
      bridge: this.bridge,
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

  /** Builds everything and ensures the LB on both hosts. */
  async open(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), `vmlink-${this.prefix}-`));
    const { h1, h2, b1, b2, c } = this.ns;
    const root = new Ip(this.runner);
    for (const ns of Object.values(this.ns)) await root.namespaces.add(ns);
    for (const ns of Object.values(this.ns)) await new Ip(this.runner, ns).link.set('lo', { up: true });
    for (const h of [h1, h2]) await new Ip(this.runner, h).link.add({ name: this.bridge, kind: 'bridge' });
    // The two hosts' bridges joined: the network reaches across hosts (an overlay does this between real hosts).
    const x = `${this.prefix}-x`;
    await new Ip(this.runner, h1).link.add({ name: x, kind: 'veth', peer: x, peerNetns: h2 });
    const attach = async (host: string, ns: string, port: string, cidr: string) => {
      await new Ip(this.runner, host).link.add({ name: port, kind: 'veth', peer: 'eth0', peerNetns: ns });
      await new Ip(this.runner, host).link.set(port, { master: this.bridge, up: true });
      await new Ip(this.runner, ns).link.set('eth0', { up: true });
      await new Ip(this.runner, ns).addr.add('eth0', cidr);
    };
    for (const h of [h1, h2]) {
      await new Ip(this.runner, h).link.set(x, { master: this.bridge, up: true });
      await new Ip(this.runner, h).link.set(this.bridge, { up: true });
    }
    await attach(h1, b1, `${this.prefix}-b1`, '10.66.0.11/24');
    await attach(h2, b2, `${this.prefix}-b2`, '10.66.0.12/24');
    await attach(h1, c, `${this.prefix}-c`, '10.66.0.20/24');
    await this.startHttpd('b1');
    await this.startHttpd('b2');
    for (const h of ['h1', 'h2'] as const)
      this.drivers[h] = new LbDriver({
        runner: this.runner,
        stateDir: join(this.dir, h),
        hostKey: this.ns[h],
        netns: this.ns[h],
      });
    await Promise.all([this.ensure('h1'), this.ensure('h2')]);
  }

  /** Ensures (creates or repairs) the LB on `h`. */
  ensure(h: Host): Promise<void> {
    return this.drivers[h].ensure(this.config(h), 'v1');
  }

  /** Removes everything (best effort: after a failure too). */
  async close(): Promise<void> {
    for (const d of Object.values(this.drivers)) await d.delete(LB).catch(() => undefined);
    for (const id of Object.values(this.httpd)) await terminate(id, { graceMs: 1000, killMs: 1000 });
    const root = new Ip(this.runner);
    for (const ns of Object.values(this.ns)) await root.namespaces.del(ns).catch(() => undefined);
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  /** Starts backend `name`'s httpd (b1 or b2), serving its name. */
  async startHttpd(name: 'b1' | 'b2'): Promise<void> {
    const www = join(this.dir, `www-${name}`);
    await mkdir(www, { recursive: true });
    await writeFile(join(www, 'index.html'), `${name}\n`);
    const pid = await this.runner.spawnDetached(['/bin/busybox', 'httpd', '-f', '-p', '80', '-h', www], {
      netns: this.ns[name],
    });
    const id = await identify(pid);
    if (!id) throw new Error(`httpd of ${name} did not start`);
    this.httpd[name] = id;
  }

  /** Stops backend `name`'s httpd. */
  async stopHttpd(name: 'b1' | 'b2'): Promise<void> {
    const id = this.httpd[name];
    if (id) await terminate(id, { graceMs: 1000, killMs: 1000 });
    delete this.httpd[name];
  }

  /** One GET of the VIP from the client: the body (the backend's name) or undefined. */
  async get(): Promise<string | undefined> {
    const r = await this.inNs(this.ns.c, ['curl', '-s', '--max-time', '2', `http://${VIP}/`]);
    return r.code === 0 ? r.stdout.trim() : undefined;
  }

  /** The one host holding the VIP, undefined when none or both do. */
  async holder(): Promise<Host | undefined> {
    const [a, b] = await Promise.all([this.drivers.h1.observe(LB), this.drivers.h2.observe(LB)]);
    return a.holdsVip && !b.holdsVip ? 'h1' : b.holdsVip && !a.holdsVip ? 'h2' : undefined;
  }

  /** Waits until one host holds the VIP and its HAProxy sees both backends up; that host. */
  async settled(timeoutMs = 10_000): Promise<Host | undefined> {
    return pollUntil(
      async () => {
        const h = await this.holder();
        if (!h) return undefined;
        return (await this.drivers[h].observe(LB)).backendsUp?.length === 2 ? h : undefined;
      },
      { timeoutMs, intervalMs: 100 },
    );
  }

  /** A bounded request loop from the client (at most `maxMs`, `maxN` requests). */
  async requestLoop(maxMs: number, maxN = 2000): Promise<LoopResult> {
    const r = await this.inNs(
      this.ns.c,
      [process.execPath, '-e', LOOP, `http://${VIP}/`, String(maxMs), String(maxN)],
      maxMs + 15_000,
    );
    try {
      return JSON.parse(r.stdout) as LoopResult;
    } catch {
      throw new Error(`the request loop printed no result (exit ${r.code}): ${r.stderr.slice(-500)}`);
    }
  }

  /** SIGKILL of `h`'s HAProxy, and with `keepalived` its Keepalived too (the VRRP child first: no goodbye). */
  async kill(h: Host, keepalived: boolean): Promise<void> {
    const d = this.drivers[h];
    const vrrp = keepalived ? await d.vrrpProcess(LB) : undefined;
    const procs = await d.processes(LB);
    for (const p of [vrrp, keepalived ? procs.keepalived : undefined, procs.haproxy])
      if (p) await signalProcess(p, 'SIGKILL');
  }

  /** Takes `h`'s LB port down (the host cut off the network) or back up. */
  setPort(h: Host, up: boolean): Promise<void> {
    return new Ip(this.runner, this.ns[h]).link.set(lbPortName(LB), { up });
  }

  /**
   * Runs a request loop of `loopMs` and, `leadMs` into it, `kill`s what makes `from` the active LB; reports when the
   * other host held the VIP and what the loop saw.
   */
  async failover(
    from: Host,
    kill: () => Promise<void>,
    opts: { loopMs?: number; leadMs?: number } = {},
  ): Promise<{ result: LoopResult; movedMs: number | undefined; failSpreadMs: number }> {
    const to = otherHost(from);
    const loop = this.requestLoop(opts.loopMs ?? 7000);
    loop.catch(() => undefined); // awaited below; this only keeps a failure from being reported as unhandled meanwhile
    await new Promise((r) => setTimeout(r, opts.leadMs ?? 1000));
    const t0 = Date.now();
    await kill();
    // Moved: the other host holds the VIP (the failed one may still have it on its cut-off interface).
    const movedMs = await pollUntil(
      async () => ((await this.drivers[to].observe(LB)).holdsVip ? Date.now() - t0 : undefined),
      { timeoutMs: 10_000, intervalMs: 50 },
    );
    const result = await loop;
    const failSpreadMs = result.firstFailMs === null ? 0 : (result.lastFailMs ?? 0) - result.firstFailMs;
    return { result, movedMs, failSpreadMs };
  }
}
