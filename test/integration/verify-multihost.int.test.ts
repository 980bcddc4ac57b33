// Multi-host verify end to end: two lab hosts, two VXLAN overlays with the same CIDR (one with a NAT gateway, one
// with a plain gateway on the other host), a VM on the second overlay holding the same address as one on the first.
// The matrix must stay green: overlays isolated despite the overlap, NAT egress only from the NAT overlay, and the
// cross-host path MTU of the overlay at its full 1450. A load balancer on ov1 (HAProxy + Keepalived on both hosts) in
// front of a1 and a2 (the test guest's httpd names its VM): verify's LB cells green, then with a2's httpd stopped,
// a2 taken out (DOWN in HAProxy, named by verify and `vmlink lb list`) and every answer from a1.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MatrixCell, VerifyResult } from '../../src/controller/verify.js';
import type { LbView } from '../../src/controller/wire-lb.js';
import { pollUntil } from '../../src/shared/time.js';
import { runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'itmh';
const SPEC = `
version: 1
hosts:
  - { name: host1 }
  - { name: host2 }
networks:
  - { name: ov1, mode: vxlan, vni: 1001, cidr: 10.71.0.0/24, gateway: { host: host1, nat: true } }
  - { name: ov2, mode: vxlan, vni: 1002, cidr: 10.71.0.0/24, gateway: { host: host2 } }
vms:
  - { name: a1, host: host1, memoryMiB: 192, nics: [{ network: ov1, ip: 10.71.0.10 }] }
  - { name: a2, host: host2, memoryMiB: 192, nics: [{ network: ov1, ip: 10.71.0.11 }] }
  - { name: b1, host: host1, memoryMiB: 192, nics: [{ network: ov2, ip: 10.71.0.10 }] }
loadBalancers:
  - name: web
    network: ov1
    vip: 10.71.0.50
    hosts: [{ host: host1, address: 10.71.0.51 }, { host: host2, address: 10.71.0.52 }]
    frontends: [{ port: 80, protocol: http }]
    backends: [a1, a2]
    healthCheck: { intervalMs: 1000, timeoutMs: 3000, rise: 2, fall: 2 }
lab:
  name: ${LAB}
  lan: { cidr: 192.168.71.0/24, gateway: 192.168.71.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.71 }
  hosts: [{ name: host1, address: 192.168.71.10 }, { name: host2, address: 192.168.71.11 }]
  peers: [{ name: pc1, address: 192.168.71.20 }]
`;

const root = mkdtempSync('/tmp/vmlink-itmh-');
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const specFile = join(root, 'spec.yaml');
let release: (() => Promise<void>) | undefined;

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(specFile, SPEC);
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
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

describe('vxlan overlays across two hosts', () => {
  let v: VerifyResult;
  const cellOf = (from: string, to: string): MatrixCell =>
    v.cells.find((c) => c.from === from && c.to === to)!;

  it('verifies green, with the overlay path MTU measured across hosts', async () => {
    // The apply ends when the guests are made and running, not when HAProxy has seen their httpd answer `rise` (2)
    // checks in a row: a verify in that window finds the VIP answering 503 (no backend UP yet), truthfully. That was
    // the CI failures of stops 25 and 26 (a TCG guest's httpd comes up seconds after its boot on a loaded machine).
    // So the backends are waited for first, as a user waits for `lb list` to show them UP.
    const up = await pollUntil(
      async () => {
        const r = await runCli(['lb', 'list', '--json'], env);
        const lb = r.code === 0 ? (JSON.parse(r.stdout) as LbView[])[0] : undefined;
        return lb?.backends.length === 2 && lb.backends.every((b) => b.state === 'UP') ? true : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 500 },
    );
    expect(up, 'both backends UP in HAProxy within 90 s of the apply').toBe(true);
    const r = await runCli(['verify', '--json'], env);
    v = JSON.parse(r.stdout) as VerifyResult;
    const bad = v.cells.filter((c) => !c.ok);
    expect(bad, JSON.stringify(bad, null, 1)).toEqual([]);
    expect(v.pmtu).toEqual([
      expect.objectContaining({
        network: 'ov1',
        from: 'a1',
        to: 'a2',
        expectedMtu: 1450,
        measuredMtu: 1450,
        ok: true,
      }),
    ]);
    const lbBad = (v.loadBalancers ?? []).filter((c) => !c.ok);
    expect(lbBad, JSON.stringify(lbBad, null, 1)).toEqual([]);
    expect(v.loadBalancers?.map((c) => `${c.check} ${c.to}`).sort()).toEqual([
      'backend a1',
      'backend a2',
      'healthy 10.71.0.50:80',
      'host host1',
      'host host2',
      'reach 10.71.0.50:80',
      'vip 10.71.0.50 on host1, host2',
    ]);
    expect(r.code).toBe(0);
  });

  it('same overlay reaches across hosts; the NAT overlay egresses, the other does not', () => {
    expect(cellOf('a1', 'a2')).toMatchObject({ expected: true, observed: true });
    expect(cellOf('a2', 'a1')).toMatchObject({ expected: true, observed: true });
    expect(cellOf('a2', 'upstream')).toMatchObject({ expected: true, observed: true });
    expect(cellOf('a2', 'pc1')).toMatchObject({ expected: true, observed: true });
    expect(cellOf('b1', 'upstream')).toMatchObject({ expected: false, observed: false });
    expect(cellOf('host1', 'a2')).toMatchObject({ expected: true, observed: true });
    expect(cellOf('host2', 'b1')).toMatchObject({ expected: true, observed: true });
    expect(cellOf('pc1', 'a1')).toMatchObject({ expected: false, observed: false });
  });

  it("overlapping CIDRs stay apart: a reply from the twin address is not counted as the other overlay's VM", () => {
    // b1 has a1's address: from a2 the ping is answered by a1, which the MAC check attributes to a1.
    expect(cellOf('a2', 'b1')).toMatchObject({ expected: false, observed: false });
    expect(cellOf('a2', 'b1').detail).toContain('answered by a1');
    expect(cellOf('a1', 'b1')).toMatchObject({ expected: 'any' });
    expect(cellOf('b1', 'a2')).toMatchObject({ expected: false, observed: false });
  });

  // host2 holds ov2's gateway 10.71.0.1; with arp_ignore=0 it would also answer ARP for it on its address-less ov1
  // bridge and a2's ov1 traffic would be lost at random. The linux backend sets arp_ignore=1 on its bridges.
  it("only ov1's gateway host answers ARP for ov1's gateway address", async () => {
    const r = await runCli(['vm', 'exec', 'a2', '--', 'arping', '-I', 'eth0', '-c', '3', '10.71.0.1'], env);
    const macs = new Set(
      [...r.stdout.matchAll(/reply from 10\.71\.0\.1 \[([0-9a-f:]+)\]/g)].map((m) => m[1]),
    );
    expect(macs.size, r.stdout).toBe(1);
  });

  it('a backend whose httpd stops is taken out: lb list shows it DOWN, verify names it, answers come from a1', async () => {
    const lbList = async (): Promise<LbView> => {
      const r = await runCli(['lb', 'list', '--json'], env);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as LbView[])[0]!;
    };
    const before = await lbList();
    expect(before.vipHolders).toHaveLength(1);
    expect(before.backends.map((b) => b.state)).toEqual(['UP', 'UP']);
    expect(before.hosts.every((h) => h.haproxy && h.keepalived && !h.problems.length)).toBe(true);
    const k = await runCli(['vm', 'exec', 'a2', '--', 'killall', 'httpd'], env);
    expect(k.code, k.stderr).toBe(0);
    // fall 2 x 1 s: HAProxy takes it out within about two seconds (three with a check's connect timing out).
    const down = await pollUntil(
      async () => ((await lbList()).backends.find((b) => b.vm === 'a2')?.state === 'DOWN' ? true : undefined),
      { timeoutMs: 20_000, intervalMs: 300 },
    );
    expect(down).toBe(true);
    const r = await runCli(['verify', '--json'], env);
    const after = JSON.parse(r.stdout) as VerifyResult;
    const lb = after.loadBalancers ?? [];
    expect(
      lb.filter((c) => !c.ok),
      JSON.stringify(lb, null, 1),
    ).toEqual([]);
    expect(lb.find((c) => c.check === 'backend' && c.to === 'a2')).toMatchObject({
      ok: true,
      takenOut: true,
    });
    expect(lb.find((c) => c.check === 'backend' && c.to === 'a2')!.detail).toMatch(
      /^taken out: DOWN in HAProxy/,
    );
    expect(lb.find((c) => c.check === 'healthy')!.detail).toMatch(/^answered by a1, all UP/);
    expect(after.notes?.some((n) => n.startsWith('load balancer web: backend a2 is taken out'))).toBe(true);
    expect(r.code).toBe(0);
    const text = await runCli(['lb', 'list'], env);
    expect(text.stdout).toMatch(/a2 10\.71\.0\.11 DOWN/);
  });
});
