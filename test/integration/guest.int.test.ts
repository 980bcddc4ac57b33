import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dfPingArgv, parsePing } from '../../src/exec/probe.js';
import { SystemRunner } from '../../src/exec/runner.js';
import { ensureTestGuest, type TestGuest } from '../../src/guest/build.js';
import { runnerSide } from '../../src/lab/throughput.js';
import { searchPathMtu } from '../../src/verify/pmtu.js';
import { guestSide, measureThroughput } from '../../src/verify/throughput.js';
import { acquireVmLock } from '../helpers/vmlock.js';

// Boots the test guest under TCG in a namespace of its own and checks every service it promises:
// serial "ready" line, qemu-ga (sync, interfaces, exec), ICMP, HTTP on port 80, MTU from the cmdline,
// DHCP on a second NIC, iputils ping with don't-fragment, iperf3 both ways, 802.1Q, and ACPI powerdown.
// VMLINK_GUEST_DIR boots an image built elsewhere (e.g. `tsx src/guest/main.ts --out DIR`) before installing it.

const runner = new SystemRunner();
const NS = 'vltest-guest';
const HOST_IP = '10.99.0.1';
const GUEST_IP = '10.99.0.2';
const HOSTNAME = 'vltest-g1';
const DHCP_HOST_IP = '10.98.0.1';
const GUEST_MAC2 = '52:54:00:99:00:03';

