// The lab's etcd and cluster controllers through the real CLI: `lab up` starts a 3-member etcd (mutual TLS, each
// member in its namespace, auth enabled with one user per host), the cluster controllers when the daemon and agents
// speak etcd, and `lab down` leaves nothing behind. Real etcd 3.4, real namespaces; no VMs.
import {
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
import { ensureEtcdAuth, hostRole } from '../../src/controller/cluster/etcd-auth.js';
import { SystemRunner } from '../../src/exec/runner.js';
import {
  killLabController,
  labControllerAnswers,
  labControllerRunning,
  labControllerSockets,
  restartLabController,
} from '../../src/lab/cluster.js';
import {
  etcdMemberHealthy,
  etcdMemberRunning,
  labEtcdSocket,
  startEtcdMember,
  stopEtcdMember,
} from '../../src/lab/etcd.js';
import { clusterKeys } from '../../src/shared/cluster.js';
import { etcdClient } from '../../src/shared/etcd.js';
import { credentialFiles, readCredentials } from '../../src/shared/tls.js';
import { LabSchema } from '../../src/spec/schema-lab.js';
import { type CliResult, runArgv, runCli } from '../helpers/cli.js';

const LAB = 'itec';
const NET = '192.168.83';
const root = mkdtempSync('/tmp/vmlink-itec-');
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'c.sock'),
};
const file = join(root, 'spec.yaml');
const runner = new SystemRunner();
const members = [
  { name: 'etcd1', address: `${NET}.21` },
  { name: 'etcd2', address: `${NET}.22` },
  { name: 'etcd3', address: `${NET}.23` },
];
const endpoints = members.map((m) => `https://${m.address}:2379`).join(',');
const mgmtNs = `vl-${LAB}--mgmt`;
/** The lab-up controller's credentials (CN vmlink-controller, etcd root). */
const controllerTls = () => credentialFiles(join(env.VMLINK_STATE_DIR, 'pki', 'controller'));
const hostTls = (h: string) => credentialFiles(join(env.VMLINK_STATE_DIR, 'lab', LAB, h, 'tls'));

/** Whether the daemon and the agent of this build speak etcd (the controllers and agent-lease work). */

function specText(): string {
  return `
version: 1
hosts: [{ name: host1 }, { name: host2 }]
cluster: { store: etcd, heartbeatSeconds: 3 }
lab:
  name: ${LAB}
  lan: { cidr: ${NET}.0/24, gateway: ${NET}.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.83 }
  hosts: [{ name: host1, address: ${NET}.11 }, { name: host2, address: ${NET}.12 }]
  etcd:
${members.map((m) => `    - { name: ${m.name}, address: ${m.address} }`).join('\n')}
  controllers: [{ name: ctl1, address: ${NET}.31 }, { name: ctl2, address: ${NET}.32 }]
`;
}

/** etcdctl from the lab's management station (on the LAN), as `tls` (none: no client certificate). */
function etcdctl(
  tls: { ca: string; cert?: string; key?: string },
  args: string[],
  eps = endpoints,
): Promise<CliResult> {
  const auth = [
    '--cacert',
    tls.ca,
    ...(tls.cert ? ['--cert', tls.cert] : []),
    ...(tls.key ? ['--key', tls.key] : []),
  ];
  return runArgv(
    [
      'ip',
      'netns',
      'exec',
      mgmtNs,
      'etcdctl',
      '--endpoints',
      eps,
      '--dial-timeout',
      '2s',
      '--command-timeout',
      '4s',
      ...auth,
      ...args,
    ],
    {},
    20_000,
  );
}

let labSpec: ReturnType<typeof LabSchema.parse>;

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

beforeAll(async () => {
  for (const [k, v] of Object.entries(env)) process.env[k] = v;
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(file, specText());
  labSpec = LabSchema.parse({
    name: LAB,
    lan: { cidr: `${NET}.0/24`, gateway: `${NET}.1` },
    upstream: { cidr: '203.0.113.0/24', address: '203.0.113.83' },
    hosts: [
      { name: 'host1', address: `${NET}.11` },
      { name: 'host2', address: `${NET}.12` },
    ],
    etcd: members,
    controllers: [
      { name: 'ctl1', address: `${NET}.31` },
      { name: 'ctl2', address: `${NET}.32` },
    ],
  });
  const d = await runCli(['daemon', '--detach', '--heartbeat-ms', '1000'], env);
  expect(d.code, d.stderr).toBe(0);
  const t0 = Date.now();
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  console.log(`lab-cluster: lab up took ${((Date.now() - t0) / 1000).toFixed(1)} s\n${up.stdout}`);
  expect(up.stdout).toContain(`etcd: ${endpoints.replaceAll(',', ', ')}`);
  expect(up.stdout).toContain('export VMLINK_SOCKET=');
});

afterAll(async () => {
  await runCli(['lab', 'down', '-f', file], env);
  await runCli(['daemon', '--stop'], env);
  for (const k of Object.keys(env)) delete process.env[k];
  rmSync(root, { recursive: true, force: true });
});

