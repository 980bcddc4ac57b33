// (a) Start of one VM until its guest agent answers `guest-sync`: vmlink's QemuDriver (create + start through
// the launcher as the unprivileged QEMU user) vs the same QEMU command line run directly as root; and the user's
// path, `vmlink apply` of a one-VM spec until `vmlink vm exec NAME -- true` answers, against the same raw side.
import { execFileSync } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  buildQemuArgv,
  CONSOLE_LOG_FDSET,
  consoleLogFd,
  FIRST_TAP_FD,
  vmPaths,
} from '../src/drivers/hypervisor/qemu/cmdline.js';
import { DEFAULT_IMAGES_DIR, QemuDriver } from '../src/drivers/hypervisor/qemu/driver.js';
import { DEFAULT_QEMU_BINARY } from '../src/drivers/hypervisor/qemu/launcher.js';
import { GuestAgentClient } from '../src/drivers/hypervisor/qemu/qmp.js';
import { SystemRunner } from '../src/exec/runner.js';
import type { VmConfig } from '../src/shared/model.js';
import { derivedMac } from '../src/spec/net.js';
import { acquireVmLock } from '../test/helpers/vmlock.js';
import { oneHostSpec, startCliLab, vmlink, vmlinkOk } from './cli.js';
import {
  alive,
  benchNsName,
  deleteNamespace,
  killAndWait,
  load1,
  median,
  onCleanup,
  round,
  type SideResult,
  secs,
  side,
  since,
  sleep,
} from './lib.js';

/** How often both sides ask the guest agent for `guest-sync` (and how long each try waits). */
export const POLL_MS = 100;
/** Give up on a guest that has not answered after this long. */
const BOOT_TIMEOUT_MS = 180_000;

/** One vmlink start, split into its phases. */
export interface VmlinkStartRun {
  totalMs: number;
  createMs: number;
  /** start(): spawn through the launcher until QMP says `running`. */
  startMs: number;
  /** From start() returning until guest-sync answered. */
  agentMs: number;
  syncTries: number;
}

/** One run of the user's path: `vmlink apply` until `vmlink vm exec NAME -- true` exits 0. */
export interface UserPathRun {
  totalMs: number;
  /** The `vmlink apply` command alone (it returns once QEMU runs). */
  applyMs: number;
  /** `vmlink vm exec` commands run until one answered. */
  execTries: number;
}

/** Result of bench (a). */
export interface VmStartResult {
  id: 'a';
  title: string;
  what: string;
  vm: { cpus: number; memoryMiB: number; image: string; pollMs: number };
  vmlink: SideResult & { phases: VmlinkStartRun[] };
  raw: SideResult & { syncTries: number[] };
  /** The user's path through the CLI, its accelerator (the lab agent's choice) and its ratio to raw. */
  userPath: SideResult & { runs: UserPathRun[]; accelerator: string; pairedRatios: number[]; ratio: number };
  /** vmlink / raw per repeat (same repeat index, run back to back). */
  pairedRatios: number[];
  /** median(vmlink) / median(raw). */
  ratio: number;
  load1: number[];
}

/** Polls `guest-sync` every `POLL_MS` until it answers; returns how many tries it took. */
export async function pollGuestSync(socket: string, isAlive: () => boolean, what: string): Promise<number> {
  const t0 = performance.now();
  for (let tries = 1; ; tries++) {
    const t = performance.now();
    try {
      const c = await GuestAgentClient.connect(socket, { timeoutMs: POLL_MS });
      c.close();
      return tries;
    } catch {
      // not yet: socket missing, or the guest agent not answering yet
    }
    if (!isAlive()) throw new Error(`${what}: QEMU exited before its guest agent answered`);
    if (performance.now() - t0 > BOOT_TIMEOUT_MS)
      throw new Error(`${what}: guest agent did not answer within ${BOOT_TIMEOUT_MS / 1000} s`);
    await sleep(Math.max(0, POLL_MS - (performance.now() - t)));
  }
}

