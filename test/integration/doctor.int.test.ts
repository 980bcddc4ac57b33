// `vmlink doctor` diagnoses through the real CLI, daemon and lab agents: ONE lab (two hosts, a linux VXLAN overlay,
// two VLANs on an Open vSwitch trunk), each fault created for real, diagnosed with its evidence and fix, then cleared:
// an STP loop on the overlay's bridge, a VLAN removed from the trunk, the underlay's MTU lowered, an agent killed, an
// agent restarted under libfaketime (its clock 90 s ahead), and a kernel feature missing from a capability report.
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DoctorCheck } from '../../src/agent/wire-doctor.js';
import { diagnose } from '../../src/controller/diagnose/index.js';
import type { Diagnosis } from '../../src/controller/wire-observe.js';
import { SystemRunner } from '../../src/exec/runner.js';
import { machineNs } from '../../src/lab/names.js';
import { resolveSpec } from '../../src/plan/resolve.js';
import type { HostReport } from '../../src/shared/model.js';
import { loadSpec } from '../../src/spec/load.js';
import { cliJson, runCli } from '../helpers/cli.js';

const LAB = 'itdr';
const SPEC = `
version: 1
hosts: [{ name: host1 }, { name: host2 }]
networks:
  - { name: ov, mode: vxlan, vni: 1474 }
  - { name: v100, mode: vlan, vlan: 100, segment: trunk, backend: ovs, hosts: [host1] }
  - { name: v200, mode: vlan, vlan: 200, segment: trunk, backend: ovs, hosts: [host1] }
lab:
  name: ${LAB}
  lan: { cidr: 192.168.74.0/24, gateway: 192.168.74.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.74 }
  segments: [{ name: trunk }]
  hosts: [{ name: host1, address: 192.168.74.10 }, { name: host2, address: 192.168.74.11 }]
`;
const spec = loadSpec(SPEC);
const desired = resolveSpec(spec);
const ov = desired.host1!.networks.find((n) => n.name === 'ov')!;
const v200 = desired.host1!.networks.find((n) => n.name === 'v200')!;
const NS1 = machineNs(LAB, 'host1');
const NS2 = machineNs(LAB, 'host2');
/** libfaketime's preload library (Debian `faketime`/`libfaketime`). */
const FAKETIME_LIB = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';

const root = mkdtempSync('/tmp/vmlink-itdr-');
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'c.sock'),
};
const file = join(root, 'spec.yaml');
const runner = new SystemRunner();
const inNs = (ns: string, argv: string[]) => runner.run(argv, { netns: ns, timeoutMs: 15_000 });
let faked: ChildProcess | undefined;

type Doctor = { checks: DoctorCheck[]; diagnoses: Diagnosis[] };
/** `vmlink doctor --json`: it exits 1 when it diagnoses something critical, 0 when not; anything else fails. */
async function doctor(host?: string): Promise<Doctor> {
  const r = await runCli(['doctor', ...(host ? ['--host', host] : []), '--json'], env);
  if (r.code !== 0 && r.code !== 1) throw new Error(`vmlink doctor exited ${r.code}:\n${r.stderr}`);
  const d = JSON.parse(r.stdout) as Doctor;
  const critical = d.diagnoses.some((x) => x.severity === 'critical') || d.checks.some((c) => !c.ok);
  expect(r.code, 'doctor exits 1 exactly when something is critical').toBe(critical ? 1 : 0);
  return d;
}

