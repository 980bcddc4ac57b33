// Three lab hosts end to end through the real CLI, with QEMU guests: VXLAN overlays (same VNI reaches across
// hosts, another VNI with an overlapping CIDR stays apart), VLANs on Open vSwitch (same tag reaches, another tag
// does not, a trunk port carries both to a router VM), jumbo frames, refusals, and a host leaving the spec.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostStatus } from '../../src/controller/controller.js';
import type { MatrixCell, VerifyResult } from '../../src/controller/verify.js';
import { vxlanDeviceName } from '../../src/spec/net.js';
import { cliJson, runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'itm3';
/** The three-host spec; `linuxVlan` adds a vlan network on the linux backend (802.1Q on the uplink) with two VMs. */
const spec = (opts: { host3?: boolean; appMtu?: number; linuxVlan?: boolean } = {}) => {
  const host3 = opts.host3 ?? true;
  return `
version: 1
site:
  environments:
    - { name: production, vlans: [{ from: 100, to: 199 }] }
    - { name: test, vlans: [{ from: 200, to: 299 }] }
hosts:
  - { name: host1, network: { mtu: 9000 } }
  - { name: host2, network: { mtu: 9000 } }
${host3 ? '  - { name: host3, network: { mtu: 9000 } }' : ''}
networks:
  - { name: app, mode: vxlan, vni: 1001, cidr: 10.81.0.0/24, mtu: ${opts.appMtu ?? 8950}, gateway: { host: host1, nat: true } }
  - { name: db, mode: vxlan, vni: 1002, hosts: [host2], cidr: 10.81.0.0/24 }
  - { name: prod100, mode: vlan, vlan: 100, environment: production, segment: trunk, backend: ovs, cidr: 10.100.0.0/24 }
  - { name: test200, mode: vlan, vlan: 200, environment: test, segment: trunk, backend: ovs, cidr: 10.200.0.0/24 }
${opts.linuxVlan ? '  - { name: lin300, mode: vlan, vlan: 300, hosts: [host1, host2], backend: linux, cidr: 10.30.0.0/24 }' : ''}
vms:
  - { name: web1, host: host1, memoryMiB: 160, nics: [{ network: app, ip: 10.81.0.11 }] }
  - { name: db2, host: host2, memoryMiB: 160, nics: [{ network: db, ip: 10.81.0.11 }] }
  - { name: p1, host: host1, memoryMiB: 160, nics: [{ network: prod100, ip: 10.100.0.11 }] }
  - { name: t2, host: host2, memoryMiB: 160, nics: [{ network: test200, ip: 10.200.0.22 }] }
${
  opts.linuxVlan
    ? `  - { name: l1, host: host1, memoryMiB: 160, nics: [{ network: lin300, ip: 10.30.0.11 }] }
  - { name: l2, host: host2, memoryMiB: 160, nics: [{ network: lin300, ip: 10.30.0.12 }] }`
    : ''
}
${
  host3
    ? `  - { name: web3, host: host3, memoryMiB: 160, nics: [{ network: app, ip: 10.81.0.13 }] }
  - { name: r3, host: host3, memoryMiB: 160, nics: [{ trunk: [prod100, test200] }] }`
    : ''
}
lab:
  name: ${LAB}
  lan: { cidr: 192.168.81.0/24, gateway: 192.168.81.1, mtu: 9000 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.81 }
  segments: [{ name: trunk }]
  hosts:
    - { name: host1, address: 192.168.81.11 }
    - { name: host2, address: 192.168.81.12 }
${host3 ? '    - { name: host3, address: 192.168.81.13 }' : ''}
  peers: [{ name: pc1, address: 192.168.81.20 }]
`;
};

const root = mkdtempSync('/tmp/vmlink-itm3-');
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const file = join(root, 'spec.yaml');
const fullFile = join(root, 'full.yaml');
let release: (() => Promise<void>) | undefined;

const exec = async (vm: string, ...argv: string[]) => {
  const r = await runCli(['vm', 'exec', vm, '--', ...argv], env);
  return r;
};
const fdbDestinations = (host: string) =>
  execFileSync(
    'ip',
    ['netns', 'exec', `vl-${LAB}-${host}`, 'bridge', 'fdb', 'show', 'dev', vxlanDeviceName('app')],
    { encoding: 'utf8' },
  )
    .split('\n')
    .filter((l) => l.startsWith('00:00:00:00:00:00'))
    .map((l) => /dst (\S+)/.exec(l)?.[1]);

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(fullFile, spec());
  writeFileSync(file, spec());
  release = await acquireVmLock();
  expect((await runCli(['daemon', '--detach'], env)).code).toBe(0);
  const up = await runCli(['lab', 'up', '-f', fullFile], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
});

