// Multi-host benchmarks (see bench/README.md):
// (d) apply of a three-host spec with 20 VXLAN overlays (linux backend, no VMs, no gateway): Controller.apply in
//     process against a three-host lab vs the raw `ip -batch` + `bridge -batch` per host, the hosts concurrently.
// (e) `Controller.verify` of three hosts x six test-guest VMs on one overlay with a NAT gateway, next to the
//     same number of plain `ping -c1 -W1` run one after the other from namespaces.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { agentFor } from '../src/controller/agents.js';
import { Controller } from '../src/controller/controller.js';
import { HostCredentials } from '../src/controller/pki/service.js';
import { SqliteStore } from '../src/controller/store/sqlite.js';
import type { TaskContext } from '../src/controller/tasks.js';
import type { VerifyResult } from '../src/controller/verify.js';
import { VXLAN_ALIAS_PREFIX } from '../src/drivers/network/linux/overlay.js';
import { ALIAS_PREFIX } from '../src/drivers/network/linux/state.js';
import { bridgeCmd } from '../src/exec/bridge.js';
import { ipCmd, renderBatch } from '../src/exec/ip.js';
import { pingArgv, probeArgv, runProbeBatch } from '../src/exec/probe.js';
import { SystemRunner } from '../src/exec/runner.js';
import { machineNs, upstreamNs } from '../src/lab/names.js';
import { resolveSpec } from '../src/plan/resolve.js';
import type { NetworkConfig } from '../src/shared/model.js';
import { labRunDir } from '../src/shared/paths.js';
import { loadSpec } from '../src/spec/load.js';
import { acquireVmLock } from '../test/helpers/vmlock.js';
import {
  benchNsName,
  deleteNamespace,
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

const HOSTS = ['host1', 'host2', 'host3'] as const;
export const D_NETWORKS = 20;
export const D_VNI_BASE = 2001;
const D_LAN = { prefix: '192.168.78', len: 24, mtu: 1500 };
export const E_VMS = 6;

// ---------------------------------------------------------------------------------------------------------
// Shared plumbing: a temp root for the lab's run/state dirs, the agents at VMLINK_LOG=debug, progress marks.

interface Mark {
  at: number; // Date.now(): comparable with the agents' log times
  perf: number;
  msg: string;
}
const mark = (msg: string): Mark => ({ at: Date.now(), perf: performance.now(), msg });
function taskCtx(marks: Mark[]): TaskContext {
  return { progress: (msg) => marks.push(mark(msg)), signal: new AbortController().signal };
}
const quiet = taskCtx([]);

const labName = () =>
  `bn${Math.floor(Math.random() * 0xffffff)
    .toString(16)
    .padStart(6, '0')}`;

/** Points VMLINK_RUN_DIR/STATE_DIR into a fresh temp dir (0755) and the agents' log at debug; undone by the returned fn. */
function benchEnv(tag: string): { root: string; restore: () => Promise<void> } {
  const root = mkdtempSync(`/tmp/vmlink-bench-${tag}-`);
  chmodSync(root, 0o755);
  const rmRoot = onCleanup(`rm ${root}`, () => rmSync(root, { recursive: true, force: true }));
  const saved = {
    VMLINK_RUN_DIR: process.env.VMLINK_RUN_DIR,
    VMLINK_STATE_DIR: process.env.VMLINK_STATE_DIR,
    VMLINK_LOG: process.env.VMLINK_LOG,
  };
  process.env.VMLINK_RUN_DIR = join(root, 'run');
  process.env.VMLINK_STATE_DIR = join(root, 'state');
  process.env.VMLINK_LOG = 'debug';
  mkdirSync(process.env.VMLINK_RUN_DIR, { recursive: true, mode: 0o755 });
  mkdirSync(process.env.VMLINK_STATE_DIR, { recursive: true, mode: 0o755 });
  return {
    root,
    restore: async () => {
      await rmRoot();
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    },
  };
}

const agentLog = (lab: string, host: string) => join(labRunDir(lab), `${host}.agent.log`);
const fileSize = (f: string) => {
  try {
    return statSync(f).size;
  } catch {
    return 0;
  }
};

interface ExecLine {
  host: string;
  start: number;
  ms: number;
  cmd: string;
}

/** Normalises a command into a class: `ip netns exec NS` dropped, vmlink device names, paths and numbers replaced. */
export function commandClassMh(argv: string[]): string {
  let a = argv;
  if (a[0] === 'ip' && a[1] === 'netns' && a[2] === 'exec') a = a.slice(4);
  return a
    .slice(0, 7)
    .map((t) =>
      /^vl[btxo]-[0-9a-f]{8}$/.test(t)
        ? 'DEV'
        : t.startsWith('/')
          ? 'PATH'
          : /^net\.ipv4\.conf\.vl/.test(t)
            ? t.replace(/vl[bt]-[0-9a-f]{8}/, 'DEV')
            : t,
    )
    .join(' ');
}

/** The agents' `exec` lines (VMLINK_LOG=debug) of `host` written after byte `from`. */
function readExecs(file: string, host: string, from: number): ExecLine[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8').slice(from);
  } catch {
    return [];
  }
  const out: ExecLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let j: { msg?: string; time?: number; ms?: number; argv?: string[] };
    try {
      j = JSON.parse(line) as typeof j;
    } catch {
      continue;
    }
    if (j.msg !== 'exec' || !j.argv || j.time === undefined) continue;
    const ms = j.ms ?? 0;
    out.push({ host, start: j.time - ms, ms, cmd: commandClassMh(j.argv) });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// (d) 20 VXLAN overlays across three hosts.

/** The (d) spec: three lab hosts, 20 vxlan networks (linux, VNIs 2001..2020, every host, no cidr), no VMs. */
export function overlaySpec(lab: string, backend: 'linux' | 'ovs' = 'linux'): string {
  const networks = Array.from({ length: D_NETWORKS }, (_, i) => ({
    name: `ov${String(i + 1).padStart(2, '0')}`,
    mode: 'vxlan',
    vni: D_VNI_BASE + i,
    backend,
  }));
  return `${JSON.stringify(
    {
      version: 1,
      hosts: HOSTS.map((name) => ({ name })),
      networks,
      vms: [],
      lab: {
        name: lab,
        lan: { cidr: `${D_LAN.prefix}.0/${D_LAN.len}`, gateway: `${D_LAN.prefix}.1`, mtu: D_LAN.mtu },
        upstream: { cidr: '203.0.113.0/24', address: '203.0.113.78' },
        hosts: HOSTS.map((name, i) => ({ name, address: `${D_LAN.prefix}.${11 + i}` })),
      },
    },
    null,
    1,
  )}\n`;
}

/** Counts of a host namespace's overlay state, to compare vmlink's end state with the raw one. */
export interface OverlayCensus {
  bridges: number;
  bridgesUp: number;
  vxlan: number;
  /** vxlan devices enslaved to a bridge, up, nolearning, port 4789, local = the host's address, dev eth0. */
  vxlanAsDriver: number;
  /** Static all-zeros FDB entries with a dst (head-end replication) on vxlan devices. */
  fdbFlood: number;
  mtu1450: number;
}

function overlayCensus(ns: string, local: string): OverlayCensus {
  const links = JSON.parse(
    execFileSync('ip', ['-n', ns, '-json', '-details', 'link', 'show'], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    }),
  ) as Array<{
    ifname: string;
    ifindex: number;
    flags?: string[];
    mtu?: number;
    master?: string;
    linkinfo?: {
      info_kind?: string;
      info_data?: { id?: number; local?: string; link?: string; port?: number; learning?: boolean };
    };
  }>;
  const fdb = JSON.parse(
    execFileSync('bridge', ['-n', ns, '-json', 'fdb', 'show'], { encoding: 'utf8', maxBuffer: 64 << 20 }),
  ) as Array<{ mac?: string; ifname?: string; dst?: string; master?: string }>;
  const kind = (k: string) => links.filter((l) => l.linkinfo?.info_kind === k);
  const bridges = kind('bridge');
  const bridgeNames = new Set(bridges.map((b) => b.ifname));
  const vxlan = kind('vxlan');
  const vxNames = new Set(vxlan.map((v) => v.ifname));
  return {
    bridges: bridges.length,
    bridgesUp: bridges.filter((b) => b.flags?.includes('UP')).length,
    vxlan: vxlan.length,
    vxlanAsDriver: vxlan.filter((v) => {
      const d = v.linkinfo?.info_data ?? {};
      return (
        v.master !== undefined &&
        bridgeNames.has(v.master) &&
        v.flags?.includes('UP') &&
        d.learning === false &&
        d.port === 4789 &&
        d.local === local &&
        d.link === 'eth0'
      );
    }).length,
    fdbFlood: fdb.filter(
      (e) => e.mac === '00:00:00:00:00:00' && e.dst !== undefined && e.ifname && vxNames.has(e.ifname),
    ).length,
    mtu1450: [...bridges, ...vxlan].filter((l) => l.mtu === 1450).length,
  };
}

