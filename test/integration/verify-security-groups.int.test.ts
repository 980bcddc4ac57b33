// examples/security-groups.yaml for real (the README's demo): lab, apply, and `vmlink verify` must be green, with the
// blocked cells measured blocked and the allowed ones measured open, every port check run against a listener in the
// guest (stopped again afterwards). Then one rule changes and verify follows it: the port the new rule names opens
// for its source only, and the port no rule names moves on.
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VerifyResult } from '../../src/controller/verify.js';
import { runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'itsg';
const EXAMPLE = fileURLToPath(new URL('../../examples/security-groups.yaml', import.meta.url));
// The example on a lab of its own, so that a user's `sg` lab on this machine is left alone.
const SPEC = readFileSync(EXAMPLE, 'utf8').replace(/^ {2}name: sg$/m, `  name: ${LAB}`);

const root = mkdtempSync('/tmp/vmlink-itsg-');
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const specFile = join(root, 'spec.yaml');
let release: (() => Promise<void>) | undefined;

beforeAll(async () => {
  expect(SPEC).toContain(`name: ${LAB}`);
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
  await runCli(['lab', 'down', '-f', specFile], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

async function verify(): Promise<VerifyResult> {
  const r = await runCli(['verify', '--json'], env);
  return JSON.parse(r.stdout) as VerifyResult;
}

const find = (v: VerifyResult, kind: string, from: string, to: string, port?: number) =>
  v.cells.find(
    (c) => c.kind === kind && c.from === from && c.to === to && (port === undefined || c.port === port),
  );

describe('security groups on the quickstart lab', () => {
  it('verify is green: blocked cells measured blocked, allowed ones open, each with its rule', async () => {
    const v = await verify();
    expect(v.cells.filter((c) => !c.ok)).toEqual([]);
    expect(v.ok).toBe(true);
    // Ingress by cidr: the host pings its nat VM from the gateway address, outside web's LAN-only icmp rule.
    expect(find(v, 'ping', 'host1', 'web1')).toMatchObject({ observed: false, blockedBy: 'security-group' });
    expect(find(v, 'ping', 'pc1', 'front1')).toMatchObject({ observed: true, expected: true });
    // Cross-group, one direction: front1 (web) reaches app1:8080, app1's members do not reach back through it.
    expect(find(v, 'port', 'front1', 'app1', 8080)).toMatchObject({ observed: true });
    expect(find(v, 'port', 'pc1', 'app1', 8080)).toMatchObject({ observed: false, expected: false });
    // Egress: front1's own groups keep its tcp 22 and its ping to the upstream in.
    expect(find(v, 'port', 'front1', 'app1', 22)?.rule).toMatch(/^no egress rule of web, locked/);
    expect(find(v, 'ping', 'front1', 'upstream')).toMatchObject({
      observed: false,
      blockedBy: 'security-group',
    });
    // Several groups on one port: ssh opens 22 for pc1 only.
    expect(find(v, 'port', 'pc1', 'app1', 22)).toMatchObject({ observed: true });
    expect(find(v, 'port', 'host1', 'app1', 22)).toMatchObject({ observed: false });
    // Every port check ran against a live listener (none unmeasured), and the listeners are gone again.
    const ports = v.cells.filter((c) => c.kind === 'port');
    expect(ports.length).toBe(22);
    expect(ports.filter((c) => c.unmeasured)).toEqual([]);
    const left = await runCli(
      ['vm', 'exec', 'app1', '--', 'sh', '-c', 'ls /run/vmlink/port-check; pidof httpd'],
      env,
    );
    expect(left.stdout.trim().split(/\s+/)).toHaveLength(1); // the guest's own httpd on port 80 only
  });

  it('follows a rule change: the port a new rule names opens for its source, the unruled probe moves on', async () => {
    const changed = SPEC.replace(
      "      - { protocol: tcp, ports: [22], cidr: 192.168.50.20/32, description: the admin's machine pc1 }",
      '      - { protocol: tcp, ports: [22, 9], cidr: 192.168.50.20/32 }',
    );
    expect(changed).not.toBe(SPEC);
    writeFileSync(specFile, changed);
    const apply = await runCli(['apply', '-f', specFile], env);
    expect(apply.code, apply.stderr + apply.stdout).toBe(0);
    const v = await verify();
    expect(v.cells.filter((c) => !c.ok)).toEqual([]);
    expect(find(v, 'port', 'pc1', 'app1', 9)).toMatchObject({ observed: true, expected: true });
    expect(find(v, 'port', 'host1', 'app1', 9)).toMatchObject({ observed: false, expected: false });
    expect(find(v, 'port', 'pc1', 'app1', 1234)).toMatchObject({ observed: false, expected: false });
  });
});
