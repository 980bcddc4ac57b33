// One agent's own Open vSwitch: an ovsdb-server with its own database and an ovs-vswitchd, both in the
// agent's network namespace, every file under <stateDir>/ovs/. They run detached (`--detach`, pidfiles),
// so an agent restart finds them running and adopts them instead of restarting them (which would
// drop the OpenFlow tables and the userspace datapath's internal ports).
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Ovs, type OvsEndpoints } from '../../../exec/ovs.js';
import type { Runner } from '../../../exec/runner.js';
import { VmlinkError } from '../../../shared/errors.js';

/** The two OVS daemons. */
export type OvsDaemonName = 'ovsdb-server' | 'ovs-vswitchd';

/** Files of one agent's OVS instance. */
export interface OvsPaths extends OvsEndpoints {
  dir: string;
  db: string;
  schema: string;
  pidFile: Record<OvsDaemonName, string>;
  ctl: Record<OvsDaemonName, string>;
  log: Record<OvsDaemonName, string>;
}

/** Debian's OVSDB schema of the Open_vSwitch database. */
export const VSWITCH_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

/** Where the OVS instance of an agent keeps its files (`<stateDir>/ovs/`; sockets under `run/`). */
export function ovsPaths(stateDir: string): OvsPaths {
  const dir = join(stateDir, 'ovs');
  const runDir = join(dir, 'run');
  const per = (f: (n: OvsDaemonName) => string) => ({
    'ovsdb-server': f('ovsdb-server'),
    'ovs-vswitchd': f('ovs-vswitchd'),
  });
  return {
    dir,
    runDir,
    db: join(dir, 'conf.db'),
    schema: VSWITCH_SCHEMA,
    dbSocket: join(runDir, 'db.sock'),
    vswitchdCtl: join(runDir, 'ovs-vswitchd.ctl'),
    pidFile: per((n) => join(runDir, `${n}.pid`)),
    ctl: per((n) => join(runDir, `${n}.ctl`)),
    log: per((n) => join(dir, `${n}.log`)),
  };
}

/** Command line of ovsdb-server for these paths (detaches once its socket listens). */
export function ovsdbServerArgv(p: OvsPaths): string[] {
  return [
    'ovsdb-server',
    p.db,
    `--remote=punix:${p.dbSocket}`,
    `--pidfile=${p.pidFile['ovsdb-server']}`,
    `--unixctl=${p.ctl['ovsdb-server']}`,
    `--log-file=${p.log['ovsdb-server']}`,
    '--detach',
    '--no-chdir',
  ];
}

/** Command line of ovs-vswitchd (detaches once it has read the database and configured its bridges). */
export function vswitchdArgv(p: OvsPaths, kernelDatapath: boolean): string[] {
  return [
    'ovs-vswitchd',
    `unix:${p.dbSocket}`,
    `--pidfile=${p.pidFile['ovs-vswitchd']}`,
    `--unixctl=${p.ctl['ovs-vswitchd']}`,
    `--log-file=${p.log['ovs-vswitchd']}`,
    '--detach',
    '--no-chdir',
    // Without the kernel module the system datapath only logs errors; the userspace one does the work.
    ...(kernelDatapath ? [] : ['--disable-system']),
  ];
}

/** What `ensureRunning` found or did. */
export interface OvsDaemonStatus {
  'ovsdb-server': 'running' | 'started';
  'ovs-vswitchd': 'running' | 'started';
  /** Milliseconds spent starting daemons (0 when both were running). */
  startMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw e;
  }
}

/** Whether the kernel has the openvswitch module (loaded, or loadable). */
export async function kernelDatapathAvailable(runner: Runner): Promise<boolean> {
  if (existsSync('/sys/module/openvswitch')) return true;
  const r = await runner
    .run(['modprobe', '-n', 'openvswitch'], { allowFailure: true })
    .catch(() => undefined);
  return r?.code === 0;
}

/** Starts, adopts, checks and stops one agent's ovsdb-server + ovs-vswitchd. */
export class OvsDaemons {
  readonly paths: OvsPaths;
  readonly ovs: Ovs;
  private kernelDp: Promise<boolean> | undefined;

  constructor(
    private readonly runner: Runner,
    stateDir: string,
    private readonly netns?: string,
    /** Force the datapath; undefined = kernel when the openvswitch module exists, else userspace (netdev). */
    private readonly forceDatapath?: 'netdev' | 'system',
  ) {
    this.paths = ovsPaths(stateDir);
    this.ovs = new Ovs(runner, this.paths, netns);
  }

  /** The datapath type bridges get: `system` with the kernel module, else `netdev` (userspace). */
  async datapathType(): Promise<'netdev' | 'system'> {
    if (this.forceDatapath) return this.forceDatapath;
    this.kernelDp ??= kernelDatapathAvailable(this.runner);
    return (await this.kernelDp) ? 'system' : 'netdev';
  }

