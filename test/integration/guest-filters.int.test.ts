// The guest filters of issue 8 (holes 8, 9, 10) attacked for real: two lab hosts, a peer, and two guests on host1,
// each with a NIC on an isolated network (addresses by DHCP only) and a NIC bridged onto the lab LAN (g1 with a VIP
// in allowedAddresses, g2 with portSecurity: false). Every attack must fail and be counted by its nftables counter:
// an isolated guest routing to the agent's port on the host's LAN address (and a bridged one reaching it directly),
// a spoofed source address, a rogue DHCP server in a guest, a VXLAN packet injected from a LAN peer. The exceptions
// (a VIP, portSecurity: false, a VXLAN packet from the member VTEP, a host service a network opens) must pass, and
// `vmlink verify` must stay green with the host input policy in place.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VerifyResult } from '../../src/controller/verify.js';
import { GUEST_TO_HOST_DROP } from '../../src/drivers/network/linux/host-input.js';
import { portDropComment } from '../../src/drivers/network/linux/port-guard.js';
import { VXLAN_DROP } from '../../src/drivers/network/linux/underlay-filter.js';
import { AGENT_TCP_PORT } from '../../src/shared/paths.js';
import { derivedMac, tapName } from '../../src/spec/net.js';
import { runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'itgf';
const HOST1 = '192.168.87.10';
const PC1 = '192.168.87.20';
const VNI = 8787;
const spec = (isoServices = '') => `
version: 1
hosts: [{ name: host1 }, { name: host2 }]
networks:
  - { name: iso, host: host1, mode: isolated, cidr: 10.87.0.0/24${isoServices} }
  - { name: lan, host: host1, mode: bridge }
  - { name: ov, mode: vxlan, vni: ${VNI} }
vms:
  - name: g1
    host: host1
    memoryMiB: 160
    nics: [{ network: iso }, { network: lan, ip: 192.168.87.50, allowedAddresses: [192.168.87.60] }]
  - name: g2
    host: host1
    memoryMiB: 160
    nics: [{ network: iso }, { network: lan, ip: 192.168.87.51, portSecurity: false }]
lab:
  name: ${LAB}
  lan: { cidr: 192.168.87.0/24, gateway: 192.168.87.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.87 }
  hosts: [{ name: host1, address: ${HOST1} }, { name: host2, address: 192.168.87.11 }]
  peers: [{ name: pc1, address: ${PC1} }]
`;

const root = mkdtempSync('/tmp/vmlink-itgf-');
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const file = join(root, 'spec.yaml');
let release: (() => Promise<void>) | undefined;

/** Runs a shell line in a guest; the guest's NIC names are found by MAC (`$ISO`, `$LAN`). */
const sh = async (vm: string, line: string) => {
  const byMac = (i: number) =>
    `$(for d in /sys/class/net/*; do [ "$(cat $d/address)" = ${derivedMac(vm, i)} ] && basename $d; done)`;
  return runCli(['vm', 'exec', vm, '--', 'sh', '-c', `ISO=${byMac(0)}; LAN=${byMac(1)}; ${line}`], env);
};

/** Packets counted by the rule with `comment` in a table of a lab machine. */
function counter(machine: string, table: 'inet vmlink' | 'bridge vmlink', comment: string): number {
  const [family, name] = table.split(' ') as [string, string];
  const out = execFileSync(
    'ip',
    ['netns', 'exec', `vl-${LAB}-${machine}`, 'nft', '-j', 'list', 'table', family, name],
    {
      encoding: 'utf8',
    },
  );
  type Rule = { comment?: string; expr?: Array<{ counter?: { packets: number } }> };
  const rules = (JSON.parse(out).nftables as Array<{ rule?: Rule }>).flatMap((o) => (o.rule ? [o.rule] : []));
  const rule = rules.find((r) => r.comment === comment);
  if (!rule) throw new Error(`no rule "${comment}" in ${table} on ${machine}`);
  return rule.expr?.find((e) => e.counter)?.counter?.packets ?? 0;
}

/** Sends one VXLAN packet (VNI, then an inner broadcast frame) to host1's underlay address from a lab machine. */
function injectVxlan(machine: string): void {
  const header = `08000000${VNI.toString(16).padStart(6, '0')}00`;
  const py = `import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(bytes.fromhex('${header}' + 'ff'*6 + '020000000001' + '0800' + '00'*46), ('${HOST1}', 4789))`;
  execFileSync('ip', ['netns', 'exec', `vl-${LAB}-${machine}`, 'python3', '-c', py]);
}

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(file, spec());
  release = await acquireVmLock();
  expect((await runCli(['daemon', '--detach'], env)).code).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  const apply = await runCli(['apply', '-f', file], env);
  expect(apply.code, apply.stderr + apply.stdout).toBe(0);
  // Both guests answer and have their DHCP address on the isolated network (the port guard learned it).
  await Promise.all(
    ['g1', 'g2'].map((vm) =>
      until(async () => (await sh(vm, 'ip -4 addr show dev $ISO | grep -q 10.87.0.')).code === 0),
    ),
  );
});

