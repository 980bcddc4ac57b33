// Load balancers on one host (docs/load-balancers.md): each runs in a network namespace of its own, joined to its
// network's bridge by a veth pair, with one HAProxy and one Keepalived in it. Its own namespace keeps the LB's address
// and the VIP off the host's routing table (a nat/isolated network's gateway address already sits on the bridge), and
// makes the bridge-side veth an ordinary guarded port: port security lets out only its MAC, its address and the VIP,
// so the VIP is an allowed address on the LB ports and nowhere else.
import { createHash } from 'node:crypto';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { Ip } from '../../exec/ip.js';
import { Nft } from '../../exec/nft.js';
import type { Runner } from '../../exec/runner.js';
import { Sysctl } from '../../exec/sysctl.js';
import { ConflictError, InvalidRequestError, TimeoutError } from '../../shared/errors.js';
import type { LbConfig, ObservedLb } from '../../shared/lb.js';
import { LbConfigSchema } from '../../shared/lb-schema.js';
import type { OpContext } from '../../shared/op.js';
import {
  type ExpectedProcess,
  type ProcessIdentity,
  processFromPidfile,
  signalProcess,
  terminate,
} from '../../shared/process.js';
import { Reverter } from '../../shared/revert.js';
import { removeTree } from '../../shared/safe-file.js';
import { readJsonFile, writeFileAtomic, writeJsonFile } from '../../shared/state-file.js';
import { pollUntil } from '../../shared/time.js';
import { ensurePortsScript, removePortsScript } from '../network/linux/port-guard.js';
import { LB_INNER_DEV, type LbPaths, renderHaproxyConfig, renderKeepalivedConfig } from './config.js';
import { backendsUp, parseShowStat, showStat } from './stats.js';

/** How long a started HAProxy or Keepalived has to write its pidfile. */
export const LB_START_TIMEOUT_MS = 10_000;
/** How long a stopped process has to exit after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 3000;

const sha8 = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 8);

/** The network namespace of load balancer `name` on the host keyed `hostKey` (namespace names are machine-wide). */
export const lbNetns = (hostKey: string, name: string) => `vmlink-lb-${sha8(`${hostKey}/${name}`)}`;
/** The bridge-side veth of load balancer `name` (`vll-` + 8 hex: a vmlink device name). */
export const lbPortName = (name: string) => `vll-${sha8(name)}`;
/** The stable MAC of the LB's interface (locally administered, unicast), so its port guard names it before it exists. */
export function lbMac(hostKey: string, name: string): string {
  const h = createHash('sha256').update(`mac/${hostKey}/${name}`).digest('hex');
  return `02:${h.slice(0, 2)}:${h.slice(2, 4)}:${h.slice(4, 6)}:${h.slice(6, 8)}:${h.slice(8, 10)}`;
}

const StateSchema = z.object({ config: LbConfigSchema, configHash: z.string().max(128) }).strict();

/** What the LB driver needs: the runner, where its files go, and what makes its namespace names unique. */
export interface LbDriverDeps {
  runner: Runner;
  /** The agent's state directory; LBs live under `<stateDir>/lb/<name>/`. */
  stateDir: string;
  /** Unique per host on this machine (the host's name and state directory): part of the LBs' namespace names. */
  hostKey: string;
  /** The host's network namespace (where the network bridges are); undefined = the caller's own. */
  netns?: string;
}

/** Load balancers of one host: HAProxy + Keepalived per LB in its own namespace on its network's bridge. */
export class LbDriver {
  private readonly ip: Ip;
  private readonly nft: Nft;
  constructor(private readonly deps: LbDriverDeps) {
    this.ip = new Ip(deps.runner, deps.netns);
    this.nft = new Nft(deps.runner, deps.netns);
  }

  /** Files of load balancer `name`. */
  paths(name: string): LbPaths {
    const dir = join(this.deps.stateDir, 'lb', name);
    return {
      dir,
      haproxyConfig: join(dir, 'haproxy.cfg'),
      haproxyPid: join(dir, 'haproxy.pid'),
      haproxySocket: join(dir, 'haproxy.sock'),
      keepalivedConfig: join(dir, 'keepalived.conf'),
      keepalivedPid: join(dir, 'keepalived.pid'),
      vrrpPid: join(dir, 'vrrp.pid'),
      state: join(dir, 'state.json'),
    };
  }

