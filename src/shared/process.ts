// Process identity: which process a pid names, read from /proc. A pid alone can be reused by an unrelated process
// once ours exits, so what we trust is a recorded identity: the pid plus its start time (field 22 of
// /proc/PID/stat, clock ticks since boot), which no later process with the same pid can share. A pid read from a file
// becomes something to signal only through `processFromPidfile` / `processFromIdentityFile`, which also check that
// the process is the program expected (name, command line, namespace, user): signals take identities, never pids.
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { readdir, readlink, stat } from 'node:fs/promises';
import { z } from 'zod';
import { log } from './log.js';
import { readFileCapped, readJsonFile, writeJsonFile } from './state-file.js';
import { sleep } from './time.js';

/** Highest pid Linux hands out (PID_MAX_LIMIT on 64-bit). */
export const PID_MAX = 4_194_304;

/** A process as we recorded it: its pid and its start time. */
export interface ProcessIdentity {
  pid: number;
  /** Start time in clock ticks since boot (/proc/PID/stat field 22). */
  startTime: number;
}

/** The parts of /proc/PID/stat we use. */
export interface ProcStat {
  pid: number;
  /** Command name as the kernel keeps it (15 characters at most; may contain spaces and parentheses). */
  comm: string;
  /** One-letter state: R, S, D, T, t, Z (zombie), X (dead), ... */
  state: string;
  ppid: number;
  startTime: number;
  /** CPU time the process used itself (utime + stime, fields 14-15), in clock ticks (`USER_HZ`). */
  cpuTicks: number;
  /** CPU time of its children it has waited for (cutime + cstime, fields 16-17), in clock ticks. */
  childCpuTicks: number;
}

/**
 * Clock ticks per second of the times in /proc (`USER_HZ`, what `getconf CLK_TCK` prints): a fixed part of the
 * kernel's ABI, 100 on every architecture Debian ships (not the kernel's internal CONFIG_HZ).
 */
export const USER_HZ = 100;

/** Whether `n` can be the pid of a process of ours: an integer from 2 (pid 1 is init, never ours) to `PID_MAX`. */
export function isPid(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n > 1 && n <= PID_MAX;
}

/** Parses a pidfile's text (one decimal number, surrounding whitespace allowed); undefined when it is not one. */
export function parsePid(text: string): number | undefined {
  const t = text.trim();
  if (!/^\d{1,7}$/.test(t)) return undefined;
  const n = Number(t);
  return isPid(n) ? n : undefined;
}

/** Parses /proc/PID/stat; undefined when malformed. The command name ends at the LAST `)`, as it may contain one. */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf(' (');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open));
  const rest = text
    .slice(close + 2)
    .trim()
    .split(' ');
  // rest[0] is field 3 (state), so field n is rest[n - 3].
  const state = rest[0];
  const ppid = Number(rest[1]);
  const startTime = Number(rest[19]);
  if (!Number.isInteger(pid) || !state || !/^[A-Za-z]$/.test(state)) return undefined;
  if (!Number.isInteger(ppid) || !Number.isInteger(startTime)) return undefined;
  // Times are read leniently: a field that is not a count reads as 0 (identity checks must not fail on them).
  const ticks = (i: number) => {
    const n = Number(rest[i]);
    return Number.isSafeInteger(n) && n >= 0 ? n : 0;
  };
  return {
    pid,
    comm: text.slice(open + 2, close),
    state,
    ppid,
    startTime,
    cpuTicks: ticks(11) + ticks(12),
    childCpuTicks: ticks(13) + ticks(14),
  };
}

/** Whether a /proc state letter means the process has exited (zombie or dead). */
export const hasExitedState = (state: string): boolean => state === 'Z' || state === 'X' || state === 'x';

// Every /proc path is built from a checked integer, so it can never name /proc/self or leave /proc.
function procPath(pid: number, file: string): string | undefined {
  return isPid(pid) ? `/proc/${pid}/${file}` : undefined;
}

async function readProc(pid: number, file: string, maxBytes: number): Promise<string | undefined> {
  const path = procPath(pid, file);
  if (!path) return undefined;
  try {
    return await readFileCapped(path, { maxBytes });
  } catch {
    // EACCES, an oversized file and the like: a process we may not inspect is not one we can vouch for.
    return undefined;
  }
}

