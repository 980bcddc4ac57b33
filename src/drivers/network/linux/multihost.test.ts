// Recorded-command tests of the linux backend's multi-host parts: vxlan overlays (device, FDB sync),
// vlan networks and VLAN ports (their command generation is checked against golden files, with the kernel probe
// faked both ways, so the tests hold on any kernel), and the uplink manager.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../../exec/runner.js';
import { ConflictError, InvalidRequestError, UnsupportedError } from '../../../shared/errors.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { renderDnsmasqConf } from './dnsmasq.js';
import { LinuxNetworkDriver } from './driver.js';
import { natNet, vlanNet, vxlanGateway, vxlanNet } from './fixtures.test-util.js';
import { expectGolden, transcript } from './golden.test-util.js';
import {
  fdbSync,
  parsePortVlans,
  portVlanCommands,
  vlanDeviceName,
  vtepDevice,
  wantedPortVlans,
} from './overlay.js';
import { buildRuleset } from './ruleset.js';
import { restoreCommands, type UplinkSnapshot, uplinkCommands, uplinkMatches } from './uplink.js';
import { validateNetworkConfig } from './validate.js';

let stateDir: string;
beforeEach(async () => {
  stateDir = await mkdtemp(join(tmpdir(), 'vmlink-net-mh-'));
});
afterEach(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

const eth0 = { ifindex: 2, ifname: 'eth0', flags: ['UP'], mtu: 1500, operstate: 'UP' };
const eth1 = { ifindex: 4, ifname: 'eth1', flags: ['UP'], mtu: 1500, operstate: 'UP' };
const eth0Addr = (ip: string) =>
  JSON.stringify([
    { ifname: 'eth0', addr_info: [{ family: 'inet', local: ip, prefixlen: 24, scope: 'global' }] },
  ]);
const ovBridge = {
  ifindex: 3,
  ifname: vxlanNet.bridge,
  flags: ['UP'],
  mtu: 1450,
  operstate: 'UP',
  ifalias: 'vmlink:net:ov1',
  linkinfo: { info_kind: 'bridge', info_data: { vlan_filtering: 0 } },
};
const ovVxlan = (data: Record<string, unknown> = {}) => ({
  ifindex: 5,
  ifname: 'vlx-0f0f0001',
  flags: ['UP'],
  mtu: 1450,
  operstate: 'UNKNOWN',
  master: vxlanNet.bridge,
  ifalias: 'vmlink:vxlan:ov1',
  linkinfo: {
    info_kind: 'vxlan',
    info_data: { id: 1001, local: '192.168.50.2', link: 'eth0', port: 4789, learning: false, ...data },
  },
});
const flood = (...dsts: string[]) =>
  JSON.stringify([
    // As `bridge -json fdb show` prints them: each entry names its device.
    {
      mac: 'aa:bb:cc:00:00:01',
      ifname: vxlanNet.vxlan!.device,
      flags: [],
      master: vxlanNet.bridge,
      state: 'permanent',
    },
    ...dsts.map((dst) => ({
      mac: '00:00:00:00:00:00',
      ifname: vxlanNet.vxlan!.device,
      dst,
      flags: ['self'],
      state: 'permanent',
    })),
  ]);

/** A runner whose kernel probe finds what `has` says (everything else present); the probe is run and forgotten. */
async function driverWith(
  runner: RecordingRunner,
  has: { vlan?: boolean; bridgeVlanFiltering?: boolean } = {},
): Promise<LinuxNetworkDriver> {
  if (has.vlan === false) runner.on(['ip', 'link', 'add', 'link', 'p0', 'name', 'v0'], { code: 2 });
  if (has.bridgeVlanFiltering === false)
    runner.on(['ip', 'link', 'add', 'name', 'br0', 'type', 'bridge', 'vlan_filtering'], { code: 2 });
  const d = new LinuxNetworkDriver({ runner, stateDir, netns: 'lab-h2' });
  await d.capabilities();
  runner.calls.length = 0;
  return d;
}

describe('validateNetworkConfig: vxlan and vlan', () => {
  it('accepts the fixtures', () => {
    for (const n of [vxlanNet, vxlanGateway, vlanNet]) expect(() => validateNetworkConfig(n)).not.toThrow();
  });

  it('refuses what it cannot realise, naming the field', () => {
    const vx = (patch: Partial<NonNullable<NetworkConfig['vxlan']>>) => () =>
      validateNetworkConfig({ ...vxlanNet, vxlan: { ...vxlanNet.vxlan!, ...patch } });
    expect(() => validateNetworkConfig({ ...vxlanNet, vxlan: undefined })).toThrow(/networks\.ov1\.vxlan/);
    expect(vx({ vni: 0 })).toThrow(/networks\.ov1\.vni: 0 out of range 1-16777215/);
    expect(vx({ vni: 16777216 })).toThrow(/networks\.ov1\.vni/);
    expect(vx({ remotes: ['192.168.50.2'] })).toThrow(
      /remotes\[0\]: 192\.168\.50\.2 is this host's own VTEP/,
    );
    expect(vx({ remotes: ['192.168.50.1', '192.168.50.1'] })).toThrow(/remotes\[1\].*listed twice/);
    expect(vx({ remotes: ['fe80::1'] })).toThrow(/remotes\[0\]/);
    expect(vx({ local: 'host1' })).toThrow(/networks\.ov1\.vxlan\.local/);
    expect(vx({ device: 'vlx 1' })).toThrow(/networks\.ov1\.vxlan\.device/);
    expect(vx({ device: vxlanNet.bridge })).toThrow(/bridge itself/);
    expect(vx({ port: 0 })).toThrow(/networks\.ov1\.vxlan\.port/);
    expect(() => validateNetworkConfig({ ...vxlanNet, forwards: natNet.forwards })).toThrow(/need nat mode/);
    expect(() => validateNetworkConfig({ ...vxlanGateway, forwards: natNet.forwards })).not.toThrow();
    expect(() => validateNetworkConfig({ ...vlanNet, vlan: { id: 4095, trunk: 'eth1' } })).toThrow(
      /networks\.prod100\.vlan\.id: 4095 out of range 1-4094/,
    );
    expect(() => validateNetworkConfig({ ...vlanNet, vlan: undefined })).toThrow(/networks\.prod100\.vlan/);
  });
});

describe('overlay helpers', () => {
  it('names 802.1Q devices TRUNK.ID, hashing trunk names too long for it', () => {
    expect(vlanDeviceName('eth1', 100)).toBe('eth1.100');
    expect(vlanDeviceName('enp1s0f1', 4094)).toBe('enp1s0f1.4094');
    const long = vlanDeviceName('enp129s0f1np1', 4094);
    expect(long).toMatch(/^vl[0-9a-f]{8}\.4094$/);
    expect(long.length).toBeLessThanOrEqual(15);
    expect(vlanDeviceName('enp129s0f1np2', 4094)).not.toBe(long);
  });

  it('picks the VTEP device: the holder of the local address, else the bridge enslaving the underlay', () => {
    const links = new Map([
      ['eth0', { name: 'eth0', index: 2, mtu: 1500, up: true, operstate: 'UP', master: 'vlb-1' }],
      ['vlb-1', { name: 'vlb-1', index: 3, mtu: 1500, up: true, operstate: 'UP', kind: 'bridge' }],
    ]);
    const v = vxlanNet.vxlan!;
    const onBridge = [
      { dev: 'vlb-1', family: 'inet' as const, local: v.local, prefixLen: 24, scope: 'global' },
    ];
    expect(vtepDevice(v, links, onBridge)).toBe('vlb-1');
    expect(vtepDevice(v, links, [])).toBe('vlb-1');
    expect(vtepDevice(v, new Map(), [])).toBe('eth0');
  });

  it('syncs head-end replication: stale remotes deleted, missing ones appended', () => {
    const s = fdbSync('vlx-1', ['10.0.0.1', '10.0.0.3'], ['10.0.0.9', '10.0.0.1']);
    expect(s.add).toEqual(['10.0.0.3']);
    expect(s.del).toEqual(['10.0.0.9']);
    expect(s.cmds.map((c) => c.join(' '))).toEqual([
      'fdb del 00:00:00:00:00:00 dev vlx-1 dst 10.0.0.9',
      'fdb append 00:00:00:00:00:00 dev vlx-1 dst 10.0.0.3',
    ]);
    expect(fdbSync('vlx-1', ['10.0.0.1'], ['10.0.0.1']).cmds).toEqual([]);
  });

  it('gives a port exactly its VLANs: access = pvid untagged, trunk = tagged, default VLAN 1 dropped', () => {
    const have = parsePortVlans(
      '[{"ifname":"vlt-1","vlans":[{"vlan":1,"flags":["PVID","Egress Untagged"]},{"vlan":300,"vlanEnd":301}]}]',
      'vlt-1',
    );
    expect(have).toEqual([
      { vid: 1, pvid: true, untagged: true },
      { vid: 300, pvid: false, untagged: false },
      { vid: 301, pvid: false, untagged: false },
    ]);
    const access = portVlanCommands(
      'vlt-1',
      have,
      wantedPortVlans({ tap: 'vlt-1', bridge: 'b', mtu: 1500, vlan: 100 }),
    );
    expect(access.map((c) => c.join(' '))).toEqual([
      'vlan del dev vlt-1 vid 1',
      'vlan del dev vlt-1 vid 300',
      'vlan del dev vlt-1 vid 301',
      'vlan add dev vlt-1 vid 100 pvid untagged',
    ]);
    const trunk = wantedPortVlans({ tap: 'vlt-1', bridge: 'b', mtu: 1500, trunks: [301, 100, 300] });
    expect(portVlanCommands('vlt-1', have, trunk).map((c) => c.join(' '))).toEqual([
      'vlan del dev vlt-1 vid 1',
      'vlan add dev vlt-1 vid 100',
    ]);
    expect(portVlanCommands('vlt-1', trunk, trunk)).toEqual([]);
  });
});

describe('rules and DHCP of vxlan/vlan gateway hosts', () => {
  it('nat gateway: masquerade like a nat network; without nat: address + DHCP, nothing routed; elsewhere: only the guest filters', () => {
    const member = buildRuleset([vxlanNet])!;
    expect(member).not.toContain('same_bridge {\n\t\ttype ifname . ifname\n\t\telements');
    // Its VNI is filtered; its remote VTEPs are the only sources its VXLAN packets are accepted from.
    expect(member).toContain(
      `set vxlan_vnis {\n\t\ttypeof @th,96,24\n\t\telements = { ${vxlanNet.vxlan!.vni} }`,
    );
    expect(member).toContain(
      `elements = { ${vxlanNet.vxlan!.remotes.map((r) => `${vxlanNet.vxlan!.vni} . ${r}`).join(', ')} }`,
    );
    expectGolden('ruleset-overlay.nft', buildRuleset([vxlanGateway, vlanNet])!);
    expectGolden('dnsmasq-vxlan-nat.conf', renderDnsmasqConf(vxlanGateway));
    const plain = renderDnsmasqConf(vlanNet);
    expect(plain).toContain('no-resolv\n');
    expect(plain).toContain('dhcp-option=option:router\n');
    expect(() => renderDnsmasqConf(vxlanNet)).toThrow(/needs a subnet/);
  });
});

describe('LinuxNetworkDriver: vxlan (recorded commands)', () => {
  it('creates bridge, nolearning vxlan device on the underlay and one FDB entry per remote VTEP', async () => {
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show'], { stdout: JSON.stringify([eth0]) })
      .on(['ip', '-json', 'addr', 'show'], { stdout: eth0Addr('192.168.50.2') })
      .on(['bridge', '-json', 'fdb', 'show'], { stdout: '[]' });
    const d = await driverWith(runner);
    await d.ensureNetwork(vxlanNet, 'ov1-1');
    expectGolden('driver-vxlan-ensure.txt', transcript(runner));
    const state = JSON.parse(await readFile(join(stateDir, 'network-linux/ov1/network.json'), 'utf8'));
    expect(state).toMatchObject({ version: 1, configHash: 'ov1-1', config: vxlanNet });
  });

  it('keeps a matching device; syncs its FDB (adds the missing remote, deletes the stale one); lists drift', async () => {
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show'], {
        stdout: JSON.stringify([eth0, ovBridge, ovVxlan()]),
      })
      .on(['ip', '-json', 'addr', 'show'], { stdout: eth0Addr('192.168.50.2') })
      .on(['bridge', '-json', 'fdb', 'show'], { stdout: flood('192.168.50.1', '192.168.50.9') });
    const d = await driverWith(runner);
    await d.ensureNetwork(vxlanNet, 'ov1-1');
    const lines = runner.lines();
    expect(lines.filter((l) => l.includes('-batch'))).toEqual(['[lab-h2] bridge -batch -']);
    expect(runner.calls.find((c) => c.argv[0] === 'bridge' && c.argv[1] === '-batch')?.input).toBe(
      'fdb del 00:00:00:00:00:00 dev vlx-0f0f0001 dst 192.168.50.9\n' +
        'fdb append 00:00:00:00:00:00 dev vlx-0f0f0001 dst 192.168.50.3\n',
    );
    // The config it was realised from comes back too: plans name changed fields from it.
    expect((await d.listNetworks())[0]?.config).toEqual(vxlanNet);
    // The recording runner still reports the old FDB: listNetworks names both problems.
    expect((await d.listNetworks())[0]?.problems).toEqual([
      'FDB entry for remote VTEP 192.168.50.3 missing on vlx-0f0f0001',
      'stale FDB entry for VTEP 192.168.50.9 on vlx-0f0f0001',
    ]);
  });

  it('re-creates a device with the wrong VNI or local address, and lists why', async () => {
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show'], {
        stdout: JSON.stringify([
          eth0,
          ovBridge,
          ovVxlan({ id: 1002, local: '192.168.50.7', learning: true }),
        ]),
      })
      .on(['ip', '-json', 'addr', 'show'], { stdout: eth0Addr('192.168.50.2') })
      .on(['bridge', '-json', 'fdb', 'show'], { stdout: flood('192.168.50.1', '192.168.50.3') });
    const d = await driverWith(runner);
    await d.ensureNetwork(vxlanNet, 'ov1-1');
    const batch = runner.calls.find((c) => c.argv[1] === '-batch')?.input;
    expect(batch).toBe(
      'link del dev vlx-0f0f0001\n' +
        'link add name vlx-0f0f0001 mtu 1450 type vxlan id 1001 dstport 4789 local 192.168.50.2 dev eth0 nolearning\n' +
        'link set dev vlx-0f0f0001 master vlb-0f0f0001 alias vmlink:vxlan:ov1 up\n',
    );
    expect((await d.listNetworks())[0]?.problems).toEqual([
      'vxlan vlx-0f0f0001 has VNI 1002, want 1001',
      'vxlan vlx-0f0f0001 has local 192.168.50.7, want 192.168.50.2',
      'vxlan vlx-0f0f0001 learns remote MACs, want nolearning',
    ]);
  });

  it('refuses an overlay mtu the underlay cannot carry, and a device that is not its own, before any change', async () => {
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show'], { stdout: JSON.stringify([eth0]) })
      .on(['ip', '-json', 'addr', 'show'], { stdout: eth0Addr('192.168.50.2') });
    const d = await driverWith(runner);
    await expect(d.ensureNetwork({ ...vxlanNet, mtu: 1451 }, 'h')).rejects.toThrow(
      "networks.ov1.mtu: 1451 + 50 bytes of VXLAN headers exceeds the underlay eth0's mtu 1500",
    );
    expect(runner.lines().filter((l) => l.includes('-batch'))).toEqual([]);

    const veth = { ...eth0, ifindex: 9, ifname: 'vlx-0f0f0001', linkinfo: { info_kind: 'veth' } };
    const r2 = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show'], { stdout: JSON.stringify([eth0, ovBridge, veth]) })
      .on(['ip', '-json', 'addr', 'show'], { stdout: eth0Addr('192.168.50.2') });
    const d2 = await driverWith(r2);
    await expect(d2.ensureNetwork(vxlanNet, 'h')).rejects.toThrow(ConflictError);
    expect(r2.lines().filter((l) => l.includes('-batch'))).toEqual([]);
  });

  it('deletes the vxlan device with the network', async () => {
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', 'vlx-0f0f0001'], {
        stdout: JSON.stringify([ovVxlan()]),
      })
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', vxlanNet.bridge], {
        stdout: JSON.stringify([ovBridge]),
      })
      .on(['ip', '-json', '-details', 'link', 'show'], {
        stdout: JSON.stringify([eth0, ovBridge, ovVxlan()]),
      })
      .on(['ip', '-json', 'addr', 'show'], { stdout: eth0Addr('192.168.50.2') })
      .on(['bridge', '-json', 'fdb', 'show'], { stdout: flood('192.168.50.1', '192.168.50.3') });
    const d = await driverWith(runner);
    await d.ensureNetwork(vxlanNet, 'ov1-1');
    runner.calls.length = 0;
    await d.deleteNetwork('ov1');
    expect(runner.lines().filter((l) => l.includes('link del'))).toEqual([
      '[lab-h2] ip link del dev vlx-0f0f0001',
      '[lab-h2] ip link del dev vlb-0f0f0001',
    ]);
  });
});