/** Polls `check` every 250 ms until it holds (or fails after `ms`). */
async function until(check: () => Promise<boolean> | boolean, ms = 180_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

afterAll(async () => {
  await runCli(['destroy', '-f', file], env).catch(() => {});
  await runCli(['lab', 'down', '-f', file], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

describe('guests cannot reach the host (hole 8)', () => {
  it('an isolated guest routing to the agent port on the host LAN address is dropped and counted', async () => {
    // DHCP and ping to the gateway pass: the iso NIC got its address from the host's dnsmasq.
    const gw = await sh('g1', 'ping -c1 -W3 -I $ISO 10.87.0.1');
    expect(gw.code, gw.stdout + gw.stderr).toBe(0);
    const before = counter('host1', 'inet vmlink', GUEST_TO_HOST_DROP);
    const r = await sh(
      'g1',
      `ip route add ${HOST1}/32 via 10.87.0.1 dev $ISO && nc -w 3 ${HOST1} ${AGENT_TCP_PORT} </dev/null; echo rc=$?`,
    );
    expect(r.stdout, r.stderr).toMatch(/rc=1/);
    expect(counter('host1', 'inet vmlink', GUEST_TO_HOST_DROP)).toBeGreaterThan(before);
  });

  it('a bridged guest reaching the host directly over the LAN is dropped too; the peer still reaches the agent', async () => {
    const before = counter('host1', 'inet vmlink', GUEST_TO_HOST_DROP);
    const r = await sh(
      'g1',
      `ip route del ${HOST1}/32; nc -w 3 ${HOST1} ${AGENT_TCP_PORT} </dev/null; echo rc=$?`,
    );
    expect(r.stdout, r.stderr).toMatch(/rc=1/);
    expect(counter('host1', 'inet vmlink', GUEST_TO_HOST_DROP)).toBeGreaterThan(before);
    // The host's own LAN traffic on the same bridge is not filtered.
    execFileSync('ip', [
      'netns',
      'exec',
      `vl-${LAB}-pc1`,
      'timeout',
      '3',
      'bash',
      '-c',
      `exec 3<>/dev/tcp/${HOST1}/${AGENT_TCP_PORT}`,
    ]);
  });

  it("a network's hostServices opens exactly that port to its VMs", async () => {
    writeFileSync(file, spec(`, hostServices: [{ protocol: tcp, port: ${AGENT_TCP_PORT} }]`));
    const apply = await runCli(['apply', '-f', file], env);
    expect(apply.code, apply.stderr + apply.stdout).toBe(0);
    const r = await sh(
      'g1',
      `ip route add ${HOST1}/32 via 10.87.0.1 dev $ISO && nc -w 3 ${HOST1} ${AGENT_TCP_PORT} </dev/null; echo rc=$?; ip route del ${HOST1}/32`,
    );
    expect(r.stdout, r.stderr).toMatch(/rc=0/);
    writeFileSync(file, spec());
    expect((await runCli(['apply', '-f', file], env)).code).toBe(0);
  });
});

describe('anti-spoofing per VM port (hole 10)', () => {
  const g1Iso = tapName('g1', 0);
  const g2Iso = tapName('g2', 0);

  it('a spoofed source address is dropped and counted; the address DHCP gave passes', async () => {
    const before = counter('host1', 'bridge vmlink', portDropComment(g1Iso, 'address'));
    const r = await sh(
      'g1',
      'ip addr add 10.87.0.99/24 dev $ISO; ping -c1 -W2 -I 10.87.0.99 10.87.0.1; echo rc=$?',
    );
    expect(r.stdout).toMatch(/rc=1/);
    expect(counter('host1', 'bridge vmlink', portDropComment(g1Iso, 'address'))).toBeGreaterThan(before);
    const ok = await sh('g1', 'ip addr del 10.87.0.99/24 dev $ISO; ping -c1 -W3 -I $ISO 10.87.0.1');
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
  });

  it("a rogue DHCP server in a guest is counted as dropped; the other guest's DHCP still works", async () => {
    const start = await sh(
      'g2',
      'printf "interface $ISO\\nstart 10.87.0.200\\nend 10.87.0.200\\nlease_file /tmp/rogue.leases\\npidfile /tmp/rogue.pid\\n" > /tmp/rogue.conf; touch /tmp/rogue.leases; udhcpd -a 100 /tmp/rogue.conf; echo started',
    );
    expect(start.stdout, start.stderr).toContain('started');
    try {
      const before = counter('host1', 'bridge vmlink', portDropComment(g2Iso, 'dhcp server'));
      // A fresh DHCP exchange from g1 (its script does nothing): g2's server answers it, its port drops the answer.
      const dhcp = await sh('g1', 'udhcpc -i $ISO -n -q -t 3 -T 1 -s /bin/true 2>&1; echo rc=$?');
      expect(dhcp.stdout).toMatch(/rc=0/);
      expect(dhcp.stdout).toMatch(/obtained from 10\.87\.0\.1\b/);
      expect(dhcp.stdout).not.toMatch(/10\.87\.0\.200/);
      // udhcpd offers only after probing the address by ARP.
      await until(
        () => counter('host1', 'bridge vmlink', portDropComment(g2Iso, 'dhcp server')) > before,
        60_000,
      );
    } finally {
      await sh('g2', 'kill $(cat /tmp/rogue.pid)');
    }
  });

  it('allowedAddresses lets a VIP out, another address not; portSecurity: false lets anything out', async () => {
    const vip = await sh('g1', `ip addr add 192.168.87.60/24 dev $LAN; ping -c1 -W3 -I 192.168.87.60 ${PC1}`);
    expect(vip.code, vip.stdout + vip.stderr).toBe(0);
    const other = await sh(
      'g1',
      `ip addr add 192.168.87.61/24 dev $LAN; ping -c1 -W2 -I 192.168.87.61 ${PC1}; echo rc=$?`,
    );
    expect(other.stdout).toMatch(/rc=1/);
    const open = await sh(
      'g2',
      `ip addr add 192.168.87.62/24 dev $LAN; ping -c1 -W3 -I 192.168.87.62 ${PC1}`,
    );
    expect(open.code, open.stdout + open.stderr).toBe(0);
    await sh('g1', 'ip addr del 192.168.87.60/24 dev $LAN; ip addr del 192.168.87.61/24 dev $LAN');
    await sh('g2', 'ip addr del 192.168.87.62/24 dev $LAN');
  });
});

describe('VXLAN from member VTEPs only (hole 9)', () => {
  it('a VXLAN packet injected from a LAN peer is counted as dropped; one from the member host is not', () => {
    const before = counter('host1', 'inet vmlink', VXLAN_DROP);
    injectVxlan('pc1');
    expect(counter('host1', 'inet vmlink', VXLAN_DROP)).toBe(before + 1);
    injectVxlan('host2');
    expect(counter('host1', 'inet vmlink', VXLAN_DROP)).toBe(before + 1);
  });
});

describe('the matrix with the guest filters in place', () => {
  it('verifies green: VMs do not reach their own host, everything else as before', async () => {
    const r = await runCli(['verify', '--json'], env);
    const v = JSON.parse(r.stdout) as VerifyResult;
    const bad = v.cells.filter((c) => !c.ok);
    expect(bad, JSON.stringify(bad, null, 1)).toEqual([]);
    expect(v.cells.find((c) => c.from === 'g1/lan' && c.to === 'host1')).toMatchObject({
      expected: false,
      observed: false,
    });
    expect(v.cells.find((c) => c.from === 'g1/lan' && c.to === 'host2')).toMatchObject({
      expected: true,
      observed: true,
    });
  });
});
