// A failed step stops the apply, leaves nothing half-made, and the next apply converges.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { bridgeName } from '../../src/spec/net.js';
import { runCli } from '../helpers/cli.js';

const LAB = 'itf';
const spec = (uplink: string) => `
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: natnet, host: host1, mode: nat, cidr: 10.71.0.0/24 }
  - { name: lan, host: host1, mode: bridge, uplink: ${uplink} }
lab:
  name: ${LAB}
  lan: { cidr: 192.168.71.0/24, gateway: 192.168.71.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.71 }
  hosts: [{ name: host1, address: 192.168.71.10 }]
`;

/** `spec('eth0')` plus three nat networks, applied in one batch request. */
const withThree = () =>
  spec('eth0').replace(
    'lab:',
    ['b1', 'b2', 'b3']
      .map((n, i) => `  - { name: ${n}, host: host1, mode: nat, cidr: 10.72.${i}.0/24 }\n`)
      .join('')
      .concat('lab:'),
  );

const root = mkdtempSync('/tmp/vmlink-itf-');
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'c.sock'),
};
const file = join(root, 'spec.yaml');
const links = () =>
  JSON.parse(
    execFileSync('ip', ['-n', `vl-${LAB}-host1`, '-json', 'link', 'show'], { encoding: 'utf8' }),
  ) as Array<{ ifname: string; master?: string }>;

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(file, spec('eth9'));
  expect((await runCli(['daemon', '--detach'], env)).code).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr).toBe(0);
});

afterAll(async () => {
  await runCli(['lab', 'down', '-f', file], env);
  await runCli(['daemon', '--stop'], env);
  rmSync(root, { recursive: true, force: true });
});

it('stops at the failed step, names it, and leaves no half-made network', async () => {
  const r = await runCli(['apply', '-f', file], env);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(/step 1\/2 failed \(\+ network lan on host1/);
  expect(r.stderr).toContain('eth9');
  expect(r.stderr).toContain('apply again to converge');
  // The failed bridge network was reverted; the step after it never ran.
  const names = links().map((l) => l.ifname);
  expect(names).not.toContain(bridgeName('lan'));
  expect(names).not.toContain(bridgeName('natnet'));
});

it('converges on the next apply once the cause is fixed', async () => {
  writeFileSync(file, spec('eth0'));
  const r = await runCli(['apply', '-f', file], env);
  expect(r.code, r.stderr).toBe(0);
  const all = links();
  expect(all.find((l) => l.ifname === 'eth0')?.master).toBe(bridgeName('lan'));
  expect(all.map((l) => l.ifname)).toContain(bridgeName('natnet'));
  const plan = await runCli(['plan', '-f', file], env);
  expect(plan.stdout.trim()).toBe('No changes. Infrastructure matches the spec.');
  // The host keeps its LAN address (now on the bridge) and its default route.
  const addr = execFileSync(
    'ip',
    ['-n', `vl-${LAB}-host1`, '-4', '-o', 'addr', 'show', 'dev', bridgeName('lan')],
    { encoding: 'utf8' },
  );
  expect(addr).toContain('192.168.71.10/24');
  execFileSync('ip', ['netns', 'exec', `vl-${LAB}-host1`, 'ping', '-c1', '-W2', '192.168.71.1']);
});

it('a batch that fails midway keeps the networks before the failed one and starts none after it', async () => {
  // A device of another kind squats on b2's bridge name, behind vmlink's back.
  const ns = `vl-${LAB}-host1`;
  execFileSync('ip', [
    '-n',
    ns,
    'link',
    'add',
    bridgeName('b2'),
    'type',
    'veth',
    'peer',
    'name',
    'itf-squat',
  ]);
  try {
    writeFileSync(file, withThree());
    const r = await runCli(['apply', '-f', file], env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/step 2\/3 failed \(\+ network b2 on host1.*\): .*exists and is not a bridge/);
    const names = links().map((l) => l.ifname);
    expect(names).toContain(bridgeName('b1'));
    expect(names).not.toContain(bridgeName('b3'));
    const plan = await runCli(['plan', '-f', file], env);
    expect(plan.stdout).toMatch(/\+ network b2 on host1/);
    expect(plan.stdout).toMatch(/\+ network b3 on host1/);
    expect(plan.stdout).not.toMatch(/network b1 on host1/);
  } finally {
    execFileSync('ip', ['-n', ns, 'link', 'del', bridgeName('b2')]);
  }
  const again = await runCli(['apply', '-f', file], env);
  expect(again.code, again.stderr).toBe(0);
  expect((await runCli(['plan', '-f', file], env)).stdout.trim()).toBe(
    'No changes. Infrastructure matches the spec.',
  );
});
