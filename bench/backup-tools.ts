// The reference sides of bench/backup.ts: restic and borg (Debian packages), each backing up the raw mirror of the
// image as a user backs up a raw disk image file, with encryption on, and restoring it.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { AGENT_GLIBC_TUNABLES } from '../src/shared/limits.js';

/** One backup by one tool. */
export interface BackupFigures {
  ms: number;
  /** CPU time (user + system) of this process and the children it waited for meanwhile: see cpuMs(). */
  cpuMs?: number;
  /** Bytes the tool read (processed) from the image. */
  readBytes: number;
  /** Growth of the repository directory on disk (`du -sb`): what this backup added, metadata included. */
  storedBytes: number;
  note?: string;
}

/** One restore by one tool, of its newest backup into a fresh file. */
export interface RestoreFigures {
  ms: number;
  cpuMs?: number;
  /** The restored file or image, for the caller's byte comparison. */
  path: string;
  format: 'raw' | 'qcow2';
}

/** A side of the comparison. */
export interface BackupTool {
  readonly name: string;
  /** Makes the repository (untimed). */
  init(): Promise<void>;
  /** Backs the image up, `label` naming the round. */
  backup(label: string): Promise<BackupFigures>;
  /** Restores the newest backup below `outDir`. */
  restore(outDir: string): Promise<RestoreFigures>;
  /** Removes what it started (not the files). */
  close(): Promise<void>;
}

/**
 * CPU milliseconds used so far by this process (all its threads: zstd and crypto included) plus the children it has
 * waited for (restic, borg, qemu-img; from /proc/self/stat's cutime and cstime). A daemonized grandchild (qemu-nbd,
 * which forks) is not counted. On a loaded machine this says more than wall time.
 */
export function cpuMs(): number {
  const self = process.cpuUsage();
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 16 and 17 of the stat line (cutime, cstime), in clock ticks (100 per second on Linux).
  const children = (Number(fields[13]) + Number(fields[14])) * 10;
  return (self.user + self.system) / 1000 + children;
}

/** Apparent bytes of everything below `dir` (`du -sb`). */
export function duBytes(dir: string): number {
  return Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);
}

/**
 * vmlink's side runs in this process, as backup jobs run in the agent: with the agent's glibc malloc settings
 * (`AGENT_GLIBC_TUNABLES`: lab agents get them, the README says where to set them). glibc reads them when a process
 * starts, so a run without `GLIBC_TUNABLES` starts itself again with them and exits with its status; `--glibc-defaults`
 * keeps glibc's defaults (to measure what they cost). restic and borg run with their own defaults either way (`run`).
 */
export function reexecWithAgentMalloc(): void {
  if (process.env.GLIBC_TUNABLES !== undefined || process.argv.includes('--glibc-defaults')) return;
  const r = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, GLIBC_TUNABLES: AGENT_GLIBC_TUNABLES },
  });
  process.exit(r.status ?? 1);
}

/** This environment without the agent's malloc settings: what restic and borg run with. */
function toolEnv(extra: Record<string, string> | undefined): NodeJS.ProcessEnv {
  const { GLIBC_TUNABLES: _agents, ...env } = process.env;
  return { ...env, ...extra };
}

/** Runs argv (no shell), collecting stdout; rejects with stderr on a non-zero exit. */
export function run(
  argv: string[],
  opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<{ stdout: string; stderr: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(argv[0]!, argv.slice(1), {
      env: toolEnv(opts.env),
      cwd: opts.cwd,
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
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30 * 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      const ms = performance.now() - t0;
      if (code === 0) resolve({ stdout, stderr, ms });
      else reject(new Error(`${argv.slice(0, 3).join(' ')} exited ${code}: ${stderr.slice(-1000)}`));
    });
  });
}

/**
 * restic: a version 2 repository (zstd, `--compression auto`), AES-256 + Poly1305 always on, content-defined chunks
 * of 512 KiB - 8 MiB (1 MiB average). The image is a changed file each time, so restic reads all of it.
 */
