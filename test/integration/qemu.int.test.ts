import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeAccelerator, runProbe } from '../../src/drivers/hypervisor/qemu/accel.js';
import { QEMU_MACHINE } from '../../src/drivers/hypervisor/qemu/cmdline.js';
import { processMatches, QemuDriver } from '../../src/drivers/hypervisor/qemu/driver.js';
import {
  DEFAULT_QEMU_BINARY,
  defaultLauncherPath,
  lookupQemuUser,
  userCanAccess,
} from '../../src/drivers/hypervisor/qemu/launcher.js';
import { SystemRunner } from '../../src/exec/runner.js';
import type { VmConfig } from '../../src/shared/model.js';
import { acquireVmLock } from '../helpers/vmlock.js';

// Boots the test guest through QemuDriver: unprivileged QEMU with a tap opened by the launcher, static IP from
// the kernel command line, guest agent exec and interfaces, adoption by a new driver, graceful stop, delete.

const runner = new SystemRunner();
const NS = 'vltest-qemu';
const BRIDGE = 'vltest-br0';
const TAP = 'vlt-qemu0001';
const TAP2 = 'vlt-qemu0002';
const GUEST_IP2 = '10.98.0.3';
const HOST_IP = '10.98.0.1';
const GUEST_IP = '10.98.0.2';
const VM = 'vltest-q1';
const GUEST_DIR = '/var/lib/vmlink/images/test-guest';
/** Console log cap of the test's driver: small, so a guest fills it in a second. */
const LOG_CAP = 64 * 1024;

const cfg: VmConfig = {
  name: VM,
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  disks: [{ name: 'data', sizeMiB: 16 }],
  nics: [
    {
      network: 'testnet',
      backend: 'linux',
      bridge: BRIDGE,
      tap: TAP,
      mac: '52:54:00:98:00:02',
      mtu: 1500,
      staticIp: { address: GUEST_IP, prefixLength: 24, gateway: HOST_IP },
    },
  ],
  state: 'running',
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitForGuestImage(timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!existsSync(`${GUEST_DIR}/manifest.json`)) {
    if (Date.now() > end)
      throw new Error(`${GUEST_DIR}/manifest.json did not appear: build the test guest first`);
    await sleep(2000);
  }
}

async function procStatus(pid: number): Promise<Record<string, string>> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  return Object.fromEntries(
    text.split('\n').map((l) => [l.split(':')[0]!, l.slice(l.indexOf(':') + 1).trim()]),
  );
}

/** Whether `pid` is gone (or a zombie its parent has yet to reap), waiting up to 2 s. */
async function gone(pid: number): Promise<boolean> {
  for (let i = 0; i < 20; i++) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (!stat || stat.split(') ')[1]!.startsWith('Z')) return true;
    await sleep(100);
  }
  return false;
}

/** Runs argv as uid/gid `id` with no supplementary groups (what an escaped QEMU of that VM could do). */
function asUid(id: number, argv: string[]) {
  return runner.run(['setpriv', `--reuid=${id}`, `--regid=${id}`, '--clear-groups', ...argv], {
    allowFailure: true,
  });
}

/** Node one-liner that connects to the unix socket argv[1] and prints `connected` or the error code. */
const CONNECT = [
  '/usr/bin/node',
  '-e',
  "require('net').connect(process.argv[1]).on('connect',()=>{console.log('connected');process.exit(0)}).on('error',(e)=>{console.log(e.code);process.exit(1)})",
];

