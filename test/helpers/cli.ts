import { spawn } from 'node:child_process';
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

/** Runs `argv` (no shell) with `env` added, collecting its output; killed after `timeoutMs`. */
export function runArgv(argv: string[], env: Record<string, string>, timeoutMs: number): Promise<CliResult> {
  return new Promise((resolve, reject) => {
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
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
}

/** Runs the CLI with `--json` and parses its stdout; fails with the CLI's stderr when it exits non-zero. */
export async function cliJson<T>(args: string[], env: Record<string, string>): Promise<T> {
  const r = await runCli([...args, '--json'], env);
  if (r.code !== 0) throw new Error(`vmlink ${args.join(' ')} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}
