// (b) Apply of a spec with 50 nat networks and 100 VM ports (VMs stopped, no guest booted): vmlink's Controller
// against a real lab agent vs the raw commands that reach the same end state in a fresh namespace.
// (c) A no-op re-apply of the same spec right after (b).
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { AgentClient } from '../src/controller/agents.js';
import { Controller } from '../src/controller/controller.js';
import { HostCredentials } from '../src/controller/pki/service.js';
import { SqliteStore } from '../src/controller/store/sqlite.js';
import type { TaskContext } from '../src/controller/tasks.js';
import { dnsmasqArgv, dnsmasqPaths, renderDnsmasqConf } from '../src/drivers/network/linux/dnsmasq.js';
import { ensurePortsScript } from '../src/drivers/network/linux/port-guard.js';
import { buildRuleset } from '../src/drivers/network/linux/ruleset.js';
import { SystemRunner } from '../src/exec/runner.js';
import { machineNs } from '../src/lab/names.js';
import { resolveSpec } from '../src/plan/resolve.js';
import type { NetworkConfig, VmConfig } from '../src/shared/model.js';
import { labAgentSocket, labRunDir } from '../src/shared/paths.js';
import { loadSpec } from '../src/spec/load.js';
import {
  benchNsName,
  census,
  deleteNamespace,
  killAndWait,
  load1,
  median,
  type NsCensus,
  onCleanup,
  round,
  type SideResult,
  secs,
  side,
  since,
  sleep,
} from './lib.js';

export const NETWORKS = 50;
export const VMS = 100;
const HOST = 'host1';

/** The bench spec: 50 nat networks 10.100.0.0/24 ... 10.149.0.0/24, 100 stopped VMs, 2 per network, 1 NIC each. */
export function benchSpec(lab: string): string {
  const pad = (n: number, w: number) => String(n).padStart(w, '0');
  const networks = Array.from({ length: NETWORKS }, (_, i) => ({
    name: `n${pad(i, 2)}`,
    host: HOST,
    mode: 'nat',
    cidr: `10.${100 + i}.0.0/24`,
  }));
  const vms = Array.from({ length: VMS }, (_, i) => ({
    name: `vm${pad(i, 3)}`,
    host: HOST,
    memoryMiB: 64,
    state: 'stopped',
    nics: [{ network: `n${pad(Math.floor(i / 2), 2)}` }],
  }));
  return `${JSON.stringify(
    {
      version: 1,
      hosts: [{ name: HOST }],
      networks,
      vms,
      lab: {
        name: lab,
        lan: { cidr: '192.168.77.0/24', gateway: '192.168.77.1' },
        upstream: { cidr: '203.0.113.0/24', address: '203.0.113.77' },
        hosts: [{ name: HOST, address: '192.168.77.10' }],
      },
    },
    null,
    1,
  )}\n`;
}

// Profile: the agent runs with VMLINK_LOG=debug, so its runner logs every command (`exec`, with argv and ms)
// and every detached start (`spawn`); the controller side timestamps each step through ctx.progress.

interface ExecLine {
  start: number;
  ms: number;
  cmd: string;
  spawn: boolean;
}

/** Normalises a command line into a class: device names, paths and numbers replaced. */
export function commandClass(argv: string[]): string {
  let a = argv;
  if (a[0] === 'ip' && a[1] === 'netns' && a[2] === 'exec') a = a.slice(4);
  return a
    .slice(0, 7)
    .map((t) =>
      /^vl[bt]-[0-9a-f]{8}$/.test(t)
        ? 'DEV'
        : t.startsWith('/')
          ? 'PATH'
          : t.startsWith('--conf-file') || t.startsWith('--pid-file')
            ? t.replace(/=.*/, '=PATH')
            : t,
    )
    .join(' ');
}

