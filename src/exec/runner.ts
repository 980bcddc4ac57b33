import { type ChildProcess, spawn } from 'node:child_process';
import { VmlinkError } from '../shared/errors.js';
import { COMMAND_OUTPUT_MAX_BYTES, COMMAND_TIMEOUT_MS } from '../shared/limits.js';
import { log } from '../shared/log.js';

/** Options of one command run. */
export interface RunOptions {
  /** Network namespace to run in (`ip netns exec NAME ...`); undefined = the caller's own. */
  netns?: string;
  /** Written to the command's stdin. */
  input?: string;
  /** Kill the command after this many milliseconds (default `COMMAND_TIMEOUT_MS`). */
  timeoutMs?: number;
  /** Return a non-zero exit instead of throwing `ExecError`. */
  allowFailure?: boolean;
  /** Extra environment; LANG/LC_ALL are always C. */
  env?: Record<string, string>;
  /** Working directory of the command (default: the caller's). */
  cwd?: string;
  signal?: AbortSignal;
  /** Kill the command once stdout or stderr passes this many bytes (default `COMMAND_OUTPUT_MAX_BYTES`). */
  maxOutputBytes?: number;
}

/** Outcome of a finished command. */
export interface RunResult {
  argv: string[];
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of a long-running process started detached from the caller (QEMU, dnsmasq, agents). */
export interface SpawnOptions {
  netns?: string;
  /** File that receives stdout and stderr (appended). */
  logFile?: string;
  env?: Record<string, string>;
  /** Extra file descriptors handed to the child as fd 3, 4, ... (e.g. tap devices). */
  extraFds?: number[];
  cwd?: string;
}

/** The one interface through which vmlink runs system commands: argv arrays only, never shell strings. */
export interface Runner {
  /** Runs argv to completion and returns its output; throws `ExecError` on non-zero exit unless allowed. */
  run(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Starts argv detached (own session, survives the caller) and returns its pid. */
  spawnDetached(argv: readonly string[], opts?: SpawnOptions): Promise<number>;
}

/** Most characters of a failed command's output that its error message quotes. */
const EXEC_ERROR_OUTPUT_CHARS = 4096;

/** A command failed; the message carries the command line and its stderr so an operator can act on it. */
export class ExecError extends VmlinkError {
  readonly result: RunResult;
  constructor(result: RunResult, reason?: string) {
    const why = reason ?? `exit ${result.code}`;
    const all = result.stderr.trim() || result.stdout.trim();
    // The last lines say what went wrong; a flood of output stays out of logs and API answers.
    const err = all.length > EXEC_ERROR_OUTPUT_CHARS ? `...${all.slice(-EXEC_ERROR_OUTPUT_CHARS)}` : all;
    super(
      'exec',
      `command failed (${why}): ${formatArgv(result.argv)}${err ? `\n  ${err.split('\n').join('\n  ')}` : ''}`,
    );
    this.result = result;
  }
}

/** Quotes argv for display in logs and errors (never executed). */
export function formatArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`)).join(' ');
}

/** Prefixes argv so it runs inside a network namespace. */
export function inNetns(argv: readonly string[], netns: string | undefined): string[] {
  return netns ? ['ip', 'netns', 'exec', netns, ...argv] : [...argv];
}

const C_LOCALE = { LANG: 'C', LC_ALL: 'C' };

/** Runs commands on this machine for real. */
export class SystemRunner implements Runner {
  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const full = inNetns(argv, opts.netns);
    const started = Date.now();
    const child = spawn(full[0]!, full.slice(1), {
      env: { ...process.env, ...opts.env, ...C_LOCALE },
      stdio: ['pipe', 'pipe', 'pipe'],
      signal: opts.signal,
      cwd: opts.cwd,
    });
    const result = await collect(child, full, opts);
    log.debug({ argv: full, code: result.code, ms: Date.now() - started }, 'exec');
    if (result.code !== 0 && !opts.allowFailure) throw new ExecError(result);
    return result;
  }

  async spawnDetached(argv: readonly string[], opts: SpawnOptions = {}): Promise<number> {
    const full = inNetns(argv, opts.netns);
    const { openSync, closeSync } = await import('node:fs');
    const out = opts.logFile ? openSync(opts.logFile, 'a', 0o600) : 'ignore';
    try {
      const child = spawn(full[0]!, full.slice(1), {
        env: { ...process.env, ...opts.env, ...C_LOCALE },
        stdio: ['ignore', out, out, ...(opts.extraFds ?? [])],
        detached: true,
        cwd: opts.cwd,
      });
      const pid = await new Promise<number>((resolve, reject) => {
        child.once('error', (e) =>
          reject(new VmlinkError('exec', `cannot start ${formatArgv(full)}: ${e.message}`)),
        );
        child.once('spawn', () => resolve(child.pid!));
      });
      child.unref();
      log.debug({ argv: full, pid }, 'spawn');
      return pid;
    } finally {
      if (typeof out === 'number') closeSync(out);
    }
  }
}

// Output is kept as bytes up to a cap: a command that floods its output is killed, not buffered without end.
function collect(child: ChildProcess, argv: string[], opts: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const max = opts.maxOutputBytes ?? COMMAND_OUTPUT_MAX_BYTES;
    const out = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
    const size = { stdout: 0, stderr: 0 };
    let failure: string | undefined;
    const kill = (why: string) => {
      failure ??= why;
      child.kill('SIGKILL');
      // A grandchild may hold the pipes open: stop reading them, so the command ends with its own process.
      child.stdout?.destroy();
      child.stderr?.destroy();
    };
    const timer = setTimeout(
      () => kill(`timed out after ${opts.timeoutMs ?? COMMAND_TIMEOUT_MS} ms`),
      opts.timeoutMs ?? COMMAND_TIMEOUT_MS,
    );
    for (const stream of ['stdout', 'stderr'] as const)
      child[stream]!.on('data', (d: Buffer) => {
        if (size[stream] + d.length > max) {
          out[stream].push(d.subarray(0, max - size[stream]));
          size[stream] = max;
          kill(`${stream} exceeded ${max} bytes`);
          return;
        }
        out[stream].push(d);
        size[stream] += d.length;
      });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new VmlinkError('exec', `cannot run ${formatArgv(argv)}: ${e.message}`, { cause: e }));
    });
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      const text = (s: 'stdout' | 'stderr') => Buffer.concat(out[s]).toString('utf8');
      const result = {
        argv,
        code: code ?? 128 + (sig ? 9 : 0),
        stdout: text('stdout'),
        stderr: text('stderr'),
      };
      if (failure) reject(new ExecError(result, failure));
      else resolve(result);
    });
    child.stdin!.on('error', () => {});
    child.stdin!.end(opts.input ?? '');
  });
}

/** A recorded call, as kept by `RecordingRunner`. */
export interface RecordedCall {
  argv: string[];
  netns?: string;
  input?: string;
  detached?: boolean;
}

/** Scripted reply for `RecordingRunner`: matched by argv prefix. */
export interface ScriptedReply {
  match: (argv: readonly string[]) => boolean;
  reply: Partial<RunResult>;
}

/** Test double that records every command instead of running it, and answers from a script. */
export class RecordingRunner implements Runner {
  readonly calls: RecordedCall[] = [];
  private readonly script: ScriptedReply[] = [];
  private nextPid = 10_000;

  /** Answers commands whose argv starts with `prefix` with `reply`. */
  on(prefix: readonly string[], reply: Partial<RunResult>): this {
    this.script.push({ match: (a) => prefix.every((p, i) => a[i] === p), reply });
    return this;
  }

  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    this.calls.push({
      argv: [...argv],
      ...(opts.netns ? { netns: opts.netns } : {}),
      ...(opts.input === undefined ? {} : { input: opts.input }),
    });
    const hit = this.script.find((s) => s.match(argv));
    const result: RunResult = { argv: [...argv], code: 0, stdout: '', stderr: '', ...hit?.reply };
    if (result.code !== 0 && !opts.allowFailure) throw new ExecError(result);
    return result;
  }

  async spawnDetached(argv: readonly string[], opts: SpawnOptions = {}): Promise<number> {
    this.calls.push({ argv: [...argv], ...(opts.netns ? { netns: opts.netns } : {}), detached: true });
    return this.nextPid++;
  }

  /** The recorded command lines, one string each, for golden comparisons. */
  lines(): string[] {
    return this.calls.map((c) => (c.netns ? `[${c.netns}] ` : '') + formatArgv(c.argv));
  }
}