  /** The namespace load balancer `name` runs in. */
  netnsOf(name: string): string {
    return lbNetns(this.deps.hostKey, name);
  }

  private haproxyWant(name: string): ExpectedProcess {
    return { comm: 'haproxy', args: [this.paths(name).haproxyConfig], netns: this.netnsOf(name) };
  }
  private keepalivedWant(name: string): ExpectedProcess {
    return { comm: 'keepalived', args: [this.paths(name).keepalivedConfig], netns: this.netnsOf(name) };
  }

  /** HAProxy and Keepalived of `name` when they run (identity-checked through their pidfiles). */
  async processes(name: string): Promise<{ haproxy?: ProcessIdentity; keepalived?: ProcessIdentity }> {
    const p = this.paths(name);
    const [haproxy, keepalived] = await Promise.all([
      processFromPidfile(p.haproxyPid, this.haproxyWant(name)),
      processFromPidfile(p.keepalivedPid, this.keepalivedWant(name)),
    ]);
    return { ...(haproxy ? { haproxy } : {}), ...(keepalived ? { keepalived } : {}) };
  }

  /** Keepalived's VRRP process of `name` (the child that holds the VIP), when it runs. */
  vrrpProcess(name: string): Promise<ProcessIdentity | undefined> {
    return processFromPidfile(this.paths(name).vrrpPid, this.keepalivedWant(name));
  }

  /**
   * Creates load balancer `cfg.name` on this host or brings it in line with `cfg`; idempotent. A config change
   * reloads HAProxy with `-sf` (the old process finishes its connections; the new one takes new ones) and Keepalived
   * with SIGHUP (the VIP stays where it is). Configs are checked by HAProxy and Keepalived before they replace the
   * running ones, so a bad one changes nothing.
   */
  async ensure(input: LbConfig, configHash: string, ctx?: OpContext): Promise<void> {
    const cfg = LbConfigSchema.parse(input);
    const p = this.paths(cfg.name);
    const ns = this.netnsOf(cfg.name);
    const port = lbPortName(cfg.name);
    const mac = lbMac(this.deps.hostKey, cfg.name);
    const haproxyCfg = renderHaproxyConfig(cfg, p);
    const keepalivedCfg = renderKeepalivedConfig(cfg, p);
    const bridge = await this.ip.link.get(cfg.bridge);
    if (bridge?.kind !== 'bridge')
      throw new ConflictError(
        `load balancer ${cfg.name}: network ${cfg.network} has no bridge ${cfg.bridge} on this host; apply the network first`,
        cfg.name,
      );
    ctx?.signal?.throwIfAborted();
    await mkdir(p.dir, { recursive: true, mode: 0o700 });
    const r = new Reverter();
    try {
      // Namespace and veth: made once, then only repaired.
      if (!(await this.ip.namespaces.list()).includes(ns)) {
        ctx?.progress?.(`load balancer ${cfg.name}: namespace ${ns}`);
        await this.ip.namespaces.add(ns);
        r.add(() => this.ip.namespaces.del(ns));
      }
      const inner = new Ip(this.deps.runner, ns);
      const running = await this.processes(cfg.name);
      const have = await this.ip.link.get(port);
      if (have && have.kind !== 'veth')
        throw new ConflictError(`device ${port} exists and is not a veth of load balancer ${cfg.name}`, port);
      if (!have) {
        await this.ip.link.add({ name: port, kind: 'veth', mtu: cfg.mtu, peer: LB_INNER_DEV, peerNetns: ns });
        r.add(() => this.ip.link.del(port));
      }
      // The guard first: the port never forwards a frame before it filters.
      await this.nft.load(
        ensurePortsScript([
          {
            tap: port,
            bridge: cfg.bridge,
            mtu: cfg.mtu,
            security: { mac, addresses: [cfg.address, cfg.vip] },
          },
        ]),
      );
      r.add(() => this.nft.load(removePortsScript([port])));
      await inner.link.set(LB_INNER_DEV, { address: mac, mtu: cfg.mtu, up: true });
      await inner.link.set('lo', { up: true });
      await this.ip.link.set(port, { master: cfg.bridge, mtu: cfg.mtu, up: true });
      // A VIP left by a Keepalived that died hard goes: a new Keepalived puts it back only if it wins the VIP.
      await this.syncAddress(inner, cfg, !running.keepalived);
      // Binding the VIP where Keepalived has not put it yet: the standby's HAProxy listens before it takes over.
      await new Sysctl(this.deps.runner, ns).set('net.ipv4.ip_nonlocal_bind', 1);

      await this.checkConfigs(cfg.name, haproxyCfg, keepalivedCfg);
      const old = await readJsonFile(p.state, StateSchema).catch(() => undefined);
      await writeFileAtomic(p.haproxyConfig, haproxyCfg);
      await writeFileAtomic(p.keepalivedConfig, keepalivedCfg);
      const changed = old?.configHash !== configHash;
      if (!running.haproxy || changed) await this.startHaproxy(cfg.name, running.haproxy);
      if (!running.keepalived) await this.startKeepalived(cfg.name);
      else if (changed) await signalProcess(running.keepalived, 'SIGHUP');
      await writeJsonFile(p.state, { config: cfg, configHash });
      r.success();
    } finally {
      await r.fail();
    }
  }

