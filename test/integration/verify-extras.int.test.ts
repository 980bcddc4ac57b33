// Path MTU, throughput, a VM on two networks and the switch to readable device names, measured for real: a lab
// host with two guests on one nat network (MTU 1400) and a peer; web2 also has a NIC bridged onto the LAN.
// natnet and web1 are first realised as a vmlink from before readable names did (hashed bridge and tap names, old
// config hashes); the apply must leave them running as they are and put web2 on the old bridge.
// `vmlink verify` must report the network's path MTU and judge each of web2's NICs by its own network (its probes
// leave by that NIC); measureSpecThroughput must run iperf3 guest -> guest, guest -> peer and peer -> host.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentFor } from '../../src/controller/agents.js';
import type { NetworkView } from '../../src/controller/controller.js';
import { measureSpecThroughput, type VerifyResult } from '../../src/controller/verify.js';
import { SystemRunner } from '../../src/exec/runner.js';
import { configHash } from '../../src/plan/hash.js';
import { resolveSpec } from '../../src/plan/resolve.js';
import { loadSpec } from '../../src/spec/load.js';
import { legacyBridgeName, legacyTapName } from '../../src/spec/net.js';
import { trustAgentsAsController } from '../helpers/agent-trust.js';
import { runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'itvx';
const SPEC = `
version: 1
hosts:
  - { name: host1, uplink: eth0 }
networks:
  - { name: natnet, host: host1, mode: nat, cidr: 10.64.0.0/24, mtu: 1400 }
  - { name: lan, host: host1, mode: bridge }
vms:
  - { name: web1, host: host1, memoryMiB: 192, nics: [{ network: natnet, ip: 10.64.0.10 }] }
  - name: web2
    host: host1
    memoryMiB: 192
    nics: [{ network: natnet, ip: 10.64.0.11 }, { network: lan }]
lab:
  name: ${LAB}
  lan: { cidr: 192.168.64.0/24, gateway: 192.168.64.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.64 }
  hosts: [{ name: host1, address: 192.168.64.10 }]
  peers: [{ name: pc1, address: 192.168.64.20 }]
`;

const root = mkdtempSync('/tmp/vmlink-itvx-');
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const specFile = join(root, 'spec.yaml');
let release: (() => Promise<void>) | undefined;
const saved: Record<string, string | undefined> = {};

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(specFile, SPEC);
  // measureSpecThroughput runs in this process and finds the lab's agent sockets through these.
  for (const [k, v] of Object.entries(env)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  release = await acquireVmLock();
  const d = await runCli(['daemon', '--detach'], env);
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', specFile], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  untrust = await trustAgentsAsController(env.VMLINK_STATE_DIR);
  await realiseWithHashedNames();
  const apply = await runCli(['apply', '-f', specFile], env);
  expect(apply.code, apply.stderr + apply.stdout).toBe(0);
  applyOutput = apply.stdout;
});

let applyOutput = '';
let untrust: (() => void) | undefined;
let web1PidBefore: number | undefined;

/** natnet and web1 as the agent of a vmlink from before readable names left them: hashed names, old hashes. */
async function realiseWithHashedNames(): Promise<void> {
  const spec = loadSpec(SPEC);
  const want = resolveSpec(spec).host1!;
  const agent = agentFor(spec, 'host1');
  const nat = { ...want.networks.find((n) => n.name === 'natnet')!, bridge: legacyBridgeName('natnet') };
  await agent.act({ kind: 'network.ensure', network: nat, configHash: configHash(nat) });
  const web1 = want.vms.find((v) => v.name === 'web1')!;
  const { state: _state, ...old } = {
    ...web1,
    nics: web1.nics.map((n, i) => ({ ...n, bridge: nat.bridge, tap: legacyTapName('web1', i) })),
  };
  await agent.act({ kind: 'vm.create', vm: { ...old, state: 'running' }, configHash: configHash(old) });
  await agent.act({ kind: 'vm.start', name: 'web1' });
  web1PidBefore = (await agent.report()).vms.find((v) => v.name === 'web1')?.pid;
  expect(web1PidBefore).toBeGreaterThan(1);
}