/** Polls `doctor` until `pick` finds something in its answer (the fault shows) or returns true (it cleared). */
async function doctorUntil<T>(
  what: string,
  pick: (d: Doctor) => T | undefined | false,
  host?: string,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: Doctor | undefined;
  for (;;) {
    last = await doctor(host);
    const v = pick(last);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}; last diagnoses: ${JSON.stringify(last.diagnoses, null, 1)}`,
      );
    await new Promise((r) => setTimeout(r, 500));
  }
}
const ofId = (d: Doctor, id: Diagnosis['id']) => d.diagnoses.filter((x) => x.id === id);
const agentPid = (host: string) =>
  Number(readFileSync(join(env.VMLINK_RUN_DIR, 'lab', LAB, `${host}.agent.pid`), 'utf8'));
const argvOf = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(file, SPEC);
  const d = await runCli(['daemon', '--detach', '--heartbeat-ms', '1000'], env);
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  const a = await runCli(['apply', '-f', file], env);
  expect(a.code, a.stderr + a.stdout).toBe(0);
}, 240_000);

afterAll(async () => {
  faked?.kill('SIGKILL');
  await runCli(['lab', 'down', '-f', file], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
}, 120_000);

describe('vmlink doctor diagnoses each classic failure in a lab', () => {
  it('finds nothing wrong in the healthy lab', async () => {
    const d = await doctor();
    expect(d.diagnoses).toEqual([]);
    expect(d.checks.find((c) => c.name === 'host host1')).toMatchObject({ ok: true });
  });

  it('stp-blocking: a loop on the overlay bridge with STP on blocks a port', async () => {
    // A cable plugged back into the same switch: both ends of a veth pair on the bridge, then STP turned on.
    await inNs(NS1, ['ip', 'link', 'add', 'dloopa', 'type', 'veth', 'peer', 'name', 'dloopb']);
    for (const p of ['dloopa', 'dloopb'])
      await inNs(NS1, ['ip', 'link', 'set', p, 'master', ov.bridge, 'up']);
    await inNs(NS1, [
      'ip',
      'link',
      'set',
      ov.bridge,
      'type',
      'bridge',
      'forward_delay',
      '200',
      'stp_state',
      '1',
    ]);
    const blocked = await doctorUntil(
      'a blocked port',
      (d) => ofId(d, 'stp-blocking').find((x) => x.severity === 'critical'),
      'host1',
    );
    expect(blocked.host).toBe('host1');
    expect(blocked.object).toMatch(/^network ov port dloop[ab]$/);
    expect(blocked.evidence[0]).toMatch(new RegExp(`dloop[ab] master ${ov.bridge} state blocking`));
    expect(blocked.fix).toContain(`ip link set ${ov.bridge} type bridge stp_state 0`);
    const text = await runCli(['doctor', '--host', 'host1'], env);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/CRITICAL stp-blocking on host1: network ov port dloop[ab]/);
    expect(text.stdout).toMatch(/evidence: .*state blocking/);
    // The fix the doctor names, and the loop removed: nothing left.
    await inNs(NS1, ['ip', 'link', 'set', ov.bridge, 'type', 'bridge', 'stp_state', '0']);
    await inNs(NS1, ['ip', 'link', 'del', 'dloopa']);
    await doctorUntil('STP cleared', (d) => ofId(d, 'stp-blocking').length === 0, 'host1');
  });

  it('vlan-not-on-trunk: VLAN 200 removed from the OVS trunk, put back by apply', async () => {
    const stateDir = argvOf(agentPid('host1'))[argvOf(agentPid('host1')).indexOf('--state-dir') + 1]!;
    const db = `--db=unix:${join(stateDir, 'ovs', 'run', 'db.sock')}`;
    const trunk = v200.vlan!.trunk;
    await inNs(NS1, ['ovs-vsctl', db, 'remove', 'port', trunk, 'trunks', '200']);
    const d = await doctorUntil('the trunk diagnosis', (x) => ofId(x, 'vlan-not-on-trunk')[0], 'host1');
    expect(d).toMatchObject({ host: 'host1', object: `trunk ${trunk} (network v200)`, severity: 'critical' });
    expect(d.evidence[0]).toBe(
      `ovs port ${trunk} on bridge ${v200.bridge}: vlan_mode trunk, tag none, trunks [100]`,
    );
    expect(d.fix).toContain(`ovs-vsctl set port ${trunk} trunks=100,200`);
    // The fix it names first: apply repairs the network.
    const a = await runCli(['apply', '-f', file], env);
    expect(a.code, a.stderr + a.stdout).toBe(0);
    await doctorUntil('the trunk repaired', (x) => ofId(x, 'vlan-not-on-trunk').length === 0, 'host1');
  });

  it('overlay-mtu: the underlay MTU lowered below the overlay MTU + 50', async () => {
    const underlay = ov.vxlan!.underlay;
    await inNs(NS1, ['ip', 'link', 'set', underlay, 'mtu', '1400']);
    try {
      const d = await doctorUntil('the MTU diagnosis', (x) => ofId(x, 'overlay-mtu')[0], 'host1');
      expect(d).toMatchObject({ host: 'host1', object: 'network ov', severity: 'critical' });
      expect(d.summary).toContain(`underlay ${underlay} has MTU 1400`);
      expect(d.evidence[0]).toMatch(new RegExp(`^ip link on host1: ${underlay} mtu 1400\\b`));
      expect(d.fix).toContain(`lower networks[ov].mtu to 1350 or less`);
      // host2's underlay was not touched: no diagnosis there.
      expect(ofId(await doctor('host2'), 'overlay-mtu')).toEqual([]);
    } finally {
      await inNs(NS1, ['ip', 'link', 'set', underlay, 'mtu', '1500']);
    }
    await doctorUntil('the MTU restored', (x) => ofId(x, 'overlay-mtu').length === 0, 'host1');
  });

  it('agent-unreachable: a killed agent, with the heartbeat evidence; clock-drift: restarted 90 s ahead', async () => {
    const pid = agentPid('host2');
    const argv = argvOf(pid);
    const environ = Object.fromEntries(
      readFileSync(`/proc/${pid}/environ`, 'utf8')
        .split('\0')
        .filter((kv) => kv.includes('='))
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
    );
    process.kill(pid, 'SIGKILL');
    const down = await doctorUntil(
      'host2 unreachable with missed heartbeats',
      (d) =>
        ofId(d, 'agent-unreachable').find(
          (x) => /\d+ missed/.test(x.evidence[1] ?? '') && !/ 0 missed/.test(x.evidence[1]!),
        ),
      'host2',
    );
    expect(down).toMatchObject({ host: 'host2', object: 'host host2', severity: 'critical' });
    expect(down.evidence[1]).toMatch(
      /^heartbeat: (up|unreachable), [1-9]\d* missed in a row, last seen \S+ \(\d+ s ago\)/,
    );
    expect(down.fix).toContain('vmlink lab up -f SPEC');
    // host1 is fine meanwhile, and `--host host1` leaves host2 out.
    expect((await doctor('host1')).diagnoses).toEqual([]);

    // The same agent, its clock 90 s ahead (libfaketime preloaded into Node), in host2's namespace.
    const log = openSync(join(root, 'faked-agent.log'), 'a');
    faked = spawn('ip', ['netns', 'exec', NS2, ...argv], {
      env: { ...environ, LD_PRELOAD: FAKETIME_LIB, FAKETIME: '+90s' },
      stdio: ['ignore', log, log],
      detached: true,
    });
    const drift = await doctorUntil('the drift diagnosis', (d) => ofId(d, 'clock-drift')[0], 'host2', 60_000);
    expect(drift).toMatchObject({ host: 'host2', object: 'host host2', severity: 'critical' });
    expect(drift.summary).toMatch(/^the clock of host2 is (8\d|9\d)\.\d s or more ahead of the controller's/);
    expect(drift.evidence[1]).toMatch(
      /^offset between \+(8\d|9\d)\.\d s and \+(8\d|9\d)\.\d s \(bounded by the \d+ ms round trip\)$/,
    );
    expect(drift.fix).toContain('chrony');

    // Back to the real clock: the lab restarts its own agent.
    faked.kill('SIGKILL');
    await new Promise((r) => faked!.once('exit', r));
    faked = undefined;
    const up = await runCli(['lab', 'up', '-f', file], env);
    expect(up.code, up.stderr + up.stdout).toBe(0);
    await doctorUntil('host2 healthy again', (d) => d.diagnoses.length === 0, undefined, 60_000);
  }, 180_000);

  it('kernel-feature-missing: a feature the capability report lacks and the spec uses', async () => {
    // The lab hosts' real reports; the feature is one this report says is absent, or (where it lacks none) one
    // removed from a copy of it: the machine's own kernel is never what is asserted.
    const status = await cliJson<{ hosts: Array<{ name: string; report?: HostReport }> }>(['status'], env);
    const real = status.hosts.find((h) => h.name === 'host1')!.report!;
    const absent = (['vlan', 'vxlan'] as const).find((f) => real.capabilities.network[f] === false);
    const feature = absent ?? 'vxlan';
    const report: HostReport = {
      ...real,
      capabilities: { ...real.capabilities, network: { ...real.capabilities.network, [feature]: false } },
    };
    const uses = loadSpec(
      SPEC.replace(
        'networks:',
        `networks:\n  - { name: needs, mode: ${feature}, ${feature === 'vlan' ? 'vlan: 300' : 'vni: 1475'}, hosts: [host1] }`,
      ),
    );
    const found = diagnose({
      spec: uses,
      desired: resolveSpec(uses),
      hosts: [{ host: 'host1', report }],
      storage: [],
      now: Date.now(),
    });
    const d = found.find((x) => x.id === 'kernel-feature-missing')!;
    expect(d).toMatchObject({ host: 'host1', object: `host host1 feature ${feature}`, severity: 'critical' });
    expect(d.evidence).toContain('network needs uses it on host1');
    expect(d.fix).toMatch(feature === 'vlan' ? /modprobe 8021q/ : /modprobe vxlan/);
  });
});
