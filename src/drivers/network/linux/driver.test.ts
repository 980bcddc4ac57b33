import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../../exec/runner.js';
import { ConflictError, InvalidRequestError, NotFoundError } from '../../../shared/errors.js';
import { OvsStateStore } from '../ovs/state.js';
import { networkDrivers } from '../registry.js';
import { LinuxNetworkDriver } from './driver.js';
import { bridgedNet, eth0, isolatedNet, natNet } from './fixtures.test-util.js';
import { expectGolden, transcript } from './golden.test-util.js';
import { moveCommands } from './move.js';
import { LinuxNetworkStateStore } from './state.js';
import { validateNetworkConfig } from './validate.js';

const eth0Addr = JSON.stringify([
  { ifname: 'eth0', addr_info: [{ family: 'inet', local: '192.168.77.1', prefixlen: 24, scope: 'global' }] },
]);
const eth0Routes = JSON.stringify([
  { dst: 'default', gateway: '192.168.77.254', protocol: 'dhcp', metric: 100, flags: [] },
  { dst: '10.99.0.0/16', gateway: '192.168.77.9', flags: [] },
  { dst: '192.168.77.0/24', protocol: 'kernel', scope: 'link', prefsrc: '192.168.77.1', flags: [] },
]);

let stateDir: string;
beforeEach(async () => {
  stateDir = await mkdtemp(join(tmpdir(), 'vmlink-net-unit-'));
});
afterEach(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

describe('validateNetworkConfig', () => {
  it('accepts the fixtures', () => {
    for (const n of [natNet, isolatedNet, bridgedNet]) expect(() => validateNetworkConfig(n)).not.toThrow();
  });

  it('refuses configs the driver cannot realise, naming the field', () => {
    expect(() => validateNetworkConfig({ ...natNet, name: '../x' })).toThrow(InvalidRequestError);
    expect(() => validateNetworkConfig({ ...natNet, bridge: 'vlb-0123456789abcdef' })).toThrow(
      /networks\.web\.bridge/,
    );
    expect(() => validateNetworkConfig({ ...natNet, mtu: 20 })).toThrow(/networks\.web\.mtu/);
    expect(() => validateNetworkConfig({ ...natNet, subnet: undefined })).toThrow(/networks\.web\.subnet/);
    expect(() => validateNetworkConfig({ ...bridgedNet, uplink: undefined })).toThrow(
      /networks\.lan\.uplink/,
    );
    expect(() => validateNetworkConfig({ ...bridgedNet, uplink: bridgedNet.bridge })).toThrow(
      /bridge itself/,
    );
    expect(() => validateNetworkConfig({ ...isolatedNet, forwards: natNet.forwards })).toThrow(
      /need nat mode/,
    );
  });

  it('refuses before running any command', async () => {
    const runner = new RecordingRunner();
    const d = new LinuxNetworkDriver({ runner, stateDir });
    await expect(d.ensureNetwork({ ...natNet, bridge: 'bad name' }, 'h')).rejects.toThrow(
      InvalidRequestError,
    );
    expect(runner.calls).toEqual([]);
  });
});

describe('moveCommands', () => {
  it('moves addresses, then link routes, gateway routes, the default route last', () => {
    const routes = [
      { dst: 'default', gateway: '192.168.77.254', flags: [] },
      { dst: '10.99.0.0/16', gateway: '192.168.77.9', flags: [] },
      { dst: '10.5.0.0/16', scope: 'link', flags: [] },
    ];
    expect(moveCommands('eth0', 'br0', ['192.168.77.1/24'], routes).map((c) => c.join(' '))).toEqual([
      'addr del 192.168.77.1/24 dev eth0',
      'addr add 192.168.77.1/24 broadcast + dev br0',
      'route replace 10.5.0.0/16 dev br0 scope link',
      'route replace 10.99.0.0/16 via 192.168.77.9 dev br0',
      'route replace default via 192.168.77.254 dev br0',
    ]);
  });
});

describe('LinuxNetworkDriver (recorded commands)', () => {
  it('is registered as linux', () => {
    expect(networkDrivers.linux({ runner: new RecordingRunner(), stateDir })).toBeInstanceOf(
      LinuxNetworkDriver,
    );
  });

  it('bridge mode: creates the labelled bridge and moves uplink addresses and routes in one batch', async () => {
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show'], { stdout: JSON.stringify([eth0]) })
      .on(['ip', '-json', '-4', 'addr', 'show', 'dev', 'eth0'], { stdout: eth0Addr })
      .on(['ip', '-json', '-4', 'route', 'show', 'dev', 'eth0'], { stdout: eth0Routes });
    const d = new LinuxNetworkDriver({ runner, stateDir, netns: 'lab-h1' });
    await d.ensureNetwork(bridgedNet, 'hash-1');
    expectGolden('driver-bridge-ensure.txt', transcript(runner));
    const state = JSON.parse(await readFile(join(stateDir, 'network-linux/lan/network.json'), 'utf8'));
    expect(state).toMatchObject({
      version: 1,
      configHash: 'hash-1',
      config: bridgedNet,
      moved: { addrs: ['192.168.77.1/24'] },
    });
  });

  it('bridge mode delete: moves addresses and routes back, releases the uplink, deletes the bridge', async () => {
    const br = {
      ifindex: 3,
      ifname: 'vlb-55556666',
      flags: ['UP'],
      mtu: 1500,
      operstate: 'UP',
      ifalias: 'vmlink:net:lan',
      linkinfo: { info_kind: 'bridge' },
    };
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', 'vlb-55556666'], {
        stdout: JSON.stringify([br]),
      })
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', 'eth0'], {
        stdout: JSON.stringify([{ ...eth0, master: br.ifname }]),
      })
      .on(['ip', '-json', '-details', 'link', 'show'], {
        stdout: JSON.stringify([{ ...eth0, master: br.ifname }]),
      })
      .on(['ip', '-json', '-4', 'addr', 'show', 'dev', 'vlb-55556666'], {
        stdout: eth0Addr.replace('"eth0"', `"${br.ifname}"`),
      })
      .on(['ip', '-json', '-4', 'route', 'show', 'dev', 'vlb-55556666'], { stdout: eth0Routes });
    const d = new LinuxNetworkDriver({ runner, stateDir, netns: 'lab-h1' });
    await d.ensureNetwork(bridgedNet, 'hash-1');
    runner.calls.length = 0;
    await d.deleteNetwork('lan');
    expectGolden('driver-bridge-delete.txt', transcript(runner));
    await expect(readFile(join(stateDir, 'network-linux/lan/network.json'))).rejects.toThrow(/ENOENT/);
  });

  it('refuses a bridge that belongs to someone else, and reverts nothing it did not create', async () => {
    const foreign = {
      ifindex: 3,
      ifname: natNet.bridge,
      flags: ['UP'],
      mtu: 1500,
      operstate: 'UP',
      linkinfo: { info_kind: 'bridge' },
    };
    const runner = new RecordingRunner().on(['ip', '-json', '-details', 'link', 'show'], {
      stdout: JSON.stringify([foreign]),
    });
    const d = new LinuxNetworkDriver({ runner, stateDir });
    await expect(d.ensureNetwork(natNet, 'h')).rejects.toThrow(ConflictError);
    expect(runner.lines()).toEqual(['ip -json -details link show']);
  });

  it('undoes what it created when a later step fails', async () => {
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show'], { stdout: '[]' })
      .on(['ip', '-batch'], { code: 2, stderr: 'RTNETLINK answers: Operation not permitted' });
    const d = new LinuxNetworkDriver({ runner, stateDir });
    await expect(d.ensureNetwork(natNet, 'h')).rejects.toThrow(/Operation not permitted/);
    expect(runner.lines().at(-1)).toBe('ip link del dev vlb-0a1b2c3d');
  });

  it('ports: creates a vnet_hdr tap, attaches it, and refuses to delete a non-tap', async () => {
    const br = {
      ifindex: 3,
      ifname: 'vlb-1',
      flags: ['UP'],
      mtu: 1500,
      operstate: 'UP',
      linkinfo: { info_kind: 'bridge' },
    };
    const runner = new RecordingRunner()
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', 'vlb-1'], { stdout: JSON.stringify([br]) })
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', 'eth0'], { stdout: JSON.stringify([eth0]) })
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', 'vlt-1'], {
        code: 1,
        stderr: 'Device "vlt-1" does not exist.',
      })
      .on(['ip', '-json', '-details', 'link', 'show', 'dev', 'nobr'], {
        code: 1,
        stderr: 'Device "nobr" does not exist.',
      });
    const d = new LinuxNetworkDriver({ runner, stateDir });
    await expect(d.ensurePort({ tap: 'vlt-1', bridge: 'nobr', mtu: 1500 })).rejects.toThrow(NotFoundError);
    runner.calls.length = 0;
    await d.ensurePort({
      tap: 'vlt-1',
      bridge: 'vlb-1',
      mtu: 1400,
      security: { mac: '52:54:00:00:00:01', addresses: ['10.0.0.5', '10.0.0.50'] },
    });
    expect(runner.lines()).toEqual([
      'ip -json -details link show dev vlb-1',
      'ip -json -details link show dev vlt-1',
      'ip -batch -',
      'nft -f -',
    ]);
    expect(runner.calls[2]!.input).toBe(
      'tuntap add dev vlt-1 mode tap vnet_hdr\nlink set dev vlt-1 master vlb-1 mtu 1400 up\n',
    );
    // Marked as a VM port and guarded: golden file of the bridge table script.
    expectGolden('port-guard-ensure.nft', runner.calls[3]!.input!);
    await expect(d.deletePort('eth0')).rejects.toThrow(ConflictError);
    runner.calls.length = 0;
    await d.deletePort('vlt-1');
    expectGolden('port-guard-remove.nft', runner.calls.at(-1)!.input!);
    expect(await d.portAttached('vlt-1', 'vlb-1')).toBe(false);
  });
});