afterAll(async () => {
  untrust?.();
  await runCli(['destroy', '-f', specFile], env).catch(() => {});
  await runCli(['lab', 'down', '-f', specFile], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

const ctx = { progress: (m: string) => console.log(`[itvx] ${m}`), signal: new AbortController().signal };

describe('readable device names on a host realised with hashed ones', () => {
  it('leaves the old network and VM alone (same QEMU) and puts new NICs on the old bridge', async () => {
    expect(applyOutput).toMatch(/\+ vm web2 on host1/);
    expect(applyOutput).not.toMatch(/[-+~<>] (network natnet|vm web1) /);
    const report = await agentFor(loadSpec(SPEC), 'host1').report();
    const web1 = report.vms.find((v) => v.name === 'web1')!;
    expect(web1.pid).toBe(web1PidBefore);
    expect(web1.ports).toEqual([
      { network: 'natnet', tap: legacyTapName('web1', 0), bridge: legacyBridgeName('natnet') },
    ]);
    expect(report.vms.find((v) => v.name === 'web2')!.ports).toEqual([
      { network: 'natnet', tap: 'vlt-web2-0', bridge: legacyBridgeName('natnet') },
      { network: 'lan', tap: 'vlt-web2-1', bridge: 'vlb-lan' },
    ]);
    const again = await runCli(['apply', '-f', specFile], env);
    expect(again.stdout).toMatch(/no changes/i);
  });

  it('network show names the bridge and the taps on each host', async () => {
    const r = await runCli(['network', 'show', 'lan', '--json'], env);
    const v = JSON.parse(r.stdout) as NetworkView;
    expect(v.hosts).toMatchObject([
      { host: 'host1', observed: { bridge: 'vlb-lan' }, ports: [{ vm: 'web2', tap: 'vlt-web2-1' }] },
    ]);
    const text = await runCli(['network', 'show', 'natnet'], env);
    expect(text.stdout).toContain(`${legacyTapName('web1', 0)} (web1), vlt-web2-0 (web2)`);
  });
});

describe('path MTU and throughput', () => {
  /** The first test's matrix: the next one reads it too (nothing changes between them; a verify is ~6-30 s). */
  let matrix: VerifyResult | undefined;

  it('verify reports the nat network path MTU (two guests) and stays green', async () => {
    const r = await runCli(['verify', '--json'], env);
    const v = JSON.parse(r.stdout) as VerifyResult;
    matrix = v;
    expect(v.cells.filter((c) => !c.ok)).toEqual([]);
    expect(v.pmtu).toEqual([
      {
        network: 'natnet',
        from: 'web1',
        to: 'web2/natnet',
        expectedMtu: 1400,
        measuredMtu: 1400,
        ok: true,
        detail: 'full MTU passes',
      },
    ]);
    expect(v.routers).toEqual([]);
    expect(r.code).toBe(0);
    const text = await runCli(['verify'], env);
    expect(text.stdout).toMatch(/natnet\s+web1\s+web2\/natnet\s+1400\s+1400\s+ok/);
  });

  it('judges each NIC of a VM on two networks by its own network: probes leave by that NIC', async () => {
    const v = matrix ?? (JSON.parse((await runCli(['verify', '--json'], env)).stdout) as VerifyResult);
    const nics = v.endpoints.filter((e) => e.id.startsWith('web2/'));
    expect(nics.map((e) => e.network).sort()).toEqual(['lan', 'natnet']);
    expect(new Set(nics.map((e) => e.nic)).size).toBe(2);
    const at = (from: string, to: string) => v.cells.find((c) => c.from === from && c.to === to);
    // The issue's case: web1 sits on natnet, which web2's other NIC is on; from the LAN NIC it must stay unreachable.
    expect(at('web2/lan', 'web1')).toMatchObject({ expected: false, observed: false, ok: true });
    expect(at('web2/natnet', 'web1')).toMatchObject({ expected: true, observed: true, ok: true });
    expect(at('pc1', 'web2/lan')).toMatchObject({ expected: true, observed: true, ok: true });
    expect(at('pc1', 'web2/natnet')).toMatchObject({ expected: false, observed: false, ok: true });
    // Each NIC egresses by its own gateway (the LAN router, the nat host).
    expect(at('web2/lan', 'upstream')).toMatchObject({ expected: true, observed: true, ok: true });
    expect(at('web2/natnet', 'pc1')).toMatchObject({ expected: true, observed: true, ok: true });
  });

  it('measures iperf3 throughput guest -> guest, guest -> peer and peer -> host', async () => {
    const spec = loadSpec(SPEC);
    const runner = new SystemRunner();
    for (const [from, to] of [
      ['web1', 'web2/natnet'],
      ['web2/lan', 'pc1'],
      ['pc1', 'host1'],
    ] as const) {
      const t = await measureSpecThroughput(spec, runner, { from, to, seconds: 2 }, ctx);
      console.log(`[itvx] ${from} -> ${to}: ${t.mbps} Mbit/s, ${t.retransmits ?? '-'} retransmits`);
      expect(t).toMatchObject({ from, to });
      expect(t.mbps).toBeGreaterThan(0);
      expect(t.durationS).toBeGreaterThan(1);
    }
  });

  it('refuses a throughput path the topology blocks, naming iperf3 error', async () => {
    // The peer cannot reach a guest behind NAT: the client fails to connect (no route through the router).
    await expect(
      measureSpecThroughput(loadSpec(SPEC), new SystemRunner(), { from: 'pc1', to: 'web1', seconds: 1 }, ctx),
    ).rejects.toThrow(/throughput pc1 -> web1: iperf3: unable to connect/);
  });
});