  /** The LB's own address (and default route) inside its namespace; the VIP is Keepalived's to add and remove. */
  private async syncAddress(inner: Ip, cfg: LbConfig, dropVip: boolean): Promise<void> {
    const addrs = await inner.addr.list({ dev: LB_INNER_DEV, family: 'inet' });
    for (const a of addrs)
      if (a.local !== cfg.address && (a.local !== cfg.vip || dropVip))
        await inner.addr.del(LB_INNER_DEV, `${a.local}/${a.prefixLen}`);
    if (!addrs.some((a) => a.local === cfg.address && a.prefixLen === cfg.prefix))
      await inner.addr.add(LB_INNER_DEV, `${cfg.address}/${cfg.prefix}`);
    if (cfg.gateway) await inner.route.replace({ dst: 'default', gateway: cfg.gateway, dev: LB_INNER_DEV });
  }

  /** Has HAProxy (`-c`) and Keepalived (`-t`) check the new configs; refuses them with their words. */
  private async checkConfigs(name: string, haproxyCfg: string, keepalivedCfg: string): Promise<void> {
    const p = this.paths(name);
    const hTmp = `${p.haproxyConfig}.check`;
    const kTmp = `${p.keepalivedConfig}.check`;
    await writeFileAtomic(hTmp, haproxyCfg);
    await writeFileAtomic(kTmp, keepalivedCfg);
    const h = await this.deps.runner.run(['haproxy', '-c', '-q', '-f', hTmp], { allowFailure: true });
    if (h.code !== 0)
      throw new InvalidRequestError(
        `load balancer ${name}: HAProxy refuses the config: ${(h.stderr || h.stdout).trim().slice(0, 2000)}`,
        name,
      );
    const k = await this.deps.runner.run(['keepalived', '-t', '-f', kTmp], { allowFailure: true });
    if (k.code !== 0)
      throw new InvalidRequestError(
        `load balancer ${name}: Keepalived refuses the config: ${(k.stderr || k.stdout).trim().slice(0, 2000)}`,
        name,
      );
  }

  /** Starts HAProxy in the LB's namespace; with `old`, as its successor (`-sf`: old connections finish on it). */
  private async startHaproxy(name: string, old?: ProcessIdentity): Promise<void> {
    const p = this.paths(name);
    const argv = ['haproxy', '-D', '-f', p.haproxyConfig, '-p', p.haproxyPid];
    if (old) argv.push('-sf', String(old.pid));
    await this.deps.runner.run(argv, { netns: this.netnsOf(name) });
    await this.awaitProcess(p.haproxyPid, this.haproxyWant(name), old, `HAProxy of load balancer ${name}`);
  }

