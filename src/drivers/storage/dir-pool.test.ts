// The dir pool backend: the pool conformance suite over real qemu-img/qemu-io in a scratch directory, and what is
// particular to qcow2 files in a directory (ISO import, backing chains kept inside the pool, locks, keys).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunOptions, SystemRunner } from '../../exec/runner.js';
import {
  ConflictError,
  InvalidRequestError,
  InvalidStateError,
  NotFoundError,
  UnsupportedError,
} from '../../shared/errors.js';
import { type PoolConfig, type VolumeConfig, volumeFileName } from '../../shared/storage.js';
import type { SecretValues } from '../hypervisor/types.js';
import type { OpContext } from '../network/types.js';
import { describePoolConformance, fileVolumeOpen } from './conformance-pools.js';
import { DirPool } from './dir-pool.js';
import { FastLuksRunner } from './fast-luks.test-util.js';
import { PoolStateStore } from './pool-state.js';

/** A real runner (LUKS volumes made with a short key derivation) that remembers every argv and stdin it was given. */
class WatchedRunner extends FastLuksRunner {
  readonly argvs: string[][] = [];
  readonly inputs: string[] = [];
  override run(argv: readonly string[], opts: RunOptions = {}) {
    this.argvs.push([...argv]);
    if (opts.input) this.inputs.push(opts.input);
    return super.run(argv, opts);
  }
}

/** Polls every process's /proc/PID/cmdline until stopped; the distinct lines seen. */
function watchCmdlines(): { stop(): Promise<string[]> } {
  const seen = new Set<string>();
  let running = true;
  const poll = (async () => {
    while (running) {
      for (const pid of await readdir('/proc').catch(() => [] as string[])) {
        if (!/^\d+$/.test(pid)) continue;
        const c = await readFile(`/proc/${pid}/cmdline`).catch(() => undefined);
        if (c?.length) seen.add(c.toString('utf8').replaceAll('\0', ' '));
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    async stop() {
      running = false;
      await poll;
      return [...seen];
    },
  };
}

const scratchDirs: string[] = [];
async function scratch(tag: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), `vmlink-dirpool-${tag}-`));
  scratchDirs.push(d);
  return d;
}
afterAll(async () => {
  for (const d of scratchDirs) await rm(d, { recursive: true, force: true });
});

describePoolConformance('dir', async () => {
  const root = await scratch('conf');
  const pool: PoolConfig = { name: 'conf', type: 'dir', path: join(root, 'pools', 'conf') };
  return {
    backend: new DirPool({ runner: new FastLuksRunner(), stateDir: join(root, 'state') }),
    pool,
    volumeUrl: (v) => fileVolumeOpen(join(pool.path, volumeFileName(v.name, v.format)), v.format),
  };
});

// The suite's other branch: a backend that declares no optional feature must refuse each with UnsupportedError
// (as the iscsi backend does). A dir pool with them withheld runs it, so the branch is known to pass and to fail.
class PlainDirPool extends DirPool {
  override readonly features = {
    snapshots: false,
    onlineResize: false,
    linkedClones: false,
    encryption: false,
    fence: false,
  };
  override async createVolume(
    pool: PoolConfig,
    volume: VolumeConfig,
    ctx?: OpContext,
    secrets?: SecretValues,
  ) {
    if (volume.from?.linked || volume.encryption) throw new UnsupportedError('withheld', volume.name);
    return super.createVolume(pool, volume, ctx, secrets);
  }
  override async createSnapshot(): Promise<void> {
    throw new UnsupportedError('withheld');
  }
  override async rollbackSnapshot(): Promise<void> {
    throw new UnsupportedError('withheld');
  }
  override async deleteSnapshot(): Promise<void> {
    throw new UnsupportedError('withheld');
  }
}