/** One `ip -batch` input (bridges + vxlan devices as the linux driver makes them) and one `bridge -batch` input. */
export function rawOverlayBatches(nets: readonly NetworkConfig[]): { ip: string; bridge: string } {
  const ip: string[][] = [];
  const br: string[][] = [];
  for (const n of nets) {
    const v = n.vxlan!;
    ip.push(
      [...ipCmd.linkAdd({ name: n.bridge, kind: 'bridge' })],
      [...ipCmd.linkSet(n.bridge, { mtu: n.mtu, alias: ALIAS_PREFIX + n.name, up: true })],
      [
        ...ipCmd.linkAdd({
          name: v.device,
          kind: 'vxlan',
          mtu: n.mtu,
          vni: v.vni,
          dstport: v.port,
          local: v.local,
          link: 'eth0',
          learning: false,
        }),
      ],
      [...ipCmd.linkSet(v.device, { master: n.bridge, alias: VXLAN_ALIAS_PREFIX + n.name, up: true })],
    );
    for (const r of v.remotes) br.push([...bridgeCmd.fdbAppend(v.device, r)]);
  }
  return { ip: renderBatch(ip), bridge: renderBatch(br) };
}

interface StepProfile {
  phase: string;
  count: number;
  wallMs: number;
  meanMs: number;
  execs: number;
  execMs: number;
  first10MeanMs: number;
  last10MeanMs: number;
}

