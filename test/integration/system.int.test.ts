// End to end, through the real CLI: controller, lab namespaces, agents, QEMU guests, NAT/bridge/isolated networks.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostStatus, VmView } from '../../src/controller/controller.js';
import type { MatrixCell, VerifyResult } from '../../src/controller/verify.js';
import { DEFAULT_VM_ID_CLAIMS_DIR } from '../../src/drivers/hypervisor/qemu/identity.js';
import { waitFor } from '../../src/shared/time.js';
import { tapName } from '../../src/spec/net.js';
import { cliJson, runCli, startCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'it';
const SPEC = `
version: 1
hosts:
  - { name: host1 }
networks:
  - name: natnet
    host: host1
    mode: nat
    cidr: 10.61.0.0/24
    forwards: [{ hostPort: 8080, vm: web1, vmPort: 80 }]
  - { name: lan, host: host1, mode: bridge }
  - { name: iso, host: host1, mode: isolated, cidr: 10.62.0.0/24 }
vms:
  - { name: web1, host: host1, memoryMiB: 192, disks: [{ name: data, sizeMiB: 8 }], nics: [{ network: natnet, ip: 10.61.0.10 }] }
  - { name: app1, host: host1, memoryMiB: 192, nics: [{ network: lan }] }
  - { name: iso1, host: host1, memoryMiB: 192, nics: [{ network: iso }] }
lab:
  name: ${LAB}
  lan: { cidr: 192.168.61.0/24, gateway: 192.168.61.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.61 }
  hosts: [{ name: host1, address: 192.168.61.10 }]
  peers: [{ name: pc1, address: 192.168.61.20 }]
`;

const root = mkdtempSync('/tmp/vmlink-it-');
// QEMU runs as vmlink-qemu and must reach its VM directory below this one.
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const specFile = join(root, 'spec.yaml');
let release: (() => Promise<void>) | undefined;

const namespaces = () =>
  execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(`vl-${LAB}-`));
/** Processes named `comm` whose command line mentions `dir`. */
const procsUnder = (dir: string, comm: string) =>
  readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return (
          readFileSync(`/proc/${p}/comm`, 'utf8').trim() === comm &&
          readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(dir)
        );
      } catch {
        return false;
      }
    });

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(specFile, SPEC);
  release = await acquireVmLock();
  const d = await runCli(['daemon', '--detach'], env);
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', specFile], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
});

