// One dnsmasq per network with a subnet on this host (nat, isolated, vxlan/vlan gateway host): its config file (pure, tested) and its process (started
// detached through the runner, found again through its pidfile and /proc, restarted when its config changes).
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../../../exec/runner.js';
import { InvalidRequestError, VmlinkError } from '../../../shared/errors.js';
import { DAEMON_STOP_GRACE_MS, DNSMASQ_START_TIMEOUT_MS, KILL_WAIT_MS } from '../../../shared/limits.js';
import type { NetworkConfig, ObservedLease } from '../../../shared/model.js';
import {
  identify,
  isRunning,
  type ProcessIdentity,
  processArgv,
  processComm,
  processFromPidfile,
  readPidfile,
  signalProcess,
  terminate,
} from '../../../shared/process.js';
import { readAppended, readFileCapped, writeFileAtomic } from '../../../shared/state-file.js';
import { pollUntil } from '../../../shared/time.js';
import { isRouted } from './ruleset.js';

/** Files of one network's dnsmasq, all in its backend's directory of that network. */
export interface DnsmasqPaths {
  dir: string;
  conf: string;
  pidFile: string;
  leaseFile: string;
  logFile: string;
}

/** Where a network's dnsmasq files live. */
export function dnsmasqPaths(dir: string): DnsmasqPaths {
  return {
    dir,
    conf: join(dir, 'dnsmasq.conf'),
    pidFile: join(dir, 'dnsmasq.pid'),
    leaseFile: join(dir, 'dnsmasq.leases'),
    logFile: join(dir, 'dnsmasq.log'),
  };
}

/** Dotted netmask of a prefix length (24 -> 255.255.255.0). */
export function netmask(prefixLength: number): string {
  const m = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return [24, 16, 8, 0].map((s) => (m >>> s) & 0xff).join('.');
}

const SAFE = /^[A-Za-z0-9_.:-]+$/;

function safe(v: string, what: string): string {
  if (!SAFE.test(v))
    throw new InvalidRequestError(`${what}: ${JSON.stringify(v)} is not allowed in a dnsmasq config`, what);
  return v;
}

