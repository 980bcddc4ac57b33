import { spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingRunner, type RunOptions, type RunResult } from '../../../exec/runner.js';
import { NotFoundError, UnsupportedError } from '../../../shared/errors.js';
import type { VmConfig } from '../../../shared/model.js';
import { buildQemuArgv, vmPaths } from './cmdline.js';
import { QemuDriver, type StoredVm } from './driver.js';

// Unit tests of the driver's file handling with a recording runner; real QEMU runs in test/integration/qemu.int.test.ts.

const isRoot = process.getuid?.() === 0;
let root = '';
let imagesDir = '';

/** Records commands, answers the user lookup, and makes the files genisoimage would. */
class FakeRunner extends RecordingRunner {
  constructor(withUser = true) {
    super();
    if (withUser)
      this.on(['getent', 'passwd'], { stdout: 'vmlink-qemu:x:995:995::/nonexistent:/usr/sbin/nologin\n' }).on(
        ['id', '-G'],
        { stdout: '995\n' },
      );
    else this.on(['getent'], { code: 2 });
    this.on(['qemu-img', 'info'], { stdout: '{"format":"qcow2"}' });
  }
  override async run(argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
    if (argv[0] === 'genisoimage') await writeFile(argv[argv.indexOf('-output') + 1]!, 'iso');
    return super.run(argv, opts);
  }
}

const cfg: VmConfig = {
  name: 'web1',
  cpus: 1,
  memoryMiB: 128,
  image: { kind: 'test-guest' },
  disks: [{ name: 'data', sizeMiB: 8 }],
  nics: [
    { network: 'n', backend: 'linux', bridge: 'vlb-1', tap: 'vlt-1', mac: '52:54:00:00:00:01', mtu: 1500 },
  ],
  state: 'running',
};

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'vmlink-qemu-driver-'));
  await chmod(root, 0o711);
  imagesDir = join(root, 'images');
  await mkdir(join(imagesDir, 'test-guest'), { recursive: true, mode: 0o755 });
  for (const f of ['vmlinuz', 'initrd.img'])
    await writeFile(join(imagesDir, 'test-guest', f), 'x', { mode: 0o644 });
  await writeFile(join(root, 'base.qcow2'), 'x', { mode: 0o644 });
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const driver = (runner: RecordingRunner, stateDir: string) =>
  new QemuDriver({
    runner,
    stateDir,
    imagesDir,
    accelerator: 'tcg',
    launcherPath: '/nonexistent/vmlink-launch',
    vmIdRange: { first: FIRST_ID, count: 16 },
    vmIdClaimsDir: `${stateDir}-claims`,
  });

/** First id of the VM range these tests use (far above any /etc/passwd entry). */
const FIRST_ID = 0x7000_0000;