/**
 * Where a multi-host apply spent its time: planning, then each host's steps of a phase, which go to its agent in one
 * request ("HOST: applying N steps" until that host's first step is reported), the hosts side by side.
 */
export interface MultiApplyProfile {
  wallMs: number;
  phases: StepProfile[];
  perHost: Record<string, { steps: number; wallMs: number; execs: number; execMs: number }>;
  /** plan + the slowest host's requests: what the apply's wall time comes to, the hosts running side by side. */
  hostsConcurrentEstimateMs: number;
  commands: { cmd: string; count: number; totalMs: number; meanMs: number }[];
  execCount: number;
  execMs: number;
}

const STEP_LINE = /^\[\d+\/\d+\] ([+~<>-]) (network|vm|uplink) .*? on (\S+?)\)?(?: |$)/;
const BATCH_LINE = /^(\S+): applying (\d+) steps/;

function profileMultiApply(t0: Mark, marks: Mark[], end: Mark, execs: ExecLine[]): MultiApplyProfile {
  const phases = new Map<string, StepProfile & { walls: number[] }>();
  const perHost: MultiApplyProfile['perHost'] = {};
  const add = (phase: string, steps: number, wall: number, inWin: ExecLine[]) => {
    const p = phases.get(phase) ?? {
      phase,
      count: 0,
      wallMs: 0,
      meanMs: 0,
      execs: 0,
      execMs: 0,
      first10MeanMs: 0,
      last10MeanMs: 0,
      walls: [],
    };
    p.count += steps;
    p.wallMs += wall;
    p.walls.push(wall / Math.max(1, steps));
    p.execs += inWin.length;
    p.execMs += inWin.reduce((s, e) => s + e.ms, 0);
    phases.set(phase, p);
  };
  const planEnd = marks.find((m) => BATCH_LINE.test(m.msg) || STEP_LINE.test(m.msg)) ?? end;
  const planMs = planEnd.perf - t0.perf;
  add(
    'plan (3 agent reports + diff)',
    1,
    planMs,
    execs.filter((e) => e.start >= t0.at && e.start < planEnd.at),
  );
  for (const [k, a] of marks.entries()) {
    const batch = BATCH_LINE.exec(a.msg);
    if (!batch) continue;
    const host = batch[1]!;
    const steps = Number(batch[2]);
    // The host's steps are reported together when its request returns.
    const done = marks.slice(k + 1).find((m) => STEP_LINE.exec(m.msg)?.[3] === host) ?? end;
    const m = STEP_LINE.exec(done.msg);
    const phase = m
      ? `${m[2]}${{ '+': '.create', '~': '.update', '-': '.delete', '>': '.start', '<': '.stop' }[m[1]!]}`
      : 'other';
    const wall = done.perf - a.perf;
    const inWin = execs.filter((e) => e.start >= a.at && e.start <= done.at && e.host === host);
    add(phase, steps, wall, inWin);
    const h = perHost[host] ?? { steps: 0, wallMs: 0, execs: 0, execMs: 0 };
    h.steps += steps;
    h.wallMs += wall;
    h.execs += inWin.length;
    h.execMs += inWin.reduce((s, e) => s + e.ms, 0);
    perHost[host] = h;
  }
  const mean = (xs: number[]) => round(xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length), 1);
  const inApply = execs.filter((e) => e.start >= t0.at && e.start < end.at);
  const byCmd = new Map<string, { cmd: string; count: number; totalMs: number; meanMs: number }>();
  for (const e of inApply) {
    const c = byCmd.get(e.cmd) ?? { cmd: e.cmd, count: 0, totalMs: 0, meanMs: 0 };
    c.count++;
    c.totalMs += e.ms;
    byCmd.set(e.cmd, c);
  }
  return {
    wallMs: round(end.perf - t0.perf, 1),
    phases: [...phases.values()].map(({ walls, ...p }) => ({
      ...p,
      wallMs: round(p.wallMs, 1),
      meanMs: round(p.wallMs / Math.max(1, p.count), 1),
      first10MeanMs: mean(walls.slice(0, 10)),
      last10MeanMs: mean(walls.slice(-10)),
    })),
    perHost: Object.fromEntries(
      Object.entries(perHost).map(([k, v]) => [k, { ...v, wallMs: round(v.wallMs, 1) }]),
    ),
    hostsConcurrentEstimateMs: round(planMs + Math.max(0, ...Object.values(perHost).map((h) => h.wallMs)), 1),
    commands: [...byCmd.values()]
      .map((c) => ({ ...c, meanMs: round(c.totalMs / c.count, 1) }))
      .sort((a, b) => b.totalMs - a.totalMs)
      .slice(0, 14),
    execCount: inApply.length,
    execMs: round(
      inApply.reduce((s, e) => s + e.ms, 0),
      1,
    ),
  };
}