afterAll(async () => {
  await runCli(['lab', 'down', '-f', fullFile], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

describe('three hosts: overlays, VLANs on Open vSwitch, jumbo frames', () => {
  it('refuses an overlay MTU that does not fit the underlay, before any change', async () => {
    writeFileSync(file, spec({ appMtu: 8951 }));
    const r = await runCli(['apply', '-f', file], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/networks\[0\]\.mtu: 8951 \+ 50 bytes of VXLAN overhead exceeds/);
  });

  it('applies the three-host spec, jumbo underlay first under commit-confirm', async () => {
    writeFileSync(file, spec());
    const r = await runCli(['apply', '-f', file], env);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/~ uplink of host1 \(mtu 9000\).*\[commit-confirm 60 s\]/);
    const again = await runCli(['apply', '-f', file], env);
    expect(again.stdout.trim().split('\n').pop()).toBe('no changes');
  });

  it("a linux-backend vlan network follows the hosts' capability report: built where 802.1Q exists, else refused naming ovs", async () => {
    const st = await cliJson<{ hosts: HostStatus[] }>(['status'], env);
    const vlanOn = ['host1', 'host2'].map(
      (h) => st.hosts.find((x) => x.name === h)?.report?.capabilities.network.vlan,
    );
    expect(
      vlanOn.every((x) => typeof x === 'boolean'),
      JSON.stringify(vlanOn),
    ).toBe(true);
    const withLinuxVlan = join(root, 'linux-vlan.yaml');
    writeFileSync(withLinuxVlan, spec({ linuxVlan: true }));
    const r = await runCli(['apply', '-f', withLinuxVlan], env);
    if (vlanOn.includes(false)) {
      const host = vlanOn[0] === false ? 'host1' : 'host2';
      expect(r.code, r.stderr + r.stdout).toBe(2);
      expect(r.stderr).toMatch(
        new RegExp(
          `networks\\[4\\]\\.backend: host "${host}"'s kernel has no 802\\.1Q VLAN devices.*backend: ovs`,
        ),
      );
      // Refused before any change.
      const plan = await runCli(['plan', '-f', file], env);
      expect(plan.stdout.trim()).toBe('No changes. Infrastructure matches the spec.');
    } else {
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(r.stdout).toContain('+ network lin300 on host1');
      const ping = await exec('l1', 'ping', '-c', '2', '-W', '2', '10.30.0.12');
      expect(ping.code, ping.stdout + ping.stderr).toBe(0);
      const back = await runCli(['apply', '--allow-destroy', '-f', file], env); // l1 and l2 go
      expect(back.code, back.stderr + back.stdout).toBe(0);
      expect(back.stdout).toMatch(/- vm l1 on host1/);
    }
  });

  let v: VerifyResult;
  const cell = (from: string, to: string): MatrixCell => v.cells.find((c) => c.from === from && c.to === to)!;

  it('verifies the matrix green across hosts, with the jumbo overlay path MTU', async () => {
    const r = await runCli(['verify', '--json'], env);
    v = JSON.parse(r.stdout) as VerifyResult;
    const bad = [...v.cells.filter((c) => !c.ok), ...v.pmtu.filter((p) => !p.ok)];
    expect(bad, JSON.stringify(bad, null, 1)).toEqual([]);
    expect(r.code).toBe(0);
    expect(v.pmtu).toContainEqual(
      expect.objectContaining({ network: 'app', expectedMtu: 8950, measuredMtu: 8950 }),
    );
  });

  it('VXLAN: the same VNI reaches across hosts; another VNI with the same CIDR does not', () => {
    expect(cell('web1', 'web3')).toMatchObject({ expected: true, observed: true });
    expect(cell('web3', 'web1')).toMatchObject({ observed: true });
    expect(cell('web3', 'upstream')).toMatchObject({ observed: true });
    expect(cell('db2', 'web3')).toMatchObject({ expected: false, observed: false });
    expect(cell('web3', 'db2')).toMatchObject({ observed: false });
  });

  it('VLAN: different tags are isolated until the trunk router routes between them', async () => {
    expect(cell('p1', 't2')).toMatchObject({ observed: false });
    // The router's set-up in one guest exec (each command echoed, the first failure ends it), the two routes beside it.
    const router = [
      'ip link add link eth0 name eth0.100 type vlan id 100',
      'ip link add link eth0 name eth0.200 type vlan id 200',
      'ip addr add 10.100.0.1/24 dev eth0.100',
      'ip addr add 10.200.0.1/24 dev eth0.200',
      'ip link set eth0.100 up',
      'ip link set eth0.200 up',
      'sysctl -w net.ipv4.ip_forward=1',
    ];
    const [r3, p1, t2] = await Promise.all([
      exec('r3', 'sh', '-c', `set -e; ${router.map((c) => `echo '+ ${c}'; ${c}`).join('; ')}`),
      exec('p1', 'ip', 'route', 'add', '10.200.0.0/24', 'via', '10.100.0.1'),
      exec('t2', 'ip', 'route', 'add', '10.100.0.0/24', 'via', '10.200.0.1'),
    ]);
    expect(r3.code, `r3: ${r3.stdout}${r3.stderr}`).toBe(0);
    expect(p1.code, p1.stderr).toBe(0);
    expect(t2.code, t2.stderr).toBe(0);
    const ping = await exec('p1', 'ping', '-c', '2', '-W', '2', '10.200.0.22');
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);
    expect(ping.stdout).toMatch(/ttl=63/);
  });

  it('shows the OpenFlow rules of a VLAN network', async () => {
    const r = await runCli(['network', 'show', 'prod100', '--flows'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('Flows on host1');
    expect(r.stdout).toMatch(/dl_vlan=100 actions=NORMAL/);
    // A trunk NIC serves each of its networks: r3's tap is listed under test200 too, not only its first network.
    const shown = await cliJson<{ hosts: Array<{ host: string; ports?: Array<{ vm: string }> }> }>(
      ['network', 'show', 'test200'],
      env,
    );
    expect(shown.hosts.find((h) => h.host === 'host3')?.ports?.map((p) => p.vm)).toContain('r3');
  });

  it('a host leaving the spec: its VMs and networks go, and the others drop it from their FDB', async () => {
    expect(fdbDestinations('host1').sort()).toEqual(['192.168.81.12', '192.168.81.13']);
    writeFileSync(file, spec({ host3: false }));
    // Deleting web3 destroys its data: refused (nothing changed, no prompt without a terminal) until allowed.
    const refused = await runCli(['apply', '-f', file], env);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain('this apply would destroy:\n  - vm r3 on host3');
    expect(refused.stderr).toContain('\n  - vm web3 on host3');
    expect(refused.stderr).toContain('--allow-destroy');
    expect(fdbDestinations('host1').sort()).toEqual(['192.168.81.12', '192.168.81.13']);
    const r = await runCli(['apply', '--allow-destroy', '-f', file], env);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/- vm web3 on host3/);
    expect(fdbDestinations('host1')).toEqual(['192.168.81.12']);
    expect(fdbDestinations('host2')).toEqual(['192.168.81.11']);
    const links = execFileSync('ip', ['-n', `vl-${LAB}-host3`, '-o', 'link', 'show'], { encoding: 'utf8' });
    expect(links).not.toMatch(/vlx-|vlt-/);
  });

  it('destroy and lab down leave nothing behind', async () => {
    expect((await runCli(['destroy', '-f', file], env)).code).toBe(0);
    expect((await runCli(['lab', 'down', '-f', fullFile], env)).code).toBe(0);
    const ns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    expect(ns).not.toContain(`vl-${LAB}-`);
    const procs = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(root) && /qemu-system|dnsmasq|ovs-vswitchd|ovsdb-server/.test(l));
    expect(procs).toEqual([]);
  });
});
