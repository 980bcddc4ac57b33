// (f) CLI latency, wall time of the `vmlink` command a user runs (bin/vmlink.js -> dist/), each beside a raw
// reference: `--version` vs `node -e 0`, `status` against a running controller vs the same API call from `node -e`, and a
// no-op `apply` of a one-host spec end to end vs the host observation such a check needs, run by hand.
// Also the CLI lab (a controller and a lab started through the CLI) that bench (a)'s user path runs in.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { machineNs } from '../src/lab/names.js';
import { runArgv } from '../test/helpers/cli.js';
import { load1, median, onCleanup, round, type SideResult, secs, side, since } from './lib.js';

const BIN = fileURLToPath(new URL('../bin/vmlink.js', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Timed runs per measurement (the issue asks for the median of 5). */
export const CLI_RUNS = 5;
const HOST = 'host1';

/** One finished command: exit code, output and wall time from spawn to exit. */
export interface Timed {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `argv` (no shell) with `env` added and times it from spawn to exit. */
export async function timed(
  argv: string[],
  env: Record<string, string> = {},
  timeoutMs = 120_000,
): Promise<Timed> {
  const t0 = performance.now();
  const r = await runArgv(argv, env, timeoutMs);
  return { ...r, ms: since(t0) };
}

/** `vmlink ARGS` as a user runs it (the built bin, through node), timed. */
export const vmlink = (args: string[], env: Record<string, string>, timeoutMs?: number): Promise<Timed> =>
  timed([process.execPath, BIN, ...args], env, timeoutMs);

/** `vmlink ARGS`, failing with its output unless it exits 0. */
export async function vmlinkOk(args: string[], env: Record<string, string>): Promise<Timed> {
  const r = await vmlink(args, env, 600_000);
  if (r.code !== 0)
    throw new Error(`vmlink ${args.join(' ')} exited ${r.code}:\n${r.stderr.trim()}\n${r.stdout.trim()}`);
  return r;
}

/** A one-host lab spec (lab `lab`, LAN 192.168.76.0/24) with `body` (networks, vms) as YAML-compatible JSON. */
export function oneHostSpec(lab: string, body: { networks: unknown[]; vms?: unknown[] }): string {
  return `${JSON.stringify(
    {
      version: 1,
      hosts: [{ name: HOST }],
      networks: body.networks,
      vms: body.vms ?? [],
      lab: {
        name: lab,
        lan: { cidr: '192.168.76.0/24', gateway: '192.168.76.1' },
        upstream: { cidr: '203.0.113.0/24', address: '203.0.113.76' },
        hosts: [{ name: HOST, address: '192.168.76.10' }],
      },
    },
    null,
    1,
  )}\n`;
}

/** A controller and a lab started through the CLI in their own temp dirs, as a user would start them. */
export interface CliLab {
  lab: string;
  /** VMLINK_RUN_DIR, VMLINK_STATE_DIR and VMLINK_SOCKET of this lab's controller. */
  env: Record<string, string>;
  /** Writes `text` as a spec file in the lab's dir; returns its path. */
  specFile(name: string, text: string): string;
  /** Namespace of the lab's host. */
  hostNs: string;
  /** Lab down, controller stop, temp dir removed (also run at exit if not called). */
  close(): Promise<void>;
}

/** Starts `vmlink daemon --detach` and `vmlink lab up -f` of `labSpec` (untimed) in a fresh temp dir. */
export async function startCliLab(prefix: string, labSpec: (lab: string) => string): Promise<CliLab> {
  const root = mkdtempSync(`/tmp/vmlink-bench-${prefix}-`);
  chmodSync(root, 0o755); // each jailed QEMU (its own uid) must reach its VM directory below this one
  const lab = `bn${Math.floor(Math.random() * 0xffffff)
    .toString(16)
    .padStart(6, '0')}`;
  const env = {
    VMLINK_RUN_DIR: join(root, 'run'),
    VMLINK_STATE_DIR: join(root, 'state'),
    VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
  };
  for (const d of [env.VMLINK_RUN_DIR, env.VMLINK_STATE_DIR]) mkdirSync(d, { recursive: true, mode: 0o755 });
  const specFile = (name: string, text: string) => {
    const f = join(root, name);
    writeFileSync(f, text);
    return f;
  };
  const labFile = specFile('lab.json', labSpec(lab));
  let labStarted = false;
  const close = onCleanup(`CLI lab ${lab}`, async () => {
    if (labStarted) await vmlink(['lab', 'down', '-f', labFile], env, 300_000);
    await vmlink(['daemon', '--stop'], env, 60_000);
    rmSync(root, { recursive: true, force: true });
  });
  try {
    await vmlinkOk(['daemon', '--detach'], env);
    labStarted = true;
    await vmlinkOk(['lab', 'up', '-f', labFile], env);
  } catch (e) {
    await close();
    throw e;
  }
  return { lab, env, specFile, hostNs: machineNs(lab, HOST), close };
}

/** Times `run` `n` times one after the other; each run must succeed. */
async function repeatTimed(n: number, run: () => Promise<Timed>, what: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await run();
    if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stderr.trim()}`);
    out.push(r.ms);
  }
  return out;
}

/** One line of bench (f): vmlink's command and its raw reference, both medians of `CLI_RUNS`. */
export interface CliPair {
  what: string;
  vmlink: SideResult;
  raw: SideResult;
  /** median(vmlink) - median(raw): what vmlink adds to the reference. */
  overheadMs: number;
}

/** Result of bench (f). */
export interface CliResult {
  id: 'f';
  title: string;
  what: string;
  runs: number;
  version: CliPair;
  status: CliPair;
  /** `vmlink status` with no controller: the error path a user meets first. */
  statusNoController: SideResult;
  noopApply: CliPair & { applied: string };
  /** (c) through the CLI: the no-op re-apply of (b)'s spec (50 nat networks, 100 stopped VMs). */
  noopApplyLarge?: CliPair;
  /**
   * Context: `npx vmlink --version`, and `status` with no controller through tsx from src/ (the runtime before
   * dist/: same work as `statusNoController`, TypeScript loaded through tsx's cache).
   */
  extra: { npxVersion: SideResult; tsxStatusNoController: SideResult };
  load1: number[];
}

const pair = (what: string, v: number[], r: number[], vl: string, rl: string): CliPair => ({
  what,
  vmlink: side(vl, v),
  raw: side(rl, r),
  overheadMs: round(median(v) - median(r), 1),
});

/** Runs bench (f); `say` prints progress. */
export async function benchCli(opts: { say: (s: string) => void }): Promise<CliResult> {
  const { say } = opts;
  const n = CLI_RUNS;
  const loads = [load1()];
  const none = { VMLINK_SOCKET: '/nonexistent/vmlink-bench/controller.sock' };

  const versionV = await repeatTimed(n, () => vmlink(['--version'], {}), 'vmlink --version');
  const versionR = await repeatTimed(n, () => timed([process.execPath, '-e', '0']), 'node -e 0');
  const version = pair('vmlink --version', versionV, versionR, 'vmlink --version', 'node -e 0');
  say(
    `  vmlink --version ${versionV.map((x) => secs(x)).join(', ')} (median ${secs(version.vmlink.medianMs)}); node -e 0 median ${secs(version.raw.medianMs)}`,
  );
  const noCtl: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await vmlink(['status'], none);
    if (r.code === 0 || !/not running/.test(r.stderr))
      throw new Error(
        `vmlink status without a controller: expected "not running", got ${r.code}: ${r.stderr}`,
      );
    noCtl.push(r.ms);
  }
  const statusNoController = side('vmlink status, no controller', noCtl);
  say(`  vmlink status with no controller (error): median ${secs(statusNoController.medianMs)}`);
  const npx = await repeatTimed(3, () => timed(['npx', 'vmlink', '--version'], {}), 'npx vmlink --version');
  const tsx: number[] = [];
  for (let i = 0; i < 3; i++)
    tsx.push(
      (await timed([process.execPath, '--import', 'tsx', join(ROOT, 'src/main.ts'), 'status'], none)).ms,
    );
  const extra = {
    npxVersion: side('npx vmlink --version', npx),
    tsxStatusNoController: side('tsx src/main.ts status, no controller', tsx),
  };
  say(
    `  for reference: npx vmlink --version median ${secs(extra.npxVersion.medianMs)}; status with no controller through tsx (src/, the runtime before dist/) median ${secs(extra.tsxStatusNoController.medianMs)}`,
  );

  const net = { name: 'n0', host: HOST, mode: 'nat', cidr: '10.76.0.0/24' };
  const lab = await startCliLab('f', (l) => oneHostSpec(l, { networks: [] }));
  try {
    const spec = lab.specFile('one-net.json', oneHostSpec(lab.lab, { networks: [net] }));
    await vmlinkOk(['apply', '-f', spec], lab.env); // untimed: creates the network
    loads.push(load1());
    // The same API call from the smallest Node client: node's start plus one HTTP round trip.
    const get = `require('node:http').get({ socketPath: ${JSON.stringify(lab.env.VMLINK_SOCKET)}, path: '/v1/status' }, (r) => { r.resume(); r.on('end', () => process.exit(r.statusCode === 200 ? 0 : 1)); })`;
    const rawGet = [process.execPath, '-e', get];
    const statusV = await repeatTimed(n, () => vmlink(['status'], lab.env), 'vmlink status');
    const statusR = await repeatTimed(n, () => timed(rawGet), 'node http.get /v1/status');
    const status = pair('vmlink status', statusV, statusR, 'vmlink status', 'node -e http.get(/v1/status)');
    say(
      `  vmlink status ${statusV.map((x) => secs(x)).join(', ')} (median ${secs(status.vmlink.medianMs)}); node -e http.get(/v1/status) median ${secs(status.raw.medianMs)}`,
    );

    let applied = '';
    const applyV = await repeatTimed(
      n,
      async () => {
        const r = await vmlink(['apply', '-f', spec], lab.env);
        applied = r.stdout.trim().split('\n').at(-1) ?? '';
        return r;
      },
      'vmlink apply (no-op)',
    );
    // By hand: what the host holds (links with details, addresses, the nftables table), read in its namespace.
    const look = (argv: string[]) => timed(['ip', 'netns', 'exec', lab.hostNs, ...argv]);
    const readHost = async () => {
      const t0 = performance.now();
      for (const argv of [
        ['ip', '-json', '-details', 'link', 'show'],
        ['ip', '-json', 'addr', 'show'],
        ['nft', '-j', 'list', 'table', 'inet', 'vmlink'],
      ]) {
        const r = await look(argv);
        if (r.code !== 0) return r;
      }
      return { code: 0, stdout: '', stderr: '', ms: since(t0) };
    };
    const applyR = await repeatTimed(n, readHost, 'raw observation');
    const noopApply = {
      ...pair(
        'vmlink apply (no-op, 1 host, 1 nat network)',
        applyV,
        applyR,
        'vmlink apply',
        'ip -j -d link + ip -j addr + nft -j list table, in the host namespace',
      ),
      applied,
    };
    say(
      `  vmlink apply, no-op ${applyV.map((x) => secs(x)).join(', ')} (median ${secs(noopApply.vmlink.medianMs)}, "${applied}"); the host's state read by hand median ${secs(noopApply.raw.medianMs)}`,
    );
    // (c) through the CLI: the no-op re-apply of (b)'s spec (50 nat networks, 100 stopped VMs), as a user runs it.
    const pad = (x: number, w: number) => String(x).padStart(w, '0');
    const large = lab.specFile(
      'large.json',
      oneHostSpec(lab.lab, {
        networks: Array.from({ length: 50 }, (_, i) => ({
          name: `n${pad(i, 2)}`,
          host: HOST,
          mode: 'nat',
          cidr: `10.${100 + i}.0.0/24`,
        })),
        vms: Array.from({ length: 100 }, (_, i) => ({
          name: `vm${pad(i, 3)}`,
          host: HOST,
          memoryMiB: 64,
          state: 'stopped',
          nics: [{ network: `n${pad(Math.floor(i / 2), 2)}` }],
        })),
      }),
    );
    await vmlinkOk(['apply', '-f', large, '--allow-destroy'], lab.env); // untimed: 150 steps (and n0 goes)
    const largeV = await repeatTimed(
      n,
      () => vmlink(['apply', '-f', large], lab.env),
      'vmlink apply (no-op, large)',
    );
    const largeR = await repeatTimed(n, readHost, 'raw observation (large)');
    const noopApplyLarge = pair(
      "vmlink apply (no-op, (b)'s spec: 50 nat networks, 100 VMs)",
      largeV,
      largeR,
      'vmlink apply',
      'ip -j -d link + ip -j addr + nft -j list table, in the host namespace',
    );
    say(
      `  (c) through the CLI: vmlink apply, no-op, 50 networks + 100 VMs ${largeV.map((x) => secs(x)).join(', ')} (median ${secs(noopApplyLarge.vmlink.medianMs)}); the host's state read by hand median ${secs(noopApplyLarge.raw.medianMs)}`,
    );
    loads.push(load1());
    return {
      id: 'f',
      title: 'CLI latency',
      what:
        `wall time of node bin/vmlink.js (dist/) from spawn to exit, median of ${n}: --version vs node -e 0; status ` +
        'against a controller with one lab host vs node -e of one http.get(/v1/status) on its socket; a no-op apply of a one-host ' +
        'spec with one nat network vs reading the host namespace by hand (ip -j -d link, ip -j addr, nft -j list table)',
      runs: n,
      version,
      status,
      statusNoController,
      noopApply,
      noopApplyLarge,
      extra,
      load1: loads,
    };
  } finally {
    await lab.close();
  }
}