/** Result of bench (d). */
export interface OverlaysResult {
  id: 'd';
  title: string;
  what: string;
  vmlink: SideResult;
  raw: SideResult & { perHostMs: Record<string, number>[] };
  pairedRatios: number[];
  ratio: number;
  /** Untimed parts around each vmlink repeat, for context. */
  around: {
    labUpMs: number[];
    coldPlanMs: number[];
    noopMs: number[];
    destroyMs: number[];
    labDownMs: number[];
  };
  endState: {
    vmlink: Record<string, OverlayCensus>;
    raw: Record<string, OverlayCensus>;
    equivalent: boolean;
  };
  steps: number;
  load1: number[];
  /** Where the last vmlink repeat's apply spent its time. */
  profile: MultiApplyProfile & { httpHealthRoundTripMs: number };
  /** Where the last repeat's destroy (untimed in the comparison) spent its time. */
  destroyProfile: MultiApplyProfile;
  d2: { skipped: true; why: string };
}

/** Runs bench (d). */
export async function benchOverlays(opts: {
  repeat: number;
  say: (s: string) => void;
}): Promise<OverlaysResult> {
  const { say } = opts;
  const runner = new SystemRunner();
  const env = benchEnv('d');
  const lab = labName();
  const text = overlaySpec(lab);
  const source = 'bench-multihost-d.json';
  const desired = resolveSpec(loadSpec(text, source));
  const store = new SqliteStore(':memory:');
  const credentials = await HostCredentials.open(join(process.env.VMLINK_STATE_DIR!, 'pki'));
  const controller = new Controller(store, runner, { credentials });

  const vmlinkMs: number[] = [];
  const rawMs: number[] = [];
  const rawPerHost: Record<string, number>[] = [];
  const around: OverlaysResult['around'] = {
    labUpMs: [],
    coldPlanMs: [],
    noopMs: [],
    destroyMs: [],
    labDownMs: [],
  };
  const endState: OverlaysResult['endState'] = { vmlink: {}, raw: {}, equivalent: false };
  const loads: number[] = [];
  let profile: OverlaysResult['profile'] | undefined;
  let destroyProfile: MultiApplyProfile | undefined;
  let steps = 0;

  const runVmlink = async (i: number) => {
    const labDown = onCleanup(`lab ${lab}`, async () => {
      await controller.labDown(text, source, quiet);
    });
    try {
      let t = performance.now();
      await controller.labUp(text, source, quiet);
      around.labUpMs.push(since(t));
      // Fresh agents probe the accelerator and the kernel's network features on their first report: warm them.
      t = performance.now();
      await controller.plan(text, source);
      around.coldPlanMs.push(since(t));
      const from = Object.fromEntries(HOSTS.map((h) => [h, fileSize(agentLog(lab, h))]));
      const marks: Mark[] = [];
      const t0 = mark('start');
      const r = await controller.apply(text, source, taskCtx(marks));
      const t1 = mark('end');
      vmlinkMs.push(t1.perf - t0.perf);
      steps = r.applied;
      if (r.applied !== D_NETWORKS * HOSTS.length)
        say(`  warning: apply ran ${r.applied} steps, expected ${D_NETWORKS * HOSTS.length}`);
      t = performance.now();
      const again = await controller.apply(text, source, quiet);
      around.noopMs.push(since(t));
      if (again.applied !== 0) say(`  warning: the re-apply was not a no-op: ${again.applied} step(s)`);
      await sleep(200); // let the agents' logs reach their files
      const execs = HOSTS.flatMap((h) => readExecs(agentLog(lab, h), h, from[h]!));
      if (execs.length === 0) say('  warning: no exec lines in the agents’ logs; profile unavailable');
      const agent1 = agentFor(loadSpec(text, source), 'host1');
      const rtts: number[] = [];
      for (let k = 0; k < 20; k++) {
        const s = performance.now();
        await agent1.health();
        rtts.push(performance.now() - s);
      }
      profile = { ...profileMultiApply(t0, marks, t1, execs), httpHealthRoundTripMs: round(median(rtts), 2) };
      if (i === 0)
        for (const [k, h] of HOSTS.entries())
          endState.vmlink[h] = overlayCensus(machineNs(lab, h), `${D_LAN.prefix}.${11 + k}`);
      const dFrom = Object.fromEntries(HOSTS.map((h) => [h, fileSize(agentLog(lab, h))]));
      const dMarks: Mark[] = [];
      const d0 = mark('start');
      await controller.destroy(text, source, taskCtx(dMarks));
      const d1 = mark('end');
      around.destroyMs.push(d1.perf - d0.perf);
      await sleep(200);
      destroyProfile = profileMultiApply(
        d0,
        dMarks,
        d1,
        HOSTS.flatMap((h) => readExecs(agentLog(lab, h), h, dFrom[h]!)),
      );
      t = performance.now();
      await labDown();
      around.labDownMs.push(since(t));
      say(
        `  [${i + 1}/${opts.repeat}] vmlink apply ${secs(vmlinkMs.at(-1)!)} (${r.applied} steps; lab up ${secs(around.labUpMs.at(-1)!)},` +
          ` cold plan ${secs(around.coldPlanMs.at(-1)!)}, no-op re-apply ${secs(around.noopMs.at(-1)!)},` +
          ` destroy ${secs(around.destroyMs.at(-1)!)}, lab down ${secs(around.labDownMs.at(-1)!)})`,
      );
    } finally {
      await labDown();
    }
  };

  const runRaw = async (i: number) => {
    const base = benchNsName();
    const sw = `${base}-sw`;
    const hostNs = HOSTS.map((h) => `${base}-${h}`);
    const dels = [sw, ...hostNs].map((ns) => onCleanup(`netns ${ns}`, () => deleteNamespace(ns)));
    try {
      // Untimed: the same underlay as the lab (a switch namespace with a bridge, eth0 per host, same addresses/MTU).
      for (const ns of [sw, ...hostNs]) {
        await runner.run(['ip', 'netns', 'add', ns]);
        await runner.run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
      }
      await runner.run(['ip', '-batch', '-'], {
        netns: sw,
        input: `link add lan type bridge\nlink set lan mtu ${D_LAN.mtu}\nlink set lan up\n`,
      });
      for (const [k, ns] of hostNs.entries()) {
        const mtu = String(D_LAN.mtu);
        await runner.run(
          [
            'ip',
            'link',
            'add',
            'eth0',
            'mtu',
            mtu,
            'type',
            'veth',
            'peer',
            'name',
            `p${k + 1}`,
            'mtu',
            mtu,
            'netns',
            sw,
          ],
          { netns: ns },
        );
        await runner.run(['ip', '-batch', '-'], {
          netns: sw,
          input: `link set p${k + 1} master lan\nlink set p${k + 1} up\n`,
        });
        await runner.run(['ip', '-batch', '-'], {
          netns: ns,
          input: `addr add ${D_LAN.prefix}.${11 + k}/${D_LAN.len} dev eth0\nlink set eth0 up\nroute add default via ${D_LAN.prefix}.1\n`,
        });
      }
      const inputs = HOSTS.map((h) => rawOverlayBatches(desired[h]!.networks));
      const perHost: Record<string, number> = {};
      const t0 = performance.now();
      await Promise.all(
        HOSTS.map(async (h, k) => {
          const s = performance.now();
          await runner.run(['ip', '-batch', '-'], { netns: hostNs[k]!, input: inputs[k]!.ip });
          await runner.run(['bridge', '-batch', '-'], { netns: hostNs[k]!, input: inputs[k]!.bridge });
          perHost[h] = since(s);
        }),
      );
      rawMs.push(since(t0));
      rawPerHost.push(perHost);
      if (i === 0)
        for (const [k, h] of HOSTS.entries())
          endState.raw[h] = overlayCensus(hostNs[k]!, `${D_LAN.prefix}.${11 + k}`);
      say(
        `  [${i + 1}/${opts.repeat}] raw ${secs(rawMs.at(-1)!, 3)} (per host: ${Object.entries(perHost)
          .map(([h, ms]) => `${h} ${Math.round(ms)} ms`)
          .join(', ')})`,
      );
    } finally {
      for (const d of dels.reverse()) await d();
    }
  };

  try {
    for (let i = 0; i < opts.repeat; i++) {
      loads.push(load1());
      for (const s of i % 2 === 0 ? ['vmlink', 'raw'] : ['raw', 'vmlink']) {
        if (s === 'vmlink') await runVmlink(i);
        else await runRaw(i);
      }
    }
  } finally {
    await store.close();
    await env.restore();
  }
  endState.equivalent = HOSTS.every(
    (h) => JSON.stringify(endState.vmlink[h]) === JSON.stringify(endState.raw[h]),
  );
  const vm = side('vmlink', vmlinkMs);
  const raw = side('raw', rawMs);
  return {
    id: 'd',
    title: `apply 3 hosts x ${D_NETWORKS} vxlan overlays`,
    what:
      `Controller.apply (in process) of a spec with 3 lab hosts and ${D_NETWORKS} vxlan networks (linux backend, VNIs ` +
      `${D_VNI_BASE}..${D_VNI_BASE + D_NETWORKS - 1}, each on all three hosts, no cidr/gateway, no VMs) against a fresh ` +
      'three-host lab per repeat (lab up and one warming plan untimed); raw = three fresh namespaces on a switch ' +
      'namespace (same addresses/MTU), per host ONE `ip -batch -` (20 bridges with mtu+alias+up, 20 vxlan devices ' +
      'id/local/dstport 4789/dev eth0/nolearning/mtu, enslaved with alias, up) then ONE `bridge -batch -` (40 all-zeros ' +
      'FDB appends), the three hosts concurrently',
    vmlink: vm,
    raw: { ...raw, perHostMs: rawPerHost },
    pairedRatios: vmlinkMs.map((v, i) => round(v / rawMs[i]!, 1)),
    ratio: round(vm.medianMs / raw.medianMs, 1),
    around: {
      labUpMs: around.labUpMs.map((x) => round(x, 0)),
      coldPlanMs: around.coldPlanMs.map((x) => round(x, 0)),
      noopMs: around.noopMs.map((x) => round(x, 0)),
      destroyMs: around.destroyMs.map((x) => round(x, 0)),
      labDownMs: around.labDownMs.map((x) => round(x, 0)),
    },
    endState,
    steps,
    load1: loads,
    profile: profile!,
    destroyProfile: destroyProfile!,
    d2: { skipped: true, why: D2_SKIPPED },
  };
}