/** Minimal JSON-lines client for QMP and qemu-ga sockets. */
class JsonLines {
  private buf = '';
  private readonly messages: Record<string, unknown>[] = [];
  private waiters: (() => void)[] = [];
  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8').on('data', (d: string) => {
      this.buf += d;
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, nl).replace(/^[\xff\s]+/, '');
        this.buf = this.buf.slice(nl + 1);
        try {
          if (line.trim()) this.messages.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // qemu-ga may emit garbage after a reset; guest-sync exists to skip it.
        }
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async connect(path: string, timeoutMs = 30_000): Promise<JsonLines> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path, () => resolve(s));
          s.once('error', reject);
        });
        return new JsonLines(sock);
      } catch (e) {
        if (Date.now() > end) throw e;
        await sleep(100);
      }
    }
  }

  send(msg: unknown): void {
    this.sock.write(`${JSON.stringify(msg)}\n`);
  }

  /** Waits for (and removes) the first message matching `pred`; undefined on timeout. */
  async next(
    pred: (m: Record<string, unknown>) => boolean,
    timeoutMs: number,
  ): Promise<Record<string, unknown> | undefined> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const i = this.messages.findIndex(pred);
      if (i >= 0) return this.messages.splice(i, 1)[0];
      const left = end - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Sends a command and returns its reply (`return` or `error` member), skipping events. */
  async call(execute: string, args?: unknown, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    this.send(args === undefined ? { execute } : { execute, arguments: args });
    const r = await this.next((m) => 'return' in m || 'error' in m, timeoutMs);
    if (!r) throw new Error(`${execute}: no reply in ${timeoutMs} ms`);
    return r;
  }

  /** Drops every message received so far. */
  clear(): void {
    this.messages.length = 0;
  }

  close(): void {
    this.sock.destroy();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

describe('test guest', () => {
  let guest: TestGuest;
  let dir: string;
  let release: (() => Promise<void>) | undefined;
  let pid: number | undefined;
  let qga: JsonLines | undefined;
  let qmp: JsonLines | undefined;
  let serial: string;
  let dnsmasqPid: number | undefined;
  const times: Record<string, number> = {};

  /** Runs argv in the guest through guest-exec and waits for it (qemu-ga's own protocol, no vmlink code). */
  const gexec = async (path: string, arg: string[], timeoutMs = 30_000) => {
    const r = await qga!.call('guest-exec', { path, arg, 'capture-output': true });
    const gpid = (r.return as { pid: number } | undefined)?.pid;
    if (gpid === undefined) throw new Error(`guest-exec ${path}: ${JSON.stringify(r.error)}`);
    const st = await waitFor(`guest-exec ${path}`, timeoutMs, async () => {
      const s = (await qga!.call('guest-exec-status', { pid: gpid })).return as Record<string, unknown>;
      return s.exited ? s : undefined;
    });
    const dec = (k: string) => Buffer.from((st[k] as string | undefined) ?? '', 'base64').toString('utf8');
    return { code: (st.exitcode as number | undefined) ?? -1, out: dec('out-data'), err: dec('err-data') };
  };

  beforeAll(async () => {
    const t0 = Date.now();
    guest = await ensureTestGuest({
      runner,
      ...(process.env.VMLINK_GUEST_DIR ? { outDir: process.env.VMLINK_GUEST_DIR } : {}),
      progress: (l) => console.log(`[guest] ${l}`),
    });
    times.ensureMs = Date.now() - t0;
    dir = await mkdtemp(join(tmpdir(), 'vltest-guest-'));
    serial = join(dir, 'serial.log');

    release = await acquireVmLock();
    await runner.run(['ip', 'netns', 'del', NS], { allowFailure: true });
    await runner.run(['ip', 'netns', 'add', NS]);
    for (const argv of [
      ['ip', 'link', 'set', 'lo', 'up'],
      ['ip', 'link', 'add', 'br0', 'type', 'bridge'],
      ['ip', 'addr', 'add', `${HOST_IP}/24`, 'dev', 'br0'],
      ['ip', 'link', 'set', 'br0', 'up'],
      ['ip', 'tuntap', 'add', 'dev', 'tap0', 'mode', 'tap'],
      ['ip', 'link', 'set', 'tap0', 'master', 'br0'],
      ['ip', 'link', 'set', 'tap0', 'up'],
      // A second NIC on a bridge with a DHCP server: the guest configures it by DHCP.
      ['ip', 'link', 'add', 'br1', 'type', 'bridge'],
      ['ip', 'addr', 'add', `${DHCP_HOST_IP}/24`, 'dev', 'br1'],
      ['ip', 'link', 'set', 'br1', 'up'],
      ['ip', 'tuntap', 'add', 'dev', 'tap1', 'mode', 'tap'],
      ['ip', 'link', 'set', 'tap1', 'master', 'br1'],
      ['ip', 'link', 'set', 'tap1', 'up'],
    ]) {
      await runner.run(argv, { netns: NS });
    }
    dnsmasqPid = await runner.spawnDetached(
      [
        'dnsmasq',
        '--keep-in-foreground',
        '--conf-file=/dev/null',
        '--user=root',
        '--port=0',
        '--no-resolv',
        '--no-hosts',
        '--bind-interfaces',
        '--interface=br1',
        '--dhcp-range=10.98.0.100,10.98.0.150,255.255.255.0,1h',
        `--dhcp-leasefile=${join(dir, 'leases')}`,
        `--pid-file=${join(dir, 'dnsmasq.pid')}`,
      ],
      { netns: NS, logFile: join(dir, 'dnsmasq.log') },
    );

    const started = Date.now();
    pid = await runner.spawnDetached(
      [
        'qemu-system-x86_64',
        '-accel',
        'tcg',
        '-nodefaults',
        '-display',
        'none',
        '-m',
        '256',
        '-smp',
        '1',
        '-no-reboot',
        '-kernel',
        guest.bootKernel,
        '-initrd',
        guest.initrd,
        '-append',
        `console=ttyS0 panic=-1 quiet vmlink.hostname=${HOSTNAME} vmlink.ip.eth0=${GUEST_IP}/24,${HOST_IP} vmlink.mtu.eth0=1400`,
        '-serial',
        `file:${serial}`,
        '-qmp',
        `unix:${join(dir, 'qmp.sock')},server=on,wait=off`,
        '-chardev',
        `socket,id=qga0,path=${join(dir, 'qga.sock')},server=on,wait=off`,
        '-device',
        'virtio-serial-pci',
        '-device',
        'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
        '-netdev',
        'tap,id=n0,ifname=tap0,script=no,downscript=no',
        '-device',
        'virtio-net-pci,netdev=n0,mac=52:54:00:99:00:02',
        '-netdev',
        'tap,id=n1,ifname=tap1,script=no,downscript=no',
        '-device',
        `virtio-net-pci,netdev=n1,mac=${GUEST_MAC2}`,
      ],
      { netns: NS, logFile: join(dir, 'qemu.log') },
    );

    qmp = await JsonLines.connect(join(dir, 'qmp.sock'));
    await qmp.next((m) => 'QMP' in m, 10_000);
    await qmp.call('qmp_capabilities');

    // Ready line and first guest-sync answer, timed from QEMU's start.
    const ready = waitFor('vmlink-guest ready on the serial console', 120_000, async () => {
      if (!alive(pid!)) throw new Error(`QEMU exited: ${await readFile(join(dir, 'qemu.log'), 'utf8')}`);
      const log = existsSync(serial) ? await readFile(serial, 'utf8') : '';
      return log.includes('vmlink-guest ready') ? Date.now() - started : undefined;
    });
    qga = await JsonLines.connect(join(dir, 'qga.sock'));
    let id = 1000;
    const synced = waitFor('qemu-ga guest-sync', 120_000, async () => {
      const mine = ++id;
      qga!.send({ execute: 'guest-sync', arguments: { id: mine } });
      const r = await qga!.next((m) => typeof m.return === 'number' && (m.return as number) > 1000, 1000);
      if (!r) return undefined;
      const at = Date.now() - started;
      // Earlier syncs queued before qemu-ga started are answered too: resync on one last id, drop the rest.
      const last = ++id;
      qga!.send({ execute: 'guest-sync', arguments: { id: last } });
      await qga!.next((m) => m.return === last, 10_000);
      qga!.clear();
      return at;
    });
    times.readyMs = await ready;
    times.firstSyncMs = await synced;
    console.log(
      `[guest] image ${guest.manifest.files['initrd.img'].size} B initrd + ${guest.manifest.files.vmlinuz.size} B kernel ` +
        `(booted: ${guest.bootKernel}); ` +
        `ensure ${times.ensureMs} ms; ready ${times.readyMs} ms; first guest-sync ${times.firstSyncMs} ms (TCG)`,
    );
  });

  afterAll(async () => {
    qga?.close();
    qmp?.close();
    if (pid !== undefined && alive(pid)) {
      process.kill(pid, 'SIGKILL');
      await waitFor('QEMU to exit', 10_000, async () => (alive(pid!) ? undefined : true)).catch(() => {});
    }
    if (dnsmasqPid !== undefined && alive(dnsmasqPid)) process.kill(dnsmasqPid, 'SIGTERM');
    await runner.run(['ip', 'netns', 'del', NS], { allowFailure: true });
    await release?.();
    if (dir) {
      if (process.env.VMLINK_KEEP_LOGS) console.log(`[guest] logs kept in ${dir}`);
      else await rm(dir, { recursive: true, force: true });
    }
  });

  it('reports its interfaces through qemu-ga', async () => {
    const r = await qga!.call('guest-network-get-interfaces');
    const ifs = r.return as {
      name: string;
      'hardware-address'?: string;
      'ip-addresses'?: { 'ip-address': string; prefix: number }[];
    }[];
    const eth0 = ifs.find((i) => i.name === 'eth0');
    expect(eth0?.['hardware-address']).toBe('52:54:00:99:00:02');
    expect(eth0?.['ip-addresses']).toContainEqual(
      expect.objectContaining({ 'ip-address': GUEST_IP, prefix: 24 }),
    );
  });

  it('answers ping and serves HTTP on port 80', async () => {
    await runner.run(['ping', '-c1', '-W5', GUEST_IP], { netns: NS });
    const page = await runner.run(['busybox', 'wget', '-qO-', `http://${GUEST_IP}/`], {
      netns: NS,
      timeoutMs: 20_000,
    });
    expect(page.stdout).toBe(`vmlink-guest ${HOSTNAME}\n`);
  });

  it('runs commands through guest-exec', async () => {
    const ping = await gexec('ping', ['-c1', '-W5', HOST_IP]);
    expect(ping.code, ping.out + ping.err).toBe(0);
    expect(ping.out).toContain('1 received');
    const mtu = await gexec('cat', ['/sys/class/net/eth0/mtu']);
    expect(mtu.out.trim()).toBe('1400');
    const host = await gexec('hostname', []);
    expect(host.out.trim()).toBe(HOSTNAME);
  });

  it('configures a NIC without a static address by DHCP', async () => {
    const addr = await waitFor('a DHCP address on eth1', 60_000, async () => {
      const ifs = (await qga!.call('guest-network-get-interfaces')).return as {
        'hardware-address'?: string;
        'ip-addresses'?: { 'ip-address': string; 'ip-address-type': string }[];
      }[];
      const nic = ifs.find((i) => i['hardware-address'] === GUEST_MAC2);
      return nic?.['ip-addresses']?.find((a) => a['ip-address'].startsWith('10.98.0.'))?.['ip-address'];
    });
    expect(addr).toMatch(/^10\.98\.0\.(1[0-4]\d|150)$/);
    const leases = await readFile(join(dir, 'leases'), 'utf8');
    expect(leases).toContain(GUEST_MAC2);
    expect(leases).toContain(HOSTNAME);
  });

  it("ships iputils ping: don't-fragment pings find the NIC's MTU", async () => {
    const v = await gexec('ping', ['-V']);
    expect(v.out + v.err).toContain('iputils');
    const probe = async (payload: number) => {
      const [path, ...arg] = dfPingArgv(HOST_IP, payload, 1000);
      const r = await gexec(path!, arg);
      return parsePing(r.code, r.out, r.err).reachable;
    };
    expect(await probe(1372)).toBe(true);
    const tooBig = await gexec('ping', ['-n', '-M', 'do', '-c', '1', '-W', '1', '-s', '1373', HOST_IP]);
    expect(tooBig.code).not.toBe(0);
    expect(tooBig.out + tooBig.err).toMatch(/message too long|mtu=1400/i);
    // The guest's eth0 has MTU 1400 while the host bridge allows 1500: the search lands on 1400.
    expect((await searchPathMtu(probe, 1500)).measuredMtu).toBe(1400);
  });

  it('runs iperf3 both ways: host namespace -> guest and guest -> host namespace', async () => {
    const exec = async (argv: string[], timeoutMs: number) => {
      const r = await gexec(argv[0]!, argv.slice(1), timeoutMs);
      return { exitCode: r.code, stdout: r.out, stderr: r.err };
    };
    const vm = guestSide('guest', GUEST_IP, exec);
    const host = runnerSide('host', HOST_IP, runner, NS);
    const toGuest = await measureThroughput(host, vm, { seconds: 1 });
    const fromGuest = await measureThroughput(vm, host, { seconds: 1, port: 5202 });
    console.log(
      `[guest] iperf3 host->guest ${toGuest.mbps} Mbit/s, guest->host ${fromGuest.mbps} Mbit/s (TCG)`,
    );
    for (const t of [toGuest, fromGuest]) {
      expect(t.mbps).toBeGreaterThan(0);
      expect(t.durationS).toBeGreaterThan(0.5);
    }
    // One-off servers: nothing keeps listening afterwards.
    const left = await runner.run(['pgrep', '-x', 'iperf3', '--ns', String(dnsmasqPid), '--nslist', 'net'], {
      allowFailure: true,
    });
    expect(left.stdout.trim()).toBe('');
    const inGuest = await gexec('pidof', ['iperf3']);
    expect(inGuest.out.trim()).toBe('');
  });

  it('loads 8021q, so VLAN sub-interfaces can be added', async () => {
    expect((await gexec('cat', ['/proc/modules'])).out).toMatch(/^8021q /m);
    const add = await gexec('ip', [
      'link',
      'add',
      'link',
      'eth0',
      'name',
      'eth0.100',
      'type',
      'vlan',
      'id',
      '100',
    ]);
    expect(add.code, add.err).toBe(0);
    const vlan = await gexec('cat', ['/proc/net/vlan/eth0.100']);
    expect(vlan.out).toMatch(/VID: 100/);
    expect((await gexec('ip', ['link', 'del', 'eth0.100'])).code).toBe(0);
  });

  it('powers off on ACPI system_powerdown', async () => {
    const t0 = Date.now();
    await qmp!.call('system_powerdown');
    await waitFor('QEMU to exit after system_powerdown', 60_000, async () =>
      alive(pid!) ? undefined : true,
    );
    console.log(`[guest] powered off ${Date.now() - t0} ms after system_powerdown`);
    expect(await readFile(serial, 'utf8')).toContain('shutting down (poweroff)');
  });
});
