// One NFS server instance of a storage machine: rpcbind + ganesha.nfsd, with their own config, state, log and identity
// files in one directory. NFSv3 clients (QEMU's libnfs) ask rpcbind where MOUNT is, and ganesha registers with rpcbind
// through the fixed socket /run/rpcbind.sock; so both run in a private mount namespace with a tmpfs of their own on
// /run: rpcbind is started under `unshare --mount`, ganesha enters that namespace (and its network namespace) with
// `nsenter`. Nothing touches the machine's own rpcbind or /run. Processes are found again only through their recorded
// identities (src/shared/process.ts); export changes rewrite the config atomically and reload ganesha with SIGHUP
// (ganesha 4 adds, removes and updates exports on it; checked in its log, else restarted). Its files and state are
// nfs-server-state.ts's, the commands it runs and their output nfs-server-commands.ts's.
import { mkdir, rm, stat } from 'node:fs/promises';
import type { Runner } from '../../exec/runner.js';
import { VmlinkError } from '../../shared/errors.js';
import { DAEMON_STOP_GRACE_MS, KILL_WAIT_MS } from '../../shared/limits.js';
import {
  type ExpectedProcess,
  identify,
  isRunning,
  type ProcessIdentity,
  processFromIdentityFile,
  signalProcess,
  terminate,
  writeIdentityFile,
} from '../../shared/process.js';
import { SerialQueue } from '../../shared/queue.js';
import {
  readAppended,
  readFileCapped,
  readJsonFile,
  readJsonFileSync,
  writeFileAtomic,
  writeJsonFile,
} from '../../shared/state-file.js';
import { pollUntil, sleep } from '../../shared/time.js';
import {
  type GaneshaExport,
  NFS_FILE_OWNER_DEFAULT,
  type NfsFileOwner,
  renderGaneshaConfig,
} from './ganesha-config.js';
import {
  ganeshaArgv,
  nfsRegistered,
  nsenterArgv,
  parseRpcinfo,
  RPC_PROGRAM,
  reloadOutcome,
  rpcbindArgv,
} from './nfs-server-commands.js';
import {
  NFS_EXPORTS_MAX,
  type NfsInstanceState,
  NfsInstanceStateSchema,
  type NfsServerPaths,
  nfsServerPaths,
  sameExport,
} from './nfs-server-state.js';

/** How long rpcbind and then ganesha may take to answer after their start. */
export const NFS_SERVER_START_TIMEOUT_MS = 20_000;
/** How long ganesha may take to log the end of an export reload. */
export const GANESHA_RELOAD_TIMEOUT_MS = 10_000;
/** ganesha drains its RPC threads on SIGTERM: give it longer than a small daemon. */
const GANESHA_STOP_GRACE_MS = 10_000;

/** How an instance is opened. */
export interface NfsServerOptions {
  runner: Runner;
  /** The instance's directory (created on start, mode 0700). */
  dir: string;
  /** Network namespace the servers run in (a lab storage machine); absent: the caller's own. */
  netns?: string;
  /** Owner of the exported files; recorded in the state file at first start (default `NFS_FILE_OWNER_DEFAULT`). */
  owner?: NfsFileOwner;
}

/** The instance's processes as found now. */
export interface NfsServerProcesses {
  rpcbind?: ProcessIdentity;
  ganesha?: ProcessIdentity;
}

/** rpcbind and ganesha of one storage machine. */
export class NfsServer {
  readonly paths: NfsServerPaths;
  private readonly changes = new SerialQueue();

  constructor(private readonly opts: NfsServerOptions) {
    this.paths = nfsServerPaths(opts.dir);
  }

  private expected(comm: string, args?: string[]): ExpectedProcess {
    return {
      comm,
      ...(args ? { args } : {}),
      ...(this.opts.netns === undefined ? {} : { netns: this.opts.netns }),
    };
  }