describe('appliedConfig', () => {
  it('answers from the backend’s own state only: linux sees network.json, ovs sees ovs.json', async () => {
    const opts = { runner: new RecordingRunner(), stateDir };
    const linux = networkDrivers.linux(opts);
    const ovs = networkDrivers.ovs(opts);
    await new LinuxNetworkStateStore(stateDir).write({ version: 1, config: natNet, configHash: 'h-linux' });
    const ovsNet = { ...isolatedNet, name: 'trunk', backend: 'ovs' as const };
    await new OvsStateStore(stateDir, join(stateDir, 'ovs')).write({
      version: 1,
      driver: 'ovs',
      config: ovsNet,
      configHash: 'h-ovs',
    });
    expect(await linux.appliedConfig(natNet.name)).toEqual({ config: natNet, configHash: 'h-linux' });
    expect(await ovs.appliedConfig(natNet.name)).toBeUndefined();
    expect(await ovs.appliedConfig('trunk')).toEqual({ config: ovsNet, configHash: 'h-ovs' });
    expect(await linux.appliedConfig('trunk')).toBeUndefined();
    expect(await linux.appliedConfig('missing')).toBeUndefined();
  });

  it('refuses a corrupt state file naming it, rather than taking it for absent', async () => {
    await mkdir(join(stateDir, 'network-linux', 'web'), { recursive: true });
    await writeFile(join(stateDir, 'network-linux', 'web', 'network.json'), '{"version":1,');
    await expect(
      networkDrivers.linux({ runner: new RecordingRunner(), stateDir }).appliedConfig('web'),
    ).rejects.toThrow(/network-linux\/web\/network\.json: not valid JSON/);
  });
});
