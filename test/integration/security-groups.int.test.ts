// Security groups end to end (issue 9), Tempest's scenarios with real guests: one lab host, a LAN peer, three guests
// bridged onto the lab LAN. `vmlink apply` realises the groups; probes from the peer and from guests (HTTP GET, ping,
// a held TCP stream) check: blocked without a rule, allowed with one, one direction only, a remote-group rule, two
// groups on one port, and a rule change applied in place — no VM restarted, an established flow of an unchanged group
// kept, and the next plan empty; likewise a running VM's NIC joining a group.
//
// Runs once the linux backend realises groups (`LinuxNetworkDriver.ensureSecurityGroup`); until then it is skipped.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LinuxNetworkDriver } from '../../src/drivers/network/linux/driver.js';
import { NO_CHANGES } from '../../src/plan/format.js';
import { runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'itsg';
const PC1 = '192.168.89.20';
const IP = { a: '192.168.89.50', b: '192.168.89.51', c: '192.168.89.52' };

// a: web; b: db (port 5432 from web members only); c: web and ping (two groups on one port).
const spec = (webRules: string, bGroups = 'db') => `
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: lan, host: host1, mode: bridge }
securityGroups:
  - name: web
    rules: ${webRules}
  - name: db
    rules: [{ protocol: tcp, ports: [5432], group: web }]
  - name: ping
    rules: [{ protocol: icmp }]
vms:
  - { name: a, host: host1, memoryMiB: 160, nics: [{ network: lan, ip: ${IP.a}, securityGroups: [web] }] }
  - { name: b, host: host1, memoryMiB: 160, nics: [{ network: lan, ip: ${IP.b}, securityGroups: [${bGroups}] }] }
  - { name: c, host: host1, memoryMiB: 160, nics: [{ network: lan, ip: ${IP.c}, securityGroups: [web, ping] }] }
lab:
  name: ${LAB}
  lan: { cidr: 192.168.89.0/24, gateway: 192.168.89.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.89 }
  hosts: [{ name: host1, address: 192.168.89.10 }]
  peers: [{ name: pc1, address: ${PC1} }]
`;
const WEB_HTTP = '[{ protocol: tcp, ports: [80], cidr: 192.168.89.0/24 }]';
const WEB_HTTP_ICMP =
  '[{ protocol: tcp, ports: [80], cidr: 192.168.89.0/24 }, { protocol: icmp, cidr: 192.168.89.20/32 }]';

// Made in beforeAll: a skipped file leaves nothing behind.
let root = '';
const env = { VMLINK_RUN_DIR: '', VMLINK_STATE_DIR: '', VMLINK_SOCKET: '' };
let file = '';
let release: (() => Promise<void>) | undefined;

const sh = (vm: string, line: string) => runCli(['vm', 'exec', vm, '--', 'sh', '-c', line], env);

/** Whether `vm` opens a TCP connection to `ip`:`port` (busybox nc exits 1 when refused or timed out). */
const tcpFrom = async (vm: string, ip: string, port: number) =>
  (await sh(vm, `nc -w 3 ${ip} ${port} </dev/null >/dev/null 2>&1; echo rc=$?`)).stdout.includes('rc=0');
const pingFrom = async (vm: string, ip: string) =>
  (await sh(vm, `ping -c1 -W2 ${ip} >/dev/null; echo rc=$?`)).stdout.includes('rc=0');

/** Runs a command in the peer's namespace; true when it exits 0. */
function peer(argv: string[]): boolean {
  try {
    execFileSync('ip', ['netns', 'exec', `vl-${LAB}-pc1`, ...argv], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}
const peerPing = (ip: string) => peer(['ping', '-c1', '-W2', ip]);
const peerTcp = (ip: string, port: number) =>
  peer(['python3', '-c', `import socket; socket.create_connection(('${ip}', ${port}), timeout=3).close()`]);

/** QEMU pids of the VMs, from `vmlink status --json`. */
async function pids(): Promise<Record<string, number | undefined>> {
  const r = await runCli(['status', '--json'], env);
  const view = JSON.parse(r.stdout) as {
    hosts: Array<{ report?: { vms: Array<{ name: string; pid?: number }> } }>;
  };
  return Object.fromEntries(view.hosts.flatMap((h) => h.report?.vms ?? []).map((v) => [v.name, v.pid]));
}

/** Polls `check` every second until it holds (or fails after `ms`). */
async function until(check: () => Promise<boolean> | boolean, ms = 180_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const realised = 'ensureSecurityGroup' in LinuxNetworkDriver.prototype;

describe.skipIf(!realised)('security groups on real guests', () => {
  beforeAll(async () => {
    root = mkdtempSync('/tmp/vmlink-itsg-');
    chmodSync(root, 0o755);
    Object.assign(env, {
      VMLINK_RUN_DIR: join(root, 'run'),
      VMLINK_STATE_DIR: join(root, 'state'),
      VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
    });
    file = join(root, 'spec.yaml');
    mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
    writeFileSync(file, spec(WEB_HTTP));
    release = await acquireVmLock();
    expect((await runCli(['daemon', '--detach'], env)).code).toBe(0);
    const up = await runCli(['lab', 'up', '-f', file], env);
    expect(up.code, up.stderr + up.stdout).toBe(0);
    const apply = await runCli(['apply', '-f', file], env);
    expect(apply.code, apply.stderr + apply.stdout).toBe(0);
    // Every guest is up with its fixed address: outbound is open and replies to what a guest starts pass.
    for (const vm of ['a', 'b', 'c']) await until(async () => pingFrom(vm, PC1));
    // b listens on 5432 (HTTP, so the same probe works).
    await sh('b', 'httpd -p 5432 -h /www </dev/null >/dev/null 2>&1');
  }, 600_000);

  afterAll(async () => {
    await runCli(['destroy', '-f', file], env).catch(() => {});
    await runCli(['lab', 'down', '-f', file], env).catch(() => {});
    await runCli(['daemon', '--stop'], env).catch(() => {});
    if (root) rmSync(root, { recursive: true, force: true });
    await release?.();
  });

  it('blocks inbound traffic no rule allows', async () => {
    expect(peerPing(IP.a), 'ping a: web has no icmp rule').toBe(false);
    expect(peerTcp(IP.b, 80), 'b:80: db allows 5432 only').toBe(false);
    expect(peerTcp(IP.a, 22), 'a:22: no rule').toBe(false);
  });

  it('allows what a rule names', async () => {
    expect(peerTcp(IP.a, 80)).toBe(true);
    expect(peerTcp(IP.c, 80)).toBe(true);
  });

  it('a rule opens one direction only: a reaches the peer, the peer does not reach a', async () => {
    expect(await pingFrom('a', PC1)).toBe(true);
    expect(peerPing(IP.a)).toBe(false);
  });

  it('a remote-group rule admits members of that group and no one else', async () => {
    expect(await tcpFrom('a', IP.b, 5432), 'a is in web').toBe(true);
    expect(await tcpFrom('c', IP.b, 5432), 'c is in web').toBe(true);
    expect(peerTcp(IP.b, 5432), 'the peer is no member').toBe(false);
  });

  it('two groups on one port allow the union of their rules', async () => {
    expect(peerPing(IP.c), 'ping group').toBe(true);
    expect(peerTcp(IP.c, 80), 'web group').toBe(true);
    expect(peerPing(IP.a), 'a has web only').toBe(false);
  });

  it('a rule change is applied in place: no VM restarts, a held flow of an unchanged group keeps flowing', async () => {
    // A stream a -> b:5432 (db's rule, unchanged below): b counts the lines it receives.
    // Both ends in the background, away from exec's pipes; busybox nc ends the connection at EOF on its stdin, so
    // the listener reads a stdin that never ends.
    await sh(
      'b',
      'killall httpd; (sleep 100000 | nc -l -p 5432 >/tmp/rx 2>/dev/null &) </dev/null >/dev/null 2>&1; sleep 1',
    );
    await sh(
      'a',
      `((while true; do echo x; sleep 0.2; done) | nc ${IP.b} 5432 >/dev/null 2>&1 &) </dev/null >/dev/null 2>&1; sleep 1`,
    );
    const lines = async () => Number((await sh('b', 'wc -l < /tmp/rx')).stdout.trim());
    // Flowing before the change, so that flowing after it means the change left it alone.
    await until(async () => (await lines()) > 0, 20_000);
    const flowing = await lines();
    await until(async () => (await lines()) > flowing, 20_000);
    const before = await pids();

    writeFileSync(file, spec(WEB_HTTP_ICMP));
    const plan = await runCli(['plan', '-f', file], env);
    expect(plan.stdout).toContain('~ securityGroup web on host1: rules +icmp from 192.168.89.20/32');
    expect(plan.stdout).not.toMatch(/vm \w+ (stop|start)/);
    const apply = await runCli(['apply', '-f', file], env);
    expect(apply.code, apply.stderr + apply.stdout).toBe(0);

    expect(peerPing(IP.a), 'the new rule lets the peer ping a').toBe(true);
    const n = await lines();
    await new Promise((r) => setTimeout(r, 2000));
    expect(await lines(), 'the held stream still flows').toBeGreaterThan(n);
    expect(await pids()).toEqual(before);
    expect((await runCli(['plan', '-f', file], env)).stdout).toContain(NO_CHANGES);
  });

  it("a running VM's NIC joins a group in place: its port changes, its guest and its held flow do not", async () => {
    const lines = async () => Number((await sh('b', 'wc -l < /tmp/rx')).stdout.trim());
    const before = await pids();
    expect(peerPing(IP.b), 'b is in db only').toBe(false);
    writeFileSync(file, spec(WEB_HTTP_ICMP, 'db, ping'));
    const plan = await runCli(['plan', '-f', file], env);
    expect(plan.stdout).toContain('~ vm b on host1: nics lan securityGroups db -> db,ping (in place)');
    expect(plan.stdout).not.toMatch(/vm \w+ (stop|start)/);
    const apply = await runCli(['apply', '-f', file], env);
    expect(apply.code, apply.stderr + apply.stdout).toBe(0);
    expect(peerPing(IP.b), 'b is in ping now').toBe(true);
    const n = await lines();
    await new Promise((r) => setTimeout(r, 2000));
    expect(await lines(), 'the stream into b still flows').toBeGreaterThan(n);
    expect(await pids()).toEqual(before);
    expect((await runCli(['plan', '-f', file], env)).stdout).toContain(NO_CHANGES);
  });
});