  /** The instance's running processes, each checked against what it must be (name, config file, namespace). */
  async processes(): Promise<NfsServerProcesses> {
    const [rpcbind, ganesha] = await Promise.all([
      processFromIdentityFile(this.paths.rpcbindIdentity, this.expected('rpcbind')),
      processFromIdentityFile(this.paths.ganeshaIdentity, this.expected('ganesha.nfsd', [this.paths.conf])),
    ]);
    return { ...(rpcbind ? { rpcbind } : {}), ...(ganesha ? { ganesha } : {}) };
  }

  /** The instance's settings and exports (recorded, or the options' defaults before the first start). */
  async state(): Promise<NfsInstanceState> {
    const kept = await readJsonFile(this.paths.state, NfsInstanceStateSchema);
    return {
      owner: this.opts.owner ?? kept?.owner ?? { ...NFS_FILE_OWNER_DEFAULT },
      exports: kept?.exports ?? [],
    };
  }

  /** Owner of the exported files: who every client acts as. */
  async owner(): Promise<NfsFileOwner> {
    return (await this.state()).owner;
  }

  /** `owner()`, synchronously (for constructors of the pool backend). */
  ownerSync(): NfsFileOwner {
    return (
      this.opts.owner ??
      readJsonFileSync(this.paths.state, NfsInstanceStateSchema)?.owner ?? { ...NFS_FILE_OWNER_DEFAULT }
    );
  }

  /** The exports served (or to be served at the next start). */
  async exports(): Promise<GaneshaExport[]> {
    return (await this.state()).exports;
  }

  /**
   * Starts rpcbind and ganesha unless they run (a ganesha without its rpcbind is restarted with a new one) and waits
   * until NFSv3 and MOUNT answer. Idempotent.
   */
  start(): Promise<'started' | 'running'> {
    return this.changes.run(() => this.startNow());
  }

  /** Stops ganesha, then rpcbind (each by verified identity), and removes their identity files. */
  stop(): Promise<void> {
    return this.changes.run(() => this.stopNow());
  }

  /**
   * Adds an export, replacing any with its id or its pseudo path (a pool whose export id changed); writes the config
   * and reloads a running ganesha.
   */
  putExport(e: GaneshaExport): Promise<void> {
    return this.changes.run(async () => {
      const s = await this.state();
      const others = s.exports.filter((x) => x.exportId !== e.exportId && x.pseudoPath !== e.pseudoPath);
      const same = s.exports.filter((x) => x.exportId === e.exportId || x.pseudoPath === e.pseudoPath);
      if (same.length === 1 && sameExport(same[0]!, e) && (await this.configCurrent(s))) return;
      if (others.length >= NFS_EXPORTS_MAX)
        throw new VmlinkError(
          'conflict',
          `NFS server ${this.paths.dir} already serves ${NFS_EXPORTS_MAX} exports`,
        );
      await this.apply({ ...s, exports: [...others, e].sort((a, b) => a.exportId - b.exportId) });
    });
  }

  /** Removes the export with `exportId` (a missing one is fine) and reloads a running ganesha. */
  removeExport(exportId: number): Promise<void> {
    return this.changes.run(async () => {
      const s = await this.state();
      if (!s.exports.some((x) => x.exportId === exportId)) return;
      await this.apply({ ...s, exports: s.exports.filter((x) => x.exportId !== exportId) });
    });
  }

  /** Whether NFSv3 and MOUNTv3 are registered with the instance's rpcbind and NFS answers a NULL call. */
  async ready(): Promise<boolean> {
    const { rpcbind, ganesha } = await this.processes();
    if (!rpcbind || !ganesha) return false;
    return this.answers(rpcbind);
  }

  private async configCurrent(s: NfsInstanceState): Promise<boolean> {
    return (await readFileCapped(this.paths.conf).catch(() => undefined)) === this.render(s);
  }

  private render(s: NfsInstanceState): string {
    return renderGaneshaConfig({ dir: this.paths.dir, owner: s.owner, exports: s.exports });
  }