describe('LinuxNetworkDriver: vlan networks and VLAN ports', () => {
  it('refuses a vlan network where the kernel has no 802.1Q devices, naming ovs, before any change', async () => {
    const runner = new RecordingRunner();
    const d = await driverWith(runner, { vlan: false });
    const err = await d.ensureNetwork(vlanNet, 'h').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedError);
    expect((err as Error).message).toBe(
      "network prod100: this host's kernel has no 802.1Q VLAN devices; use backend: ovs for vlan networks (Open vSwitch's userspace datapath does VLANs without kernel support)",
    );
    expect(runner.calls).toEqual([]);
    expect(await d.supportedModes()).toEqual(['nat', 'bridge', 'isolated', 'vxlan']);
  });

  it('where the kernel has 802.1Q: a TRUNK.ID device enslaved to the network bridge', async () => {
    const runner = new RecordingRunner().on(['ip', '-json', '-details', 'link', 'show'], {
      stdout: JSON.stringify([eth1]),
    });
    const d = await driverWith(runner);
    expect(await d.supportedModes()).toEqual(['nat', 'bridge', 'isolated', 'vxlan', 'vlan']);
    await d.ensureNetwork({ ...vlanNet, subnet: undefined }, 'v-1');
    expectGolden('driver-vlan-ensure.txt', transcript(runner));
  });

  it('refuses VLAN access and trunk ports without bridge vlan_filtering, naming ovs, before any change', async () => {
    const runner = new RecordingRunner();
    const d = await driverWith(runner, { bridgeVlanFiltering: false });
    await expect(d.ensurePort({ tap: 'vlt-1', bridge: 'vlb-1', mtu: 1500, vlan: 100 })).rejects.toThrow(
      "port vlt-1: a VLAN access port (VLAN 100) on the linux backend needs bridge vlan_filtering, which this host's kernel lacks; use backend: ovs",
    );
    await expect(
      d.ensurePort({ tap: 'vlt-1', bridge: 'vlb-1', mtu: 1500, trunks: [100, 200] }),
    ).rejects.toThrow(UnsupportedError);
    expect(runner.calls).toEqual([]);
  });

  it('an access port on its own vlan network bridge needs no filtering (the 802.1Q device tags)', async () => {
    const br = { ...ovBridge, ifname: vlanNet.bridge, ifalias: 'vmlink:net:prod100' };
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', vlanNet.bridge], {
        stdout: JSON.stringify([br]),
      })
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', 'vlt-1'], { code: 1, stderr: 'does not exist' })
      .on(['ip', '-json', '-details', 'link', 'show'], { stdout: JSON.stringify([eth1]) });
    const d = await driverWith(runner, { bridgeVlanFiltering: false });
    await d.ensureNetwork({ ...vlanNet, subnet: undefined }, 'v-1');
    runner.calls.length = 0;
    await d.ensurePort({ tap: 'vlt-1', bridge: vlanNet.bridge, mtu: 1500, vlan: 100 });
    expect(runner.lines().some((l) => l.includes('vlan'))).toBe(false);
  });

  it('with vlan_filtering: turns it on, then gives access and trunk ports their VLANs', async () => {
    const br = { ...ovBridge, ifname: 'vlb-1', ifalias: undefined };
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', 'vlb-1'], { stdout: JSON.stringify([br]) })
      .on(['ip', '-json', '-details', 'link', 'show', 'dev'], { code: 1, stderr: 'does not exist' })
      .on(['bridge', '-json', 'vlan', 'show', 'dev', 'vlt-1'], {
        stdout: '[{"ifname":"vlt-1","vlans":[{"vlan":1,"flags":["PVID","Egress Untagged"]}]}]',
      })
      .on(['bridge', '-json', 'vlan', 'show', 'dev', 'vlt-2'], {
        stdout: '[{"ifname":"vlt-2","vlans":[{"vlan":1,"flags":["PVID","Egress Untagged"]}]}]',
      });
    const d = await driverWith(runner);
    await d.ensurePort({ tap: 'vlt-1', bridge: 'vlb-1', mtu: 1500, vlan: 100 });
    await d.ensurePort({ tap: 'vlt-2', bridge: 'vlb-1', mtu: 1500, trunks: [100, 200] });
    expectGolden('driver-port-vlan.txt', transcript(runner));
  });
});