  /** Pid of a live (not zombie) daemon started with our files, in our namespace; undefined otherwise. */
  async pid(name: OvsDaemonName): Promise<number | undefined> {
    const text = (await readText(this.paths.pidFile[name]))?.trim();
    if (!text || !/^\d+$/.test(text)) return undefined;
    const pid = Number(text);
    const stat0 = await readText(`/proc/${pid}/stat`);
    if (!stat0 || /^\d+ \(.*\) [ZX]/.test(stat0)) return undefined;
    const comm = (await readText(`/proc/${pid}/comm`))?.trim();
    if (comm !== name) return undefined;
    const argv = ((await readText(`/proc/${pid}/cmdline`)) ?? '').split('\0');
    if (!argv.includes(`--pidfile=${this.paths.pidFile[name]}`)) return undefined;
    if (this.netns && !(await sameNetns(pid, this.netns))) return undefined;
    return pid;
  }

  /** Problems of the daemons (for `listNetworks`); empty when both run. */
  async problems(): Promise<string[]> {
    const out: string[] = [];
    for (const n of ['ovsdb-server', 'ovs-vswitchd'] as const)
      if ((await this.pid(n)) === undefined) out.push(`${n} not running`);
    return out;
  }

  /** Starts whichever daemon is not running (creating the database first if needed); adopts running ones. */
  async ensureRunning(): Promise<OvsDaemonStatus> {
    const t0 = Date.now();
    const p = this.paths;
    const status: OvsDaemonStatus = { 'ovsdb-server': 'running', 'ovs-vswitchd': 'running', startMs: 0 };
    if ((await this.pid('ovsdb-server')) === undefined) {
      await mkdir(p.runDir, { recursive: true, mode: 0o750 });
      if (!existsSync(p.db)) await this.runner.run(['ovsdb-tool', 'create', p.db, p.schema]);
      else {
        // An older database (OVS upgraded underneath us) is converted in place, as Debian's init script does.
        const need = await this.runner.run(['ovsdb-tool', 'needs-conversion', p.db, p.schema], {
          allowFailure: true,
        });
        if (need.stdout.trim() === 'yes') await this.runner.run(['ovsdb-tool', 'convert', p.db, p.schema]);
      }
      await rm(p.dbSocket, { force: true });
      await this.start('ovsdb-server', ovsdbServerArgv(p));
      await this.ovs.vsctl([['init']], { noWait: true });
      status['ovsdb-server'] = 'started';
    }
    if ((await this.pid('ovs-vswitchd')) === undefined) {
      await this.start('ovs-vswitchd', vswitchdArgv(p, (await this.datapathType()) === 'system'));
      status['ovs-vswitchd'] = 'started';
    }
    if (status['ovsdb-server'] === 'started' || status['ovs-vswitchd'] === 'started')
      status.startMs = Date.now() - t0;
    return status;
  }

  /** Stops both daemons (vswitchd first, releasing its datapath) and waits until they are gone. */
  async stop(): Promise<void> {
    for (const n of ['ovs-vswitchd', 'ovsdb-server'] as const) {
      const pid = await this.pid(n);
      if (pid === undefined) continue;
      const args = n === 'ovs-vswitchd' ? ['exit', '--cleanup'] : ['exit'];
      await this.runner
        .run(['ovs-appctl', '-t', this.paths.ctl[n], ...args], {
          netns: this.netns,
          allowFailure: true,
          timeoutMs: 10_000,
        })
        .catch(() => undefined);
      for (let i = 0; i < 60 && (await alive(pid)); i++) await sleep(50);
      if (await alive(pid)) killQuietly(pid, 'SIGTERM');
      for (let i = 0; i < 40 && (await alive(pid)); i++) await sleep(50);
      if (await alive(pid)) killQuietly(pid, 'SIGKILL');
      for (let i = 0; i < 40 && (await alive(pid)); i++) await sleep(50);
      await rm(this.paths.pidFile[n], { force: true });
    }
  }

  /** Stops the daemons and removes the database and every OVS file of this agent. */
  async destroy(): Promise<void> {
    await this.stop();
    await rm(this.paths.dir, { recursive: true, force: true });
  }

  private async start(name: OvsDaemonName, argv: string[]): Promise<void> {
    const logFile = this.paths.log[name];
    const logStart = (await readText(logFile))?.length ?? 0;
    await rm(this.paths.pidFile[name], { force: true });
    // --detach: the command returns once the daemon is ready (socket bound / database read), pidfile written.
    const r = await this.runner.run(argv, {
      netns: this.netns,
      env: { OVS_RUNDIR: this.paths.runDir, OVS_DBDIR: this.paths.dir, OVS_LOGDIR: this.paths.dir },
      allowFailure: true,
      timeoutMs: 30_000,
    });
    for (let i = 0; i < 40; i++) {
      if ((await this.pid(name)) !== undefined) return;
      if (r.code !== 0) break;
      await sleep(50);
    }
    const log = ((await readText(logFile)) ?? '').slice(logStart).trim();
    throw new VmlinkError(
      'exec',
      `${name} did not start (exit ${r.code}) for ${this.paths.dir}: ${[r.stderr.trim(), log].filter(Boolean).join('\n  ')}`,
    );
  }
}

/** Whether the process runs in the named network namespace (compares namespace inodes). */
async function sameNetns(pid: number, netns: string): Promise<boolean> {
  try {
    const [a, b] = await Promise.all([stat(`/proc/${pid}/ns/net`), stat(`/run/netns/${netns}`)]);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

async function alive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const s = await readText(`/proc/${pid}/stat`);
  return s !== undefined && !/^\d+ \(.*\) [ZX]/.test(s);
}

function killQuietly(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}