function readExecs(file: string, from: number): ExecLine[] {
  const text = readFileSync(file, 'utf8').slice(from);
  const out: ExecLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let j: { msg?: string; time?: number; ms?: number; argv?: string[] };
    try {
      j = JSON.parse(line) as typeof j;
    } catch {
      continue;
    }
    if ((j.msg !== 'exec' && j.msg !== 'spawn') || !j.argv || j.time === undefined) continue;
    const ms = j.ms ?? 0;
    out.push({ start: j.time - ms, ms, cmd: commandClass(j.argv), spawn: j.msg === 'spawn' });
  }
  return out;
}

interface Mark {
  at: number; // Date.now(), comparable with the agent's log times
  perf: number;
  msg: string;
}

/** Where one phase of an apply (planning, or one kind of step) spent its time. */
export interface PhaseProfile {
  phase: string;
  count: number;
  wallMs: number;
  meanMs: number;
  /** Commands the agent ran in this phase and their summed duration. */
  execs: number;
  execMs: number;
  spawns: number;
  /** Mean wall time of the first and of the last 10 steps of this kind (growth shows per-step costs in n). */
  first10MeanMs: number;
  last10MeanMs: number;
}

/** Where an apply spent its time. */
export interface ApplyProfile {
  wallMs: number;
  phases: PhaseProfile[];
  /** Most expensive command classes over the whole apply. */
  commands: { cmd: string; count: number; totalMs: number; meanMs: number }[];
  execCount: number;
  execMs: number;
  /** network steps: from the agent's dnsmasq spawn until its next command (the pidfile wait, mostly). */
  dnsmasqWait?: { count: number; meanMs: number; minMs: number; maxMs: number };
}

const STEP_KIND: Record<string, string> = {
  '+ network': 'network.create',
  '~ network': 'network.update',
  '- network': 'network.delete',
  '+ vm': 'vm.create',
  '- vm': 'vm.delete',
  '> vm': 'vm.start',
  '< vm': 'vm.stop',
};

function profileApply(t0: Mark, marks: Mark[], end: Mark, execs: ExecLine[]): ApplyProfile {
  // Windows: [t0, first mark) is planning (agent report + diff); each step runs until the next mark. A host's steps
  // of a phase go in one request: its window runs from "HOST: applying N steps" to the first step reported after it
  // (the steps' own lines follow at once), and counts for the kind of those steps.
  const windows: { phase: string; steps: number; from: number; to: number; wall: number }[] = [];
  const bounds = [t0, ...marks, end];
  const kindOf = (msg: string) => {
    const m = /^\[\d+\/\d+\] ([+~<>-] (?:network|vm))/.exec(msg);
    return m ? (STEP_KIND[m[1]!] ?? m[1]!) : undefined;
  };
  for (let i = 0; i + 1 < bounds.length; i++) {
    const a = bounds[i]!;
    const b = bounds[i + 1]!;
    let phase = 'plan (agent report + diff)';
    let steps = 0;
    if (i > 0) {
      const kind = kindOf(a.msg);
      const batch = /^\S+: applying \d+ steps/.test(a.msg) ? kindOf(b.msg) : undefined;
      phase = kind ?? batch ?? 'store + bookkeeping';
      steps = kind ? 1 : 0;
    }
    windows.push({ phase, steps, from: a.at, to: b.at, wall: b.perf - a.perf });
  }
  const phases = new Map<string, PhaseProfile>();
  const walls = new Map<string, number[]>();
  for (const w of windows) {
    const p = phases.get(w.phase) ?? {
      phase: w.phase,
      count: 0,
      wallMs: 0,
      meanMs: 0,
      execs: 0,
      execMs: 0,
      spawns: 0,
      first10MeanMs: 0,
      last10MeanMs: 0,
    };
    p.count += w.phase.includes('.') ? w.steps : 1;
    p.wallMs += w.wall;
    if (w.steps) walls.set(w.phase, [...(walls.get(w.phase) ?? []), w.wall]);
    for (const e of execs) {
      if (e.start < w.from || e.start >= w.to) continue;
      if (e.spawn) p.spawns++;
      else {
        p.execs++;
        p.execMs += e.ms;
      }
    }
    phases.set(w.phase, p);
  }
  const mean = (xs: number[]) => round(xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length), 1);
  for (const p of phases.values()) {
    const w = walls.get(p.phase) ?? [];
    p.first10MeanMs = mean(w.slice(0, 10));
    p.last10MeanMs = mean(w.slice(-10));
  }
  const inApply = execs.filter((e) => !e.spawn && e.start >= t0.at && e.start < end.at);
  const gaps: number[] = [];
  for (const sp of execs) {
    if (!sp.spawn || sp.start < t0.at || sp.start >= end.at) continue;
    const next = inApply.find((e) => e.start >= sp.start);
    if (next) gaps.push(next.start - sp.start);
  }
  const byCmd = new Map<string, { cmd: string; count: number; totalMs: number; meanMs: number }>();
  for (const e of inApply) {
    const c = byCmd.get(e.cmd) ?? { cmd: e.cmd, count: 0, totalMs: 0, meanMs: 0 };
    c.count++;
    c.totalMs += e.ms;
    byCmd.set(e.cmd, c);
  }
  return {
    wallMs: round(end.perf - t0.perf, 1),
    phases: [...phases.values()].map((p) => ({
      ...p,
      wallMs: round(p.wallMs, 1),
      meanMs: round(p.wallMs / p.count, 1),
    })),
    commands: [...byCmd.values()]
      .map((c) => ({ ...c, meanMs: round(c.totalMs / c.count, 1) }))
      .sort((a, b) => b.totalMs - a.totalMs)
      .slice(0, 12),
    execCount: inApply.length,
    execMs: inApply.reduce((s, e) => s + e.ms, 0),
    ...(gaps.length
      ? {
          dnsmasqWait: {
            count: gaps.length,
            meanMs: mean(gaps),
            minMs: Math.min(...gaps),
            maxMs: Math.max(...gaps),
          },
        }
      : {}),
  };
}