/** The dnsmasq.conf of a network with a subnet here (process options are on the command line, see `dnsmasqArgv`). */
export function renderDnsmasqConf(cfg: NetworkConfig): string {
  const s = cfg.subnet;
  if (!s || cfg.mode === 'bridge')
    throw new InvalidRequestError(
      `network ${cfg.name}: dnsmasq needs a subnet (nat or isolated, or a vxlan/vlan gateway host)`,
    );
  const routed = isRouted(cfg);
  const p = `networks.${cfg.name}.subnet`;
  const lines = [
    `# vmlink network ${safe(cfg.name, 'name')} (${cfg.mode}); generated, edits are overwritten`,
    'strict-order',
    'domain-needed',
    'bogus-priv',
    'no-hosts',
    // routed (nat): forward other names to the upstream servers of /etc/resolv.conf; else answer locally only.
    ...(routed ? [] : ['no-resolv']),
    `local=/${safe(cfg.name, 'name')}/`,
    `domain=${cfg.name}`,
    'expand-hosts',
    `dhcp-range=${safe(s.dhcpStart, `${p}.dhcpStart`)},${safe(s.dhcpEnd, `${p}.dhcpEnd`)},${netmask(s.prefixLength)},1h`,
    'dhcp-authoritative',
    'dhcp-no-override',
    // Unrouted networks have no way out: advertise no router so guests keep their other default routes.
    routed ? `dhcp-option=option:router,${safe(s.gateway, `${p}.gateway`)}` : 'dhcp-option=option:router',
    `dhcp-option=option:dns-server,${safe(s.gateway, `${p}.gateway`)}`,
    ...(cfg.mtu !== 1500 ? [`dhcp-option=option:mtu,${cfg.mtu}`] : []),
    ...s.reservations.map(
      (r, i) =>
        `dhcp-host=${safe(r.mac, `${p}.reservations[${i}].mac`)},${safe(r.ip, `${p}.reservations[${i}].ip`)},${safe(r.hostname, `${p}.reservations[${i}].hostname`)}`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}

/** The dnsmasq command line of a network: foreground (the runner detaches it), our files only. */
export function dnsmasqArgv(cfg: NetworkConfig, paths: DnsmasqPaths): string[] {
  return [
    'dnsmasq',
    '--keep-in-foreground',
    '--log-facility=-',
    `--conf-file=${paths.conf}`,
    `--pid-file=${paths.pidFile}`,
    `--dhcp-leasefile=${paths.leaseFile}`,
    '--bind-interfaces',
    `--interface=${cfg.bridge}`,
    '--except-interface=lo',
  ];
}

/** One DHCP lease as dnsmasq writes it. */
export interface DhcpLease {
  expires: number;
  mac: string;
  ip: string;
  hostname?: string;
}

/** Parses a dnsmasq lease file. */
export function parseLeases(text: string): DhcpLease[] {
  return text
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 3 && /^\d+$/.test(f[0]!))
    .map((f) => ({
      expires: Number(f[0]),
      mac: f[1]!,
      ip: f[2]!,
      ...(f[3] && f[3] !== '*' ? { hostname: f[3] } : {}),
    }));
}

/** The leases of `leases` still valid at `nowSec` (dnsmasq writes 0 for an infinite lease), as a report lists them. */
export function activeLeases(leases: DhcpLease[], nowSec = Date.now() / 1000): ObservedLease[] {
  return leases
    .filter((l) => l.expires === 0 || l.expires > nowSec)
    .map((l) => ({ mac: l.mac, ip: l.ip, ...(l.hostname ? { hostname: l.hostname } : {}) }));
}

/** Whether `pid` is a live (not zombie) dnsmasq started with config file `conf`; returns its argv when so. */
export async function dnsmasqProcess(pid: number, conf: string): Promise<string[] | undefined> {
  if (!(await isRunning(pid)) || (await processComm(pid)) !== 'dnsmasq') return undefined;
  const argv = await processArgv(pid);
  return argv?.includes(`--conf-file=${conf}`) ? argv : undefined;
}

/** Lease files hold ~100 bytes a lease: 8 MiB is far above any network's pool. */
const LEASES_MAX_BYTES = 8 << 20;

/** Starts, checks, restarts and stops one network's dnsmasq. */
export class DnsmasqManager {
  constructor(
    private readonly runner: Runner,
    private readonly netns?: string,
  ) {}

  /** The network's running dnsmasq (pid from its pidfile, checked in /proc) with its start time, or undefined. */
  async process(paths: DnsmasqPaths): Promise<ProcessIdentity | undefined> {
    return processFromPidfile(paths.pidFile, {
      comm: 'dnsmasq',
      args: [`--conf-file=${paths.conf}`],
      ...(this.netns === undefined ? {} : { netns: this.netns }),
    });
  }

  /** The pid of the network's running dnsmasq, or undefined. */
  async pid(paths: DnsmasqPaths): Promise<number | undefined> {
    return (await this.process(paths))?.pid;
  }

  /**
   * Makes dnsmasq run with `cfg`'s config: writes the config and (re)starts the process when the
   * config or command line changed, it is not running, or `force`. Returns what it did.
   */
  async ensure(
    cfg: NetworkConfig,
    paths: DnsmasqPaths,
    force = false,
  ): Promise<'unchanged' | 'started' | 'restarted'> {
    const conf = renderDnsmasqConf(cfg);
    const argv = dnsmasqArgv(cfg, paths);
    const pid = await this.pid(paths);
    const current = pid === undefined ? undefined : await dnsmasqProcess(pid, paths.conf);
    const sameConf = (await readFileCapped(paths.conf)) === conf;
    if (!force && pid !== undefined && sameConf && current?.join('\0') === argv.join('\0'))
      return 'unchanged';
    await mkdir(paths.dir, { recursive: true, mode: 0o755 });
    await writeFileAtomic(paths.conf, conf, { mode: 0o644 });
    if (pid !== undefined) await this.stop(paths);
    await this.start(argv, paths);
    return pid === undefined ? 'started' : 'restarted';
  }

  /** Starts dnsmasq detached and waits until it wrote its pidfile (it has bound its sockets by then). */
  private async start(argv: string[], paths: DnsmasqPaths): Promise<number> {
    await rm(paths.pidFile, { force: true });
    const logStart = await fileSize(paths.logFile);
    const pid = await this.runner.spawnDetached(argv, { netns: this.netns, logFile: paths.logFile });
    // dnsmasq writes its pidfile within ~10 ms: poll tightly; a config it refuses makes it exit at once.
    const outcome = await pollUntil(
      async () => {
        if ((await readPidfile(paths.pidFile)) === pid && (await dnsmasqProcess(pid, paths.conf)))
          return 'up';
        return (await isRunning(pid)) ? undefined : 'exited';
      },
      { timeoutMs: DNSMASQ_START_TIMEOUT_MS, intervalMs: 5 },
    );
    if (outcome === 'up') return pid;
    const log = (await readAppended(paths.logFile, logStart)).trim();
    const started = await identify(pid);
    if (started) await signalProcess(started, 'SIGKILL');
    throw new VmlinkError(
      'exec',
      `dnsmasq did not start for ${paths.conf}${outcome === undefined ? ` within ${DNSMASQ_START_TIMEOUT_MS} ms` : ''}${log ? `:\n  ${log.split('\n').join('\n  ')}` : ''}`,
    );
  }

  /** Stops the network's dnsmasq (SIGTERM, then SIGKILL) and waits until it has exited and closed its sockets. */
  async stop(paths: DnsmasqPaths): Promise<void> {
    const id = await this.process(paths);
    // Wait for the process itself: an exiting dnsmasq loses its cmdline before it closes its sockets.
    if (id) await terminate(id, { graceMs: DAEMON_STOP_GRACE_MS, killMs: KILL_WAIT_MS });
    await rm(paths.pidFile, { force: true });
  }

  /** Current leases of the network. */
  async leases(paths: DnsmasqPaths): Promise<DhcpLease[]> {
    return parseLeases((await readFileCapped(paths.leaseFile, { maxBytes: LEASES_MAX_BYTES })) ?? '');
  }
}

async function fileSize(path: string): Promise<number> {
  return (await stat(path).catch(() => undefined))?.size ?? 0;
}