  // The config is rendered (and so validated) before anything is written; a running ganesha gets it at once. What
  // ganesha refuses is taken back (the previous state and config, reloaded), so a refused change changes nothing.
  private async apply(s: NfsInstanceState): Promise<void> {
    const before = await this.state();
    await this.write(s);
    const { rpcbind, ganesha } = await this.processes();
    if (!rpcbind || !ganesha) return;
    let reloaded: boolean;
    try {
      reloaded = await this.reload(ganesha);
    } catch (e) {
      await this.write(before);
      await this.reload(ganesha).catch(() => undefined);
      throw e;
    }
    if (!reloaded) {
      // No word from ganesha that it reread its exports: a restart surely does.
      await terminate(ganesha, { graceMs: GANESHA_STOP_GRACE_MS, killMs: KILL_WAIT_MS });
      await this.startGanesha(rpcbind);
    }
  }

  /** SIGHUP, then ganesha's log: true when it reread its exports, an error naming what it refused. */
  private async reload(ganesha: ProcessIdentity): Promise<boolean> {
    const from = await fileSize(this.paths.log);
    if (!(await signalProcess(ganesha, 'SIGHUP'))) return false;
    const done = await pollUntil(async () => reloadOutcome(await readAppended(this.paths.log, from)).done, {
      timeoutMs: GANESHA_RELOAD_TIMEOUT_MS,
      intervalMs: 50,
    });
    if (!done) return false;
    // ganesha logs what it refused right after the end of the reload.
    await sleep(200);
    const { errors } = reloadOutcome(await readAppended(this.paths.log, from));
    if (errors.length)
      throw new VmlinkError(
        'exec',
        `nfs-ganesha (${this.paths.conf}) refused its new exports:\n  ${errors.join('\n  ')}`,
        { subject: this.paths.conf },
      );
    return true;
  }

  private async write(s: NfsInstanceState): Promise<void> {
    const conf = this.render(s);
    await this.prepareDir();
    await writeJsonFile(this.paths.state, s);
    await writeFileAtomic(this.paths.conf, conf, { mode: 0o600 });
  }

  private async prepareDir(): Promise<void> {
    await mkdir(this.paths.dir, { recursive: true, mode: 0o700 });
    await mkdir(this.paths.recoveryDir, { recursive: true, mode: 0o700 });
  }

  private async startNow(): Promise<'started' | 'running'> {
    const s = await this.state();
    let { rpcbind, ganesha } = await this.processes();
    const current = await this.configCurrent(s);
    if (rpcbind && ganesha && current && (await this.answers(rpcbind))) return 'running';
    await this.write(s);
    // ganesha's registrations live in its rpcbind: without that rpcbind they are gone, so it starts again too.
    if (ganesha && (!rpcbind || !current)) {
      await terminate(ganesha, { graceMs: GANESHA_STOP_GRACE_MS, killMs: KILL_WAIT_MS });
      ganesha = undefined;
    }
    if (!rpcbind) rpcbind = await this.startRpcbind();
    if (!ganesha) await this.startGanesha(rpcbind);
    else if (!(await this.waitAnswers(rpcbind, ganesha))) {
      await terminate(ganesha, { graceMs: GANESHA_STOP_GRACE_MS, killMs: KILL_WAIT_MS });
      await this.startGanesha(rpcbind);
    }
    return 'started';
  }

  private async stopNow(): Promise<void> {
    const { rpcbind, ganesha } = await this.processes();
    if (ganesha) await terminate(ganesha, { graceMs: GANESHA_STOP_GRACE_MS, killMs: KILL_WAIT_MS });
    if (rpcbind) await terminate(rpcbind, { graceMs: DAEMON_STOP_GRACE_MS, killMs: KILL_WAIT_MS });
    await Promise.all(
      [this.paths.rpcbindIdentity, this.paths.ganeshaIdentity, this.paths.ganeshaPidFile].map((p) =>
        rm(p, { force: true }),
      ),
    );
  }