/** Result of benches (b) and (c). */
export interface ApplyPortsResult {
  b: {
    id: 'b';
    title: string;
    what: string;
    vmlink: SideResult;
    raw?: SideResult & { phases: Record<string, number>[] };
    pairedRatios?: number[];
    ratio?: number;
    /** Untimed parts around each vmlink repeat, for context. */
    around: { labUpMs: number[]; coldPlanMs: number[]; destroyMs: number[]; labDownMs: number[] };
    endState: { vmlink?: NsCensus; raw?: NsCensus };
    load1: number[];
  };
  c: {
    id: 'c';
    title: string;
    what: string;
    noop: SideResult;
    /** median(c) / median(b vmlink). */
    ofB: number;
  };
  /** Where the last repeat's applies spent their time. */
  profile: {
    apply: ApplyProfile;
    noop: ApplyProfile;
    /** `destroy` of the spec, last repeat. */
    destroy?: ApplyProfile;
    httpHealthRoundTripMs: number;
    /** One dnsmasq started alone (raw namespace), until its pidfile: the floor of vmlink's dnsmasq wait. */
    dnsmasqAloneStartMs: number[];
  };
}

function taskCtx(marks: Mark[]): TaskContext {
  return {
    progress: (msg) => marks.push({ at: Date.now(), perf: performance.now(), msg }),
    signal: new AbortController().signal,
  };
}

const mark = (msg: string): Mark => ({ at: Date.now(), perf: performance.now(), msg });