/** /proc/PID/stat of a process, or undefined when there is none. */
export async function procStat(pid: number): Promise<ProcStat | undefined> {
  const text = await readProc(pid, 'stat', 4096);
  return text === undefined ? undefined : parseProcStat(text);
}

/**
 * /proc/PID/stat read synchronously with one bounded read (4 KiB): for scans of every process many times a second
 * (the drills' sampler), where the asynchronous path's thread-pool hops cost ten times the read itself.
 */
export function procStatSync(pid: number): ProcStat | undefined {
  const path = procPath(pid, 'stat');
  if (!path) return undefined;
  let fd: number | undefined;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    const buf = Buffer.alloc(4096);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return parseProcStat(buf.subarray(0, n).toString('utf8'));
  } catch {
    return undefined; // gone, or not ours to read
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The identity of the live (not zombie) process `pid`, or undefined when there is none. */
export async function identify(pid: number): Promise<ProcessIdentity | undefined> {
  const s = await procStat(pid);
  if (!s || s.pid !== pid || hasExitedState(s.state)) return undefined;
  return { pid, startTime: s.startTime };
}

/** Whether the process still runs and is not a zombie; for an identity, also that it is the same process. */
export async function isRunning(p: number | ProcessIdentity): Promise<boolean> {
  const id = await identify(typeof p === 'number' ? p : p.pid);
  return id !== undefined && (typeof p === 'number' || id.startTime === p.startTime);
}

/** The process's argv (/proc/PID/cmdline, capped at 256 KiB), or undefined when it is gone. */
export async function processArgv(pid: number): Promise<string[] | undefined> {
  const text = await readProc(pid, 'cmdline', 256 * 1024);
  return text?.split('\0').filter((a) => a !== '');
}

/** The process's command name (/proc/PID/comm), or undefined when it is gone. */
export async function processComm(pid: number): Promise<string | undefined> {
  return (await readProc(pid, 'comm', 64))?.replace(/\n$/, '');
}

/** The process's resident memory in bytes (`VmRSS` of /proc/PID/status; 0 for a kernel thread), or undefined when it is gone. */
export async function processRssBytes(pid: number): Promise<number | undefined> {
  const text = await readProc(pid, 'status', 16 * 1024);
  return text === undefined ? undefined : parseStatusRss(text);
}

/** `VmRSS` of a /proc/PID/status text in bytes; 0 when it has none (a kernel thread, a zombie). */
export function parseStatusRss(text: string): number {
  const m = /^VmRSS:\s+(\d{1,15}) kB$/m.exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * The network namespace process `pid` (or this process, `self`) runs in, as the kernel names it (`net:[INODE]`), or
 * undefined when it is gone or not ours to look at. Two processes share a namespace when these are equal.
 */
export async function netnsOf(pid: number | 'self'): Promise<string | undefined> {
  const path = pid === 'self' ? '/proc/self/ns/net' : procPath(pid, 'ns/net');
  if (!path) return undefined;
  try {
    return await readlink(path);
  } catch {
    return undefined;
  }
}

/** The process's real uid (/proc/PID/status), or undefined when it is gone. */
export async function processUid(pid: number): Promise<number | undefined> {
  const m = /^Uid:\s+(\d+)/m.exec((await readProc(pid, 'status', 16 * 1024)) ?? '');
  return m ? Number(m[1]) : undefined;
}

/** Pids of the processes whose real uid is one of `uids` (a scan of /proc). */
export async function processesOfUids(uids: ReadonlySet<number>): Promise<number[]> {
  if (uids.size === 0) return [];
  const pids = (await readdir('/proc')).map(Number).filter(isPid);
  const owned = await Promise.all(
    pids.map(async (pid) => {
      const uid = await processUid(pid);
      return uid !== undefined && uids.has(uid);
    }),
  );
  return pids.filter((_, i) => owned[i]);
}

/** A regular file a process holds open: which file (device and inode), the path it was opened by, and how. */
export interface OpenFile {
  fd: number;
  /** The path as the kernel shows it (in the process's own mount namespace; a deleted file ends in " (deleted)"). */
  path: string;
  dev: number;
  ino: number;
  /** Opened for writing (O_WRONLY or O_RDWR, from /proc/PID/fdinfo). */
  write: boolean;
}

/**
 * The regular files process `pid` holds open, looking at `maxFds` descriptors at most. Each descriptor's link is
 * read as text and stat'ed through /proc (the kernel's reference to the open file: no path in the process's own,
 * possibly hostile, directories is walked); sockets, pipes and devices are left out. Empty when the process is gone.
 */
export async function processOpenFiles(pid: number, maxFds = 1024): Promise<OpenFile[]> {
  const dir = procPath(pid, 'fd');
  if (!dir) return [];
  let fds: number[];
  try {
    fds = (await readdir(dir))
      .slice(0, maxFds)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n >= 0);
  } catch {
    return [];
  }
  const files = await Promise.all(
    fds.map(async (fd): Promise<OpenFile | undefined> => {
      try {
        const path = await readlink(`${dir}/${fd}`);
        if (!path.startsWith('/') || /^\/(dev|proc|sys)\//.test(path)) return undefined;
        const st = await stat(`${dir}/${fd}`);
        if (!st.isFile()) return undefined;
        const info = await readProc(pid, `fdinfo/${fd}`, 4096);
        const flags = /^flags:\s+([0-7]{1,12})$/m.exec(info ?? '')?.[1];
        if (flags === undefined) return undefined;
        return { fd, path, dev: st.dev, ino: st.ino, write: (Number.parseInt(flags, 8) & 3) !== 0 };
      } catch {
        return undefined; // closed meanwhile
      }
    }),
  );
  return files.filter((f): f is OpenFile => f !== undefined);
}

/** Whether the process runs in the named network namespace (compares the namespaces' inodes). */
export async function inNetns(pid: number, netns: string): Promise<boolean> {
  const path = procPath(pid, 'ns/net');
  if (!path || !/^[A-Za-z0-9_.-]{1,64}$/.test(netns) || netns === '.' || netns === '..') return false;
  try {
    const [a, b] = await Promise.all([stat(path), stat(`/run/netns/${netns}`)]);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

/** Sends `sig` to the process if it is still the one identified; returns whether the signal was sent. */
export async function signalProcess(p: ProcessIdentity, sig: NodeJS.Signals): Promise<boolean> {
  if (!(await isRunning(p))) return false;
  try {
    process.kill(p.pid, sig);
    return true;
  } catch {
    return false; // exited in between
  }
}

/** Waits until the process has exited (gone, a zombie, or its pid taken by another); returns whether it has. */
export async function waitExited(
  p: number | ProcessIdentity,
  timeoutMs: number,
  intervalMs = 20,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await isRunning(p))) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await sleep(Math.min(intervalMs, left));
  }
}

/** How `terminate` ended a process. */
export type TerminateOutcome = 'not-running' | 'terminated' | 'killed' | 'survived';

/** SIGTERM, wait `graceMs`, then SIGKILL and wait `killMs`; files and sockets are closed once this returns (not `survived`). */
export async function terminate(
  p: ProcessIdentity,
  opts: { graceMs: number; killMs: number },
): Promise<TerminateOutcome> {
  if (!(await signalProcess(p, 'SIGTERM'))) return 'not-running';
  if (await waitExited(p, opts.graceMs)) return 'terminated';
  await signalProcess(p, 'SIGKILL');
  return (await waitExited(p, opts.killMs)) ? 'killed' : 'survived';
}

/**
 * Reads a pidfile another program wrote (dnsmasq, OVS, QEMU): without following a link, a regular file of at most
 * 64 bytes holding one pid. Anything else reads as no pid (and is logged): such a file names no process we trust.
 */
export async function readPidfile(path: string): Promise<number | undefined> {
  try {
    const text = await readFileCapped(path, { maxBytes: 64 });
    return text === undefined ? undefined : parsePid(text);
  } catch (e) {
    log.warn({ path, err: (e as Error).message }, 'pidfile refused');
    return undefined;
  }
}

const IdentitySchema = z
  .object({ pid: z.number().int().min(2).max(PID_MAX), startTime: z.number().int().min(0) })
  .strict();

/** Records a process's identity (atomically, mode 0600) so a later run can find exactly this process again. */
export async function writeIdentityFile(path: string, id: ProcessIdentity): Promise<void> {
  await writeJsonFile(path, { pid: id.pid, startTime: id.startTime });
}

/** The identity recorded in `path`, or undefined when there is none (or it is unreadable: logged). */
export async function readIdentityFile(path: string): Promise<ProcessIdentity | undefined> {
  try {
    return await readJsonFile(path, IdentitySchema, { maxBytes: 256 });
  } catch (e) {
    log.warn({ path, err: (e as Error).message }, 'process identity file refused');
    return undefined;
  }
}

/** The recorded process when it still runs (same pid, same start time); undefined otherwise. */
export async function runningFromIdentityFile(path: string): Promise<ProcessIdentity | undefined> {
  const id = await readIdentityFile(path);
  return id && (await isRunning(id)) ? id : undefined;
}

/** What a process named by a file must be before vmlink trusts (and signals) it. */
export interface ExpectedProcess {
  /** Its command name as /proc/PID/comm shows it (15 characters at most). */
  comm?: string;
  /** Arguments its command line must hold, each as one whole argument (e.g. `--pidfile=/path`). */
  args?: readonly string[];
  /** A further check of its command line. */
  argv?: (argv: string[]) => boolean;
  /** The named network namespace it must run in. */
  netns?: string;
  /** The real uid it must run as. */
  uid?: number;
}

/** A process named by a file, as found: what it is and whether it is the expected program. */
export interface FoundProcess {
  id: ProcessIdentity;
  /** Its command name, for messages. */
  comm: string;
  /** Whether it is the program expected; a process that is not is never signalled. */
  expected: boolean;
}

/**
 * Checks the live process `id` against `want`; the identity is read again after the checks, so a pid that changed
 * hands meanwhile is not vouched for. Undefined when the process is gone.
 */
export async function inspectProcess(
  id: ProcessIdentity,
  want: ExpectedProcess,
): Promise<FoundProcess | undefined> {
  if (!(await isRunning(id))) return undefined;
  const [comm, argv, uid, netnsOk] = await Promise.all([
    processComm(id.pid),
    want.args || want.argv ? processArgv(id.pid) : undefined,
    want.uid === undefined ? undefined : processUid(id.pid),
    want.netns === undefined ? true : inNetns(id.pid, want.netns),
  ]);
  if (!(await isRunning(id)) || comm === undefined) return undefined;
  const expected =
    (want.comm === undefined || comm === want.comm) &&
    (want.args === undefined || (argv !== undefined && want.args.every((a) => argv.includes(a)))) &&
    (want.argv === undefined || (argv !== undefined && want.argv(argv))) &&
    (want.uid === undefined || uid === want.uid) &&
    netnsOk;
  return { id, comm, expected };
}

/** The process `pidfile` names, as found (see `inspectProcess`); undefined when it names no live process. */
export async function findFromPidfile(
  path: string,
  want: ExpectedProcess,
): Promise<FoundProcess | undefined> {
  const pid = await readPidfile(path);
  const id = pid === undefined ? undefined : await identify(pid);
  return id && inspectProcess(id, want);
}

/**
 * The process a pidfile names when it runs and is the expected program, with its identity; undefined otherwise.
 * With `signalProcess`/`terminate`, the one way from a pidfile to a signal.
 */
export async function processFromPidfile(
  path: string,
  want: ExpectedProcess,
): Promise<ProcessIdentity | undefined> {
  const found = await findFromPidfile(path, want);
  return found?.expected ? found.id : undefined;
}

/** The process an identity file records when it still runs and is the expected program; undefined otherwise. */
export async function processFromIdentityFile(
  path: string,
  want: ExpectedProcess,
): Promise<ProcessIdentity | undefined> {
  const found = await findFromIdentityFile(path, want);
  return found?.expected ? found.id : undefined;
}

/** The process an identity file records, as found (see `inspectProcess`); undefined when it no longer runs. */
export async function findFromIdentityFile(
  path: string,
  want: ExpectedProcess,
): Promise<FoundProcess | undefined> {
  const id = await readIdentityFile(path);
  return id && inspectProcess(id, want);
}
