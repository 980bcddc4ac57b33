// Conformance suite every storage backend must pass (`dir` today; iSCSI and NFS later). It observes
// volumes the way QEMU uses them, through `qemu-img info` and `qemu-io` on the path the backend
// returns (a file, or an iscsi:// / nfs:// URL), so the same cases hold for every backend. Call it
// from a test file:
//   storageConformance('dir', (env) => storageDrivers.dir(env));
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Runner, SystemRunner } from '../../exec/runner.js';
import { ConflictError, InvalidRequestError, NotFoundError } from '../../shared/errors.js';
import type { StorageDriver } from './types.js';

/** What a backend under test gets: a runner and a scratch directory of its own (deleted afterwards). */
export interface StorageConformanceEnv {
  runner: Runner;
  dir: string;
}

/** `qemu-img info` of a volume, the fields the suite checks. */
interface ImageInfo {
  format: string;
  'virtual-size': number;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  'format-specific'?: { data?: { bitmaps?: { name: string }[] } };
}

/** Registers the storage backend conformance suite for `makeDriver` (vitest describe/it). */
export function storageConformance(
  name: string,
  makeDriver: (env: StorageConformanceEnv) => StorageDriver,
): void {
  describe(`storage driver conformance: ${name}`, () => {
    const runner = new SystemRunner();
    let dir = '';
    let d: StorageDriver;
    const info = async (path: string) =>
      JSON.parse((await runner.run(['qemu-img', 'info', '--output=json', path])).stdout) as ImageInfo;
    const qemuIo = (path: string, cmd: string, format = 'qcow2') =>
      runner.run(['qemu-io', '-f', format, '-c', cmd, path], { allowFailure: true });
    const absent = async (path: string) =>
      (await runner.run(['qemu-img', 'info', path], { allowFailure: true })).code !== 0;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), `vmlink-storage-${name}-`));
      d = makeDriver({ runner, dir });
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('creates an empty qcow2 volume of the asked size at volumePath, reporting progress', async () => {
      const said: string[] = [];
      const path = await d.createVolume(
        { name: 'vol-a', dir, sizeMiB: 16 },
        { progress: (m) => said.push(m) },
      );
      expect(path).toBe(d.volumePath({ name: 'vol-a', dir }));
      const i = await info(path);
      expect(i.format).toBe('qcow2');
      expect(i['virtual-size']).toBe(16 * 1024 * 1024);
      expect(said.length).toBeGreaterThan(0);
    });

    it('keeps an existing volume and its data when asked again', async () => {
      const path = d.volumePath({ name: 'vol-a', dir });
      expect((await qemuIo(path, 'write -P 0xab 0 64k')).code).toBe(0);
      expect(await d.createVolume({ name: 'vol-a', dir, sizeMiB: 32 })).toBe(path);
      expect((await info(path))['virtual-size']).toBe(16 * 1024 * 1024);
      expect((await qemuIo(path, 'read -P 0xab 0 64k')).code).toBe(0);
    });

    it('creates a copy-on-write overlay that reads its base and writes only itself', async () => {
      const base = join(dir, 'base.raw');
      await runner.run(['qemu-img', 'create', '-q', '-f', 'raw', base, '8M']);
      expect((await qemuIo(base, 'write -P 0x5a 0 64k', 'raw')).code).toBe(0);
      const path = await d.createOverlay({ name: 'root', dir, base });
      const i = await info(path);
      expect(i.format).toBe('qcow2');
      expect(i['backing-filename']).toBe(base);
      expect(i['backing-filename-format']).toBe('raw');
      expect((await qemuIo(path, 'read -P 0x5a 0 64k')).code).toBe(0);
      expect((await qemuIo(path, 'write -P 0x11 0 64k')).code).toBe(0);
      expect((await qemuIo(base, 'read -P 0x5a 0 64k', 'raw')).code).toBe(0);
      // Asked again, the overlay and what was written to it stay.
      expect(await d.createOverlay({ name: 'root', dir, base })).toBe(path);
      expect((await qemuIo(path, 'read -P 0x11 0 64k')).code).toBe(0);
    });

    it('copies an image into a new volume: flattened, its data and persistent bitmaps kept', async () => {
      const path = await d.copyVolume({
        name: 'root-copy',
        dir,
        source: d.volumePath({ name: 'root', dir }),
        sourceFormat: 'qcow2',
      });
      expect(path).toBe(d.volumePath({ name: 'root-copy', dir }));
      const i = await info(path);
      expect(i.format).toBe('qcow2');
      expect(i['backing-filename']).toBeUndefined();
      // The overlay's own write and what its base held beyond it.
      expect((await qemuIo(path, 'read -P 0x11 0 64k')).code).toBe(0);
      expect((await qemuIo(path, 'read -P 0x0 64k 64k')).code).toBe(0);
      const raw = join(dir, 'base.raw');
      const bm = await d.createVolume({ name: 'vol-bitmap', dir, sizeMiB: 4 });
      await runner.run(['qemu-img', 'bitmap', '--add', bm, 'vmlink-b1']);
      const copied = await d.copyVolume({ name: 'vol-bitmap-copy', dir, source: bm, sourceFormat: 'qcow2' });
      expect((await info(copied))['format-specific']?.data?.bitmaps?.map((b) => b.name)).toEqual([
        'vmlink-b1',
      ]);
      const fromRaw = await d.copyVolume({ name: 'raw-copy', dir, source: raw, sourceFormat: 'raw' });
      expect((await qemuIo(fromRaw, 'read -P 0x5a 0 64k')).code).toBe(0);
      expect((await readdir(dir)).filter((f) => f.endsWith('.part'))).toEqual([]);
    });

    it('never copies over a volume, from a missing image or when aborted, leaving nothing behind', async () => {
      const source = d.volumePath({ name: 'root', dir });
      await expect(d.copyVolume({ name: 'root-copy', dir, source, sourceFormat: 'qcow2' })).rejects.toThrow(
        ConflictError,
      );
      expect((await qemuIo(d.volumePath({ name: 'root-copy', dir }), 'read -P 0x11 0 64k')).code).toBe(0);
      await expect(
        d.copyVolume({ name: 'copy-x', dir, source: join(dir, 'nope.qcow2'), sourceFormat: 'qcow2' }),
      ).rejects.toThrow(NotFoundError);
      await expect(
        d.copyVolume({ name: 'copy-y', dir, source, sourceFormat: 'qcow2' }, { signal: AbortSignal.abort() }),
      ).rejects.toThrow();
      expect(await absent(d.volumePath({ name: 'copy-x', dir }))).toBe(true);
      expect(await absent(d.volumePath({ name: 'copy-y', dir }))).toBe(true);
      expect((await readdir(dir)).filter((f) => f.endsWith('.part'))).toEqual([]);
    });

    it('refuses a missing base and a base format QEMU cannot back an overlay with, creating nothing', async () => {
      await expect(d.createOverlay({ name: 'root-x', dir, base: join(dir, 'nope.qcow2') })).rejects.toThrow(
        NotFoundError,
      );
      const vmdk = join(dir, 'base.vmdk');
      await runner.run(['qemu-img', 'create', '-q', '-f', 'vmdk', vmdk, '8M']);
      await expect(d.createOverlay({ name: 'root-y', dir, base: vmdk })).rejects.toThrow(InvalidRequestError);
      expect(await absent(d.volumePath({ name: 'root-x', dir }))).toBe(true);
      expect(await absent(d.volumePath({ name: 'root-y', dir }))).toBe(true);
    });

    it('refuses names with path or shell characters and sizes below 1 MiB, before any change', async () => {
      for (const bad of ['../x', 'a/b', 'x;rm', '', 'A'.repeat(80)]) {
        expect(() => d.volumePath({ name: bad, dir })).toThrow(InvalidRequestError);
        await expect(d.createVolume({ name: bad, dir, sizeMiB: 1 })).rejects.toThrow(InvalidRequestError);
      }
      await expect(d.createVolume({ name: 'vol-zero', dir, sizeMiB: 0 })).rejects.toThrow(
        InvalidRequestError,
      );
      await expect(d.createVolume({ name: 'vol-frac', dir, sizeMiB: 1.5 })).rejects.toThrow(
        InvalidRequestError,
      );
      expect(await absent(d.volumePath({ name: 'vol-zero', dir }))).toBe(true);
    });

    it('an aborted operation rejects and changes nothing', async () => {
      const signal = AbortSignal.abort();
      await expect(d.createVolume({ name: 'vol-aborted', dir, sizeMiB: 1 }, { signal })).rejects.toThrow();
      expect(await absent(d.volumePath({ name: 'vol-aborted', dir }))).toBe(true);
      await expect(d.deleteVolume({ name: 'vol-a', dir }, { signal })).rejects.toThrow();
      expect(await absent(d.volumePath({ name: 'vol-a', dir }))).toBe(false);
    });

    it('gives a local volume to its owner, read-write for owner and group only', async () => {
      const owner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
      const path = await d.createVolume({ name: 'vol-owned', dir, sizeMiB: 1, owner });
      // Backends whose volumes are URLs (iSCSI, NFS) have no local file to own.
      if (!path.startsWith('/')) return;
      const st = await stat(path);
      expect({ uid: st.uid, gid: st.gid, mode: st.mode & 0o777 }).toEqual({ ...owner, mode: 0o660 });
    });

    it('deletes a volume; deleting a missing one is fine', async () => {
      const path = d.volumePath({ name: 'vol-a', dir });
      await d.deleteVolume({ name: 'vol-a', dir });
      expect(await absent(path)).toBe(true);
      await d.deleteVolume({ name: 'vol-a', dir });
      await d.deleteVolume({ name: 'never-made', dir });
    });
  });
}