const D2_SKIPPED =
  'not run: with the userspace (netdev) datapath the ovs backend first moves each host’s underlay address onto an ' +
  'OVS bridge and needs its own ovsdb-server + ovs-vswitchd per host namespace; a fair raw side needs the same ' +
  'daemons and address move per host, which did not fit the time box of this bench';

// ---------------------------------------------------------------------------------------------------------
// (e) verify matrix of three hosts x six VMs.

const E_LAN = '192.168.79';

/** The (e) spec: three lab hosts, one vxlan overlay with a NAT gateway on host1, six VMs (two per host), one peer. */
export function verifySpecText(lab: string): string {
  return `${JSON.stringify(
    {
      version: 1,
      hosts: HOSTS.map((name) => ({ name })),
      networks: [
        {
          name: 'app',
          mode: 'vxlan',
          vni: 3001,
          cidr: '10.91.0.0/24',
          gateway: { host: 'host1', nat: true },
        },
      ],
      vms: Array.from({ length: E_VMS }, (_, i) => ({
        name: `g${i + 1}`,
        host: HOSTS[Math.floor(i / 2)],
        memoryMiB: 160,
        nics: [{ network: 'app', ip: `10.91.0.${11 + i}` }],
      })),
      lab: {
        name: lab,
        lan: { cidr: `${E_LAN}.0/24`, gateway: `${E_LAN}.1` },
        upstream: { cidr: '203.0.113.0/24', address: '203.0.113.79' },
        hosts: HOSTS.map((name, i) => ({ name, address: `${E_LAN}.${11 + i}` })),
        peers: [{ name: 'pc1', address: `${E_LAN}.20` }],
      },
    },
    null,
    1,
  )}\n`;
}

