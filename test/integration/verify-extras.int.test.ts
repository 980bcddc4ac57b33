// Path MTU and throughput measured for real: a lab host with two guests on one nat network (MTU 1400) and a peer.
// `vmlink verify` must report the network's path MTU; measureSpecThroughput must run iperf3 guest -> guest,
// guest -> peer namespace and peer -> host namespace.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measureSpecThroughput, type VerifyResult } from '../../src/controller/verify.js';
import { SystemRunner } from '../../src/exec/runner.js';
import { loadSpec } from '../../src/spec/load.js';
import { runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'itvx';
const SPEC = `
version: 1
hosts:
  - { name: host1 }
networks:
  - { name: natnet, host: host1, mode: nat, cidr: 10.64.0.0/24, mtu: 1400 }
vms:
  - { name: web1, host: host1, memoryMiB: 192, nics: [{ network: natnet, ip: 10.64.0.10 }] }
  - { name: web2, host: host1, memoryMiB: 192, nics: [{ network: natnet, ip: 10.64.0.11 }] }
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
  const apply = await runCli(['apply', '-f', specFile], env);
  expect(apply.code, apply.stderr + apply.stdout).toBe(0);
});

afterAll(async () => {
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

describe('path MTU and throughput', () => {
  it('verify reports the nat network path MTU (two guests) and stays green', async () => {
    const r = await runCli(['verify', '--json'], env);
    const v = JSON.parse(r.stdout) as VerifyResult;
    expect(v.cells.filter((c) => !c.ok)).toEqual([]);
    expect(v.pmtu).toEqual([
      {
        network: 'natnet',
        from: 'web1',
        to: 'web2',
        expectedMtu: 1400,
        measuredMtu: 1400,
        ok: true,
        detail: 'full MTU passes',
      },
    ]);
    expect(v.routers).toEqual([]);
    expect(r.code).toBe(0);
    const text = await runCli(['verify'], env);
    expect(text.stdout).toMatch(/natnet\s+web1\s+web2\s+1400\s+1400\s+ok/);
  });

  it('measures iperf3 throughput guest -> guest, guest -> peer and peer -> host', async () => {
    const spec = loadSpec(SPEC);
    const runner = new SystemRunner();
    for (const [from, to] of [
      ['web1', 'web2'],
      ['web2', 'pc1'],
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