describe('uplink', () => {
  const routes = JSON.stringify([
    { dst: 'default', gateway: '192.168.77.254', protocol: 'dhcp', metric: 100, flags: [] },
    { dst: '10.99.0.0/16', gateway: '192.168.77.9', flags: [] },
    { dst: '192.168.77.0/24', protocol: 'kernel', scope: 'link', prefsrc: '192.168.77.1', flags: [] },
  ]);
  const snap: UplinkSnapshot = {
    device: 'eth0',
    addressDevice: 'eth0',
    mtu: 1500,
    addresses: ['192.168.77.1/24'],
    routes: [
      { dst: 'default', gateway: '192.168.77.254', protocol: 'dhcp', metric: 100, flags: [] },
      { dst: '10.99.0.0/16', gateway: '192.168.77.9', flags: [] },
    ],
  };
  const uplinkRunner = (eth: object = eth0) =>
    new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', 'eth0'], { stdout: JSON.stringify([eth]) })
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', 'vlb-1'], {
        stdout: JSON.stringify([{ ...ovBridge, ifname: 'vlb-1', mtu: 1500 }]),
      })
      .on(['ip', '-json', '-4', 'addr', 'show'], { stdout: eth0Addr('192.168.77.1') })
      .on(['ip', '-json', '-4', 'route', 'show'], { stdout: routes });

  it('observes mtu, addresses, gateway (no hash before vmlink configured it)', async () => {
    const d = new LinuxNetworkDriver({ runner: uplinkRunner(), stateDir });
    expect(await d.observeUplink('eth0')).toEqual({
      device: 'eth0',
      addressDevice: 'eth0',
      mtu: 1500,
      addresses: ['192.168.77.1/24'],
      gateway: '192.168.77.254',
    });
  });

  it('configures mtu, addresses and default route in ONE batch, then persists config and hash', async () => {
    const runner = uplinkRunner();
    const d = new LinuxNetworkDriver({ runner, stateDir, netns: 'lab-h1' });
    const cfg = { device: 'eth0', mtu: 9000, addresses: ['192.168.77.5/24'], gateway: '192.168.77.253' };
    await d.configureUplink(cfg, 'up-1');
    expect(runner.lines().filter((l) => l.includes('-batch'))).toHaveLength(1);
    expectGolden('driver-uplink-configure.txt', transcript(runner));
    expect(JSON.parse(await readFile(join(stateDir, 'uplink.json'), 'utf8'))).toEqual({
      version: 1,
      config: cfg,
      configHash: 'up-1',
    });
    // The recorded uplink still shows the old state: the hash is not claimed for it.
    expect((await d.observeUplink('eth0')).configHash).toBeUndefined();
  });

  it('is idempotent: an uplink that already matches runs no batch, and reports the hash', async () => {
    const runner = uplinkRunner();
    const d = new LinuxNetworkDriver({ runner, stateDir });
    await d.configureUplink(
      { device: 'eth0', mtu: 1500, addresses: ['192.168.77.1/24'], gateway: '192.168.77.254' },
      'up-2',
    );
    expect(runner.lines().filter((l) => l.includes('-batch'))).toEqual([]);
    expect((await d.observeUplink('eth0')).configHash).toBe('up-2');
  });

  it('addresses sit on the bridge enslaving the uplink; mtu goes to both', async () => {
    const runner = uplinkRunner({ ...eth0, master: 'vlb-1' });
    const d = new LinuxNetworkDriver({ runner, stateDir });
    expect((await d.observeUplink('eth0')).addressDevice).toBe('vlb-1');
    runner.calls.length = 0;
    await d.configureUplink({ device: 'eth0', mtu: 9000 }, 'up-3');
    expect(runner.calls.find((c) => c.argv[1] === '-batch')?.input).toBe(
      'link set dev eth0 mtu 9000\nlink set dev vlb-1 mtu 9000\n',
    );
  });

  it('a failed batch is rolled back and nothing is persisted', async () => {
    const runner = uplinkRunner().on(['ip', '-batch'], {
      code: 2,
      stderr: 'RTNETLINK answers: Invalid argument',
    });
    const d = new LinuxNetworkDriver({ runner, stateDir });
    await expect(d.configureUplink({ device: 'eth0', mtu: 70000 }, 'x')).rejects.toThrow(InvalidRequestError);
    await expect(d.configureUplink({ device: 'eth0', gateway: '192.168.77.2' }, 'x')).rejects.toThrow(
      /Invalid argument/,
    );
    await expect(readFile(join(stateDir, 'uplink.json'))).rejects.toThrow(/ENOENT/);
  });

  it('plans uplink changes: gateway only, readdress keeping reachable routes, nothing', () => {
    const lines = (cfg: Parameters<typeof uplinkCommands>[1]) =>
      uplinkCommands(snap, cfg).map((c) => c.join(' '));
    expect(lines({ device: 'eth0', gateway: '192.168.77.253' })).toEqual([
      'route replace default via 192.168.77.253 dev eth0 metric 100',
    ]);
    expect(lines({ device: 'eth0', addresses: ['192.168.77.7/24'] })).toEqual([
      'addr del 192.168.77.1/24 dev eth0',
      'addr add 192.168.77.7/24 broadcast + dev eth0',
      'route replace 10.99.0.0/16 via 192.168.77.9 dev eth0',
      'route replace default via 192.168.77.254 dev eth0 proto dhcp metric 100',
    ]);
    expect(lines({ device: 'eth0', addresses: ['10.1.0.7/24'] })).toEqual([
      'addr del 192.168.77.1/24 dev eth0',
      'addr add 10.1.0.7/24 broadcast + dev eth0',
    ]);
    expect(
      lines({ device: 'eth0', mtu: 1500, addresses: ['192.168.77.1/24'], gateway: '192.168.77.254' }),
    ).toEqual([]);
    expect(uplinkMatches({ device: 'eth0', mtu: 1500, gateway: '192.168.77.254' }, snap)).toBe(true);
    expect(uplinkMatches({ device: 'eth0', mtu: 9000 }, snap)).toBe(false);
  });

  it('plans a restore: mtu, foreign routes out, addresses back, every snapshot route re-created', () => {
    const now: UplinkSnapshot = {
      device: 'eth0',
      addressDevice: 'eth0',
      mtu: 9000,
      addresses: ['192.168.77.5/24'],
      routes: [{ dst: 'default', gateway: '192.168.77.253', metric: 100, flags: [] }],
    };
    expect(restoreCommands(snap, now).map((c) => c.join(' '))).toEqual([
      'link set dev eth0 mtu 1500',
      'route del default via 192.168.77.253 dev eth0 metric 100',
      'addr del 192.168.77.5/24 dev eth0',
      'addr add 192.168.77.1/24 broadcast + dev eth0',
      'route replace 10.99.0.0/16 via 192.168.77.9 dev eth0',
      'route replace default via 192.168.77.254 dev eth0 proto dhcp metric 100',
    ]);
    expect(restoreCommands(snap, snap)).toEqual([]);
  });
});