afterAll(async () => {
  await runCli(['lab', 'down', '-f', specFile], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

describe('one host with nat, bridge and isolated networks', () => {
  it('applies the spec and prints the plan', async () => {
    const r = await runCli(['apply', '-f', specFile], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('+ network natnet');
    expect(r.stdout).toMatch(/Apply complete: \d+ step/);
  });

  it('reports no changes on a second apply', async () => {
    const plan = await runCli(['plan', '-f', specFile], env);
    expect(plan.stdout.trim()).toBe('No changes. Infrastructure matches the spec.');
    const r = await runCli(['apply', '-f', specFile], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n').pop()).toBe('no changes');
  });

  let matrix: VerifyResult;
  const cellOf = (from: string, to: string, kind: MatrixCell['kind'] = 'ping') =>
    matrix.cells.find(
      (c) => c.from === from && c.kind === kind && (kind === 'ping' ? c.to === to : c.to.includes(to)),
    )!;

  it('verifies the whole matrix green', async () => {
    const r = await runCli(['verify', '--json'], env);
    matrix = JSON.parse(r.stdout) as VerifyResult;
    const bad = matrix.cells.filter((c) => !c.ok);
    expect(bad, JSON.stringify(bad, null, 1)).toEqual([]);
    expect(r.code).toBe(0);
  });

  it('NAT egress: the nat VM reaches the upstream and the LAN peer', () => {
    expect(cellOf('web1', 'upstream')).toMatchObject({ expected: true, observed: true });
    expect(cellOf('web1', 'pc1')).toMatchObject({ observed: true });
    expect(cellOf('web1', 'upstream').rttMs).toBeGreaterThan(0);
    expect(cellOf('pc1', 'web1')).toMatchObject({ expected: false, observed: false });
  });

  it('port forward: the LAN peer reaches web1 through host1:8080, the upstream does not', () => {
    expect(cellOf('pc1', ':8080', 'forward')).toMatchObject({ observed: true, detail: 'vmlink-guest web1' });
    expect(cellOf('upstream', ':8080', 'forward')).toMatchObject({ expected: false, observed: false });
  });

  it('bridged: the LAN peer and the bridged VM reach each other directly', () => {
    expect(cellOf('pc1', 'app1')).toMatchObject({ observed: true });
    expect(cellOf('app1', 'pc1')).toMatchObject({ observed: true });
    const app1 = matrix.endpoints.find((e) => e.id === 'app1')!;
    expect(app1.address).toMatch(/^192\.168\.61\./);
  });

  it('isolated: nothing off the isolated network reaches in or out, but the host reaches in', () => {
    expect(cellOf('host1', 'iso1')).toMatchObject({ observed: true });
    for (const to of ['host1', 'pc1', 'upstream', 'web1', 'app1'])
      expect(cellOf('iso1', to), to).toMatchObject({ observed: false });
    for (const from of ['pc1', 'web1', 'app1'])
      expect(cellOf(from, 'iso1'), from).toMatchObject({ observed: false });
  });

  it('runs commands in a guest through the guest agent', async () => {
    const r = await runCli(['vm', 'exec', 'web1', '--', 'hostname'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('web1');
  });

  it('lists each NIC of each VM with its tap and the addresses the guest reports', async () => {
    // Read-only commands of a test: asked at once (each CLI call is a process start of its own).
    const [vms, table] = await Promise.all([
      cliJson<VmView[]>(['vm', 'list'], env),
      runCli(['vm', 'list'], env),
    ]);
    const nic = (vm: string) => vms.find((v) => v.name === vm)?.nics[0];
    expect(nic('web1')).toMatchObject({
      network: 'natnet',
      tap: tapName('web1', 0),
      addresses: ['10.61.0.10/24'],
      addressSource: 'guest-agent',
    });
    expect(nic('iso1')?.addresses[0]).toMatch(/^10\.62\.0\.\d+\/24$/);
    expect(nic('app1')?.addresses[0]).toMatch(/^192\.168\.61\.\d+\/24$/);
    expect(table.stdout).toMatch(/web1 .* 10\.61\.0\.10\/24 \(natnet\)/);
  });

  it('status and vm list show the host, its accelerator and every VM running', async () => {
    const [st, list, vms] = await Promise.all([
      runCli(['status'], env),
      runCli(['vm', 'list'], env),
      cliJson<VmView[]>(['vm', 'list'], env),
    ]);
    expect(st.code, st.stderr).toBe(0);
    expect(st.stdout).toMatch(/^Spec: .*spec\.yaml \(applied /);
    expect(st.stdout).toMatch(/^host1\s+up\s+.*\b(kvm|tcg)\b/m);
    expect(list.code, list.stderr).toBe(0);
    for (const [vm, net] of [
      ['web1', 'natnet'],
      ['app1', 'lan'],
      ['iso1', 'iso'],
    ])
      expect(list.stdout).toMatch(
        new RegExp(`^${vm}\\s+host1\\s+running\\s+running\\s+1\\s+192 MiB\\s+${net}`, 'm'),
      );
    expect(vms.map((v) => [v.name, v.state, v.desired]).sort()).toEqual([
      ['app1', 'running', 'running'],
      ['iso1', 'running', 'running'],
      ['web1', 'running', 'running'],
    ]);
  });

  it('vm console prints the serial log; --follow keeps printing what the guest writes', async () => {
    const c = await runCli(['vm', 'console', 'web1', '--log'], env);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toContain('vmlink-guest ready');
    // The marker is computed in the guest, so only output that reached the console after we started can hold it.
    // --follow printed the log's tail first: it is attached, and follows from there.
    const follow = startCli(['vm', 'console', 'web1', '--log', '--follow', '--tail', '200'], env, 60_000);
    try {
      await waitFor(async () => follow.out().includes('vmlink-guest ready') || undefined, {
        timeoutMs: 30_000,
        intervalMs: 100,
        message: 'vm console --follow printed no tail (no "vmlink-guest ready")',
      });
      const w = await runCli(
        ['vm', 'exec', 'web1', '--', 'sh', '-c', 'echo follow-$((6*7)) > /dev/console'],
        env,
      );
      expect(w.code, w.stderr).toBe(0);
      await waitFor(async () => follow.out().includes('follow-42') || undefined, {
        timeoutMs: 10_000,
        intervalMs: 100,
        message: 'vm console --follow did not print the marker follow-42',
      });
    } finally {
      await follow.stop();
    }
  });

  it('network list and network show name every network and its host state', async () => {
    const [list, show, flows, missing] = await Promise.all([
      runCli(['network', 'list'], env),
      runCli(['network', 'show', 'natnet'], env),
      runCli(['network', 'show', 'natnet', '--flows'], env),
      runCli(['network', 'show', 'nosuch'], env),
    ]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^natnet\s+nat\s+linux\s+host1$/m);
    expect(list.stdout).toMatch(/^lan\s+bridge\s+linux\s+host1$/m);
    expect(list.stdout).toMatch(/^iso\s+isolated\s+linux\s+host1$/m);
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toMatch(/^natnet: nat network, backend linux/);
    expect(show.stdout).toMatch(/^host1\s+vlb-natnet\s+\S+ \(web1\)\s+ok$/m);
    // A kernel bridge has no OpenFlow rules: --flows says so instead of inventing them.
    expect(flows.stdout + flows.stderr).toMatch(/no OpenFlow rules/);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/nosuch/);
  });

  it('verify --throughput measures iperf3 between a bridged VM and the LAN peer', async () => {
    const r = await runCli(['verify', '--throughput', 'app1', 'pc1', '--seconds', '1'], env);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const row = /^app1\s+pc1\s+([\d.]+)\s/m.exec(r.stdout);
    expect(row, r.stdout).not.toBeNull();
    expect(Number(row![1])).toBeGreaterThan(0);
    const bad = await runCli(['verify', '--throughput', 'app1'], env);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/two endpoints/);
  });

  it('doctor checks the prerequisites and the host through the controller', async () => {
    const [text, { checks, diagnoses }] = await Promise.all([
      runCli(['doctor'], env),
      cliJson<{
        checks: Array<{ name: string; ok: boolean; detail: string }>;
        diagnoses: unknown[];
      }>(['doctor'], env),
    ]);
    expect(text.code, text.stderr + text.stdout).toBe(0);
    expect(text.stdout).toMatch(/^controller\s+ok\s+running/m);
    expect(checks.filter((c) => !c.ok)).toEqual([]);
    expect(diagnoses).toEqual([]);
    // The host's prerequisites are checked by its agent (in its namespace) and reported through the controller.
    for (const name of ['controller', 'host host1', 'host host1 kernel', 'host host1 prerequisites'])
      expect(
        checks.find((c) => c.name === name),
        name,
      ).toMatchObject({ ok: true });
    expect(checks.find((c) => c.name === 'host host1')!.detail).toMatch(/accelerator (kvm|tcg): /);
  });

  it('events lists the lab, the applies and the verifies, newest first', async () => {
    const [r, events] = await Promise.all([
      runCli(['events'], env),
      cliJson<Array<{ id: number; kind: string }>>(['events', '-n', '3'], env),
    ]);
    expect(r.code, r.stderr).toBe(0);
    for (const kind of ['lab.up', 'apply', 'verify', 'verify.throughput'])
      expect(r.stdout).toMatch(new RegExp(`\\s${kind.replace('.', '\\.')}\\s`));
    expect(events).toHaveLength(3);
  });

  it('refuses a bad spec with the path of each problem and changes nothing', async () => {
    const bad = join(root, 'bad.yaml');
    writeFileSync(
      bad,
      SPEC.replace('cidr: 10.62.0.0/24', 'cidr: 10.62.0.0/33').replace('name: app1', 'name: "app1;reboot"'),
    );
    const r = await runCli(['apply', '-f', bad], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('networks[2].cidr');
    expect(r.stderr).toContain('vms[1].name');
    writeFileSync(bad, SPEC.replace('ip: 10.61.0.10', 'ip: 10.99.0.10'));
    const r2 = await runCli(['apply', '-f', bad], env);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain('vms[0].nics[0].ip');
    const plan = await runCli(['plan', '-f', specFile], env);
    expect(plan.stdout.trim()).toBe('No changes. Infrastructure matches the spec.');
  });

  it('re-adopts running VMs when the agent is killed with SIGKILL and restarted', async () => {
    const before = await cliJson<{ hosts: HostStatus[] }>(['status'], env);
    const pids = Object.fromEntries(before.hosts[0]!.report!.vms.map((v) => [v.name, v.pid]));
    expect(Object.keys(pids).sort()).toEqual(['app1', 'iso1', 'web1']);
    const agentPid = Number(readFileSync(join(env.VMLINK_RUN_DIR, 'lab', LAB, 'host1.agent.pid'), 'utf8'));
    process.kill(agentPid, 'SIGKILL');
    const up = await runCli(['lab', 'up', '-f', specFile], env);
    expect(up.code, up.stderr).toBe(0);
    // Asked live: the controller's kept report from before the kill would show the same pids whatever the agent did.
    const after = await cliJson<{ hosts: HostStatus[] }>(['status', '--live'], env);
    expect(after.hosts[0]!.reportAgeMs).toBe(0);
    for (const v of after.hosts[0]!.report!.vms) {
      expect(v.state).toBe('running');
      expect(v.pid).toBe(pids[v.name]);
    }
    const plan = await runCli(['plan', '-f', specFile], env);
    expect(plan.stdout.trim()).toBe('No changes. Infrastructure matches the spec.');
  });

  it('vm stop stops a VM; the next apply starts it again', async () => {
    const stop = await runCli(['vm', 'stop', 'app1'], env);
    expect(stop.code, stop.stderr).toBe(0);
    expect(stop.stdout.trim()).toBe('app1 stopped');
    const vms = await cliJson<VmView[]>(['vm', 'list'], env);
    expect(vms.find((v) => v.name === 'app1')).toMatchObject({ state: 'stopped', desired: 'running' });
    const plan = await runCli(['plan', '-f', specFile], env);
    expect(plan.stdout).toMatch(/vm app1 start on host1/);
    const r = await runCli(['apply', '-f', specFile], env);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const after = await cliJson<VmView[]>(['vm', 'list'], env);
    expect(after.find((v) => v.name === 'app1')).toMatchObject({ state: 'running' });
    const again = await runCli(['plan', '-f', specFile], env);
    expect(again.stdout.trim()).toBe('No changes. Infrastructure matches the spec.');
  });

  it('changes a VM in place: its disk keeps its data across the reconfiguration', async () => {
    const write = await runCli(
      ['vm', 'exec', 'web1', '--', 'sh', '-c', 'echo keep-me > /dev/vda && sync'],
      env,
    );
    expect(write.code, write.stderr).toBe(0);
    const memTotalKiB = async () => {
      const mem = await runCli(['vm', 'exec', 'web1', '--', 'cat', '/proc/meminfo'], env);
      expect(mem.code, mem.stderr).toBe(0);
      return Number(/MemTotal:\s+(\d+) kB/.exec(mem.stdout)?.[1]);
    };
    const before = await memTotalKiB();
    const bigger = join(root, 'bigger.yaml');
    writeFileSync(
      bigger,
      SPEC.replace('name: web1, host: host1, memoryMiB: 192', 'name: web1, host: host1, memoryMiB: 288'),
    );
    const plan = await runCli(['plan', '-f', bigger], env);
    expect(plan.stdout).toContain('~ vm web1 on host1: memoryMiB 192 -> 288 (restart)');
    expect(plan.stdout).not.toContain('- vm web1');
    const r = await runCli(['apply', '-f', bigger], env);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    let read = { code: 1, stdout: '', stderr: '' };
    for (let i = 0; i < 120 && read.code !== 0; i++) {
      read = await runCli(['vm', 'exec', 'web1', '--', 'head', '-c', '7', '/dev/vda'], env);
      if (read.code !== 0) await new Promise((res) => setTimeout(res, 250));
    }
    expect(read.stdout).toBe('keep-me');
    // The guest sees the new size: MemTotal grows by the 96 MiB added (less what the kernel keeps for page
    // structures of the new memory), and stays below the new size.
    const after = await memTotalKiB();
    console.log(`[it] web1 MemTotal ${before} kB at 192 MiB, ${after} kB at 288 MiB`);
    expect(after - before).toBeGreaterThan(96 * 1024 * 0.9);
    expect(after - before).toBeLessThanOrEqual(96 * 1024);
    expect(after).toBeLessThan(288 * 1024);
    const vms = await cliJson<VmView[]>(['vm', 'list'], env);
    expect(vms.find((v) => v.name === 'web1')).toMatchObject({ memoryMiB: 288, state: 'running' });
  });

  it('hot-plugs a NIC into a running VM and unplugs it again, without restarting QEMU', async () => {
    const pidOf = async (vm: string) =>
      (await cliJson<{ hosts: HostStatus[] }>(['status'], env)).hosts[0]!.report!.vms.find(
        (v) => v.name === vm,
      )?.pid;
    const pid = await pidOf('app1');
    expect(pid).toBeGreaterThan(1);
    const twoNics = join(root, 'two-nics.yaml');
    writeFileSync(
      twoNics,
      SPEC.replace('nics: [{ network: lan }]', 'nics: [{ network: lan }, { network: iso }]'),
    );
    const plan = await runCli(['plan', '-f', twoNics], env);
    expect(plan.stdout).toContain('~ vm app1 on host1: nics +iso (hot-plug)');
    expect(plan.stdout).not.toContain('< vm app1');
    const r = await runCli(['apply', '-f', twoNics], env);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(await pidOf('app1')).toBe(pid);
    // The guest configures the new NIC by DHCP from the isolated network's dnsmasq.
    let addrs = '';
    for (let i = 0; i < 120 && !/inet 10\.62\.0\.\d+\/24/.test(addrs); i++) {
      if (i) await new Promise((res) => setTimeout(res, 250));
      addrs = (await runCli(['vm', 'exec', 'app1', '--', 'ip', 'addr', 'show', 'dev', 'eth1'], env)).stdout;
    }
    expect(addrs).toMatch(/inet 10\.62\.0\.\d+\/24/);
    expect((await runCli(['plan', '-f', twoNics], env)).stdout.trim()).toBe(
      'No changes. Infrastructure matches the spec.',
    );

    const back = await runCli(['apply', '-f', specFile], env);
    expect(back.code, back.stderr + back.stdout).toBe(0);
    expect(back.stdout).toContain('~ vm app1 on host1: nics -iso (hot-unplug)');
    expect(await pidOf('app1')).toBe(pid);
    const links = await runCli(['vm', 'exec', 'app1', '--', 'ls', '/sys/class/net'], env);
    expect(links.stdout.split(/\s+/).filter(Boolean).sort()).toEqual(['eth0', 'lo']);
  });

  it('lab down stops the VMs that still run, gives back their ids and leaves nothing behind', async () => {
    // The quickstart's cleanup: no destroy first. Each QEMU runs in a network namespace of its own, so lab down
    // must find it by its VM's uid, not among the lab namespaces' processes.
    const labState = join(env.VMLINK_STATE_DIR, 'lab', LAB, 'host1');
    expect(procsUnder(labState, 'qemu-system-x86').length).toBeGreaterThan(0);
    const claimsOfLab = () =>
      existsSync(DEFAULT_VM_ID_CLAIMS_DIR)
        ? readdirSync(DEFAULT_VM_ID_CLAIMS_DIR).filter((f) =>
            readFileSync(join(DEFAULT_VM_ID_CLAIMS_DIR, f), 'utf8').includes(labState),
          )
        : [];
    expect(claimsOfLab().length).toBeGreaterThan(0);
    const down = await runCli(['lab', 'down', '-f', specFile], env);
    expect(down.code, down.stderr).toBe(0);
    expect(claimsOfLab()).toEqual([]);
    expect(namespaces()).toEqual([]);
    for (const comm of ['qemu-system-x86', 'dnsmasq']) expect(procsUnder(root, comm), comm).toEqual([]);
    expect(procsUnder(root, 'node').length, 'only the controller is left').toBeLessThanOrEqual(1);
    expect(existsSync(join(env.VMLINK_STATE_DIR, 'lab', LAB))).toBe(false);
    expect(existsSync(join(env.VMLINK_RUN_DIR, 'lab', LAB))).toBe(false);
  });
});

// `vmlink <command> --help` for every command of the tree: src/cli/help-tree.test.ts (in one process: here, a process
// per command took over a minute), and bin/vmlink.js printing help as a process of its own: src/main.test.ts.