describePoolConformance('dir, optional features withheld', async () => {
  const root = await scratch('plain');
  const pool: PoolConfig = { name: 'plain', type: 'dir', path: join(root, 'pools', 'plain') };
  return {
    backend: new PlainDirPool({ runner: new SystemRunner(), stateDir: join(root, 'state') }),
    pool,
    volumeUrl: (v) => fileVolumeOpen(join(pool.path, volumeFileName(v.name, v.format)), v.format),
  };
});

describe('DirPool', () => {
  let root = '';
  let runner: WatchedRunner;
  let b: DirPool;
  let pool: PoolConfig;
  const qemuImg = (...args: string[]) => new SystemRunner().run(['qemu-img', ...args]);

  beforeAll(async () => {
    root = await scratch('unit');
    runner = new WatchedRunner();
    b = new DirPool({ runner, stateDir: join(root, 'state') });
    pool = { name: 'p1', type: 'dir', path: join(root, 'pools', 'p1') };
    await b.ensurePool(pool, 'abcdef01');
  });

  it("keeps the pool directory root's (0700), its volumes 0600, and records the pool", async () => {
    expect((await stat(pool.path)).mode & 0o777).toBe(0o700);
    await b.createVolume(pool, { pool: 'p1', name: 'v-mode', sizeMiB: 1, format: 'qcow2' });
    expect((await stat(join(pool.path, 'v-mode.qcow2'))).mode & 0o777).toBe(0o600);
    expect(await new PoolStateStore(join(root, 'state')).read('p1')).toEqual({
      config: pool,
      configHash: 'abcdef01',
    });
    await b.deleteVolume(pool, 'v-mode');
  });

  it('refuses a pool of another type, a pool path that is a link, and volumes of a pool never made', async () => {
    await expect(b.ensurePool({ ...pool, type: 'nfs' }, 'abcdef01')).rejects.toThrow(InvalidRequestError);
    const link = join(root, 'pools', 'linked');
    await symlink('/etc', link);
    await expect(b.ensurePool({ name: 'linked', type: 'dir', path: link }, 'abcdef01')).rejects.toThrow(
      /not a directory \(a symbolic link\)/,
    );
    const ghost = { name: 'ghost', type: 'dir' as const, path: join(root, 'pools', 'ghost') };
    await expect(
      b.createVolume(ghost, { pool: 'ghost', name: 'v', sizeMiB: 1, format: 'qcow2' }),
    ).rejects.toThrow(NotFoundError);
    await b.deleteVolume(ghost, 'v'); // nothing to delete
  });

  it('refuses to move a pool that holds volumes to another path', async () => {
    await b.createVolume(pool, { pool: 'p1', name: 'v-stay', sizeMiB: 1, format: 'qcow2' });
    await expect(b.ensurePool({ ...pool, path: join(root, 'elsewhere') }, 'abcdef02')).rejects.toThrow(
      /holds volumes in .*v-stay/,
    );
    await b.deleteVolume(pool, 'v-stay');
  });

  it('imports an ISO 9660 image as <name>.iso, byte for byte', async () => {
    const iso = join(root, 'install.iso');
    const bytes = Buffer.alloc(64 * 1024, 0x42);
    bytes.write('CD001', 32_769, 'latin1');
    await writeFile(iso, bytes);
    await b.importVolume(pool, 'installer', iso);
    expect(await readFile(join(pool.path, 'installer.iso'))).toEqual(bytes);
    const v = (await b.listPools())[0]!.volumes.find((x) => x.name === 'installer');
    expect(v).toMatchObject({ format: 'iso', snapshots: [], encrypted: false });
    await expect(b.resizeVolume(pool, 'installer', 10)).rejects.toThrow(/ISO/);
    await b.deleteVolume(pool, 'installer');
  });

  it('refuses to import an image that names other files or is of another format', async () => {
    const base = join(root, 'outside.qcow2');
    const top = join(root, 'top.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', base, '1M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, top);
    await expect(b.importVolume(pool, 'v-top', top)).rejects.toThrow(/backing or data file/);
    const vmdk = join(root, 'disk.vmdk');
    await qemuImg('create', '-q', '-f', 'vmdk', vmdk, '1M');
    await expect(b.importVolume(pool, 'v-vmdk', vmdk)).rejects.toThrow(/vmdk image/);
    await expect(b.importVolume(pool, 'v-none', join(root, 'missing.raw'))).rejects.toThrow(NotFoundError);
    expect((await b.listPools())[0]!.volumes).toEqual([]);
  });

  it('never lets qemu-img follow a backing file out of the pool, nor a volume file that is a link', async () => {
    // A volume whose header was rewritten (an nfs client could) to name a file outside the pool.
    const outside = join(root, 'secret.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', outside, '1M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', outside, join(pool.path, 'evil.qcow2'));
    const before = runner.argvs.length;
    await expect(
      b.createVolume(pool, {
        pool: 'p1',
        name: 'v-copy',
        sizeMiB: 1,
        format: 'qcow2',
        from: { volume: 'evil', linked: false },
      }),
    ).rejects.toThrow(InvalidStateError);
    await expect(b.resizeVolume(pool, 'evil', 4)).rejects.toThrow(/not a qcow2 volume of pool p1/);
    await expect(b.createSnapshot(pool, 'evil', 's')).rejects.toThrow(InvalidStateError);
    // Only `qemu-img info` (which opens no backing file) ran.
    expect(runner.argvs.slice(before).every((a) => a[1] === 'info')).toBe(true);
    const listed = await b.listPools();
    expect(listed[0]!.problems.join('\n')).toMatch(/evil/);
    await rm(join(pool.path, 'evil.qcow2'));
    await symlink(outside, join(pool.path, 'sneaky.qcow2'));
    await expect(b.resizeVolume(pool, 'sneaky', 4)).rejects.toThrow(/not a regular file/);
    expect((await b.listPools())[0]!.problems.join('\n')).toMatch(/sneaky/);
    await rm(join(pool.path, 'sneaky.qcow2'));
  });

  it('links clones to their base by a relative name, so the pool can move', async () => {
    await b.createVolume(pool, { pool: 'p1', name: 'tmpl', sizeMiB: 8, format: 'qcow2' });
    await b.createVolume(pool, {
      pool: 'p1',
      name: 'tmpl-clone',
      sizeMiB: 16,
      format: 'qcow2',
      from: { volume: 'tmpl', linked: true },
    });
    const info = JSON.parse(
      (await qemuImg('info', '-U', '--output=json', join(pool.path, 'tmpl-clone.qcow2'))).stdout,
    ) as Record<string, unknown>;
    expect(info).toMatchObject({ 'backing-filename': 'tmpl.qcow2', 'virtual-size': 16 * 1024 * 1024 });
    await expect(b.createSnapshot(pool, 'tmpl', 'before')).resolves.toBeUndefined();
    await expect(b.rollbackSnapshot(pool, 'tmpl', 'before')).rejects.toThrow(
      /base of linked clones tmpl-clone/,
    );
    await b.deleteVolume(pool, 'tmpl-clone');
    await b.deleteVolume(pool, 'tmpl');
  });

  it('refuses to change or delete a volume a process holds open (a running VM), changing nothing', async () => {
    await b.createVolume(pool, { pool: 'p1', name: 'v-open', sizeMiB: 4, format: 'qcow2' });
    // qemu-io waiting on its stdin holds the image's locks the way a running QEMU does.
    const holder: ChildProcess = spawn('qemu-io', ['-f', 'qcow2', join(pool.path, 'v-open.qcow2')], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    try {
      await new Promise((r) => setTimeout(r, 500));
      await expect(b.resizeVolume(pool, 'v-open', 8)).rejects.toThrow(ConflictError);
      await expect(b.createSnapshot(pool, 'v-open', 's')).rejects.toThrow(/in use/);
      await expect(b.deleteVolume(pool, 'v-open')).rejects.toThrow(/in use/);
      const copy = { pool: 'p1', name: 'v-copy', sizeMiB: 4, format: 'qcow2' as const };
      await expect(
        b.createVolume(pool, { ...copy, from: { volume: 'v-open', linked: false } }),
      ).rejects.toThrow(/volume v-open of pool p1 is in use/);
      await expect(
        b.createVolume(pool, { ...copy, from: { volume: 'v-open', linked: true } }),
      ).rejects.toThrow(ConflictError);
    } finally {
      holder.stdin?.end('quit\n');
      await new Promise((r) => holder.once('exit', r));
    }
    const listed = (await b.listPools())[0]!.volumes;
    expect(listed.find((x) => x.name === 'v-open')).toMatchObject({ sizeMiB: 4, snapshots: [] });
    expect(listed.map((x) => x.name)).not.toContain('v-copy');
    await b.deleteVolume(pool, 'v-open');
  });

  it("hands an encrypted volume's key to qemu-img on stdin only: create, resize and snapshots", async () => {
    const key = Buffer.from('dir-pool key never in argv').toString('base64');
    const secrets = [{ name: 'k1', value: key }];
    const first = runner.argvs.length;
    // Every command line on the machine while the volume is made (qemu-img times PBKDF2 for at least 0.5 s of CPU,
    // twice, before it derives anything: it stays there for over a second, whatever the iteration time).
    const seen = watchCmdlines();
    await b.createVolume(
      pool,
      { pool: 'p1', name: 'v-enc', sizeMiB: 4, format: 'qcow2', encryption: { secret: 'k1' } },
      undefined,
      secrets,
    );
    const cmdlines = await seen.stop();
    expect(cmdlines.some((c) => c.includes('qemu-img') && c.includes('.v-enc.'))).toBe(true);
    expect(cmdlines.filter((c) => c.includes(key))).toEqual([]);
    await expect(b.resizeVolume(pool, 'v-enc', 8)).rejects.toThrow(/encrypted.*key did not come/);
    await b.resizeVolume(pool, 'v-enc', 8, undefined, secrets);
    await b.createSnapshot(pool, 'v-enc', 's1', undefined, secrets);
    await b.rollbackSnapshot(pool, 'v-enc', 's1', undefined, secrets);
    await b.deleteSnapshot(pool, 'v-enc', 's1', undefined, secrets);
    const v = (await b.listPools())[0]!.volumes.find((x) => x.name === 'v-enc');
    expect(v).toMatchObject({ encrypted: true, sizeMiB: 8, snapshots: [] });
    const used = runner.argvs.slice(first);
    expect(used.length).toBeGreaterThan(4);
    expect(used.some((a) => a.join(' ').includes(key))).toBe(false);
    expect(runner.inputs).toContain(key);
    // A key qemu-img refuses (not UTF-8): the error names the volume and quotes qemu-img, never the key.
    const bad = Buffer.from([0xff, 0xfe, 0x01]).toString('base64');
    const failed = await b
      .createVolume(
        pool,
        { pool: 'p1', name: 'v-badkey', sizeMiB: 1, format: 'qcow2', encryption: { secret: 'k9' } },
        undefined,
        [{ name: 'k9', value: bad }],
      )
      .then(
        () => undefined,
        (e: Error) => e,
      );
    expect(failed?.message).toMatch(/not valid UTF-8/);
    expect(failed?.message).not.toContain(bad);
    expect((await b.listPools())[0]!.volumes.map((x) => x.name)).not.toContain('v-badkey');
    // A linked clone of an encrypted volume would need its key at every open: refused.
    await expect(
      b.createVolume(pool, {
        pool: 'p1',
        name: 'v-enc-l',
        sizeMiB: 8,
        format: 'qcow2',
        from: { volume: 'v-enc', linked: true },
      }),
    ).rejects.toThrow(/encrypted/);
    await b.deleteVolume(pool, 'v-enc');
  }, 300_000); // a LUKS creation times its key derivation: over 1 s of CPU, far longer on a loaded machine

  it('encrypts a full clone of a plain template with its own key', async () => {
    const key = Buffer.from('clone key').toString('base64');
    await b.createVolume(pool, { pool: 'p1', name: 'plain', sizeMiB: 4, format: 'qcow2' });
    await b.createVolume(
      pool,
      {
        pool: 'p1',
        name: 'plain-enc',
        sizeMiB: 6,
        format: 'qcow2',
        encryption: { secret: 'k2' },
        from: { volume: 'plain', linked: false },
      },
      undefined,
      [{ name: 'k2', value: key }],
    );
    const v = (await b.listPools())[0]!.volumes.find((x) => x.name === 'plain-enc');
    expect(v).toMatchObject({ encrypted: true, sizeMiB: 6 });
    await b.deleteVolume(pool, 'plain-enc');
    await b.deleteVolume(pool, 'plain');
  }, 120_000);

  it('reports a pool whose directory went missing, and deletes it', async () => {
    const gone: PoolConfig = { name: 'gone', type: 'dir', path: join(root, 'pools', 'gone') };
    await b.ensurePool(gone, 'abcdef03');
    await rm(gone.path, { recursive: true });
    const p = (await b.listPools()).find((x) => x.name === 'gone');
    expect(p?.problems).toEqual([`directory ${gone.path} is missing`]);
    await b.deletePool(gone);
    expect((await b.listPools()).find((x) => x.name === 'gone')).toBeUndefined();
  });

  it('refuses to delete a pool directory that holds other files', async () => {
    const other: PoolConfig = { name: 'other', type: 'dir', path: join(root, 'pools', 'other') };
    await b.ensurePool(other, 'abcdef04');
    await writeFile(join(other.path, '.vol.0123abcd.tmp'), 'a build the agent never finished');
    await mkdir(join(other.path, 'notes'));
    await expect(b.deletePool(other)).rejects.toThrow(/files that are not volumes \(notes\)/);
    await rm(join(other.path, 'notes'), { recursive: true });
    await b.deletePool(other);
  });

  it('is the base of other directory backends: their type, directory mode and hooks', async () => {
    const calls: string[] = [];
    class ExportedPool extends DirPool {
      constructor() {
        super({ runner, stateDir: join(root, 'state') }, { type: 'nfs', dirMode: 0o711 });
      }
      protected override async afterEnsure(p: PoolConfig) {
        calls.push(`after ensure ${p.name}`);
      }
      protected override async beforeRemove(p: PoolConfig) {
        calls.push(`before remove ${p.name}`);
      }
      protected override async poolProblems(p: PoolConfig) {
        return [`export of ${p.name} missing`];
      }
    }
    const nfs = new ExportedPool();
    const nas: PoolConfig = { name: 'nas', type: 'nfs', path: join(root, 'pools', 'nas') };
    expect(nfs.features).toEqual({
      snapshots: true,
      onlineResize: true,
      linkedClones: true,
      encryption: true,
      fence: false,
    });
    await expect(nfs.ensurePool(pool, 'abcdef05')).rejects.toThrow(/of type dir, not nfs/);
    await nfs.ensurePool(nas, 'abcdef05');
    expect((await stat(nas.path)).mode & 0o777).toBe(0o711);
    const listed = await nfs.listPools();
    expect(listed.map((p) => [p.name, p.type, p.problems])).toEqual([
      ['nas', 'nfs', ['export of nas missing']],
    ]);
    expect((await b.listPools()).map((p) => p.name)).not.toContain('nas');
    await nfs.deletePool(nas);
    expect(calls).toEqual(['after ensure nas', 'before remove nas']);
  });
});
