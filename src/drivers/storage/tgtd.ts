// One tgtd (Debian `tgt`) instance: started in the foreground (`-f`, so its log goes to our file and it stays the
// process we recorded), on its own control port, optionally inside a network namespace (a lab storage machine),
// with its identity (pid + start time) recorded so it is stopped only while it is still that process.
// tgtd keeps its targets, LUNs and accounts in memory only: a restarted tgtd serves nothing until the storage
// agent's next `ensurePool` puts them back.
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../../exec/runner.js';
import { ConflictError, InvalidRequestError, TimeoutError, VmlinkError } from '../../shared/errors.js';
import { KILL_WAIT_MS } from '../../shared/limits.js';
import {
  type ExpectedProcess,
  identify,
  isRunning,
  type ProcessIdentity,
  processFromIdentityFile,
  signalProcess,
  waitExited,
  writeIdentityFile,
} from '../../shared/process.js';
import { readTail } from '../../shared/safe-file.js';
import { writeFileAtomic } from '../../shared/state-file.js';
import { ISCSI_PORT } from '../../shared/storage.js';
import { pollUntil } from '../../shared/time.js';
import { TGT_SOCKET_PREFIX, TgtClient, tgtSocketPath } from './tgt-client.js';
import { TgtMode, TgtOp } from './tgt-protocol.js';

/** How long tgtd may take to answer on its control socket after it was started. */
export const TGTD_START_TIMEOUT_MS = 10_000;
/** How long a tgtd asked to exit (no targets left) may take before it is killed. */
export const TGTD_EXIT_WAIT_MS = 2_000;
/** Most bytes of tgtd's log an error quotes. */
const LOG_TAIL_BYTES = 2_048;

/** Options of one tgtd instance. */
export interface TgtdOptions {
  runner: Runner;
  /** `--control-port N`: its socket is `/var/run/tgtd/socket.N` (`tgtadm -C N` reaches it). 0..32767. */
  controlPort: number;
  /** Directory of this instance's files (identity, pidfile, log); created 0700. */
  dir: string;
  /** Network namespace to run in (a lab storage machine's); undefined: the caller's. */
  netns?: string;
  /** Address (and port) its iSCSI portal listens on; default every address of its namespace, port 3260. */
  portal?: { address: string; port?: number };
}

/** The files of a tgtd instance in its directory. */
export function tgtdFiles(
  dir: string,
  controlPort: number,
): { identity: string; pidfile: string; log: string } {
  const base = join(dir, `tgtd-${controlPort}`);
  return { identity: `${base}.id.json`, pidfile: `${base}.pid`, log: `${base}.log` };
}

const IPV4 = /^(\d{1,3}\.){3}\d{1,3}$/;

/** tgtd's argv: foreground, its control port, its portal. */
export function tgtdArgv(opts: Pick<TgtdOptions, 'controlPort' | 'portal'>): string[] {
  tgtSocketPath(opts.controlPort); // checks the port
  const argv = ['tgtd', '-f', '--control-port', String(opts.controlPort)];
  if (opts.portal) {
    const port = opts.portal.port ?? ISCSI_PORT;
    if (!IPV4.test(opts.portal.address) || !Number.isInteger(port) || port < 1 || port > 65_535)
      throw new InvalidRequestError(
        `tgtd portal ${opts.portal.address}:${port} is not an IPv4 address and port`,
      );
    argv.push('--iscsi', `portal=${opts.portal.address}:${port}`);
  }
  return argv;
}

/** Starts, finds and stops one tgtd. */
export class Tgtd {
  readonly files: ReturnType<typeof tgtdFiles>;
  /** A client of this tgtd's control socket. */
  readonly client: TgtClient;
  private readonly argv: string[];

  constructor(private readonly opts: TgtdOptions) {
    this.argv = tgtdArgv(opts);
    this.files = tgtdFiles(opts.dir, opts.controlPort);
    this.client = new TgtClient({ controlPort: opts.controlPort });
  }

  /** Its control socket. */
  get socketPath(): string {
    return tgtSocketPath(this.opts.controlPort, TGT_SOCKET_PREFIX);
  }

