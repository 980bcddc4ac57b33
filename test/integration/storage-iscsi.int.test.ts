import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonFiles, openDaemon, stopLeftDaemon } from '../../src/drivers/hypervisor/qemu/backup-daemon.js';
import type { BackupDisk } from '../../src/drivers/hypervisor/qemu/backup-disks.js';
import { offlineChap, openRestore } from '../../src/drivers/hypervisor/qemu/backup-offline.js';
import { describePoolConformance } from '../../src/drivers/storage/conformance-pools.js';
import { IscsiPool } from '../../src/drivers/storage/iscsi.js';
import { TgtError } from '../../src/drivers/storage/tgt-protocol.js';
import { Tgtd } from '../../src/drivers/storage/tgtd.js';
import { SystemRunner } from '../../src/exec/runner.js';
import { ConflictError, InvalidRequestError } from '../../src/shared/errors.js';
import { ISCSI_VOLUME_LUN, iscsiTargetName, type PoolConfig } from '../../src/shared/storage.js';
import { nbdIo, offlineDepsIn, stopOfflineViews } from '../helpers/offline-view.js';

// The iscsi pool on a real tgtd in a "san" namespace, reached from a "host" namespace over a veth by QEMU's own
// initiator (libiscsi, qemu-block-extra) with CHAP from a secret object read from a 0600 file: the right secret
// reads back what was written, a wrong one is refused, an address outside the pool's clients is refused, and the
// CHAP password is in no /proc/*/cmdline, log or state file at any time of the run.

const runner = new SystemRunner();
const tag = String(process.pid % 100_000);
const SAN = `vlt-isan-${tag}`;
const HOST = `vlt-ihost-${tag}`;
const VETH_SAN = `vlis${tag}`;
const VETH_HOST = `vlih${tag}`;
const SAN_IP = '10.254.77.1';
const HOST_IP = '10.254.77.2';
const STORAGE_HOST = 'san1';
const CONTROL_PORT = 20_000 + (process.pid % 10_000);
const PASSWORD = `chap-${tag}-Xq7pZr2m`;
const ROTATED = `chap-${tag}-rotated-K3v9`;
const PATTERN_BYTE = '0x5a';
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

const isRoot = process.getuid?.() === 0;
const haveTools = existsSync('/usr/sbin/tgtd') && existsSync('/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so');

/** The storage network every case shares: namespaces, veth, tgtd in "san", one backend; made once per file. */
interface San {
  dir: string;
  tgtd: Tgtd;
  backend: IscsiPool;
  /** 0600 files with the CHAP password QEMU reads, and a wrong one. */
  goodSecret: string;
  badSecret: string;
}
let made: Promise<San> | undefined;
const leaks: string[] = [];
let sampling = true;
let sampler: Promise<void> | undefined;

