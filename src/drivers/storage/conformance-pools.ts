// Conformance suite every pool backend passes (dir, iscsi, nfs). It drives the backend through PoolBackend only and
// checks the data the way a VM's QEMU sees it: `qemu-io` opening each volume through the setup's `volumeUrl` (a
// file, an iscsi:// LUN with CHAP, an nfs:// file), so a backend is tested through its own network protocol. Each
// optional feature is checked where the backend declares it, and refused with UnsupportedError where it does not.
//   describePoolConformance('dir', async () => ({ backend, pool, volumeUrl: (v) => fileVolumeOpen(path, v.format) }));
// The cases run in order and share one pool; the last one deletes it.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Runner, type RunResult, SystemRunner } from '../../exec/runner.js';
import { ConflictError, InvalidRequestError, NotFoundError, UnsupportedError } from '../../shared/errors.js';
import {
  type ObservedPool,
  type ObservedVolume,
  type PoolConfig,
  type VolumeConfig,
  type VolumeFormat,
  volumeFileName,
} from '../../shared/storage.js';
import type { SecretValues } from '../hypervisor/types.js';
import type { PoolBackend } from './types.js';

/** How a client opens a volume: QEMU `--image-opts` (and the `--object`s they name), from a network namespace. */
export interface VolumeOpen {
  /** e.g. `driver=qcow2,file.driver=nfs,file.server.type=inet,...`; the suite appends `encrypt.key-secret=`. */
  imageOpts: string;
  /** `--object` values the options refer to (a CHAP password's secret object read from a file). */
  objects?: string[];
  /** The namespace the client runs in (a compute host's); absent: this one. */
  netns?: string;
  /** Releases what opening it took (a helper process serving a linked clone's chain); called after each use. */
  close?(): Promise<void>;
}

/** What a backend's test gives the suite. */
export interface PoolConformanceSetup {
  backend: PoolBackend;
  /** The pool the suite creates and finally deletes (its path in a scratch directory of the test). */
  pool: PoolConfig;
  /** Sent with `ensurePool` (an iscsi pool's CHAP password). */
  poolSecrets?: SecretValues;
  /** Format of the volumes the pool holds: `qcow2` (default) or `raw` (iscsi). */
  volumeFormat?: VolumeFormat;
  /** How a client opens a volume of the pool. */
  volumeUrl(volume: { name: string; format: VolumeFormat }): VolumeOpen | Promise<VolumeOpen>;
  /** Removes what the setup made (servers, namespaces, directories). */
  cleanup?(): Promise<void>;
}

/** `VolumeOpen` of a volume file on this machine. */
export function fileVolumeOpen(path: string, format: VolumeFormat): VolumeOpen {
  return {
    imageOpts: `driver=${format === 'qcow2' ? 'qcow2' : 'raw'},file.driver=file,file.filename=${path}`,
  };
}

const HASH = 'c0ffee01';

