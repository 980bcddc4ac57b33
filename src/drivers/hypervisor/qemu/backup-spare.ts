// The host's spare qemu-storage-daemon (docs/backup.md "Capture"): one started ahead, with nothing but its QMP
// monitor (connected and negotiated), so that a stopped VM's next backup takes it instead of starting its own (the
// spawn, the daemon's start and the QMP connection: ~110 ms of a 1 % round). It opens no image, so it holds no
// image lock: a VM start is never blocked by it. At most one; the next is started once a view that took it (or
// started its own) ended, in the background. Its files are in `<root>/<8 hex>/` (root-only); a taken spare's
// identity moves to the VM's socket directory (`DaemonSource.take`) and its directory goes, so the VM's cleanup finds
// it as it finds a daemon started for the VM. A spare that dies is dropped (the next backup starts its own) and
// replaced; the agent's start stops what an earlier agent left here (`cleanup`), its stop stops the spare (`close`).
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../../../exec/runner.js';
import { log } from '../../../shared/log.js';
import {
  isRunning,
  processFromIdentityFile,
  processFromPidfile,
  writeIdentityFile,
} from '../../../shared/process.js';
import { type Daemon, type DaemonSource, daemonFiles, spawnDaemon, stopProcess } from './backup-daemon.js';

/** A spare that dies within this long of its start is not replaced at once (the next view's end tries again). */
export const SPARE_REPLACE_MIN_LIFE_MS = 5_000;

const SPARE_NAME = /^[0-9a-f]{8}$/;

interface Spare {
  dir: string;
  daemon: Daemon;
  startedAt: number;
  dead: boolean;
}

export interface SpareOptions {
  runner: Runner;
  /** Where the spares' directories are made (root-only; the driver's `<stateDir>/backup-spare`). */
  root: string;
  /** The network namespace the VMs' storage is reached in (the daemons the views start run there too). */
  netns?: string;
}

/**
 * Records a taken spare as the view's daemon: its identity file (written when it started) renamed into the VM's
 * socket directory, one rename rather than a new file's two fsyncs (the record is for an agent that dies, not the
 * host: the daemon dies with the host); written anew when the two are on different filesystems.
 */
async function moveIdentity(s: Spare, identityFile: string): Promise<void> {
  try {
    await rename(daemonFiles(s.dir).identity, identityFile);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    await writeIdentityFile(identityFile, s.daemon.id);
  }
}

/** The host's spare storage daemon: at most one, taken by a stopped VM's backup view. */
export class SpareDaemon implements DaemonSource {
  /** The spare, up or starting; undefined when there is none. */
  private slot: Promise<Spare | undefined> | undefined;
  private closed = false;

  constructor(private readonly o: SpareOptions) {}

  /**
   * Hands the spare over when one is up (one still starting is waited for: it is nearer than a new one), its
   * identity recorded at `identityFile`; undefined when there is none or it died.
   */
  async take(identityFile: string): Promise<Daemon | undefined> {
    const slot = this.slot;
    this.slot = undefined;
    const s = await slot;
    if (!s) return undefined;
    if (s.dead || !(await isRunning(s.daemon.id))) {
      await this.discard(s);
      return undefined;
    }
    await moveIdentity(s, identityFile);
    // Its pidfile, socket and log stay open in the daemon; its directory goes with them.
    await rm(s.dir, { recursive: true, force: true });
    return s.daemon;
  }

  /** Starts a spare in the background when there is none (nor one starting) and the host has not stopped it. */
  refill(): void {
    if (this.closed || this.slot) return;
    const p: Promise<Spare | undefined> = this.start().catch((e: Error) => {
      log.warn({ err: e.message }, 'backup: could not start a spare storage daemon');
      if (this.slot === p) this.slot = undefined;
      return undefined;
    });
    this.slot = p;
  }

  /** The spare's pid while one is up (tests, reports); undefined otherwise. */
  async pid(): Promise<number | undefined> {
    const s = await this.slot;
    return s && !s.dead ? s.daemon.id.pid : undefined;
  }

  /** Stops the spare (the agent stops) and starts no other. */
  async close(): Promise<void> {
    this.closed = true;
    const s = await this.slot;
    this.slot = undefined;
    if (s) await this.discard(s);
  }

  /** Stops the spares an earlier agent left under the root (the agent's start); how many ran. */
  async cleanup(): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.o.root);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw e;
    }
    let stopped = 0;
    for (const name of names.filter((n) => SPARE_NAME.test(n))) {
      const dir = join(this.o.root, name);
      const f = daemonFiles(dir);
      const want = {
        comm: 'qemu-storage-da',
        args: ['--pidfile', f.pidfile],
        ...(this.o.netns ? { netns: this.o.netns } : {}),
      };
      // Its identity, or (an agent that died between the spawn and the record) its own pidfile.
      const id =
        (await processFromIdentityFile(f.identity, want)) ?? (await processFromPidfile(f.pidfile, want));
      if (id) {
        await stopProcess(id, f.qmp);
        stopped++;
      }
      await rm(dir, { recursive: true, force: true });
    }
    return stopped;
  }

  private async start(): Promise<Spare> {
    await mkdir(this.o.root, { recursive: true, mode: 0o700 });
    const dir = join(this.o.root, randomBytes(4).toString('hex'));
    await mkdir(dir, { mode: 0o700 });
    let daemon: Daemon;
    try {
      daemon = await spawnDaemon(this.o.runner, dir, this.o.netns, 'the backup spare');
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    const s: Spare = { dir, daemon, startedAt: Date.now(), dead: false };
    void daemon.qmp.closed().then(() => this.died(s));
    if (this.closed) {
      await this.discard(s);
      throw new Error('the agent stopped while the spare started');
    }
    return s;
  }

  /** The spare's monitor closed: if it was still the spare (not taken, not stopped by us), drop and replace it. */
  private async died(s: Spare): Promise<void> {
    if (s.dead) return;
    s.dead = true;
    if (this.slot === undefined || (await this.slot) !== s) return;
    this.slot = undefined;
    log.warn({ pid: s.daemon.id.pid }, 'backup: the spare storage daemon died');
    await this.discard(s);
    if (Date.now() - s.startedAt >= SPARE_REPLACE_MIN_LIFE_MS) this.refill();
  }

  private async discard(s: Spare): Promise<void> {
    s.dead = true;
    s.daemon.qmp.close();
    await stopProcess(s.daemon.id, daemonFiles(s.dir).qmp).catch((e: Error) =>
      log.warn({ pid: s.daemon.id.pid, err: e.message }, 'backup: could not stop the spare storage daemon'),
    );
    await rm(s.dir, { recursive: true, force: true });
  }
}