describe('lab etcd', () => {
  it('runs 3 members, each in its own namespace, healthy over mutual TLS', async () => {
    for (const m of members) {
      expect(await etcdMemberRunning(labSpec, m.name)).toBe(true);
      expect(await etcdMemberHealthy(runner, labSpec, m.name)).toBe(true);
    }
    const list = await etcdctl(controllerTls(), ['member', 'list', '-w', 'json']);
    expect(list.code, list.stderr).toBe(0);
    const parsed = JSON.parse(list.stdout) as { members: Array<{ name: string; peerURLs: string[] }> };
    expect(parsed.members.map((m) => m.name).sort()).toEqual(['etcd1', 'etcd2', 'etcd3']);
    for (const m of parsed.members) expect(m.peerURLs[0]).toMatch(/^https:\/\//);
    // Plain HTTP is not served, and a client without a certificate is refused.
    const plain = await runArgv(
      ['ip', 'netns', 'exec', mgmtNs, 'etcdctl', '--endpoints', `http://${members[0]!.address}:2379`].concat([
        '--dial-timeout',
        '2s',
        '--command-timeout',
        '3s',
        'get',
        '/vmlink/x',
      ]),
      {},
      20_000,
    );
    expect(plain.code).not.toBe(0);
    const anon = await etcdctl(
      { ca: controllerTls().ca },
      ['get', '/vmlink/x'],
      `https://${members[0]!.address}:2379`,
    );
    expect(anon.code).not.toBe(0);
  });

  it("lets a host's certificate write its own lease key and fence report only, and read owner records", async () => {
    const h2 = hostTls('host2');
    const ok = await etcdctl(h2, ['put', clusterKeys.hostLease('host2'), 'alive']);
    expect(ok.code, ok.stderr).toBe(0);
    expect((await etcdctl(h2, ['put', clusterKeys.fenceReport('host2'), '{}'])).code).toBe(0);
    const other = await etcdctl(h2, ['put', clusterKeys.hostLease('host1'), 'forged']);
    expect(other.code).not.toBe(0);
    expect(other.stderr).toMatch(/permission denied/);
    const owner = await etcdctl(h2, ['put', clusterKeys.kv('owners/web'), '{"host":"host2"}']);
    expect(owner.code).not.toBe(0);
    expect(owner.stderr).toMatch(/permission denied/);
    // The controller (root) writes the owner record; the host reads it, and reads nothing else of the store.
    expect(
      (await etcdctl(controllerTls(), ['put', clusterKeys.kv('owners/web'), '{"host":"host1"}'])).code,
    ).toBe(0);
    const read = await etcdctl(h2, ['get', clusterKeys.kv('owners/web'), '--print-value-only']);
    expect(read.code, read.stderr).toBe(0);
    expect(read.stdout.trim()).toBe('{"host":"host1"}');
    expect((await etcdctl(h2, ['get', clusterKeys.kv('spec/current')])).code).not.toBe(0);
    // An etcd member's own certificate is no etcd user.
    const member = credentialFiles(join(env.VMLINK_STATE_DIR, 'lab', LAB, 'etcd1', 'tls'));
    expect((await etcdctl(member, ['put', clusterKeys.hostLease('host1'), 'x'])).code).not.toBe(0);
  });

  it('adds a new host idempotently through the management relay (ensureEtcdAuth again)', async () => {
    const creds = readCredentials(join(env.VMLINK_STATE_DIR, 'pki', 'controller'))!;
    const client = etcdClient(
      { endpoints: [`unix://${labEtcdSocket(LAB, 'etcd2')}`], tls: creds },
      { serverName: 'etcd2' },
    );
    try {
      await ensureEtcdAuth(client, ['host1', 'host2', 'host9']);
      await ensureEtcdAuth(client, ['host1', 'host2', 'host9']);
      const perms = await client.auth.roleGet({ role: hostRole('host9') });
      const keys = perms.perm.map((p) => `${p.permType} ${p.key.toString()}`).sort();
      expect(keys).toEqual(
        [
          `Read ${clusterKeys.kv('owners/')}`,
          `Read ${clusterKeys.members}`,
          `Readwrite ${clusterKeys.fenceReport('host9')}`,
          `Readwrite ${clusterKeys.hostLease('host9')}`,
        ].sort(),
      );
      expect((await client.auth.userGet({ name: 'host9' })).roles).toEqual([hostRole('host9')]);
    } finally {
      client.close();
    }
  });

  it('stops one member (a drill) and the cluster keeps its quorum; it comes back healthy', async () => {
    await stopEtcdMember(runner, labSpec, 'etcd3', { hard: true });
    expect(await etcdMemberRunning(labSpec, 'etcd3')).toBe(false);
    const two = members
      .slice(0, 2)
      .map((m) => `https://${m.address}:2379`)
      .join(',');
    // A write in flight when the killed member was the leader is lost with it: etcd answers it only at its own request
    // timeout (~7 s), past etcdctl's 4 s. Quorum means the next attempt, once the two elect a leader, succeeds.
    const tw = Date.now();
    let w: CliResult | undefined;
    for (let i = 0; i < 4; i++) {
      w = await etcdctl(controllerTls(), ['put', clusterKeys.kv('drill/etcd'), 'one down'], two);
      if (w.code === 0) break;
    }
    expect(w!.code, w!.stderr).toBe(0);
    console.log(
      `lab-cluster: a write with etcd3 down succeeded after ${((Date.now() - tw) / 1000).toFixed(1)} s`,
    );
    const t0 = Date.now();
    await startEtcdMember(runner, labSpec, 'etcd3');
    console.log(`lab-cluster: etcd3 restarted and healthy in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    expect(await etcdMemberHealthy(runner, labSpec, 'etcd3')).toBe(true);
    const r = await etcdctl(
      controllerTls(),
      ['get', clusterKeys.kv('drill/etcd'), '--print-value-only', '--consistency', 's'],
      `https://${members[2]!.address}:2379`,
    );
    expect(r.stdout.trim()).toBe('one down');
  });
});

describe('lab cluster controllers', () => {
  it('answers on every controller socket; a killed controller restarts; lab up is refused on one', async () => {
    // Reported as skipped (never as passed) while this build's daemon or agent does not speak etcd.
    const sockets = labControllerSockets(labSpec);
    expect(sockets).toEqual([
      join(env.VMLINK_RUN_DIR, 'lab', LAB, 'ctl1.sock'),
      join(env.VMLINK_RUN_DIR, 'lab', LAB, 'ctl2.sock'),
    ]);
    for (const c of labSpec.controllers) expect(await labControllerAnswers(LAB, c.name)).toBe(true);
    // The agents got --etcd and hold their leases as their own etcd users (their roles allow exactly this).
    const leases = await waitFor(
      'both hosts to hold a lease',
      async () => {
        const r = await etcdctl(controllerTls(), [
          'get',
          '--prefix',
          clusterKeys.hostLeasePrefix,
          '--keys-only',
        ]);
        const keys = r.stdout.split('\n').filter((l) => l.trim());
        return keys.length === 2 ? keys.sort() : undefined;
      },
      30_000,
    );
    expect(leases).toEqual([clusterKeys.hostLease('host1'), clusterKeys.hostLease('host2')]);
    await killLabController(labSpec, 'ctl1');
    expect(await labControllerRunning(labSpec, 'ctl1')).toBe(false);
    await restartLabController(runner, labSpec, 'ctl1');
    expect(await labControllerAnswers(LAB, 'ctl1')).toBe(true);
    // One controller is active again (the election settles within seconds), reached through the socket list.
    const active = await waitFor(
      'an active cluster controller',
      async () => {
        const st = await runCli(['cluster', 'status', '--json'], {
          ...env,
          VMLINK_SOCKET: sockets.join(','),
        });
        if (st.code !== 0) return undefined;
        return (JSON.parse(st.stdout) as { active?: { name: string } }).active?.name;
      },
      30_000,
    );
    expect(['ctl1', 'ctl2']).toContain(active);
    const refused = await runCli(['lab', 'up', '-f', file], { ...env, VMLINK_SOCKET: sockets.join(',') });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(`runs inside lab ${LAB}`);
  });
});

describe('lab up again', () => {
  it("changes nothing: the same etcd processes, auth set up again as root, etcd's data kept", async () => {
    const pids = () =>
      members.map((m) =>
        readFileSync(join(env.VMLINK_RUN_DIR, 'lab', LAB, `${m.name}.etcd.pid`), 'utf8').trim(),
      );
    const before = pids();
    const again = await runCli(['lab', 'up', '-f', file], env);
    expect(again.code, again.stderr + again.stdout).toBe(0);
    expect(again.stdout).not.toContain('starting etcd member');
    expect(pids()).toEqual(before);
    const r = await etcdctl(controllerTls(), ['get', clusterKeys.kv('drill/etcd'), '--print-value-only']);
    expect(r.stdout.trim()).toBe('one down');
  });
});

describe('lab down', () => {
  it('leaves no namespace, etcd process, socket or file of the lab', async () => {
    const down = await runCli(['lab', 'down', '-f', file], env);
    expect(down.code, down.stderr + down.stdout).toBe(0);
    const ns = await runArgv(['ip', 'netns', 'list'], {}, 10_000);
    expect(ns.stdout).not.toContain(`vl-${LAB}-`);
    for (const m of members) expect(await etcdMemberRunning(labSpec, m.name)).toBe(false);
    // No process of the lab is left (etcd's data dir, agents' and controllers' paths are all below it).
    const labDir = `/lab/${LAB}/`;
    const left = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
          return cmd.includes(root) && cmd.includes(labDir);
        } catch {
          return false;
        }
      });
    expect(left).toEqual([]);
    expect(existsSync(join(env.VMLINK_RUN_DIR, 'lab', LAB))).toBe(false);
    expect(existsSync(join(env.VMLINK_STATE_DIR, 'lab', LAB))).toBe(false);
  });
});