/** One timed verify: its duration and the split between its phases (from its progress messages). */
export interface VerifyRun {
  totalMs: number;
  /** The controller's own durationMs of the result. */
  resultDurationMs: number;
  discoveryMs: number;
  icmpMs: number;
  pmtuMs: number;
  cells: number;
  observedTrue: number;
  observedFalse: number;
  mismatches: number;
  endpoints: number;
}

/** Result of bench (e). */
export interface VerifyBenchResult {
  id: 'e';
  title: string;
  what: string;
  verify: SideResult & { runs: VerifyRun[] };
  /** The same number of plain pings, one after the other, from namespaces (`ip netns exec NS ping -c1 -W1`). */
  reference: SideResult & { pings: number; failed: number[]; perPingMs: number };
  ratio: number;
  /** Only the ICMP phase of verify against the reference. */
  icmpRatio: number;
  cellsBySource: Record<string, { cells: number; observedTrue: number; observedFalse: number }>;
  /** Probes outside verify (median of 5 wall times): one alone by source kind, and batches as verify sends them. */
  probeCostMs: Record<string, number>;
  around: { labUpMs: number; applyMs: number; guestsReadyMs: number; destroyMs: number; labDownMs: number };
  load1: number[];
}

/** Runs bench (e). */
export async function benchVerify(opts: {
  repeat: number;
  say: (s: string) => void;
}): Promise<VerifyBenchResult> {
  const { say } = opts;
  const runner = new SystemRunner();
  const env = benchEnv('e');
  const lab = labName();
  const text = verifySpecText(lab);
  const source = 'bench-multihost-e.json';
  const spec = loadSpec(text, source);
  const store = new SqliteStore(':memory:');
  const credentials = await HostCredentials.open(join(process.env.VMLINK_STATE_DIR!, 'pki'));
  const controller = new Controller(store, runner, { credentials });
  const aroundE = { labUpMs: 0, applyMs: 0, guestsReadyMs: 0, destroyMs: 0, labDownMs: 0 };
  const runs: VerifyRun[] = [];
  const refMs: number[] = [];
  const refFailed: number[] = [];
  const loads: number[] = [];
  let lastResult: VerifyResult | undefined;
  let probeCostMs: Record<string, number> = {};
  const vmAddr = Array.from({ length: E_VMS }, (_, i) => `10.91.0.${11 + i}`);

  say('  waiting for the VM lock (/tmp/vmlink-vm.lock) ...');
  const unlock = onCleanup('VM lock', await acquireVmLock());
  const labDown = onCleanup(`lab ${lab}`, async () => {
    await controller.labDown(text, source, quiet);
  });
  try {
    let t = performance.now();
    await controller.labUp(text, source, quiet);
    aroundE.labUpMs = since(t);
    t = performance.now();
    const r = await controller.apply(text, source, quiet);
    aroundE.applyMs = since(t);
    // Untimed: wait until every guest has its address (boot under TCG), so verify measures probes, not boots.
    t = performance.now();
    const deadline = Date.now() + 600_000;
    for (const vm of spec.vms) {
      const agent = agentFor(spec, vm.host);
      for (;;) {
        const ifs = await agent.interfaces(vm.name).catch(() => []);
        if (ifs.some((x) => x.addresses.some((a) => /^10\.91\.0\.\d+\//.test(a)))) break;
        if (Date.now() > deadline) throw new Error(`(e) guest ${vm.name} has no address after 600 s`);
        await sleep(500);
      }
    }
    aroundE.guestsReadyMs = since(t);
    say(
      `  lab up ${secs(aroundE.labUpMs)}, apply (${r.applied} steps, 6 guests started) ${secs(aroundE.applyMs)}, ` +
        `all guests addressed after ${secs(aroundE.guestsReadyMs)} more (untimed)`,
    );

    // Reference pings: always-reachable pairs, from lab namespaces: every LAN machine to every other, and the
    // gateway host1 to each VM across the overlay (the guests on host2/host3 answer through VXLAN).
    const lanMachines = [
      ...HOSTS.map((h, i) => ({ ns: machineNs(lab, h), address: `${E_LAN}.${11 + i}` })),
      { ns: machineNs(lab, 'pc1'), address: `${E_LAN}.20` },
    ];
    const pairs: Array<{ ns: string; target: string }> = [];
    for (const a of lanMachines)
      for (const b of lanMachines) if (a !== b) pairs.push({ ns: a.ns, target: b.address });
    for (const v of vmAddr) pairs.push({ ns: machineNs(lab, 'host1'), target: v });
    pairs.push({ ns: upstreamNs(lab), target: '203.0.113.1' });

    const runVerify = async (i: number) => {
      const marks: Mark[] = [];
      const t0 = mark('start');
      const v = await controller.verify(taskCtx(marks));
      const t1 = mark('end');
      lastResult = v;
      const at = (re: RegExp) => marks.find((m) => re.test(m.msg))?.perf;
      const disc = at(/^discovering the addresses/) ?? t0.perf;
      const probe = at(/^probing \d+ paths/) ?? disc;
      const pmtu = at(/^measuring the path MTU/) ?? t1.perf;
      const run: VerifyRun = {
        totalMs: round(t1.perf - t0.perf, 1),
        resultDurationMs: v.durationMs,
        discoveryMs: round(probe - disc, 1),
        icmpMs: round(pmtu - probe, 1),
        pmtuMs: round(t1.perf - pmtu, 1),
        cells: v.cells.length,
        observedTrue: v.cells.filter((c) => c.observed).length,
        observedFalse: v.cells.filter((c) => !c.observed).length,
        mismatches: v.mismatches,
        endpoints: v.endpoints.length,
      };
      runs.push(run);
      say(
        `  [${i + 1}/${opts.repeat}] verify ${secs(run.totalMs)}: ${run.endpoints} endpoints, ${run.cells} cells ` +
          `(${run.observedTrue} reachable, ${run.observedFalse} not), ${v.pmtu.length} path-MTU check(s), ` +
          `${run.mismatches} mismatch(es); address discovery ${secs(run.discoveryMs)}, ICMP ${secs(run.icmpMs)}, ` +
          `path MTU ${secs(run.pmtuMs)}`,
      );
      if (v.mismatches)
        for (const c of [...v.cells.filter((x) => !x.ok), ...v.pmtu.filter((x) => !x.ok)])
          say(`    mismatch: ${JSON.stringify(c)}`);
    };
    const runRef = async (i: number) => {
      const n = runs[0]?.cells ?? lastResult?.cells.length ?? 110;
      let failed = 0;
      const t0 = performance.now();
      for (let k = 0; k < n; k++) {
        const p = pairs[k % pairs.length]!;
        const res = await runner.run(['ping', '-n', '-c1', '-W1', p.target], {
          netns: p.ns,
          allowFailure: true,
        });
        if (res.code !== 0) failed++;
      }
      refMs.push(since(t0));
      refFailed.push(failed);
      say(
        `  [${i + 1}/${opts.repeat}] reference: ${n} pings one after the other from namespaces ${secs(refMs.at(-1)!)} ` +
          `(${round(refMs.at(-1)! / n, 1)} ms each, ${failed} failed)`,
      );
    };

    for (let i = 0; i < opts.repeat; i++) {
      loads.push(load1());
      // The reference needs the cell count: on the first repeat verify goes first unless it is known already.
      for (const s of i % 2 === 0 ? ['verify', 'ref'] : ['ref', 'verify']) {
        if (s === 'verify') await runVerify(i);
        else await runRef(i);
      }
    }

    // Single probes, one at a time: what one cell costs by where it starts (5 each, median).
    const cost = async (fn: () => Promise<unknown>) => {
      const xs: number[] = [];
      for (let k = 0; k < 5; k++) {
        const s = performance.now();
        await fn();
        xs.push(performance.now() - s);
      }
      return round(median(xs), 1);
    };
    const a1 = agentFor(spec, 'host1');
    const a2 = agentFor(spec, 'host2');
    const everyone = [...HOSTS.map((_, i) => `${E_LAN}.${11 + i}`), `${E_LAN}.20`, '203.0.113.79', ...vmAddr];
    const pingsFrom = (self: string) =>
      everyone
        .filter((a) => a !== self)
        .map((target) => ({ kind: 'ping' as const, target, timeoutMs: 2_000 }));
    probeCostMs = {
      'vm g1 -> g3 (guest-exec ping through the agent, across hosts)': await cost(() =>
        a1.probe({ from: { kind: 'vm', name: 'g1' }, kind: 'ping', target: vmAddr[2]!, timeoutMs: 2_000 }),
      ),
      'host host1 -> g3 (agent runs ping)': await cost(() =>
        a1.probe({ from: { kind: 'host' }, kind: 'ping', target: vmAddr[2]!, timeoutMs: 2_000 }),
      ),
      'host host2 -> g1 (expected unreachable: ping -W 2 timeout)': await cost(() =>
        a2.probe({ from: { kind: 'host' }, kind: 'ping', target: vmAddr[0]!, timeoutMs: 2_000 }),
      ),
      'upstream -> g1 (controller runs ping -W 2 in the upstream namespace; not reachable)': await cost(() =>
        runner.run(pingArgv(vmAddr[0]!, 2_000, false), { netns: upstreamNs(lab), allowFailure: true }),
      ),
      // verify sends each source's probes as one batch (all at once, one command at the source), sources in
      // parallel: what one source's batch costs, to every other endpoint of the matrix (10 pings).
      'one batch of 10 pings from g1 (one guest-agent exec, the shape verify gives a VM)': await cost(() =>
        a1.probeBatch({ from: { kind: 'vm', name: 'g1' }, probes: pingsFrom(vmAddr[0]!) }),
      ),
      'one batch of 10 pings from host2 (one sh -c by its agent; some go unanswered: 2 s deadline)':
        await cost(() => a2.probeBatch({ from: { kind: 'host' }, probes: pingsFrom(`${E_LAN}.12`) })),
      'one batch of 10 pings from peer pc1 (one sh -c in its namespace by the controller; 2 s deadline)':
        await cost(() =>
          runProbeBatch(
            pingsFrom(`${E_LAN}.20`).map((p) => ({ kind: p.kind, argv: probeArgv(p, 'host') })),
            (argv) => runner.run(argv, { netns: machineNs(lab, 'pc1'), allowFailure: true }),
          ),
        ),
      '6 batches at once, one from each VM (10 pings each)': await cost(() =>
        Promise.all(
          spec.vms.map((vm, i) =>
            agentFor(spec, vm.host).probeBatch({
              from: { kind: 'vm', name: vm.name },
              probes: pingsFrom(vmAddr[i]!),
            }),
          ),
        ),
      ),
      'plain ip netns exec host1 ping -c1 -W1 g3': await cost(() =>
        runner.run(['ping', '-n', '-c1', '-W1', vmAddr[2]!], {
          netns: machineNs(lab, 'host1'),
          allowFailure: true,
        }),
      ),
    };

    t = performance.now();
    await controller.destroy(text, source, quiet);
    aroundE.destroyMs = since(t);
    t = performance.now();
    await labDown();
    aroundE.labDownMs = since(t);
  } finally {
    await labDown();
    await unlock();
    await store.close();
    await env.restore();
  }

  const bySrc: VerifyBenchResult['cellsBySource'] = {};
  const kindOf = new Map(lastResult!.endpoints.map((e) => [e.id, e.kind]));
  for (const c of lastResult!.cells) {
    const k = kindOf.get(c.from) ?? 'other';
    const b = bySrc[k] ?? { cells: 0, observedTrue: 0, observedFalse: 0 };
    b.cells++;
    if (c.observed) b.observedTrue++;
    else b.observedFalse++;
    bySrc[k] = b;
  }
  const vs = side(
    'verify',
    runs.map((r) => r.totalMs),
  );
  const ref = side('reference pings', refMs);
  const nPings = runs[0]?.cells ?? 0;
  return {
    id: 'e',
    title: `verify 3 hosts x ${E_VMS} VMs`,
    what:
      'Controller.verify (in process) on a three-host lab with one vxlan overlay (NAT gateway on host1) across all ' +
      `hosts, ${E_VMS} test-guest VMs (2 per host, 160 MiB, TCG), one peer; same lab for every repeat, guests ` +
      'addressed before timing; reference = the same number of `ip netns exec NS ping -n -c1 -W1` run one after the ' +
      'other between always-reachable pairs (LAN machines to each other, host1 to each VM over the overlay)',
    verify: { ...vs, runs },
    reference: {
      ...ref,
      pings: nPings,
      failed: refFailed,
      perPingMs: round(ref.medianMs / Math.max(1, nPings), 1),
    },
    ratio: round(vs.medianMs / ref.medianMs, 1),
    icmpRatio: round(median(runs.map((r) => r.icmpMs)) / ref.medianMs, 1),
    cellsBySource: bySrc,
    probeCostMs,
    around: {
      labUpMs: round(aroundE.labUpMs, 0),
      applyMs: round(aroundE.applyMs, 0),
      guestsReadyMs: round(aroundE.guestsReadyMs, 0),
      destroyMs: round(aroundE.destroyMs, 0),
      labDownMs: round(aroundE.labDownMs, 0),
    },
    load1: loads,
  };
}