/** The raw commands: one ip -batch, one nft -f, one sysctl, 50 dnsmasq waited for by pidfile. */
async function rawApply(
  runner: SystemRunner,
  ns: string,
  dir: string,
  nets: NetworkConfig[],
  vms: VmConfig[],
): Promise<{ totalMs: number; phases: Record<string, number> }> {
  const lines: string[] = [];
  for (const n of nets) {
    lines.push(
      `link add ${n.bridge} type bridge`,
      `link set dev ${n.bridge} mtu ${n.mtu} alias vmlink:net:${n.name} up`,
      `addr add ${n.subnet!.gateway}/${n.subnet!.prefixLength} dev ${n.bridge}`,
    );
  }
  for (const vm of vms)
    for (const nic of vm.nics)
      lines.push(
        `tuntap add dev ${nic.tap} mode tap vnet_hdr`,
        `link set dev ${nic.tap} master ${nic.bridge} mtu ${nic.mtu} up`,
      );
  // The host table and the VM ports' guards (marks, anti-spoofing chains), as the driver loads them, in one file.
  const ports = vms.flatMap((vm) =>
    vm.nics.map((nic) => ({
      tap: nic.tap,
      bridge: nic.bridge,
      mtu: nic.mtu,
      security: { mac: nic.mac, addresses: nic.staticIp ? [nic.staticIp.address] : [] },
    })),
  );
  const ruleset = buildRuleset(nets)! + ensurePortsScript(ports);
  const phases: Record<string, number> = {};
  const t0 = performance.now();
  let t = t0;
  const lap = (name: string) => {
    phases[name] = since(t);
    t = performance.now();
  };
  await runner.run(['ip', '-batch', '-'], { netns: ns, input: `${lines.join('\n')}\n` });
  lap('ipBatchMs');
  await runner.run(['nft', '-f', '-'], { netns: ns, input: ruleset });
  lap('nftMs');
  await runner.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'], { netns: ns });
  lap('sysctlMs');
  const pidfiles: string[] = [];
  await Promise.all(
    nets.map((n) => {
      const p = dnsmasqPaths(join(dir, n.name));
      mkdirSync(p.dir, { recursive: true, mode: 0o755 });
      writeFileSync(p.conf, renderDnsmasqConf(n), { mode: 0o644 });
      pidfiles.push(p.pidFile);
      return runner.spawnDetached(dnsmasqArgv(n, p), { netns: ns, logFile: p.logFile });
    }),
  );
  const deadline = Date.now() + 60_000;
  while (!pidfiles.every(pidfileWritten)) {
    if (Date.now() > deadline) throw new Error('raw: not every dnsmasq wrote its pidfile within 60 s');
    await sleep(5);
  }
  lap('dnsmasqMs');
  return { totalMs: since(t0), phases };
}

const pidfileWritten = (f: string): boolean => {
  try {
    return statSync(f).size > 0;
  } catch {
    return false;
  }
};

/** Restarts the dnsmasq of each of `nets` alone and times its start until the pidfile (polled every 1 ms). */
async function dnsmasqStartLatency(
  runner: SystemRunner,
  ns: string,
  dir: string,
  nets: NetworkConfig[],
): Promise<number[]> {
  const out: number[] = [];
  for (const n of nets) {
    const p = dnsmasqPaths(join(dir, n.name));
    await killAndWait([Number(readFileSync(p.pidFile, 'utf8').trim())]);
    rmSync(p.pidFile, { force: true });
    const t0 = performance.now();
    await runner.spawnDetached(dnsmasqArgv(n, p), { netns: ns, logFile: p.logFile });
    while (!pidfileWritten(p.pidFile)) {
      if (performance.now() - t0 > 10_000) throw new Error(`dnsmasq of ${n.name} did not restart`);
      await sleep(1);
    }
    out.push(since(t0));
  }
  return out;
}

