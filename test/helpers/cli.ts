import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));

/** Outcome of one CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `vmlink` CLI with `env` added, as a user would. */
export function runCli(args: string[], env: Record<string, string>, timeoutMs = 300_000): Promise<CliResult> {
  return runArgv([process.execPath, BIN, ...args], env, timeoutMs);
}

/**
 * With VMLINK_TEST_TRACE=FILE, each command's wall time and argv are appended to FILE (one line each): where a slow
 * integration file spends its seconds.
 */
const TRACE = process.env.VMLINK_TEST_TRACE;

/** Runs `argv` (no shell) with `env` added, collecting its output; killed after `timeoutMs`. */
export function runArgv(argv: string[], env: Record<string, string>, timeoutMs: number): Promise<CliResult> {
  if (!TRACE) return spawnArgv(argv, env, timeoutMs);
  const t0 = Date.now();
  return spawnArgv(argv, env, timeoutMs).finally(() => {
    const args = argv[1] === BIN ? ['vmlink', ...argv.slice(2)] : argv;
    appendFileSync(
      TRACE,
      `${new Date(t0).toISOString().slice(11, 23)} ${String(Date.now() - t0).padStart(6)} ms  ${args.join(' ').slice(0, 160)}\n`,
    );
  });
}

/**
 * Starts `argv` (no shell) with `env` added, collecting its output; killed after `timeoutMs`. `done` settles when it
 * ends; a start that fails (no such program) rejects it, or, with `failedStartIsResult`, resolves with code 1.
 */
function spawnCollecting(
  argv: string[],
  env: Record<string, string>,
  timeoutMs: number,
  failedStartIsResult = false,
): { child: ChildProcess; out: () => string; done: Promise<CliResult> } {
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<CliResult>((resolve, reject) => {
    child.once('error', (e) => {
      clearTimeout(timer);
      if (failedStartIsResult) resolve({ code: 1, stdout, stderr });
      else reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
  return { child, out: () => stdout, done };
}

function spawnArgv(argv: string[], env: Record<string, string>, timeoutMs: number): Promise<CliResult> {
  return spawnCollecting(argv, env, timeoutMs).done;
}

/** Runs the CLI with `--json` and parses its stdout; fails with the CLI's stderr when it exits non-zero. */
export async function cliJson<T>(args: string[], env: Record<string, string>): Promise<T> {
  const r = await runCli([...args, '--json'], env);
  if (r.code !== 0) throw new Error(`vmlink ${args.join(' ')} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

/** A `vmlink` command left running (`--follow`): its output so far, and `stop` ends it (SIGTERM) with its result. */
export interface RunningCli {
  out(): string;
  stop(): Promise<CliResult>;
}

/** Starts the real `vmlink` CLI with `env` added and returns at once; it is killed after `timeoutMs` at the latest. */
export function startCli(args: string[], env: Record<string, string>, timeoutMs = 300_000): RunningCli {
  const { child, out, done } = spawnCollecting([process.execPath, BIN, ...args], env, timeoutMs, true);
  return {
    out,
    stop: () => {
      child.kill('SIGTERM');
      return done;
    },
  };
}