  /** What the recorded process must be: tgtd, with this control port, in this namespace. */
  private expected(): ExpectedProcess {
    const port = String(this.opts.controlPort);
    return {
      comm: 'tgtd',
      argv: (a) => a.some((x, i) => x === '--control-port' && a[i + 1] === port),
      ...(this.opts.netns ? { netns: this.opts.netns } : {}),
    };
  }

  /** The recorded tgtd when it still runs and is this instance; undefined otherwise. */
  running(): Promise<ProcessIdentity | undefined> {
    return processFromIdentityFile(this.files.identity, this.expected());
  }

  /** Whether tgtd answers on its control socket within `timeoutMs`. */
  async answers(timeoutMs = 1_000): Promise<boolean> {
    const c = new TgtClient({ controlPort: this.opts.controlPort, timeoutMs });
    return c.showSystem().then(
      () => true,
      () => false,
    );
  }

  /**
   * Starts tgtd unless this instance already runs, and waits until its control socket answers. `ConflictError`
   * when another process already serves the control port; `VmlinkError` quoting tgtd's log when it exits at once.
   */
  async start(): Promise<ProcessIdentity> {
    const mine = await this.running();
    if (mine) {
      if (await this.answers(TGTD_START_TIMEOUT_MS)) return mine;
      throw new TimeoutError(`tgtd (pid ${mine.pid}) runs but does not answer on ${this.socketPath}`);
    }
    if (await this.answers())
      throw new ConflictError(
        `another tgtd already serves control port ${this.opts.controlPort} (${this.socketPath}); pick another port`,
        this.socketPath,
      );
    await mkdir(this.opts.dir, { recursive: true, mode: 0o700 });
    const pid = await this.opts.runner.spawnDetached(this.argv, {
      logFile: this.files.log,
      ...(this.opts.netns ? { netns: this.opts.netns } : {}),
    });
    // The spawned pid is `ip netns exec`'s, which execs tgtd in place: same pid, same start time.
    const id = await identify(pid);
    if (id) {
      await writeIdentityFile(this.files.identity, id);
      await writeFileAtomic(this.files.pidfile, `${pid}\n`, { mode: 0o644 });
    }
    const up = await pollUntil(
      async () => {
        if (await this.answers(500)) return 'up';
        return id && (await isRunning(id)) ? undefined : 'exited';
      },
      { timeoutMs: TGTD_START_TIMEOUT_MS, intervalMs: 50 },
    );
    if (up === 'up' && id) return id;
    if (id) await this.kill(id);
    const tail = await readTail(this.files.log, LOG_TAIL_BYTES).catch(() => '');
    const why =
      up === 'exited' || !id ? 'exited at once' : `did not answer within ${TGTD_START_TIMEOUT_MS} ms`;
    throw new VmlinkError(
      'exec',
      `tgtd (control port ${this.opts.controlPort}) ${why}; its log:\n${tail.trim()}`,
      {
        subject: this.socketPath,
      },
    );
  }

  /**
   * Stops this instance (a missing one is fine): asked to exit over its socket when it serves no target (tgtd
   * ignores SIGTERM), killed otherwise; then its files and control socket are removed. Another process holding the
   * recorded pid is never signalled.
   */
  async stop(): Promise<void> {
    const id = await this.running();
    if (id) {
      const exited = await this.client
        .request({ mode: TgtMode.system, op: TgtOp.delete }, 'exit') // succeeds only with no target left
        .then(
          () => waitExited(id, TGTD_EXIT_WAIT_MS),
          () => false,
        );
      if (!exited) await this.kill(id);
    }
    await Promise.all([this.files.identity, this.files.pidfile].map((f) => rm(f, { force: true })));
    // A killed tgtd leaves its socket and lock file: removed once ours is gone, or when no tgtd answers there (never
    // under another live tgtd of this port, whose lock they are).
    if (id ? !(await isRunning(id)) : !(await this.answers(500)))
      await Promise.all([this.socketPath, `${this.socketPath}.lock`].map((f) => rm(f, { force: true })));
  }

  private async kill(id: ProcessIdentity): Promise<void> {
    if (await signalProcess(id, 'SIGKILL')) await waitExited(id, KILL_WAIT_MS);
  }
}