// Creating a VM chowns its directory to the QEMU user, which needs root; CI runs as root.
describe.runIf(isRoot)('QemuDriver.create', () => {
  it('lays out the VM directory for its own jailed QEMU identity and records its argv', async () => {
    const stateDir = join(root, 's1');
    const r = new FakeRunner();
    const d = driver(r, stateDir);
    await d.create(cfg, 'h1');
    const p = vmPaths(stateDir, 'web1');
    // Root's directory (QEMU cannot add, remove or swap entries); only the VM's own group may enter it.
    const vmDir = await stat(p.vmDir);
    expect([vmDir.mode & 0o777, vmDir.uid, vmDir.gid]).toEqual([0o710, 0, FIRST_ID]);
    const runDir = await stat(p.runDir);
    expect([runDir.mode & 0o777, runDir.uid, runDir.gid]).toEqual([0o700, FIRST_ID, FIRST_ID]);
    const jail = await stat(p.jailRoot);
    expect([jail.mode & 0o777, jail.uid, jail.gid]).toEqual([0o700, 0, 0]);
    expect(await d.identity('web1')).toEqual({ uid: FIRST_ID, gid: FIRST_ID, groups: [995] });
    expect(JSON.parse(await readFile(join(stateDir, 'vm-ids.json'), 'utf8'))).toEqual({
      vms: { web1: FIRST_ID },
    });
    expect(r.lines()).toContain(`qemu-img create -q -f qcow2 ${p.disk('data')} 8M`);
    const stored = JSON.parse(await readFile(p.configFile, 'utf8')) as StoredVm;
    expect(stored).toEqual({
      config: cfg,
      configHash: 'h1',
      accel: 'tcg',
      argv: buildQemuArgv({
        config: cfg,
        accel: 'tcg',
        paths: p,
        imagesDir,
        qemuBinary: '/usr/bin/qemu-system-x86_64',
        diskSlots: [0],
      }),
      nicSlots: [0],
      diskSlots: [0],
    });
    expect((await stat(p.configFile)).mode & 0o777).toBe(0o600);
    expect(await d.config('web1')).toEqual(cfg);
    const before = r.calls.length;
    await d.create(cfg, 'h1'); // same hash: nothing to do
    expect(r.calls.length).toBe(before);
    expect(await d.list()).toEqual([
      {
        name: 'web1',
        state: 'stopped',
        configHash: 'h1',
        problems: [],
        config: expect.objectContaining({ name: 'web1' }),
      },
    ]);
  });

  it('makes an encrypted disk with the key on qemu-img stdin only, and refuses one without its key', async () => {
    const stateDir = join(root, 's-enc');
    const r = new FakeRunner();
    const d = driver(r, stateDir);
    const enc: VmConfig = {
      ...cfg,
      name: 'enc1',
      disks: [{ name: 'vault', sizeMiB: 8, encryption: { secret: 'vault-key' } }],
    };
    const refused = await d.create(enc, 'h1').catch((e: unknown) => e);
    expect(String(refused)).toMatch(
      /disk vault is encrypted with secret vault-key, whose value the controller did not send/,
    );
    const key = Buffer.from('k3y-value-never-in-argv').toString('base64');
    await d.create(enc, 'h1', undefined, [{ name: 'vault-key', value: key }]);
    const p = vmPaths(stateDir, 'enc1');
    const call = r.calls.find((c) => c.argv.includes(p.disk('vault')))!;
    expect(call.argv).toEqual([
      'sh',
      '-c',
      'cat | exec "$@"',
      'sh',
      'qemu-img',
      'create',
      '--object',
      'secret,id=key0,file=/dev/stdin,format=base64',
      '-o',
      'encrypt.format=luks,encrypt.key-secret=key0',
      '-q',
      '-f',
      'qcow2',
      p.disk('vault'),
      '8M',
    ]);
    expect(call.input).toBe(key);
    // Neither argv (recorded or stored) nor config.json holds the key.
    expect(JSON.stringify(r.calls.map((c) => c.argv))).not.toContain(key);
    expect(await readFile(p.configFile, 'utf8')).not.toContain(key);
    // A disk's encryption is fixed once it exists.
    const plain = { ...enc, disks: [{ name: 'vault', sizeMiB: 8 }] };
    expect(String(await d.create(plain, 'h2').catch((e: unknown) => e))).toMatch(
      /disk vault exists encrypted with secret vault-key; encryption is fixed when a disk is made/,
    );
  });

  it('refuses a confidential VM on a host that cannot launch it, before its disks or config are made', async () => {
    const stateDir = join(root, 's-cvm');
    const d = driver(new FakeRunner(), stateDir);
    const refused = await d
      .create({ ...cfg, name: 'cvm1', confidential: 'sev-snp' }, 'h1')
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(UnsupportedError);
    expect(String(refused)).toMatch(/VM cvm1: a sev-snp confidential VM needs KVM/);
    expect(await d.config('cvm1')).toBeUndefined();
  });

  it('keeps each NIC in its PCI slot when another NIC goes or comes', async () => {
    const stateDir = join(root, 's-slots');
    const d = driver(new FakeRunner(), stateDir);
    const second = { ...cfg.nics[0]!, network: 'm', tap: 'vlt-2', mac: '52:54:00:00:00:02' };
    const third = { ...cfg.nics[0]!, network: 'o', tap: 'vlt-3', mac: '52:54:00:00:00:03' };
    await d.create({ ...cfg, nics: [cfg.nics[0]!, second] }, 'h1');
    await d.create({ ...cfg, nics: [second] }, 'h2');
    const stored = async () =>
      JSON.parse(await readFile(vmPaths(stateDir, 'web1').configFile, 'utf8')) as StoredVm;
    expect((await stored()).nicSlots).toEqual([1]);
    // The launcher passes the only tap as fd 3; the device stays behind root port 1.
    expect((await stored()).argv).toEqual(
      expect.arrayContaining([
        'tap,id=net1,fd=3,vhost=off',
        'virtio-net-pci,id=nic1,netdev=net1,bus=nicport1,mac=52:54:00:00:00:02',
      ]),
    );
    await d.create({ ...cfg, nics: [second, third] }, 'h3');
    expect((await stored()).nicSlots).toEqual([1, 0]);
  });

  it('makes an overlay and a cloud-init seed for a qcow2 image', async () => {
    const stateDir = join(root, 's2');
    const r = new FakeRunner();
    const vm: VmConfig = {
      ...cfg,
      name: 'db1',
      disks: [],
      image: { kind: 'qcow2', path: join(root, 'base.qcow2'), cloudInit: { sshAuthorizedKeys: [] } },
    };
    await driver(r, stateDir).create(vm, 'h1');
    const p = vmPaths(stateDir, 'db1');
    expect(r.lines()).toContain(`qemu-img create -q -f qcow2 -F qcow2 -b ${root}/base.qcow2 ${p.rootDisk}`);
    expect(r.lines()).toContain(
      `genisoimage -quiet -output ${p.seedIso} -volid cidata -joliet -rock ${p.seedDir}/user-data ${p.seedDir}/meta-data ${p.seedDir}/network-config`,
    );
    expect(await readFile(`${p.seedDir}/meta-data`, 'utf8')).toMatch(
      /^instance-id: "db1-[0-9a-f]{12}"\nlocal-hostname: "db1"\n$/,
    );
    // The seed is the VM's alone (a fake qemu-img made no overlay file here).
    const iso = await stat(p.seedIso);
    expect([iso.mode & 0o777, iso.uid, iso.gid]).toEqual([0o600, FIRST_ID, FIRST_ID]);
  });

  it('gives each VM its own uid, and frees it when the VM is deleted', async () => {
    const stateDir = join(root, 's-ids');
    const d = driver(new FakeRunner(), stateDir);
    await d.create({ ...cfg, name: 'a1' }, 'h');
    await d.create({ ...cfg, name: 'b1' }, 'h');
    const a = await d.identity('a1');
    const b = await d.identity('b1');
    expect([a.uid, b.uid]).toEqual([FIRST_ID, FIRST_ID + 1]);
    expect((await stat(vmPaths(stateDir, 'b1').runDir)).uid).toBe(FIRST_ID + 1);
    await d.delete('a1');
    expect(await d.ids.all()).toEqual({ b1: FIRST_ID + 1 });
    await d.create({ ...cfg, name: 'c1' }, 'h');
    expect((await d.identity('c1')).uid).toBe(FIRST_ID); // the freed id is handed out again
  });

  it('refuses a base image the QEMU user cannot read', async () => {
    await writeFile(join(root, 'secret.qcow2'), 'x', { mode: 0o600 });
    const vm: VmConfig = {
      ...cfg,
      image: { kind: 'qcow2', path: join(root, 'secret.qcow2'), cloudInit: { sshAuthorizedKeys: [] } },
    };
    await expect(driver(new FakeRunner(), join(root, 's3')).create(vm, 'h')).rejects.toThrow(
      new RegExp(`not readable by VM web1's QEMU \\(uid ${FIRST_ID}\\)`),
    );
  });

  it('says to run setup when the QEMU user is missing', async () => {
    const e = await driver(new FakeRunner(false), join(root, 's4'))
      .create(cfg, 'h')
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UnsupportedError);
    expect((e as Error).message).toMatch(/vmlink-qemu .* does not exist: run npm run setup/);
  });

  it('reports a VM whose QEMU vanished and left its pidfile as crashed', async () => {
    const stateDir = join(root, 's1');
    // The pid of a process that has exited (and was reaped): what a killed QEMU leaves in its pidfile.
    const gone = spawnSync('true').pid;
    await writeFile(vmPaths(stateDir, 'web1').pidfile, `${gone}\n`);
    const [vm] = await driver(new FakeRunner(), stateDir).list();
    expect(vm).toMatchObject({ name: 'web1', state: 'crashed' });
    expect(vm!.problems[0]).toMatch(new RegExp(`pid ${gone}\\) is gone but left its pidfile`));
  });
});