  /** Starts Keepalived (VRRP only) in the LB's namespace. */
  private async startKeepalived(name: string): Promise<void> {
    const p = this.paths(name);
    await this.deps.runner.run(
      ['keepalived', '--vrrp', '-f', p.keepalivedConfig, '-p', p.keepalivedPid, '-r', p.vrrpPid],
      { netns: this.netnsOf(name) },
    );
    await this.awaitProcess(
      p.keepalivedPid,
      this.keepalivedWant(name),
      undefined,
      `Keepalived of load balancer ${name}`,
    );
  }

  private async awaitProcess(
    pidfile: string,
    want: ExpectedProcess,
    not: ProcessIdentity | undefined,
    what: string,
  ): Promise<void> {
    const ok = await pollUntil(
      async () => {
        const id = await processFromPidfile(pidfile, want);
        return id && (!not || id.pid !== not.pid) ? id : undefined;
      },
      { timeoutMs: LB_START_TIMEOUT_MS, intervalMs: 50 },
    );
    if (!ok) throw new TimeoutError(`${what} did not start within ${LB_START_TIMEOUT_MS} ms`, what);
  }

  /**
   * Removes load balancer `name` from this host: Keepalived first (SIGTERM: it hands the VIP over at once with a
   * priority-0 advertisement), then HAProxy, the port guard, the veth, the namespace and the files. Missing parts are
   * fine.
   */
  async delete(name: string, ctx?: OpContext): Promise<void> {
    if (!/^[a-z][a-z0-9-]{0,30}$/.test(name))
      throw new InvalidRequestError(`invalid load balancer name ${JSON.stringify(name)}`, name);
    ctx?.signal?.throwIfAborted();
    const running = await this.processes(name);
    const stop = { graceMs: STOP_GRACE_MS, killMs: STOP_GRACE_MS };
    if (running.keepalived) await terminate(running.keepalived, stop);
    if (running.haproxy) await terminate(running.haproxy, stop);
    const port = lbPortName(name);
    await this.nft.load(removePortsScript([port]));
    if (await this.ip.link.get(port)) await this.ip.link.del(port);
    await this.ip.namespaces.del(this.netnsOf(name));
    await removeTree(this.paths(name).dir);
  }

  /** Load balancers this host has state for, with what runs and what is wrong. */
  async list(): Promise<ObservedLb[]> {
    const dir = join(this.deps.stateDir, 'lb');
    const names = await readdir(dir).catch(() => [] as string[]);
    const out: ObservedLb[] = [];
    for (const name of names.filter((n) => /^[a-z][a-z0-9-]{0,30}$/.test(n)).sort())
      out.push(await this.observe(name));
    return out;
  }

  /** One load balancer as it is: processes, the VIP, the backends HAProxy sees up, problems. */
  async observe(name: string): Promise<ObservedLb> {
    const p = this.paths(name);
    const problems: string[] = [];
    const state = await readJsonFile(p.state, StateSchema).catch(() => undefined);
    if (!state) problems.push('no state recorded (an apply was cut short)');
    const running = await this.processes(name);
    if (!running.haproxy) problems.push('HAProxy is not running');
    if (!running.keepalived) problems.push('Keepalived is not running');
    const ns = this.netnsOf(name);
    let holdsVip = false;
    if (!(await this.ip.namespaces.list()).includes(ns)) problems.push(`namespace ${ns} is missing`);
    else if (state) {
      const addrs = await new Ip(this.deps.runner, ns).addr
        .list({ dev: LB_INNER_DEV, family: 'inet' })
        .catch(() => undefined);
      if (!addrs) problems.push(`${LB_INNER_DEV} is missing in ${ns}`);
      holdsVip = addrs?.some((a) => a.local === state.config.vip) ?? false;
    }
    const port = await this.ip.link.get(lbPortName(name));
    if (state && port?.master !== state.config.bridge)
      problems.push(`port ${lbPortName(name)} is not on bridge ${state.config.bridge}`);
    const csv = running.haproxy ? await showStat(p.haproxySocket) : undefined;
    return {
      name,
      configHash: state?.configHash ?? '',
      haproxy: !!running.haproxy,
      keepalived: !!running.keepalived,
      holdsVip,
      ...(csv === undefined ? {} : { backendsUp: backendsUp(parseShowStat(csv)) }),
      problems,
    };
  }
}