// Every 10 ms, every process's argv: the password must never be in one.
async function sample(): Promise<void> {
  while (sampling) {
    for (const pid of await readdir('/proc').catch(() => [] as string[])) {
      if (!/^\d+$/.test(pid)) continue;
      const argv = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      for (const p of [PASSWORD, ROTATED, b64(PASSWORD), b64(ROTATED)])
        if (argv.includes(p)) leaks.push(`${pid}: ${argv.replaceAll('\0', ' ')}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function stopSampling(): Promise<string[]> {
  sampling = false;
  await sampler;
  return leaks;
}

function san(): Promise<San> {
  made ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmlink-iscsi-int-'));
    sampler = sample();
    for (const ns of [SAN, HOST]) {
      await runner.run(['ip', 'netns', 'add', ns]);
      await runner.run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
    }
    await runner.run([
      'ip',
      'link',
      'add',
      VETH_SAN,
      'netns',
      SAN,
      'type',
      'veth',
      'peer',
      'name',
      VETH_HOST,
      'netns',
      HOST,
    ]);
    for (const [ns, dev, ip] of [
      [SAN, VETH_SAN, SAN_IP],
      [HOST, VETH_HOST, HOST_IP],
    ] as const) {
      await runner.run(['ip', 'addr', 'add', `${ip}/24`, 'dev', dev], { netns: ns });
      await runner.run(['ip', 'link', 'set', dev, 'up'], { netns: ns });
    }
    const tgtd = new Tgtd({
      runner,
      controlPort: CONTROL_PORT,
      dir: join(dir, 'tgtd'),
      netns: SAN,
      portal: { address: SAN_IP },
    });
    await tgtd.start();
    const backend = new IscsiPool({
      runner,
      stateDir: join(dir, 'state'),
      storageHost: STORAGE_HOST,
      tgtControlPort: CONTROL_PORT,
    });
    const goodSecret = join(dir, 'chap.secret');
    const badSecret = join(dir, 'wrong.secret');
    await writeFile(goodSecret, PASSWORD, { mode: 0o600 });
    await writeFile(badSecret, 'not-the-password-1', { mode: 0o600 });
    return { dir, tgtd, backend, goodSecret, badSecret };
  })();
  return made;
}

/** QEMU --image-opts of a volume's LUN with CHAP as `user` (the password from secret object `chap`, never inline). */
function lunOpts(pool: string, volume: string, user: string): string {
  return [
    'driver=iscsi',
    'transport=tcp',
    `portal=${SAN_IP}:3260`,
    `target=${iscsiTargetName(STORAGE_HOST, pool, volume)}`,
    `lun=${ISCSI_VOLUME_LUN}`,
    `user=${user}`,
    'password-secret=chap',
  ].join(',');
}

afterAll(async () => {
  await stopSampling();
  if (!made) return;
  const { tgtd, dir } = await made;
  await tgtd.stop().catch(() => {});
  for (const ns of [SAN, HOST]) await runner.run(['ip', 'netns', 'del', ns], { allowFailure: true });
  await rm(dir, { recursive: true, force: true });
});

describe.runIf(isRoot && haveTools)('iscsi pool backend', () => {
  // The shared suite first, on its own pool and CHAP user; then this backend's own cases.
  describePoolConformance('iscsi', async () => {
    const { backend, dir, goodSecret } = await san();
    return {
      backend,
      pool: {
        name: 'cf',
        type: 'iscsi',
        path: join(dir, 'cf-pool'),
        chap: { user: 'cfuser', secret: 'cf-chap' },
        clients: ['10.254.77.0/24'],
        iscsi: { tgtControlPort: CONTROL_PORT },
      },
      poolSecrets: [{ name: 'cf-chap', value: b64(PASSWORD) }],
      volumeFormat: 'raw',
      volumeUrl: (v) => ({
        imageOpts: lunOpts('cf', v.name, 'cfuser'),
        objects: [`secret,id=chap,file=${goodSecret}`],
        netns: HOST,
      }),
    };
  });

  describe('iscsi pool on a real tgtd, QEMU initiator with CHAP', () => {
    let dir = '';
    let tgtd: Tgtd;
    let backend: IscsiPool;
    let pool: PoolConfig;
    let goodSecret = '';
    let badSecret = '';
    let password = PASSWORD;

    const secrets = () => [{ name: 'san-chap', value: b64(password) }];
    const opts = (volume: string) => lunOpts(pool.name, volume, 'vmlink');
    const qemuIo = (volume: string, cmd: string, secretFile = goodSecret, netns = HOST) =>
      runner.run(
        ['qemu-io', '--object', `secret,id=chap,file=${secretFile}`, '--image-opts', opts(volume), '-c', cmd],
        { netns, allowFailure: true, timeoutMs: 30_000 },
      );
    const virtualSize = async (volume: string) => {
      const r = await runner.run(
        [
          'qemu-img',
          'info',
          '--output=json',
          '--object',
          `secret,id=chap,file=${goodSecret}`,
          '--image-opts',
          opts(volume),
        ],
        { netns: HOST },
      );
      return (JSON.parse(r.stdout) as { 'virtual-size': number })['virtual-size'];
    };

    /**
     * Time to create a 64 MiB volume and its target through the backend vs the same by hand with raw commands
     * (truncate, tgtadm target/LUN/CHAP binding/ACL; the account exists), median of 5 each; for the closing note.
     */
    async function measureCreate(): Promise<string> {
      const adm = (...a: string[]) =>
        runner.run(['tgtadm', '-C', String(CONTROL_PORT), '--lld', 'iscsi', ...a]);
      const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
      const backendMs: number[] = [];
      const rawMs: number[] = [];
      for (let i = 0; i < 5; i++) {
        let t = performance.now();
        await backend.createVolume(pool, { pool: 'san', name: `bench${i}`, sizeMiB: 64, format: 'raw' });
        backendMs.push(performance.now() - t);
        await backend.deleteVolume(pool, `bench${i}`);
        const file = join(dir, 'pool', `raw${i}.img`);
        const tid = String(900 + i);
        t = performance.now();
        await runner.run(['truncate', '-s', '64M', file]);
        await adm('--op', 'new', '--mode', 'target', '--tid', tid, '-T', `iqn.2026-12.io.vmlink:raw.x.y${i}`);
        await adm(
          '--op',
          'new',
          '--mode',
          'logicalunit',
          '--tid',
          tid,
          '--lun',
          '1',
          '-b',
          file,
          '--bstype',
          'rdwr',
        );
        await adm('--op', 'bind', '--mode', 'account', '--tid', tid, '--user', 'vmlink');
        await adm('--op', 'bind', '--mode', 'target', '--tid', tid, '-I', HOST_IP);
        rawMs.push(performance.now() - t);
        await adm('--op', 'delete', '--mode', 'target', '--tid', tid);
        await rm(file);
      }
      const b = median(backendMs);
      const r = median(rawMs);
      return `create 64 MiB volume + target (median of 5): backend ${b.toFixed(1)} ms, raw commands ${r.toFixed(1)} ms, ratio ${(b / r).toFixed(2)}`;
    }

    beforeAll(async () => {
      ({ dir, tgtd, backend, goodSecret, badSecret } = await san());
      pool = {
        name: 'san',
        type: 'iscsi',
        path: join(dir, 'pool'),
        chap: { user: 'vmlink', secret: 'san-chap' },
        clients: [`${HOST_IP}/32`],
        iscsi: { tgtControlPort: CONTROL_PORT },
      };
    });

    it('runs one tgtd per control port, found again by identity; tgtd refusals come back typed', async () => {
      const id = await tgtd.start(); // already running: the same process
      expect(await tgtd.running()).toEqual(id);
      const other = new Tgtd({ runner, controlPort: CONTROL_PORT, dir: join(dir, 'other'), netns: HOST });
      await expect(other.start()).rejects.toThrow(ConflictError);
      const e = await tgtd.client.deleteTarget(4242).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(TgtError);
      expect((e as TgtError).kind).toBe('not-found');
      expect((e as Error).message).toBe("tgtd refused to delete target 4242: can't find the target");
    });

    it('creates the pool and a volume whose LUN the host reads and writes with the right CHAP secret', async () => {
      await backend.ensurePool(pool, 'hash-1', undefined, secrets());
      await backend.createVolume(pool, { pool: 'san', name: 'data', sizeMiB: 64, format: 'raw' });
      console.log(await measureCreate());
      // Concurrent creations on one tgtd get distinct target ids.
      await Promise.all(
        ['par1', 'par2', 'par3'].map((name) =>
          backend.createVolume(pool, { pool: 'san', name, sizeMiB: 8, format: 'raw' }),
        ),
      );
      const tids = (await tgtd.client.showTargets()).filter((t) => /\.par\d$/.test(t.name)).map((t) => t.tid);
      expect(new Set(tids).size).toBe(3);
      for (const name of ['par1', 'par2', 'par3']) await backend.deleteVolume(pool, name);
      expect(await virtualSize('data')).toBe(64 * 1024 * 1024);
      const w = await qemuIo('data', `write -P ${PATTERN_BYTE} 1M 64k`);
      expect(w.code, w.stderr).toBe(0);
      const r = await qemuIo('data', `read -P ${PATTERN_BYTE} 1M 64k`);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(r.stdout).not.toContain('Pattern verification failed');
      const [observed] = await backend.listPools();
      expect(observed).toMatchObject({ name: 'san', type: 'iscsi', configHash: 'hash-1', problems: [] });
      expect(observed!.volumes).toEqual([
        expect.objectContaining({ name: 'data', format: 'raw', sizeMiB: 64, encrypted: false }),
      ]);
      expect(observed!.volumes[0]!.allocatedMiB).toBeLessThan(8); // sparse: only what was written
    });

    it('refuses a wrong CHAP secret, and an initiator address outside the pool clients', async () => {
      const bad = await qemuIo('data', 'read 0 4k', badSecret);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/Authentication failure|CHAP/i);
      // From the storage machine's own address: not in `clients`, so tgtd does not offer the target at all.
      const outsider = await qemuIo('data', 'read 0 4k', goodSecret, SAN);
      expect(outsider.code).not.toBe(0);
    });

    it('refuses resize and delete while the host is logged in, naming the initiator', async () => {
      const holder = runner.run(
        [
          'qemu-io',
          '--object',
          `secret,id=chap,file=${goodSecret}`,
          '--image-opts',
          opts('data'),
          '-c',
          'sleep 3000',
        ],
        { netns: HOST, allowFailure: true },
      );
      const seen = async () => (await tgtd.client.showTargets()).some((t) => t.sessions.length > 0);
      for (let i = 0; i < 100 && !(await seen()); i++) await new Promise((r) => setTimeout(r, 30));
      await expect(backend.resizeVolume(pool, 'data', 128)).rejects.toThrow(
        /volume data is in use by initiator iqn\.[^ ]+ \(10\.254\.77\.2\)/,
      );
      await expect(backend.deleteVolume(pool, 'data')).rejects.toThrow(ConflictError);
      await expect(
        backend.createVolume(pool, {
          pool: 'san',
          name: 'busycopy',
          sizeMiB: 64,
          format: 'raw',
          from: { volume: 'data', linked: false },
        }),
      ).rejects.toThrow(/volume data is in use by initiator/);
      expect(existsSync(join(dir, 'pool', 'busycopy.img'))).toBe(false);
      await holder;
      expect((await stat(join(dir, 'pool', 'data.img'))).size).toBe(64 * 1024 * 1024);
    });

    it('grows a volume offline (the initiator sees the new size) and refuses a shrink', async () => {
      await backend.resizeVolume(pool, 'data', 96);
      expect(await virtualSize('data')).toBe(96 * 1024 * 1024);
      await expect(backend.resizeVolume(pool, 'data', 32)).rejects.toThrow(InvalidRequestError);
      const r = await qemuIo('data', `read -P ${PATTERN_BYTE} 1M 64k`);
      expect(r.stdout).not.toContain('Pattern verification failed');
    });

    it('makes full clones and imports images as raw LUNs with the data', async () => {
      await backend.createVolume(pool, {
        pool: 'san',
        name: 'copy',
        sizeMiB: 96,
        format: 'raw',
        from: { volume: 'data', linked: false },
      });
      expect((await qemuIo('copy', `read -P ${PATTERN_BYTE} 1M 64k`)).stdout).not.toContain(
        'verification failed',
      );
      const image = join(dir, 'image.qcow2');
      await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', image, '16M']);
      await runner.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x33 0 4k', image]);
      // An image that names another file would copy that file into the volume: refused.
      const overlay = join(dir, 'overlay.qcow2');
      await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', image, overlay]);
      await expect(backend.importVolume(pool, 'sneaky', overlay)).rejects.toThrow(/names other files/);
      expect(existsSync(join(dir, 'pool', 'sneaky.img'))).toBe(false);
      await backend.importVolume(pool, 'imported', image);
      expect(await virtualSize('imported')).toBe(16 * 1024 * 1024);
      expect((await qemuIo('imported', 'read -P 0x33 0 4k')).stdout).not.toContain('verification failed');
    });

    it("a stopped VM's LUN: a backup view through the storage daemon logged in with CHAP, a restore view through qemu-nbd", async () => {
      const lun = {
        kind: 'iscsi' as const,
        pool: 'san',
        volume: 'data',
        portal: `${SAN_IP}:3260`,
        iqn: iscsiTargetName(STORAGE_HOST, 'san', 'data'),
        lun: ISCSI_VOLUME_LUN,
        chap: { user: 'vmlink', secret: 'san-chap' },
      };
      const disk: BackupDisk = {
        name: 'data',
        node: 'disk0',
        index: 0,
        qcow2: false,
        encrypted: false,
        image: `iscsi://${lun.portal}/${lun.iqn}/${lun.lun}`,
        source: 'iscsi',
        volume: lun,
      };
      const socketDir = join(dir, 'bk1-nbd');
      const deps = (chap: string) =>
        offlineDepsIn(runner, HOST, socketDir, {
          chap: offlineChap('bk1', [disk], [{ name: 'san-chap', value: chap }]),
        });
      try {
        // The backup reads what the VM wrote, a raw LUN whole (it keeps no bitmap while stopped).
        const view = await openDaemon(deps(b64(password)), [disk], {
          bitmaps: { base: 'vmlink-b0', next: 'vmlink-b1' },
          freeze: false,
          full: false,
        });
        const size = await virtualSize('data'); // grown to 96 MiB above
        expect(view.disks).toEqual([expect.objectContaining({ name: 'data', sizeBytes: size })]);
        expect(view.disks[0]!.changed).toEqual({ fullReason: 'stopped-no-bitmap' });
        const read = await nbdIo(runner, view.disks[0]!.socket, 'data', `read -P ${PATTERN_BYTE} 1M 64k`);
        expect(read.stdout + read.stderr).not.toMatch(/verification failed|error/i);
        await view.end('commit');
        expect(existsSync(daemonFiles(socketDir).pidfile)).toBe(false);
        // A wrong password: refused by the target, the daemon gone.
        await expect(
          openDaemon(deps(b64('not-the-password-2')), [disk], {
            bitmaps: { next: 'vmlink-b2' },
            freeze: false,
            full: false,
          }),
        ).rejects.toThrow(/authentication|CHAP|iSCSI|login/i);
        expect(await stopLeftDaemon(socketDir, HOST)).toBe(false);
        // The restore writes the LUN through qemu-nbd (its password in a 0600 file, gone once the LUN is open).
        const restore = await openRestore(deps(b64(password)), [disk]);
        expect(restore.disks[0]!.sizeBytes).toBe(size);
        expect((await readdir(socketDir)).filter((f) => f.startsWith('secret-'))).toEqual([]);
        const w = await nbdIo(runner, restore.disks[0]!.socket, 'data', 'write -P 0x6b 2M 64k', true);
        expect(w.stdout + w.stderr).not.toMatch(/error|fail/i);
        await restore.close();
        const back = await qemuIo('data', 'read -P 0x6b 2M 64k');
        expect(back.code, back.stderr).toBe(0);
        expect(back.stdout).not.toContain('verification failed');
      } finally {
        // A failed check leaves no daemon or server behind (they outlive their caller by design).
        await stopOfflineViews(socketDir, HOST);
      }
    });

    it('reports a restarted tgtd as problems, and ensurePool brings every target back with a rotated password', async () => {
      await tgtd.stop();
      await tgtd.start();
      const [down] = await backend.listPools();
      expect(down!.problems).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/target .*san1\.san\.data is missing/),
          'CHAP account vmlink is missing from tgtd',
        ]),
      );
      await expect(
        backend.createVolume(pool, { pool: 'san', name: 'early', sizeMiB: 8, format: 'raw' }),
      ).rejects.toThrow(/CHAP account vmlink is missing/);
      // The target made meanwhile stays closed (no ACL): nobody logs in without CHAP.
      expect((await qemuIo('early', 'read 0 4k')).code).not.toBe(0);

      password = ROTATED;
      await backend.ensurePool(pool, 'hash-2', undefined, secrets());
      expect((await backend.listPools())[0]!.problems).toEqual([]);
      expect((await qemuIo('data', 'read 0 4k')).code).not.toBe(0); // the old password no longer works
      await writeFile(goodSecret, ROTATED, { mode: 0o600 });
      expect((await qemuIo('data', `read -P ${PATTERN_BYTE} 1M 64k`)).stdout).not.toContain(
        'verification failed',
      );
    });

    it('deletes volumes and the pool, and no password was in any argv, log or state file', async () => {
      for (const v of ['data', 'copy', 'imported', 'early']) await backend.deleteVolume(pool, v);
      expect((await tgtd.client.showTargets()).filter((t) => t.name.includes('.san.'))).toEqual([]);
      // A new CHAP user replaces the old account in tgtd; deleting the pool removes the account.
      pool = { ...pool, chap: { user: 'vmlink2', secret: 'san-chap' } };
      await backend.ensurePool(pool, 'hash-3', undefined, secrets());
      expect(await tgtd.client.showAccounts()).toEqual(['vmlink2']);
      await backend.deletePool(pool);
      expect(await tgtd.client.showAccounts()).toEqual([]);
      expect(await backend.listPools()).toEqual([]);
      expect(existsSync(pool.path)).toBe(false);

      expect(await stopSampling()).toEqual([]);
      const files = [
        tgtd.files.log,
        ...(await readdir(join(dir, 'state'), { recursive: true })).map((f) => join(dir, 'state', String(f))),
      ];
      for (const f of files) {
        if (!(await stat(f)).isFile()) continue;
        const text = await readFile(f, 'utf8');
        expect(text.includes(PASSWORD) || text.includes(ROTATED), f).toBe(false);
      }
    });
  });
});