export class Restic implements BackupTool {
  readonly name = 'restic';
  private readonly env: Record<string, string>;
  constructor(
    dir: string,
    private readonly raw: string,
  ) {
    this.env = {
      RESTIC_REPOSITORY: join(dir, 'restic-repo'),
      RESTIC_PASSWORD: 'bench-password-not-secret',
      RESTIC_CACHE_DIR: join(dir, 'restic-cache'),
    };
  }
  async init(): Promise<void> {
    await run(['restic', 'init', '--repository-version', '2'], { env: this.env });
  }
  async backup(label: string): Promise<BackupFigures> {
    const before = duBytes(this.env.RESTIC_REPOSITORY!);
    const r = await run(
      [
        'restic',
        'backup',
        '--json',
        '--compression',
        'auto',
        '--host',
        'bench',
        '--tag',
        label,
        basename(this.raw),
      ],
      { env: this.env, cwd: dirname(this.raw) },
    );
    const summary = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { message_type?: string; total_bytes_processed?: number })
      .find((m) => m.message_type === 'summary');
    if (!summary) throw new Error(`restic printed no summary: ${r.stdout.slice(-500)}`);
    return {
      ms: r.ms,
      readBytes: summary.total_bytes_processed ?? 0,
      storedBytes: duBytes(this.env.RESTIC_REPOSITORY!) - before,
    };
  }
  async restore(outDir: string): Promise<RestoreFigures> {
    const target = join(outDir, 'restic');
    mkdirSync(target, { recursive: true });
    const r = await run(['restic', 'restore', 'latest', '--target', target], { env: this.env });
    return { ms: r.ms, path: join(target, basename(this.raw)), format: 'raw' };
  }
  async close(): Promise<void> {}
}

/**
 * borg 1.2: `repokey` encryption (AES-256-CTR + HMAC-SHA256), zstd level 3 as vmlink, its default content-defined
 * chunks (buzhash, 512 KiB - 8 MiB, 2 MiB average). The files cache sees a changed file, so borg reads all of it.
 */
export class Borg implements BackupTool {
  readonly name = 'borg';
  private readonly repo: string;
  private readonly env: Record<string, string>;
  private last = '';
  constructor(
    dir: string,
    private readonly raw: string,
  ) {
    this.repo = join(dir, 'borg-repo');
    this.env = {
      BORG_PASSPHRASE: 'bench-password-not-secret',
      BORG_BASE_DIR: join(dir, 'borg-home'),
      BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes',
    };
  }
  async init(): Promise<void> {
    await run(['borg', 'init', '--encryption=repokey', this.repo], { env: this.env });
  }
  async backup(label: string): Promise<BackupFigures> {
    const before = duBytes(this.repo);
    this.last = label.replace(/[^\w-]/g, '_');
    const r = await run(
      [
        'borg',
        'create',
        '--json',
        '--compression',
        'zstd,3',
        `${this.repo}::${this.last}`,
        basename(this.raw),
      ],
      { env: this.env, cwd: dirname(this.raw) },
    );
    const out = JSON.parse(r.stdout) as { archive: { stats: { original_size: number } } };
    return { ms: r.ms, readBytes: out.archive.stats.original_size, storedBytes: duBytes(this.repo) - before };
  }
  async restore(outDir: string): Promise<RestoreFigures> {
    const target = join(outDir, 'borg');
    mkdirSync(target, { recursive: true });
    const r = await run(['borg', 'extract', '--sparse', `${this.repo}::${this.last}`], {
      env: this.env,
      cwd: target,
    });
    return { ms: r.ms, path: join(target, basename(this.raw)), format: 'raw' };
  }
  async close(): Promise<void> {
    rmSync(join(this.env.BORG_BASE_DIR!), { recursive: true, force: true });
  }
}