/** Runs bench (a) `repeat` times, alternating which side goes first. */
export async function benchVmStart(opts: {
  repeat: number;
  say: (s: string) => void;
}): Promise<VmStartResult> {
  const { say } = opts;
  const runner = new SystemRunner();
  say('(a) waiting for the VM lock (/tmp/vmlink-vm.lock) ...');
  const release = await acquireVmLock();
  const unlock = onCleanup('VM lock', release);
  const root = mkdtempSync('/tmp/vmlink-bench-a-');
  chmodSync(root, 0o755); // each jailed QEMU (its own uid) must reach its VM directory below this one
  const rmRoot = onCleanup(`rm ${root}`, () => rmSync(root, { recursive: true, force: true }));
  const ns = benchNsName();
  const delNs = onCleanup(`netns ${ns}`, () => deleteNamespace(ns));
  const bridge = 'vlb-bench0';
  const tap = 'vlt-bench0';
  const name = 'benchvm';
  const cfg: VmConfig = {
    name,
    cpus: 1,
    memoryMiB: 256,
    image: { kind: 'test-guest' },
    disks: [],
    nics: [{ network: 'bench', backend: 'linux', bridge, tap, mac: derivedMac(name, 0), mtu: 1500 }],
    state: 'running',
  };
  const stateDir = join(root, 'vmlink');
  mkdirSync(stateDir, { mode: 0o755 });
  chmodSync(stateDir, 0o755);
  const driver = new QemuDriver({ runner, stateDir, netns: ns, accelerator: 'tcg' });
  const rawPaths = vmPaths(join(root, 'raw'), name);
  mkdirSync(rawPaths.runDir, { recursive: true });
  let rawPid: number | undefined;
  const stopRaw = async () => {
    if (rawPid !== undefined) await killAndWait([rawPid]);
    rawPid = undefined;
  };
  const stopVmlink = async () => {
    await driver.delete(name).catch((e: Error) => say(`  vmlink delete failed: ${e.message}`));
  };
  const killVms = onCleanup('QEMU of bench (a)', async () => {
    await stopRaw();
    await stopVmlink();
    await driver.close();
  });
  // The user's path runs in a lab started through the CLI: a one-host overlay without DHCP (as the raw side's
  // bridge has none) holds the VM; removing the VM between repeats is an apply of the spec without it.
  const net = { name: 'bench', mode: 'vxlan', vni: 4242, hosts: ['host1'] };
  const userVm = {
    name,
    host: 'host1',
    cpus: cfg.cpus,
    memoryMiB: cfg.memoryMiB,
    nics: [{ network: 'bench' }],
  };
  say('(a) starting a controller and a one-host lab through the CLI for the user path (untimed) ...');
  const cli = await startCliLab('a', (lab) => oneHostSpec(lab, { networks: [net] }));
  try {
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, '-batch', '-'], {
      input: [
        'link set lo up',
        `link add ${bridge} type bridge`,
        `link set ${bridge} up`,
        `tuntap add dev ${tap} mode tap vnet_hdr`,
        `link set ${tap} master ${bridge} up`,
        '',
      ].join('\n'),
    });
    // vmlink's argv with the launcher's fd replaced by QEMU opening the persistent tap itself.
    const fdNetdev = `tap,id=net0,fd=${FIRST_TAP_FD},vhost=off`;
    const rawArgv = buildQemuArgv({
      config: cfg,
      accel: 'tcg',
      paths: rawPaths,
      imagesDir: DEFAULT_IMAGES_DIR,
      qemuBinary: DEFAULT_QEMU_BINARY,
    })
      .map((a) => (a === fdNetdev ? `tap,id=net0,ifname=${tap},script=no,downscript=no,vhost=off` : a))
      // QEMU opens the tap itself here, so the console log (handed over after the taps) comes first, on fd 3.
      .map((a) =>
        a === `fd=${consoleLogFd(cfg)},set=${CONSOLE_LOG_FDSET}` ? `fd=3,set=${CONSOLE_LOG_FDSET}` : a,
      );
    if (!rawArgv.some((a) => a.includes(`ifname=${tap}`)))
      throw new Error(`bench (a): no ${fdNetdev} in the QEMU argv; update the bench`);
    await driver.qemuUser(); // an agent looks the QEMU user up once per process: keep it out of the timing
    const withoutVm = cli.specFile('no-vm.json', oneHostSpec(cli.lab, { networks: [net] }));
    const withVm = cli.specFile('one-vm.json', oneHostSpec(cli.lab, { networks: [net], vms: [userVm] }));
    await vmlinkOk(['apply', '-f', withoutVm], cli.env);
    const status = JSON.parse((await vmlinkOk(['status', '--json'], cli.env)).stdout) as {
      hosts: { report?: { capabilities: { accelerator: string } } }[];
    };
    const userAccel = status.hosts[0]?.report?.capabilities.accelerator ?? 'unknown';
    if (userAccel !== 'tcg')
      say(
        `  note: the lab agent chose ${userAccel}; the raw side runs TCG, so the user-path ratio compares unlike`,
      );

    const userRuns: UserPathRun[] = [];
    const vmlinkRuns: VmlinkStartRun[] = [];
    const rawRuns: number[] = [];
    const rawTries: number[] = [];
    const loads: number[] = [];

    const runVmlink = async (): Promise<VmlinkStartRun> => {
      const t0 = performance.now();
      await driver.create(cfg, `bench-${Date.now()}`);
      const createMs = since(t0);
      await driver.start(name);
      const startMs = since(t0) - createMs;
      const t1 = performance.now();
      const pid = Number(readFileSync(driver.paths(name).pidfile, 'utf8').trim());
      const syncTries = await pollGuestSync(driver.paths(name).qgaSocket, () => alive(pid), 'vmlink');
      const run = { totalMs: since(t0), createMs, startMs: round(startMs, 1), agentMs: since(t1), syncTries };
      await stopVmlink();
      return run;
    };
    const runRaw = async (): Promise<{ ms: number; tries: number }> => {
      for (const f of [rawPaths.pidfile, rawPaths.qmpSocket, rawPaths.qgaSocket, rawPaths.consoleSocket])
        rmSync(f, { force: true });
      const t0 = performance.now();
      const consoleFd = openSync(rawPaths.consoleLog, 'a', 0o600);
      const pid = await runner
        .spawnDetached(rawArgv, { netns: ns, logFile: rawPaths.qemuLog, extraFds: [consoleFd] })
        .finally(() => closeSync(consoleFd));
      rawPid = pid;
      const tries = await pollGuestSync(rawPaths.qgaSocket, () => alive(pid), 'raw qemu');
      const ms = since(t0);
      await stopRaw();
      return { ms, tries };
    };

    const runUser = async (): Promise<UserPathRun> => {
      const t0 = performance.now();
      await vmlinkOk(['apply', '-f', withVm], cli.env);
      const applyMs = since(t0);
      let execTries = 0;
      for (;;) {
        execTries++;
        const r = await vmlink(['vm', 'exec', name, '--', 'true'], cli.env);
        if (r.code === 0) break;
        if (performance.now() - t0 > BOOT_TIMEOUT_MS)
          throw new Error(
            `user path: vm exec did not answer within ${BOOT_TIMEOUT_MS / 1000} s: ${r.stderr}`,
          );
      }
      const run = { totalMs: since(t0), applyMs, execTries };
      await vmlinkOk(['apply', '-f', withoutVm, '--allow-destroy'], cli.env);
      return run;
    };

    const sides = ['vmlink', 'raw', 'user'] as const;
    for (let i = 0; i < opts.repeat; i++) {
      loads.push(load1());
      const order = [...sides.slice(i % 3), ...sides.slice(0, i % 3)]; // each side goes first in turn
      for (const s of order) {
        await sleep(1000); // let the previous guest's teardown settle
        if (s === 'user') {
          const r = await runUser();
          userRuns.push(r);
          say(
            `  [${i + 1}/${opts.repeat}] user path (vmlink apply + vm exec) ${secs(r.totalMs)} (apply ${secs(r.applyMs)}, ${r.execTries} vm exec tries)`,
          );
        } else if (s === 'vmlink') {
          const r = await runVmlink();
          vmlinkRuns.push(r);
          say(
            `  [${i + 1}/${opts.repeat}] vmlink ${secs(r.totalMs)} (create ${r.createMs} ms, start ${r.startMs} ms, guest agent +${secs(r.agentMs)}, ${r.syncTries} tries)`,
          );
        } else {
          const r = await runRaw();
          rawRuns.push(r.ms);
          rawTries.push(r.tries);
          say(`  [${i + 1}/${opts.repeat}] raw qemu ${secs(r.ms)} (${r.tries} tries)`);
        }
      }
    }
    const vm = side('vmlink', [...vmlinkRuns.map((r) => r.totalMs)]);
    const raw = side('raw qemu', rawRuns);
    const user = side(
      'vmlink apply + vm exec',
      userRuns.map((r) => r.totalMs),
    );
    return {
      id: 'a',
      title: 'vm start to guest agent',
      what:
        'one test-guest VM (1 vCPU, 256 MiB, TCG, 1 virtio-net NIC on a persistent vnet_hdr tap in a bridge, in a ' +
        `namespace): vmlink = QemuDriver.create + start (launcher jails QEMU under the VM's own uid, tap fd passed) then guest-sync every ${POLL_MS} ms; ` +
        `raw = the same QEMU argv run as root with -netdev tap,ifname=... (same -sandbox), guest-sync every ${POLL_MS} ms; ` +
        'user path = `vmlink apply` of a one-VM spec (same VM, on a one-host vxlan network without DHCP, in a lab ' +
        'started through the CLI) until `vmlink vm exec NAME -- true` exits 0, tried again at once after each failure',
      vm: { cpus: cfg.cpus, memoryMiB: cfg.memoryMiB, image: 'test-guest', pollMs: POLL_MS },
      vmlink: { ...vm, phases: vmlinkRuns },
      raw: { ...raw, syncTries: rawTries },
      userPath: {
        ...user,
        runs: userRuns,
        accelerator: userAccel,
        pairedRatios: userRuns.map((r, i) => round(r.totalMs / rawRuns[i]!, 3)),
        ratio: round(user.medianMs / raw.medianMs, 3),
      },
      pairedRatios: vmlinkRuns.map((r, i) => round(r.totalMs / rawRuns[i]!, 3)),
      ratio: round(median(vmlinkRuns.map((r) => r.totalMs)) / median(rawRuns), 3),
      load1: loads,
    };
  } finally {
    await cli.close();
    await killVms();
    await delNs();
    await rmRoot();
    await unlock();
  }
}