/** Runs benches (b) and (c); `raw: false` skips the raw side (only (c) asked for). */
export async function benchApplyPorts(opts: {
  repeat: number;
  raw: boolean;
  say: (s: string) => void;
}): Promise<ApplyPortsResult> {
  const { say } = opts;
  const runner = new SystemRunner();
  const root = mkdtempSync('/tmp/vmlink-bench-b-');
  chmodSync(root, 0o755);
  const rmRoot = onCleanup(`rm ${root}`, () => rmSync(root, { recursive: true, force: true }));
  const savedEnv = {
    VMLINK_RUN_DIR: process.env.VMLINK_RUN_DIR,
    VMLINK_STATE_DIR: process.env.VMLINK_STATE_DIR,
    VMLINK_LOG: process.env.VMLINK_LOG,
  };
  process.env.VMLINK_RUN_DIR = join(root, 'run');
  process.env.VMLINK_STATE_DIR = join(root, 'state');
  // The lab passes VMLINK_LOG to its agents: debug makes their runner log each command with its duration.
  process.env.VMLINK_LOG = 'debug';
  mkdirSync(process.env.VMLINK_RUN_DIR, { recursive: true, mode: 0o755 });
  mkdirSync(process.env.VMLINK_STATE_DIR, { recursive: true, mode: 0o755 });
  const lab = `bn${Math.floor(Math.random() * 0xffffff)
    .toString(16)
    .padStart(6, '0')}`;
  const text = benchSpec(lab);
  const source = 'bench-apply-ports.json';
  const desired = resolveSpec(loadSpec(text, source))[HOST]!;
  const store = new SqliteStore(':memory:');
  const credentials = await HostCredentials.open(join(process.env.VMLINK_STATE_DIR!, 'pki'));
  const controller = new Controller(store, runner, { credentials });
  const quiet = taskCtx([]);
  const agentLog = () => join(labRunDir(lab), `${HOST}.agent.log`);
  const logSize = () => {
    try {
      return statSync(agentLog()).size;
    } catch {
      return 0;
    }
  };

  const vmlinkMs: number[] = [];
  const noopMs: number[] = [];
  const rawMs: number[] = [];
  const rawPhases: Record<string, number>[] = [];
  const around = {
    labUpMs: [] as number[],
    coldPlanMs: [] as number[],
    destroyMs: [] as number[],
    labDownMs: [] as number[],
  };
  const endState: ApplyPortsResult['b']['endState'] = {};
  const loads: number[] = [];
  let profile: ApplyPortsResult['profile'] | undefined;
  let dnsmasqStartMs: number[] = [];

  const runVmlink = async (i: number) => {
    const t = performance.now();
    const labDown = onCleanup(`lab ${lab}`, async () => {
      await controller.labDown(text, source, quiet);
    });
    try {
      await controller.labUp(text, source, quiet);
      around.labUpMs.push(since(t));
      await vmlinkRepeat(i, labDown);
    } finally {
      await labDown();
    }
  };

  const vmlinkRepeat = async (i: number, labDown: () => Promise<void>) => {
    // A fresh agent probes the accelerator and the kernel's network features on its first report; a
    // long-running agent has done so long ago: keep that out of the timed apply, report it beside.
    let t = performance.now();
    await controller.plan(text, source);
    around.coldPlanMs.push(since(t));

    const from = logSize();
    const marks: Mark[] = [];
    const t0 = mark('start');
    const r = await controller.apply(text, source, taskCtx(marks));
    const t1 = mark('end');
    vmlinkMs.push(t1.perf - t0.perf);
    if (r.applied !== NETWORKS + VMS)
      say(`  warning: apply ran ${r.applied} steps, expected ${NETWORKS + VMS}`);

    const marks2: Mark[] = [];
    const n0 = mark('start');
    const r2 = await controller.apply(text, source, taskCtx(marks2));
    const n1 = mark('end');
    noopMs.push(n1.perf - n0.perf);
    if (r2.applied !== 0) say(`  warning: the re-apply was not a no-op: ${r2.applied} step(s)\n${r2.text}`);

    await sleep(200); // let the agent's log reach the file
    const execs = readExecs(agentLog(), from);
    if (execs.length === 0) say('  warning: no exec lines in the agent log; profile unavailable');
    // The controller's own path: mutual TLS through the relay, one kept-alive connection.
    const agent = new AgentClient(HOST, `https+unix://${labAgentSocket(lab, HOST)}`);
    const rtts: number[] = [];
    for (let k = 0; k < 30; k++) {
      const s = performance.now();
      await agent.health();
      rtts.push(performance.now() - s);
    }
    profile = {
      apply: profileApply(t0, marks, t1, execs),
      noop: profileApply(n0, marks2, n1, execs),
      httpHealthRoundTripMs: round(median(rtts), 2),
      dnsmasqAloneStartMs: [],
    };
    if (i === 0) endState.vmlink = census(machineNs(lab, HOST));

    const marks3: Mark[] = [];
    const d0 = mark('start');
    await controller.destroy(text, source, taskCtx(marks3));
    const d1 = mark('end');
    around.destroyMs.push(d1.perf - d0.perf);
    await sleep(200);
    profile.destroy = profileApply(d0, marks3, d1, readExecs(agentLog(), from));
    t = performance.now();
    await labDown();
    around.labDownMs.push(since(t));
    say(
      `  [${i + 1}/${opts.repeat}] vmlink apply ${secs(vmlinkMs.at(-1)!)}, no-op re-apply ${secs(noopMs.at(-1)!)}` +
        ` (lab up ${secs(around.labUpMs.at(-1)!)}, cold plan ${secs(around.coldPlanMs.at(-1)!)},` +
        ` destroy ${secs(around.destroyMs.at(-1)!)}, lab down ${secs(around.labDownMs.at(-1)!)})`,
    );
  };

  const runRaw = async (i: number) => {
    const ns = benchNsName();
    const dir = join(root, `raw-${i}`);
    const delNs = onCleanup(`netns ${ns}`, () => deleteNamespace(ns));
    try {
      await runner.run(['ip', 'netns', 'add', ns]);
      await runner.run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
      const r = await rawApply(runner, ns, dir, desired.networks, desired.vms);
      rawMs.push(r.totalMs);
      rawPhases.push(r.phases);
      if (i === 0) {
        endState.raw = census(ns);
        dnsmasqStartMs = await dnsmasqStartLatency(runner, ns, dir, desired.networks.slice(0, 5));
      }
      say(
        `  [${i + 1}/${opts.repeat}] raw ${secs(r.totalMs)} (${Object.entries(r.phases)
          .map(([k, v]) => `${k.replace(/Ms$/, '')} ${Math.round(v)} ms`)
          .join(', ')})`,
      );
    } finally {
      await delNs();
      rmSync(dir, { recursive: true, force: true });
    }
  };

  try {
    for (let i = 0; i < opts.repeat; i++) {
      loads.push(load1());
      const order = i % 2 === 0 || !opts.raw ? ['vmlink', 'raw'] : ['raw', 'vmlink'];
      for (const s of order) {
        if (s === 'vmlink') await runVmlink(i);
        else if (opts.raw) await runRaw(i);
      }
    }
  } finally {
    await store.close();
    await rmRoot();
    for (const [k, v] of Object.entries(savedEnv)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }

  const vm = side('vmlink', vmlinkMs);
  const raw = opts.raw ? { ...side('raw', rawMs), phases: rawPhases } : undefined;
  return {
    b: {
      id: 'b',
      title: `apply ${NETWORKS} nets/${VMS} ports`,
      what:
        `Controller.apply (in process) of a spec with ${NETWORKS} nat networks and ${VMS} stopped VMs (1 NIC each, 2 per ` +
        'network) against a real lab agent (fresh lab per repeat, warmed by one plan); raw = in a fresh namespace one ' +
        '`ip -batch -` (bridges + alias + address + up, persistent vnet_hdr taps + master + up), one `nft -f -` of ' +
        'buildRuleset, sysctl ip_forward, 50 dnsmasq (renderDnsmasqConf/dnsmasqArgv) started at once, waited for by pidfile',
      vmlink: vm,
      ...(raw
        ? {
            raw,
            pairedRatios: vmlinkMs.map((v, i) => round(v / rawMs[i]!, 2)),
            ratio: round(vm.medianMs / raw.medianMs, 2),
          }
        : {}),
      around: {
        labUpMs: around.labUpMs.map((x) => round(x, 0)),
        coldPlanMs: around.coldPlanMs.map((x) => round(x, 0)),
        destroyMs: around.destroyMs.map((x) => round(x, 0)),
        labDownMs: around.labDownMs.map((x) => round(x, 0)),
      },
      endState,
      load1: loads,
    },
    c: {
      id: 'c',
      title: 'no-op re-apply',
      what: 'Controller.apply of the same spec right after (b): agent report + diff, zero steps',
      noop: side('no-op re-apply', noopMs),
      ofB: round(median(noopMs) / vm.medianMs, 3),
    },
    profile: { ...profile!, dnsmasqAloneStartMs: dnsmasqStartMs },
  };
}
