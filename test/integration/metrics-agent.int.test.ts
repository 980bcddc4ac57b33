// An agent's metric sample (`GET /v1/metrics`, docs/observability.md) against a real lab: two hosts started by
// `vmlink lab up` (so each reports its own processes), one test guest on host1 with a data disk and a NIC on an
// isolated network. The guest burns CPU, writes its disk and takes traffic; its counters and host1's move with it,
// host2's do not. Samples are read from each agent's own socket with the controller's client (AgentClient.metrics).
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/controller/agents.js';
import { machineNs } from '../../src/lab/names.js';
import { type AgentMetrics, AgentMetricsSchema } from '../../src/shared/metrics.js';
import { pollUntil, waitFor } from '../../src/shared/time.js';
import { trustAgentsAsController } from '../helpers/agent-trust.js';
import { runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'itmag';
const GUEST_IP = '10.114.0.10';
const GATEWAY = '10.114.0.1';
const SPEC = `
version: 1
hosts: [{ name: host1 }, { name: host2 }]
networks:
  - { name: mnet, host: host1, mode: isolated, cidr: 10.114.0.0/24 }
vms:
  - name: m1
    host: host1
    memoryMiB: 160
    disks: [{ name: data, sizeMiB: 16 }]
    nics: [{ network: mnet, ip: ${GUEST_IP} }]
lab:
  name: ${LAB}
  lan: { cidr: 192.168.114.0/24, gateway: 192.168.114.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.114 }
  hosts: [{ name: host1, address: 192.168.114.10 }, { name: host2, address: 192.168.114.11 }]
`;

const root = mkdtempSync('/tmp/vmlink-itmag-');
// QEMU runs under its own uid and must reach its VM directory below this one.
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const file = join(root, 'spec.yaml');
let release: (() => Promise<void>) | undefined;

// Each lab agent's own local socket (no TLS): what `lab up` checks health on.
const agent = (host: string) =>
  new AgentClient(host, `unix://${join(env.VMLINK_RUN_DIR, 'lab', LAB, `${host}.agent.sock`)}`);
const host1 = agent('host1');
const host2 = agent('host2');

/** Runs a shell line in the guest; fails the test when it fails. */
async function guest(line: string, timeoutMs = 60_000): Promise<string> {
  const r = await host1.exec('m1', ['sh', '-c', line], timeoutMs);
  expect(r.exitCode, r.stderr).toBe(0);
  return r.stdout;
}

const vmOf = (s: AgentMetrics) => s.vms.find((v) => v.name === 'm1')!;

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(file, SPEC);
  release = await acquireVmLock();
  const d = await runCli(['daemon', '--detach'], env);
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  const a = await runCli(['apply', '-f', file], env);
  expect(a.code, a.stderr + a.stdout).toBe(0);
  // The guest answers once its agent is up (TCG boot).
  const ready = await pollUntil(
    async () =>
      (await host1.exec('m1', ['true'], 5_000).then(
        (r) => r.exitCode === 0,
        () => false,
      )) || undefined,
    { timeoutMs: 120_000, intervalMs: 1_000 },
  );
  expect(ready).toBe(true);
}, 300_000);