/** Registers the pool conformance suite of backend `name` (vitest describe/it). */
export function describePoolConformance(name: string, setup: () => Promise<PoolConformanceSetup>): void {
  describe(`pool backend conformance: ${name}`, () => {
    const runner: Runner = new SystemRunner();
    let s: PoolConformanceSetup;
    let b: PoolBackend;
    let pool: PoolConfig;
    let fmt: VolumeFormat;
    let scratch = '';
    /** A text that the encryption case looks for in the raw bytes of its volume file. */
    const marker = `vmlink-conformance-${randomBytes(8).toString('hex')}`;
    let markerFile = '';

    const vol = (v: string, sizeMiB: number, more: Partial<VolumeConfig> = {}): VolumeConfig => ({
      pool: pool.name,
      name: v,
      sizeMiB,
      format: fmt,
      ...more,
    });
    const observed = async (): Promise<ObservedPool | undefined> =>
      (await b.listPools()).find((p) => p.name === pool.name);
    const volume = async (v: string): Promise<ObservedVolume | undefined> =>
      (await observed())?.volumes.find((x) => x.name === v);
    /** Runs qemu-io commands on a volume as a client opens it; with `key`, as an encrypted one. */
    const io = async (v: string, cmds: string[], key?: string, format = fmt): Promise<RunResult> => {
      const open = await s.volumeUrl({ name: v, format });
      const objects = [...(open.objects ?? [])];
      let opts = open.imageOpts;
      if (key !== undefined) {
        const keyFile = join(scratch, `key-${randomBytes(4).toString('hex')}`);
        await writeFile(keyFile, key, { mode: 0o600 });
        objects.push(`secret,id=cfkey,file=${keyFile},format=base64`);
        opts += ',encrypt.key-secret=cfkey';
      }
      try {
        return await runner.run(
          [
            'qemu-io',
            ...objects.flatMap((o) => ['--object', o]),
            '--image-opts',
            opts,
            ...cmds.flatMap((c) => ['-c', c]),
          ],
          { allowFailure: true, ...(open.netns ? { netns: open.netns } : {}) },
        );
      } finally {
        await open.close?.();
      }
    };
    const ok = async (v: string, cmds: string[], key?: string) => {
      const r = await io(v, cmds, key);
      expect(r.code, `qemu-io ${cmds.join('; ')} on ${v}: ${r.stderr}${r.stdout}`).toBe(0);
    };
    /** The bytes of a volume's file on the pool's host. */
    const rawBytes = (v: string, format = fmt) => readFile(join(pool.path, volumeFileName(v, format)));

    beforeAll(async () => {
      s = await setup();
      b = s.backend;
      pool = s.pool;
      fmt = s.volumeFormat ?? 'qcow2';
      scratch = await mkdtemp(join(tmpdir(), `vmlink-poolconf-${name}-`));
      markerFile = join(scratch, 'marker');
      await writeFile(markerFile, Buffer.alloc(64 * 1024, `${marker}\n`));
    }, 120_000);
    afterAll(async () => {
      // Leave nothing behind even when a case failed half-way: clones before their bases.
      for (const v of [
        'cf-linked',
        'cf-full',
        'cf-base',
        'cf-a',
        'cf-raw',
        'cf-qcow',
        'cf-snap',
        'cf-enc',
        'cf-plain',
      ])
        await b?.deleteVolume(pool, v).catch(() => {});
      await b?.deletePool(pool).catch(() => {});
      await s?.cleanup?.();
      if (scratch) await rm(scratch, { recursive: true, force: true });
    }, 120_000);

    it('creates the pool, idempotently: the same hash twice, then a new one', async () => {
      await b.ensurePool(pool, HASH, undefined, s.poolSecrets);
      await b.ensurePool(pool, HASH, undefined, s.poolSecrets);
      const p = await observed();
      expect(p).toMatchObject({
        name: pool.name,
        type: pool.type,
        configHash: HASH,
        problems: [],
        volumes: [],
      });
      expect(p!.capacityMiB).toBeGreaterThan(0);
      expect(p!.freeMiB).toBeLessThanOrEqual(p!.capacityMiB);
      await b.ensurePool(pool, `${HASH}02`, undefined, s.poolSecrets);
      expect((await observed())?.configHash).toBe(`${HASH}02`);
    });

    it('creates a thin volume of the asked size, lists it, and keeps it (and its data) when asked again', async () => {
      const said: string[] = [];
      await b.createVolume(pool, vol('cf-a', 16), { progress: (m) => said.push(m) });
      expect(said.length).toBeGreaterThan(0);
      expect(await volume('cf-a')).toMatchObject({
        name: 'cf-a',
        format: fmt,
        sizeMiB: 16,
        encrypted: false,
      });
      expect((await volume('cf-a'))!.allocatedMiB).toBeLessThan(16);
      await ok('cf-a', ['write -P 0xab 0 64k']);
      await b.createVolume(pool, vol('cf-a', 32));
      expect((await volume('cf-a'))?.sizeMiB).toBe(16);
      await ok('cf-a', ['read -P 0xab 0 64k']);
    });

    it('grows a volume keeping its data; refuses a shrink and a missing volume, changing nothing', async () => {
      await b.resizeVolume(pool, 'cf-a', 32);
      expect((await volume('cf-a'))?.sizeMiB).toBe(32);
      await ok('cf-a', ['read -P 0xab 0 64k', 'write -P 0x6b 20M 64k']);
      await expect(b.resizeVolume(pool, 'cf-a', 8)).rejects.toThrow(InvalidRequestError);
      expect((await volume('cf-a'))?.sizeMiB).toBe(32);
      await ok('cf-a', ['read -P 0x6b 20M 64k']);
      await expect(b.resizeVolume(pool, 'cf-nope', 64)).rejects.toThrow(NotFoundError);
      expect(await volume('cf-nope')).toBeUndefined();
    });

    it('imports raw and qcow2 images with their content; an existing name is refused', async () => {
      const raw = join(scratch, 'image.raw');
      const qcow = join(scratch, 'image.qcow2');
      await runner.run(['qemu-img', 'create', '-q', '-f', 'raw', raw, '8M']);
      await runner.run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x3c 1M 64k', raw]);
      await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', qcow, '12M']);
      await runner.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x4d 2M 64k', qcow]);
      await b.importVolume(pool, 'cf-raw', raw);
      await b.importVolume(pool, 'cf-qcow', qcow);
      expect(await volume('cf-raw')).toMatchObject({ format: fmt, sizeMiB: 8 });
      expect(await volume('cf-qcow')).toMatchObject({ format: fmt, sizeMiB: 12 });
      await ok('cf-raw', ['read -P 0x3c 1M 64k', 'read -P 0 0 64k']);
      await ok('cf-qcow', ['read -P 0x4d 2M 64k']);
      await expect(b.importVolume(pool, 'cf-raw', qcow)).rejects.toThrow(ConflictError);
      await ok('cf-raw', ['read -P 0x3c 1M 64k']);
      // A link is never followed (the root agent would import whatever it points at), and nothing is made.
      const link = join(scratch, 'image-link.raw');
      await symlink(raw, link);
      await expect(b.importVolume(pool, 'cf-link', link)).rejects.toThrow(/symbolic link/);
      expect(await volume('cf-link')).toBeUndefined();
    });

    it('makes a full clone with the same content, independent of its source', async () => {
      await b.createVolume(pool, vol('cf-full', 32, { from: { volume: 'cf-a', linked: false } }));
      const full = await volume('cf-full');
      expect(full).toMatchObject({ sizeMiB: 32, format: fmt });
      expect(full?.backingVolume).toBeUndefined();
      await ok('cf-full', ['read -P 0xab 0 64k', 'read -P 0x6b 20M 64k']);
      await ok('cf-full', ['write -P 0x01 0 64k']);
      await ok('cf-a', ['read -P 0xab 0 64k']);
      await b.deleteVolume(pool, 'cf-full');
    });

    it('linked clones: share their base, write only themselves; the base cannot be deleted under them', async () => {
      await b.createVolume(pool, vol('cf-base', 16));
      await ok('cf-base', ['write -P 0x5a 0 4M']);
      const linked = vol('cf-linked', 16, { from: { volume: 'cf-base', linked: true } });
      if (!b.features.linkedClones) {
        await expect(b.createVolume(pool, linked)).rejects.toThrow(UnsupportedError);
        expect(await volume('cf-linked')).toBeUndefined();
        await b.deleteVolume(pool, 'cf-base'); // as the supported path ends: later cases count the volumes
        return;
      }
      await b.createVolume(pool, linked);
      const clone = await volume('cf-linked');
      expect(clone).toMatchObject({ sizeMiB: 16, backingVolume: 'cf-base' });
      expect(clone!.allocatedMiB).toBeLessThan(2); // the 4 MiB of data stay in the base
      await ok('cf-linked', ['read -P 0x5a 0 4M', 'write -P 0x11 0 64k']);
      await ok('cf-base', ['read -P 0x5a 0 4M']);
      const refused = b.deleteVolume(pool, 'cf-base');
      await expect(refused).rejects.toThrow(ConflictError);
      await expect(refused).rejects.toThrow(/cf-linked/);
      await ok('cf-linked', ['read -P 0x11 0 64k', 'read -P 0x5a 64k 64k']);
      await b.deleteVolume(pool, 'cf-linked');
      await b.deleteVolume(pool, 'cf-base');
      expect(await volume('cf-base')).toBeUndefined();
    });

    it('snapshots: data written after a snapshot is gone after a rollback, data before it stays', async () => {
      await b.createVolume(pool, vol('cf-snap', 16));
      await ok('cf-snap', ['write -P 0x11 0 64k']);
      if (!b.features.snapshots) {
        await expect(b.createSnapshot(pool, 'cf-snap', 's1')).rejects.toThrow(UnsupportedError);
        await expect(b.rollbackSnapshot(pool, 'cf-snap', 's1')).rejects.toThrow(UnsupportedError);
        await expect(b.deleteSnapshot(pool, 'cf-snap', 's1')).rejects.toThrow(UnsupportedError);
        await ok('cf-snap', ['read -P 0x11 0 64k']);
        return;
      }
      await b.createSnapshot(pool, 'cf-snap', 's1');
      expect((await volume('cf-snap'))?.snapshots.map((x) => x.name)).toEqual(['s1']);
      await ok('cf-snap', ['write -P 0x22 0 64k', 'write -P 0x33 1M 64k']);
      await b.rollbackSnapshot(pool, 'cf-snap', 's1');
      await ok('cf-snap', ['read -P 0x11 0 64k', 'read -P 0 1M 64k']);
      await expect(b.createSnapshot(pool, 'cf-snap', 's1')).rejects.toThrow(ConflictError);
      await expect(b.rollbackSnapshot(pool, 'cf-snap', 'nope')).rejects.toThrow(NotFoundError);
      await b.deleteSnapshot(pool, 'cf-snap', 's1');
      await b.deleteSnapshot(pool, 'cf-snap', 's1');
      expect((await volume('cf-snap'))?.snapshots).toEqual([]);
      await ok('cf-snap', ['read -P 0x11 0 64k']);
    });

    it('encryption: readable with its key only; the file holds no plaintext', async () => {
      // A passphrase (QEMU wants UTF-8), base64 as secrets travel.
      const passphrase = () => Buffer.from(randomBytes(16).toString('hex')).toString('base64');
      const key = passphrase();
      const secrets = [{ name: 'cf-key', value: key }];
      const enc = vol('cf-enc', 16, { encryption: { secret: 'cf-key' } });
      if (!b.features.encryption) {
        await expect(b.createVolume(pool, enc, undefined, secrets)).rejects.toThrow(UnsupportedError);
        expect(await volume('cf-enc')).toBeUndefined();
        return;
      }
      // Without its key the volume is refused and not made.
      await expect(b.createVolume(pool, enc)).rejects.toThrow(InvalidRequestError);
      expect(await volume('cf-enc')).toBeUndefined();
      await b.createVolume(pool, enc, undefined, secrets);
      expect(await volume('cf-enc')).toMatchObject({ encrypted: true, sizeMiB: 16 });
      const write = ['write -P 0x7e 0 64k', `write -s ${markerFile} 1M 64k`];
      await ok('cf-enc', write, key);
      await ok('cf-enc', ['read -P 0x7e 0 64k'], key);
      expect((await io('cf-enc', ['read 0 64k'])).code).not.toBe(0);
      expect((await io('cf-enc', ['read -P 0x7e 0 64k'], passphrase())).code).not.toBe(0);
      // The same writes on an unencrypted volume land in its file as they are: the check below can fail.
      await b.createVolume(pool, vol('cf-plain', 16));
      await ok('cf-plain', write);
      const plain = await rawBytes('cf-plain');
      expect(plain.includes(marker)).toBe(true);
      const bytes = await rawBytes('cf-enc');
      expect(bytes.includes(marker)).toBe(false);
      expect(bytes.includes(Buffer.alloc(4096, 0x7e))).toBe(false);
      await b.deleteVolume(pool, 'cf-plain');
      await b.deleteVolume(pool, 'cf-enc');
    }, 300_000); // each open of a LUKS volume derives its key: about 2 s of CPU time, far longer on a loaded machine

    it('refuses volume names with path or shell characters, changing nothing', async () => {
      for (const bad of ['../x', 'a/b', 'x;rm', 'A'])
        await expect(b.createVolume(pool, vol(bad, 1))).rejects.toThrow(InvalidRequestError);
      expect((await observed())?.volumes.map((v) => v.name).sort()).toEqual([
        'cf-a',
        'cf-qcow',
        'cf-raw',
        'cf-snap',
      ]);
    });

    it('deletes volumes (a missing one is fine), and the pool only once it is empty', async () => {
      await expect(b.deletePool(pool)).rejects.toThrow(ConflictError);
      expect(await observed()).toBeDefined();
      for (const v of ['cf-a', 'cf-raw', 'cf-qcow', 'cf-snap']) await b.deleteVolume(pool, v);
      await b.deleteVolume(pool, 'cf-a');
      await b.deleteVolume(pool, 'cf-never-made');
      expect((await observed())?.volumes).toEqual([]);
      await b.deletePool(pool);
      expect(await observed()).toBeUndefined();
      await b.deletePool(pool);
    });
  });
}