/** Mount points of a process (field 5 of /proc/PID/mountinfo). */
async function mountPoints(pid: number): Promise<string[]> {
  return (await readFile(`/proc/${pid}/mountinfo`, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => l.split(' ')[4]!);
}

async function cleanupNetns(): Promise<void> {
  await runner.run(['ip', 'netns', 'del', NS], { allowFailure: true });
}

const isRoot = process.getuid?.() === 0;

// Namespaces, taps and the launcher need root; scripts/test.sh refuses to run integration tests without it.
describe.runIf(isRoot)('QEMU driver against real QEMU (KVM or TCG, as the probe decides)', () => {
  let release: (() => Promise<void>) | undefined;
  let stateDir = '';
  let driver: QemuDriver;
  let pid = 0;
  /** What the driver's own accelerator probe chose on this host. */
  let accel: 'kvm' | 'tcg' = 'tcg';
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    await waitForGuestImage(600_000);
    if (!existsSync(defaultLauncherPath())) await runner.run(['bash', 'scripts/build-native.sh']);
    release = await acquireVmLock();
    await cleanupNetns();
    await runner.run(['ip', 'netns', 'add', NS]);
    const batch = [
      'link set lo up',
      `link add ${BRIDGE} type bridge`,
      `addr add ${HOST_IP}/24 dev ${BRIDGE}`,
      `link set ${BRIDGE} up`,
      `tuntap add dev ${TAP} mode tap vnet_hdr`,
      `link set ${TAP} master ${BRIDGE}`,
      `link set ${TAP} up`,
      // The NIC hot-plugged later: its tap exists before the plug, as the agent's ensurePort leaves it.
      `tuntap add dev ${TAP2} mode tap vnet_hdr`,
      `link set ${TAP2} master ${BRIDGE}`,
      `link set ${TAP2} up`,
    ];
    for (const line of batch) await runner.run(['ip', '-n', NS, ...line.split(' ')]);
    stateDir = await mkdtemp(join(tmpdir(), 'vmlink-qemu-int-'));
    await chmod(stateDir, 0o711); // each VM's QEMU (its own uid) traverses to its run directory
    driver = new QemuDriver({ runner, stateDir, netns: NS, logMaxBytes: LOG_CAP, logCheckIntervalMs: 300 });
    accel = (await driver.accelerator()).accelerator;
  });

  afterAll(async () => {
    try {
      // Deleting frees each VM's machine-wide id claim too.
      for (const name of [VM, 'vltest-q2', 'vltest-q3', 'vltest-j1', 'vltest-j2'])
        if (driver) await driver.delete(name).catch(() => {});
      if (pid && (await processMatches(pid, VM))) process.kill(pid, 'SIGKILL');
      await driver?.close();
    } finally {
      // Whatever a failed test left running from this run's state dir (the qcow2 VM included) goes too.
      if (stateDir) {
        const r = await runner.run(['pgrep', '-f', stateDir], { allowFailure: true });
        for (const p of r.stdout.split('\n').filter(Boolean).map(Number)) {
          if (p !== process.pid) {
            try {
              process.kill(p, 'SIGKILL');
            } catch {}
          }
        }
      }
      await cleanupNetns();
      if (stateDir) await rm(stateDir, { recursive: true, force: true });
      await release?.();
      console.log('qemu integration timings (ms):', JSON.stringify(timings));
    }
  });

  it('probes the accelerator: KVM when the QEMU user can open /dev/kvm and it runs, else TCG, with the reason', async () => {
    const user = await lookupQemuUser(runner, 'vmlink-qemu');
    const o = { runner, launcher: defaultLauncherPath(), user, qemuBinary: DEFAULT_QEMU_BINARY };
    const tcg = await runProbe('tcg', o);
    expect(tcg).toMatchObject({ accel: 'tcg', ok: true });
    timings.tcgProbe = tcg.ms;
    const chosen = await probeAccelerator(o);
    console.log('accelerator:', chosen.accelerator, chosen.acceleratorReason);
    // The decision must follow from this host: whether /dev/kvm is there for the QEMU user, and whether KVM ran.
    if (!userCanAccess('/dev/kvm', user, 'rw')) {
      expect(chosen.accelerator).toBe('tcg');
      expect(chosen.acceleratorReason).toMatch(
        /^KVM unusable: \/dev\/kvm not accessible to vmlink-qemu; using TCG \(probe passed in \d+ ms\)$/,
      );
      expect(chosen.probes.map((p) => p.accel)).toEqual(['tcg']);
    } else if (chosen.accelerator === 'kvm') {
      expect(chosen.acceleratorReason).toMatch(/^KVM probe passed in \d+ ms$/);
      expect(chosen.probes).toMatchObject([{ accel: 'kvm', ok: true }]);
    } else {
      expect(chosen.acceleratorReason).toMatch(
        /^KVM unusable: probe .+; using TCG \(probe passed in \d+ ms\)$/,
      );
      expect(chosen.probes).toMatchObject([
        { accel: 'kvm', ok: false },
        { accel: 'tcg', ok: true },
      ]);
    }
    // The driver (what the agent reports and starts VMs with) decided the same.
    expect(accel).toBe(chosen.accelerator);
  });

  it('fails start with the launcher message when a tap is missing', async () => {
    const bad: VmConfig = {
      ...cfg,
      name: 'vltest-q2',
      disks: [],
      nics: [{ ...cfg.nics[0]!, tap: 'vlt-missing01' }],
    };
    await driver.create(bad, 'hash-bad');
    await expect(driver.start('vltest-q2')).rejects.toThrow(
      /exited while starting:[\s\S]*tap vlt-missing01 does not exist/,
    );
    await driver.delete('vltest-q2');
  });

  it('starts a qcow2 image with overlay, data disk and cloud-init seed (QEMU opens them all under the VM uid)', async () => {
    const base = join(stateDir, 'base.qcow2');
    await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '64M']);
    await chmod(base, 0o644);
    const vm: VmConfig = {
      ...cfg,
      name: 'vltest-q3',
      image: {
        kind: 'qcow2',
        path: base,
        cloudInit: { sshAuthorizedKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk1 t@x'] },
      },
    };
    await driver.create(vm, 'hash-q3');
    await driver.start('vltest-q3'); // no bootable OS: SeaBIOS idles, but QMP reports running
    expect(await driver.list()).toMatchObject([{ name: 'vltest-q3', state: 'running', problems: [] }]);
    const blk = (
      await runner.run(['qemu-img', 'info', '-U', '--output=json', `${stateDir}/vms/vltest-q3/root.qcow2`])
    ).stdout;
    expect(JSON.parse(blk)).toMatchObject({ 'backing-filename': base, format: 'qcow2' });
    const label = await runner.run([
      'blkid',
      '-o',
      'value',
      '-s',
      'LABEL',
      `${stateDir}/vms/vltest-q3/seed.iso`,
    ]);
    expect(label.stdout.trim()).toBe('cidata');
    await driver.delete('vltest-q3');
  });

  it('jails each VM: its own uid, files 0600 its own, only its files mounted, not dumpable, limited', async () => {
    const base = join(stateDir, 'base-jail.qcow2');
    await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '16M']);
    await chmod(base, 0o644);
    const vm = (name: string): VmConfig => ({
      ...cfg,
      name,
      memoryMiB: 64,
      nics: [],
      image: { kind: 'qcow2', path: base, cloudInit: { sshAuthorizedKeys: [] } },
    });
    await driver.create(vm('vltest-j1'), 'h');
    await driver.create(vm('vltest-j2'), 'h');
    await driver.start('vltest-j1');
    await driver.start('vltest-j2');
    const vms = Object.fromEntries((await driver.list()).map((v) => [v.name, v]));
    const [a, b] = [vms['vltest-j1']!, vms['vltest-j2']!];
    expect([a.state, b.state]).toEqual(['running', 'running']);
    const ida = (await driver.identity('vltest-j1')).uid;
    const idb = (await driver.identity('vltest-j2')).uid;
    const shared = (await lookupQemuUser(runner, 'vmlink-qemu')).uid;
    expect(ida).not.toBe(idb);
    for (const [pid, id] of [
      [a.pid!, ida],
      [b.pid!, idb],
    ] as const) {
      const st = await procStatus(pid);
      expect(st.Uid!.split(/\s+/)).toEqual([id, id, id, id].map(String));
      expect(st.Gid!.split(/\s+/)).toEqual([id, id, id, id].map(String));
      expect(id).not.toBe(shared);
    }
    // Disks, seed and sockets belong to their own VM's uid alone.
    for (const [name, id] of [
      ['vltest-j1', ida],
      ['vltest-j2', idb],
    ] as const) {
      const p = driver.paths(name);
      for (const f of [p.rootDisk, p.seedIso, p.disk('data'), p.qmpSocket, p.qgaSocket]) {
        const st = await lstat(f);
        expect([f, st.uid, st.mode & 0o077]).toEqual([f, id, 0]);
      }
      const dir = await stat(p.vmDir);
      expect([dir.uid, dir.mode & 0o777]).toEqual([0, 0o710]);
    }
    // VM A's uid reads its own disk (so the checks below are not vacuous) but not B's, nor B's sockets.
    const pa = driver.paths('vltest-j1');
    const pb = driver.paths('vltest-j2');
    const own = await asUid(ida, ['head', '-c', '3', pa.disk('data')]);
    expect([own.code, own.stdout]).toEqual([0, 'QFI']); // the qcow2 magic
    for (const f of [pb.disk('data'), pb.rootDisk, pb.seedIso]) {
      const r = await asUid(ida, ['head', '-c', '1', f]);
      expect([f, r.code, r.stderr]).toEqual([f, 1, expect.stringMatching(/Permission denied/)]);
    }
    expect((await asUid(ida, [...CONNECT, pa.qmpSocket])).stdout.trim()).toBe('connected');
    for (const sock of [pb.qmpSocket, pb.qgaSocket, pb.qmpFdSocket]) {
      expect((await asUid(ida, [...CONNECT, sock])).stdout.trim()).toBe('EACCES');
    }
    // It cannot add, remove or swap entries of its own VM directory either (only run/ is its own).
    const ln = await asUid(ida, ['ln', '-s', '/etc/shadow', `${pa.vmDir}/console.log.1`]);
    expect(ln.stderr).toMatch(/Permission denied/);

    // Its mount namespace shows only its jail: no other VM, no /home, no agent state.
    const mounts = await mountPoints(a.pid!);
    expect(mounts.sort()).toEqual(
      [
        '/',
        '/usr',
        '/etc/ld.so.cache',
        base,
        pa.vmDir,
        '/dev/null',
        '/dev/zero',
        '/dev/full',
        '/dev/random',
        '/dev/urandom',
        ...(accel === 'kvm' ? ['/dev/kvm'] : []),
      ].sort(),
    );
    expect(
      mounts.some((m) => m.startsWith(pb.vmDir) || m.startsWith('/home') || m === '/var/lib/vmlink'),
    ).toBe(false);
    // Not dumpable: its own uid may not read its memory-related /proc files (a dumpable process's owner may).
    const environ = await asUid(ida, ['cat', `/proc/${a.pid}/environ`]);
    expect([environ.code, environ.stderr]).toEqual([1, expect.stringMatching(/Permission denied/)]);
    // An empty network namespace of its own (its taps came as descriptors): no host service, no abstract socket.
    expect((await stat(`/proc/${a.pid}/ns/net`)).ino).not.toBe((await stat(`/run/netns/${NS}`)).ino);
    const links = await runner.run(['nsenter', '-t', String(a.pid), '-n', 'ip', '-o', 'link', 'show']);
    expect(
      links.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(':')[1]!.trim()),
    ).toEqual(['lo']);
    // A volume hot-plugged later: outside the jail and root's alone, it reaches QEMU as a descriptor.
    const vol = join(stateDir, 'hot-vol.qcow2');
    await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', vol, '8M']);
    await chmod(vol, 0o600);
    expect((await asUid(ida, ['head', '-c', '1', vol])).code).toBe(1);
    const fdset = await driver.passFile('vltest-j1', vol, { readOnly: false }, (path) => [
      {
        execute: 'blockdev-add',
        arguments: { driver: 'qcow2', 'node-name': 'hot0', file: { driver: 'file', filename: path } },
      },
    ]);
    expect(fdset).toMatch(/^\/dev\/fdset\/\d+$/);
    const fds = await readdir(`/proc/${a.pid}/fd`);
    const targets = await Promise.all(fds.map((f) => readlink(`/proc/${a.pid}/fd/${f}`).catch(() => '')));
    expect(targets).toContain(vol);
    // Resource limits: no core dumps, bounded descriptors and tasks.
    const limits = await readFile(`/proc/${a.pid}/limits`, 'utf8');
    expect(limits).toMatch(/^Max core file size\s+0\s+0\s/m);
    expect(limits).toMatch(/^Max open files\s+4096\s+4096\s/m);
    expect(limits).toMatch(/^Max processes\s+1024\s+1024\s/m);
  });

  it('never follows what a VM plants: a console.log link, a FIFO pidfile, links in its run directory', async () => {
    const p = driver.paths('vltest-j2');
    const id = (await driver.identity('vltest-j2')).uid;
    await driver.stop('vltest-j2', { force: true });
    // A link to a root-only file as the console log (planted as root here: QEMU cannot write the VM directory).
    await rm(p.consoleLog, { force: true });
    await symlink('/etc/shadow', p.consoleLog);
    const e = await driver.consoleTail('vltest-j2', 4096).catch((x: unknown) => x);
    expect((e as Error).message).toBe(`${p.consoleLog}: is a symbolic link, refused`);
    // A FIFO as the pidfile (QEMU's uid owns run/): the report comes back at once and says so.
    expect((await asUid(id, ['mkfifo', p.pidfile])).code).toBe(0);
    const t0 = Date.now();
    const [vm] = (await driver.list()).filter((v) => v.name === 'vltest-j2');
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(vm).toMatchObject({ state: 'stopped', problems: [`${p.pidfile} is not a regular file: refused`] });
    // Links and a directory the VM's uid left in run/: deleting the VM removes them, never their targets.
    const outside = join(stateDir, 'outside');
    await mkdir(outside, { mode: 0o777 });
    await writeFile(join(outside, 'precious'), 'keep', { mode: 0o666 });
    expect((await asUid(id, ['ln', '-s', outside, `${p.runDir}/swapped`])).code).toBe(0);
    expect((await asUid(id, ['mkdir', `${p.runDir}/sub`])).code).toBe(0);
    expect((await asUid(id, ['ln', '-s', join(outside, 'precious'), `${p.runDir}/sub/f`])).code).toBe(0);
    await driver.delete('vltest-j2');
    await driver.delete('vltest-j1');
    expect(existsSync(p.vmDir)).toBe(false);
    expect(await readFile(join(outside, 'precious'), 'utf8')).toBe('keep');
    expect(await driver.ids.all()).toEqual({});
  });

  it('creates and starts a test-guest VM; QEMU runs unprivileged, sandboxed, detached', async () => {
    await driver.create(cfg, 'hash-1');
    await driver.create(cfg, 'hash-1'); // idempotent
    expect(existsSync(`${stateDir}/vms/${VM}/disk-data.qcow2`)).toBe(true);
    const t0 = Date.now();
    await driver.start(VM);
    timings.startToQmpRunning = Date.now() - t0;
    await expect(driver.start(VM)).rejects.toThrow(/start requires stopped/);
    timings.startToGuestSync = timings.startToQmpRunning + (await driver.waitForGuestAgent(VM, 120_000));
    const [vm] = await driver.list();
    expect(vm).toMatchObject({ name: VM, state: 'running', configHash: 'hash-1', problems: [] });
    pid = vm!.pid!;
    const st = await procStatus(pid);
    expect(st.Uid!.split(/\s+/)).not.toContain('0');
    expect(st.CapEff).toBe('0000000000000000');
    expect(st.Seccomp).toBe('2');
    expect(st.NoNewPrivs).toBe('1');
    // QEMU runs with the accelerator the probe chose (with accel=kvm it would not be running unless KVM works).
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    expect(argv).toContain(`${QEMU_MACHINE},accel=${accel}`);
    // Own session: killing the agent (even SIGKILL) does not reach QEMU.
    const sid = Number((await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')[3]);
    const mySid = Number((await readFile('/proc/self/stat', 'utf8')).split(') ')[1]!.split(' ')[3]);
    expect(sid).not.toBe(mySid);
  });

  it('reads the static address through the guest agent and pings the host from the guest', async () => {
    const ifaces = await driver.guestInterfaces(VM);
    const eth0 = ifaces.find((i) => i.mac === cfg.nics[0]!.mac);
    expect(eth0?.addresses).toContain(`${GUEST_IP}/24`);
    const t0 = Date.now();
    const r = await driver.guestExec(VM, ['ping', '-c1', '-W2', HOST_IP]);
    timings.guestExecPing = Date.now() - t0;
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/1 (packets )?received/);
    const echo = await driver.guestExec(VM, ['cat'], { input: 'hello from the host\n' });
    expect(echo).toEqual({ exitCode: 0, stdout: 'hello from the host\n', stderr: '' });
    const fail = await driver.guestExec(VM, ['sh', '-c', 'echo oops >&2; exit 3']);
    expect(fail).toEqual({ exitCode: 3, stdout: '', stderr: 'oops\n' });
    // The host reaches the guest over the tap the launcher opened.
    await runner.run(['ip', 'netns', 'exec', NS, 'ping', '-c1', '-W2', GUEST_IP]);
  });

  it('keeps the console log under its cap while the guest floods the serial console', async () => {
    const p = driver.paths(VM);
    const flood = await driver.guestExec(
      VM,
      [
        'sh',
        '-c',
        'i=0; while [ $i -lt 3000 ]; do echo "flood-$i-................................................"; i=$((i+1)); done > /dev/console; echo flood-done > /dev/console',
      ],
      { timeoutMs: 60_000 },
    );
    expect(flood.exitCode, flood.stderr).toBe(0);
    let tail = '';
    for (let i = 0; i < 40 && !tail.includes('flood-done'); i++) {
      await sleep(250);
      tail = await driver.consoleTail(VM, 4096);
    }
    expect(tail).toContain('flood-done');
    await sleep(1_000); // past one more check of the logs
    // ~200 KB went out: the log was rotated (its older part kept in .1) and stays under the cap.
    expect((await stat(p.consoleLog)).size).toBeLessThanOrEqual(LOG_CAP);
    expect((await stat(`${p.consoleLog}.1`)).size).toBeLessThanOrEqual(LOG_CAP);
    expect(await driver.consoleTail(VM, LOG_CAP)).toMatch(/flood-2999-/);
  });

  it('hot-plugs a NIC with a static address and unplugs it, without restarting QEMU', async () => {
    const nic2 = {
      ...cfg.nics[0]!,
      tap: TAP2,
      mac: '52:54:00:98:00:03',
      staticIp: { address: GUEST_IP2, prefixLength: 24 },
    };
    const two: VmConfig = { ...cfg, nics: [cfg.nics[0]!, nic2] };
    const t0 = Date.now();
    await driver.hotplug(two, 'hash-2');
    timings.hotplug = Date.now() - t0;
    expect((await driver.list())[0]).toMatchObject({ state: 'running', pid, configHash: 'hash-2' });
    expect(await driver.config(VM)).toEqual(two);
    const addrsOf = async (mac: string) =>
      (await driver.guestInterfaces(VM)).find((i) => i.mac === mac)?.addresses ?? [];
    for (let i = 0; i < 60 && !(await addrsOf(nic2.mac)).includes(`${GUEST_IP2}/24`); i++) await sleep(500);
    expect(await addrsOf(nic2.mac)).toContain(`${GUEST_IP2}/24`);
    timings.hotplugToAddress = Date.now() - t0;
    await runner.run(['ip', 'netns', 'exec', NS, 'ping', '-c1', '-W2', GUEST_IP2]);

    const t1 = Date.now();
    await driver.hotplug(cfg, 'hash-1');
    timings.unplug = Date.now() - t1;
    expect((await driver.list())[0]).toMatchObject({ state: 'running', pid, configHash: 'hash-1' });
    expect((await driver.guestInterfaces(VM)).map((i) => i.mac)).not.toContain(nic2.mac);
    expect(await driver.config(VM)).toEqual(cfg);
  });

  it('a new driver on the same state dir adopts the running VM without restarting it', async () => {
    await driver.close(); // what the old agent's death does to its sockets
    const fresh = new QemuDriver({ runner, stateDir, netns: NS });
    expect(await fresh.adoptVms()).toEqual([VM]);
    const [vm] = await fresh.list();
    expect(vm).toMatchObject({ name: VM, state: 'running', pid, problems: [] });
    expect(await fresh.config(VM)).toEqual(cfg);
    driver = fresh;
  });

  it('stops gracefully with ACPI powerdown', async () => {
    const out = await driver.stopVm(VM, { force: false, timeoutMs: 30_000 });
    timings.stop = out.ms;
    console.log('graceful stop:', JSON.stringify(out));
    expect(out.method).toBe('powerdown');
    expect(await gone(pid)).toBe(true);
    const [vm] = await driver.list();
    expect(vm).toMatchObject({ name: VM, state: 'stopped', problems: [] });
    expect(vm!.pid).toBeUndefined();
    expect(await driver.stopVm(VM, { force: false })).toMatchObject({ method: 'none' });
  });

  it('restarts, then force-deletes, leaving no directory and no process', async () => {
    await driver.start(VM);
    const [vm] = await driver.list();
    expect(vm?.state).toBe('running');
    pid = vm!.pid!;
    await driver.delete(VM);
    expect(existsSync(`${stateDir}/vms/${VM}`)).toBe(false);
    expect(await gone(pid)).toBe(true);
    expect(await driver.list()).toEqual([]);
    await driver.delete(VM); // missing is fine
  });

  it('an agent killed with SIGKILL leaves its VM running, and the next agent adopts it', async () => {
    // A separate "agent" process creates and starts the VM, then dies with SIGKILL.
    const script = [
      `import { QemuDriver } from '${process.cwd()}/src/drivers/hypervisor/qemu/driver.ts';`,
      `import { SystemRunner } from '${process.cwd()}/src/exec/runner.ts';`,
      `const d = new QemuDriver({ runner: new SystemRunner(), stateDir: ${JSON.stringify(stateDir)}, netns: '${NS}', accelerator: '${accel}' });`,
      `await d.create(${JSON.stringify(cfg)}, 'hash-2');`,
      `await d.start('${VM}');`,
      "console.log('started');",
      'setInterval(() => {}, 1000);',
    ].join('\n');
    const file = join(stateDir, 'agent.mts');
    await writeFile(file, script);
    // Own process group, so one SIGKILL takes npx, tsx and node down together (QEMU has its own session).
    const agent = spawn('npx', ['tsx', file], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
    await new Promise<void>((resolve, reject) => {
      agent.stdout.setEncoding('utf8').on('data', (d: string) => d.includes('started') && resolve());
      agent.once('exit', (code) => reject(new Error(`agent exited with ${code} before starting the VM`)));
    });
    const fresh = new QemuDriver({ runner, stateDir, netns: NS });
    const before = await readFile(`${stateDir}/vms/${VM}/run/qemu.pid`, 'utf8');
    pid = Number(before.trim());
    process.kill(-agent.pid!, 'SIGKILL');
    await new Promise((r) => agent.once('exit', r));
    await sleep(500);
    expect(existsSync(`/proc/${pid}`)).toBe(true);
    expect(await fresh.adoptVms()).toEqual([VM]);
    expect(await fresh.list()).toMatchObject([{ name: VM, state: 'running', pid, configHash: 'hash-2' }]);
    expect((await fresh.stopVm(VM, { force: true })).method).toBe('quit');
    await fresh.delete(VM);
    expect(await gone(pid)).toBe(true);
  });
});