afterAll(async () => {
  await runCli(['lab', 'down', '-f', file], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

describe("a lab host's metric sample", () => {
  it("reports the host's own processes, its VM, disk, NIC, network and filesystems, as the contract says", async () => {
    const t0 = performance.now();
    const s = await host1.metrics();
    console.info(
      `one sample of host1 (1 VM): ${(performance.now() - t0).toFixed(0)} ms, ${JSON.stringify(s).length} bytes`,
    );
    expect(AgentMetricsSchema.parse(s)).toEqual(s);
    expect(s.host).toBe('host1');
    expect(s.hostMetrics.scope).toBe('processes');
    expect(s.hostMetrics.cpus).toBeGreaterThanOrEqual(1);
    // The lab host's own processes use a part of the machine's memory (agent, dnsmasq, QEMU), never all of it.
    expect(s.hostMetrics.memoryUsedBytes).toBeGreaterThan(0);
    expect(s.hostMetrics.memoryUsedBytes).toBeLessThan(s.hostMetrics.memoryTotalBytes);
    expect(s.hostMetrics.filesystems.map((f) => f.path)).toContain(
      join(env.VMLINK_STATE_DIR, 'lab', LAB, 'host1'),
    );
    expect(s.hostMetrics.interfaces.map((i) => i.name)).toContain('eth0');
    expect(s.hostMetrics.interfaces.map((i) => i.name)).not.toContain('lo');
    const vm = vmOf(s);
    expect(vm).toMatchObject({ running: true, memoryConfiguredBytes: 160 * 1024 * 1024 });
    expect(vm.cpuSecondsTotal).toBeGreaterThan(0);
    expect(vm.memoryRssBytes).toBeGreaterThan(16 * 1024 * 1024);
    expect(vm.disks.map((d) => d.disk)).toEqual(['data']);
    expect(vm.nics).toEqual([expect.objectContaining({ nic: 'nic0' })]);
    expect(s.networks).toEqual([expect.objectContaining({ network: 'mnet' })]);
    // Its QEMU is one of the host's processes.
    expect(s.hostMetrics.cpuSecondsTotal).toBeGreaterThanOrEqual(vm.cpuSecondsTotal);
    const other = await host2.metrics();
    expect(other.vms).toEqual([]);
    expect(other.hostMetrics.scope).toBe('processes');
  });

  it("answers the controller's path too: the lab relay, across the LAN, to the agent's mutual-TLS listener", async () => {
    const untrust = await trustAgentsAsController(env.VMLINK_STATE_DIR);
    try {
      const relay = `https+unix://${join(env.VMLINK_RUN_DIR, 'lab', LAB, 'host2.sock')}`;
      const s = await new AgentClient('host2', relay).metrics();
      expect(s).toMatchObject({ host: 'host2', hostMetrics: { scope: 'processes' } });
      expect(s.hostMetrics.interfaces.map((i) => i.name)).toContain('eth0');
    } finally {
      untrust();
    }
  });

  it("a guest burning CPU moves its VM's and its host's CPU seconds, not the other host's", async () => {
    const [a1, a2] = await Promise.all([host1.metrics(), host2.metrics()]);
    await guest('end=$(($(date +%s) + 5)); while [ "$(date +%s)" -lt "$end" ]; do :; done');
    const [b1, b2] = await Promise.all([host1.metrics(), host2.metrics()]);
    const vmDelta = vmOf(b1).cpuSecondsTotal - vmOf(a1).cpuSecondsTotal;
    const host1Delta = b1.hostMetrics.cpuSecondsTotal - a1.hostMetrics.cpuSecondsTotal;
    const host2Delta = b2.hostMetrics.cpuSecondsTotal - a2.hostMetrics.cpuSecondsTotal;
    console.info(
      `CPU seconds over a 5 s burn: VM ${vmDelta.toFixed(2)}, host1 ${host1Delta.toFixed(2)}, host2 ${host2Delta.toFixed(2)}`,
    );
    // A busy TCG vCPU keeps its QEMU near one CPU for the 5 s (less on a loaded machine).
    expect(vmDelta).toBeGreaterThan(1.5);
    expect(host1Delta).toBeGreaterThanOrEqual(vmDelta);
    expect(host2Delta).toBeLessThan(vmDelta / 4);
  });

  it("a write in the guest moves its disk's write counters", async () => {
    const a = vmOf(await host1.metrics()).disks[0]!;
    // The test guest boots from its initramfs: the data disk is its only virtio disk.
    await guest(
      'd=$(ls /sys/block | grep ^vd | head -1); dd if=/dev/zero of=/dev/$d bs=65536 count=64 oflag=direct conv=fsync 2>&1',
    );
    const b = vmOf(await host1.metrics()).disks[0]!;
    expect(b.writeBytes - a.writeBytes).toBeGreaterThanOrEqual(64 * 65536);
    expect(b.writeOps - a.writeOps).toBeGreaterThanOrEqual(64);
    expect(b.readBytes).toBeGreaterThanOrEqual(a.readBytes);
  });

  it("NIC counters are the guest's view: what the host sends it is its rx; the network's bridge counts too", async () => {
    const a = await host1.metrics();
    // Pings both ways, then 40 datagrams of 1400 bytes from host1 to a closed port of the guest (it answers a few
    // ICMP errors at most: its kernel rate-limits them), so the guest receives far more than it sends.
    await guest(`ping -c 3 -i 0.2 -s 1000 ${GATEWAY}`);
    const send = `const s = require('dgram').createSocket('udp4'); const b = Buffer.alloc(1400);
      let n = 0; const go = () => s.send(b, 9, '${GUEST_IP}', () => (++n < 40 ? go() : s.close())); go();`;
    execFileSync('ip', ['netns', 'exec', machineNs(LAB, 'host1'), process.execPath, '-e', send]);
    const b = await waitFor(
      async () => {
        const s = await host1.metrics();
        const nic = vmOf(s).nics[0]!;
        return nic.rxBytes - vmOf(a).nics[0]!.rxBytes >= 40 * 1400 ? s : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 200, message: "the guest's NIC never counted the datagrams" },
    );
    const [na, nb] = [vmOf(a).nics[0]!, vmOf(b).nics[0]!];
    const rx = nb.rxBytes - na.rxBytes;
    const tx = nb.txBytes - na.txBytes;
    console.info(
      `guest NIC: rx +${rx} B, tx +${tx} B; bridge rx +${b.networks[0]!.rxBytes - a.networks[0]!.rxBytes} B`,
    );
    expect(tx).toBeGreaterThanOrEqual(3 * 1000);
    expect(rx).toBeGreaterThan(2 * tx);
    expect(nb.rxPackets - na.rxPackets).toBeGreaterThanOrEqual(43);
    // The bridge carried the guest's pings to the host.
    const [ba, bb] = [a.networks[0]!, b.networks[0]!];
    expect(bb.rxBytes - ba.rxBytes).toBeGreaterThanOrEqual(3 * 1000);
  });

  it("a stopped VM reports not running; its QEMU's CPU seconds stay in its host's counter", async () => {
    const a = await host1.metrics();
    const r = await runCli(['vm', 'stop', 'm1', '--force'], env);
    expect(r.code, r.stderr).toBe(0);
    const b = await host1.metrics();
    expect(vmOf(b)).toMatchObject({ running: false, cpuSecondsTotal: 0, memoryRssBytes: 0, disks: [] });
    expect(b.hostMetrics.cpuSecondsTotal).toBeGreaterThanOrEqual(a.hostMetrics.cpuSecondsTotal);
    expect(b.hostMetrics.memoryUsedBytes).toBeLessThan(
      a.hostMetrics.memoryUsedBytes - vmOf(a).memoryRssBytes / 2,
    );
  });
});