describe('QemuDriver without VMs', () => {
  it('fails start and stop of unknown VMs with NotFoundError; deleting one is fine', async () => {
    const d = driver(new FakeRunner(), join(root, 'empty'));
    await expect(d.start('nope')).rejects.toBeInstanceOf(NotFoundError);
    await expect(d.stop('nope', { force: true })).rejects.toBeInstanceOf(NotFoundError);
    await d.delete('nope');
    expect(await d.list()).toEqual([]);
    expect(await d.config('nope')).toBeUndefined();
    expect(d.consolePath('web1')).toBe(`${join(root, 'empty')}/vms/web1/run/console.sock`);
    expect(await d.consoleTail('web1', 100)).toBe('');
  });

  it('asks for a launcher build before starting', async () => {
    const stateDir = join(root, 's5');
    const p = vmPaths(stateDir, 'web1');
    await mkdir(p.vmDir, { recursive: true });
    await writeFile(
      p.configFile,
      JSON.stringify({ config: cfg, configHash: 'h', accel: 'tcg', argv: ['/usr/bin/qemu-system-x86_64'] }),
    );
    await expect(driver(new FakeRunner(), stateDir).start('web1')).rejects.toThrow(
      /run npm run build:native/,
    );
  });

  it('refuses a state dir QEMU options would split', () => {
    expect(() => new QemuDriver({ runner: new FakeRunner(), stateDir: '/a,b' })).toThrow(/commas/);
  });
});