  private async spawn(argv: string[], withNetns: boolean): Promise<ProcessIdentity> {
    const pid = await this.opts.runner.spawnDetached(argv, {
      ...(withNetns && this.opts.netns !== undefined ? { netns: this.opts.netns } : {}),
      logFile: this.paths.output,
    });
    // The pid stays the same through the exec chain (ip netns exec, unshare, sh, nsenter), and so does its start time.
    const id = await identify(pid);
    if (!id) throw await this.startError('exited at once', 0);
    return id;
  }

  private async startRpcbind(): Promise<ProcessIdentity> {
    const from = await fileSize(this.paths.output);
    const id = await this.spawn(rpcbindArgv(), true);
    await writeIdentityFile(this.paths.rpcbindIdentity, id);
    const up = await pollUntil(
      async () => {
        if (!(await isRunning(id))) return 'exited';
        const r = await this.opts.runner.run([...nsenterArgv(id.pid), 'rpcinfo', '-p'], {
          allowFailure: true,
        });
        return r.code === 0 ? 'up' : undefined;
      },
      { timeoutMs: NFS_SERVER_START_TIMEOUT_MS, intervalMs: 50 },
    );
    if (up === 'up') return id;
    await signalProcess(id, 'SIGKILL');
    throw await this.startError(`rpcbind ${up ?? 'did not answer'}`, from);
  }

  private async startGanesha(rpcbind: ProcessIdentity): Promise<ProcessIdentity> {
    const from = await fileSize(this.paths.output);
    const logFrom = await fileSize(this.paths.log);
    await rm(this.paths.ganeshaPidFile, { force: true });
    const id = await this.spawn(ganeshaArgv(this.paths, rpcbind.pid), false);
    await writeIdentityFile(this.paths.ganeshaIdentity, id);
    if (await this.waitAnswers(rpcbind, id)) return id;
    const exited = !(await isRunning(id));
    await terminate(id, { graceMs: 1_000, killMs: KILL_WAIT_MS });
    const log = (await readAppended(this.paths.log, logFrom)).trim().split('\n').slice(-10).join('\n');
    throw await this.startError(
      `ganesha.nfsd ${exited ? 'exited' : 'did not answer'}${log ? `:\n${log}` : ''}`,
      from,
    );
  }

  private async waitAnswers(rpcbind: ProcessIdentity, ganesha: ProcessIdentity): Promise<boolean> {
    const up = await pollUntil(
      async () => {
        if (!(await isRunning(ganesha)) || !(await isRunning(rpcbind))) return 'exited';
        return (await this.answers(rpcbind)) ? 'up' : undefined;
      },
      { timeoutMs: NFS_SERVER_START_TIMEOUT_MS, intervalMs: 100 },
    );
    return up === 'up';
  }

  // Registered with rpcbind (as clients find them) and a NULL call to NFSv3 over TCP answered.
  private async answers(rpcbind: ProcessIdentity): Promise<boolean> {
    const ns = nsenterArgv(rpcbind.pid);
    const list = await this.opts.runner.run([...ns, 'rpcinfo', '-p'], { allowFailure: true });
    if (list.code !== 0 || !nfsRegistered(parseRpcinfo(list.stdout))) return false;
    const nul = await this.opts.runner.run(
      [...ns, 'rpcinfo', '-t', '127.0.0.1', String(RPC_PROGRAM.nfs), '3'],
      {
        allowFailure: true,
        timeoutMs: 5_000,
      },
    );
    return nul.code === 0;
  }

  private async startError(what: string, outputFrom: number): Promise<VmlinkError> {
    const out = (await readAppended(this.paths.output, outputFrom))
      .trim()
      .split('\n')
      .slice(-10)
      .join('\n  ');
    return new VmlinkError(
      'exec',
      `NFS server ${this.paths.dir}${this.opts.netns ? ` (netns ${this.opts.netns})` : ''}: ${what}${out ? `\n  ${out}` : ''}`,
      { subject: this.paths.dir },
    );
  }
}

async function fileSize(path: string): Promise<number> {
  return (await stat(path).catch(() => undefined))?.size ?? 0;
}
