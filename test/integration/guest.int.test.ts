import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SystemRunner } from '../../src/exec/runner.js';
import { ensureTestGuest, type TestGuest } from '../../src/guest/build.js';
import { acquireVmLock } from '../helpers/vmlock.js';

// Boots the test guest under TCG in a namespace of its own and checks every service it promises:
// serial "ready" line, qemu-ga (sync, interfaces, exec), ICMP, HTTP on port 80, MTU from the cmdline,
// and ACPI powerdown.

const runner = new SystemRunner();
const NS = 'vltest-guest';
const HOST_IP = '10.99.0.1';
const GUEST_IP = '10.99.0.2';
const HOSTNAME = 'vltest-g1';

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
  const times: Record<string, number> = {};

  beforeAll(async () => {
    const t0 = Date.now();
    guest = await ensureTestGuest({ runner, progress: (l) => console.log(`[guest] ${l}`) });
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
    ]) {
      await runner.run(argv, { netns: NS });
    }

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
        guest.kernel,
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
      `[guest] image ${guest.manifest.files['initrd.img'].size} B initrd + ${guest.manifest.files.vmlinuz.size} B kernel; ` +
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
    const exec = async (path: string, arg: string[]) => {
      const r = await qga!.call('guest-exec', { path, arg, 'capture-output': true });
      const gpid = (r.return as { pid: number }).pid;
      const st = await waitFor(`guest-exec ${path}`, 30_000, async () => {
        const s = (await qga!.call('guest-exec-status', { pid: gpid })).return as Record<string, unknown>;
        return s.exited ? s : undefined;
      });
      const dec = (k: string) => Buffer.from((st[k] as string | undefined) ?? '', 'base64').toString('utf8');
      return { code: st.exitcode as number, out: dec('out-data'), err: dec('err-data') };
    };
    const ping = await exec('ping', ['-c1', '-W5', HOST_IP]);
    expect(ping.code, ping.out + ping.err).toBe(0);
    expect(ping.out).toContain('1 packets received');
    const mtu = await exec('cat', ['/sys/class/net/eth0/mtu']);
    expect(mtu.out.trim()).toBe('1400');
    const host = await exec('hostname', []);
    expect(host.out.trim()).toBe(HOSTNAME);
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
