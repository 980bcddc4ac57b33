// One agent's own Open vSwitch: an ovsdb-server with its own database and an ovs-vswitchd, both in the
// agent's network namespace, every file under <stateDir>/ovs/. They run detached (`--detach`, pidfiles),
// so an agent restart finds them running and adopts them instead of restarting them (which would
// drop the OpenFlow tables and the userspace datapath's internal ports).
import { existsSync } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Ovs, type OvsEndpoints } from '../../../exec/ovs.js';
import type { Runner } from '../../../exec/runner.js';
import { VmlinkError } from '../../../shared/errors.js';
import {
  DAEMON_STOP_GRACE_MS,
  KILL_WAIT_MS,
  OVS_DAEMON_EXIT_TIMEOUT_MS,
  OVS_DAEMON_START_TIMEOUT_MS,
} from '../../../shared/limits.js';
import { type ProcessIdentity, processFromPidfile, terminate, waitExited } from '../../../shared/process.js';
import { readAppended } from '../../../shared/state-file.js';
import { pollUntil } from '../../../shared/time.js';

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

  /** A live (not zombie) daemon started with our files, in our namespace, with its start time; undefined otherwise. */
  async process(name: OvsDaemonName): Promise<ProcessIdentity | undefined> {
    return processFromPidfile(this.paths.pidFile[name], {
      comm: name,
      args: [`--pidfile=${this.paths.pidFile[name]}`],
      ...(this.netns ? { netns: this.netns } : {}),
    });
  }

  /** Pid of a live daemon started with our files, in our namespace; undefined otherwise. */
  async pid(name: OvsDaemonName): Promise<number | undefined> {
    return (await this.process(name))?.pid;
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
      const id = await this.process(n);
      if (id === undefined) continue;
      const args = n === 'ovs-vswitchd' ? ['exit', '--cleanup'] : ['exit'];
      await this.runner
        .run(['ovs-appctl', '-t', this.paths.ctl[n], ...args], {
          netns: this.netns,
          allowFailure: true,
          timeoutMs: OVS_DAEMON_EXIT_TIMEOUT_MS,
        })
        .catch(() => undefined);
      // `exit` returns before the daemon is gone; whatever still runs after the grace gets TERM, then KILL.
      if (!(await waitExited(id, DAEMON_STOP_GRACE_MS)))
        await terminate(id, { graceMs: DAEMON_STOP_GRACE_MS, killMs: KILL_WAIT_MS });
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
    const logStart = (await stat(logFile).catch(() => undefined))?.size ?? 0;
    await rm(this.paths.pidFile[name], { force: true });
    // --detach: the command returns once the daemon is ready (socket bound / database read), pidfile written.
    const r = await this.runner.run(argv, {
      netns: this.netns,
      env: { OVS_RUNDIR: this.paths.runDir, OVS_DBDIR: this.paths.dir, OVS_LOGDIR: this.paths.dir },
      allowFailure: true,
      timeoutMs: OVS_DAEMON_START_TIMEOUT_MS,
    });
    // The pidfile is written before --detach returns; allow the 2 s a loaded machine may still need.
    const started = await pollUntil(() => this.pid(name), { timeoutMs: r.code === 0 ? 2_000 : 0 });
    if (started !== undefined) return;
    const log = (await readAppended(logFile, logStart)).trim();
    throw new VmlinkError(
      'exec',
      `${name} did not start (exit ${r.code}) for ${this.paths.dir}: ${[r.stderr.trim(), log].filter(Boolean).join('\n  ')}`,
    );
  }
}
