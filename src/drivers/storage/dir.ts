// `dir` storage backend: qcow2 files in a directory, made with qemu-img.
import { chmod, chown, lstat, rm, stat } from 'node:fs/promises';
import type { Runner } from '../../exec/runner.js';
import { ConflictError, InvalidRequestError, NotFoundError } from '../../shared/errors.js';
import { renameDurably } from '../../shared/state-file.js';
import type { OpContext } from '../network/types.js';
import { createRetryingLuks } from './qemu-img.js';
import type { CopySpec, OverlaySpec, StorageDriver, VolumeOwner, VolumeRef, VolumeSpec } from './types.js';

const VOLUME_NAME = /^[a-z][a-z0-9-]{0,62}$/;

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Volumes as qcow2 files `<dir>/<name>.qcow2`, created with `qemu-img`. */
export class DirStorage implements StorageDriver {
  constructor(private readonly runner: Runner) {}

  /** `<dir>/<name>.qcow2`; refuses a name that is not lower-case letters, digits and dashes. */
  volumePath(v: VolumeRef): string {
    if (!VOLUME_NAME.test(v.name))
      throw new InvalidRequestError(
        `volume name ${JSON.stringify(v.name)} must match ${VOLUME_NAME}`,
        v.name,
      );
    return `${v.dir}/${v.name}.qcow2`;
  }

  /** Creates `<dir>/<name>.qcow2` with `qemu-img create` unless it exists; gives it to `owner`. */
  async createVolume(v: VolumeSpec, ctx?: OpContext): Promise<string> {
    const path = this.volumePath(v);
    if (!Number.isInteger(v.sizeMiB) || v.sizeMiB < 1)
      throw new InvalidRequestError(`volume ${v.name}: size must be a positive number of MiB`, v.name);
    ctx?.signal?.throwIfAborted();
    if (!(await exists(path))) {
      const key = v.encryptionKeyBase64;
      ctx?.progress?.(`creating ${key ? 'encrypted ' : ''}volume ${path} (${v.sizeMiB} MiB)`);
      const create = ['qemu-img', 'create', '-q', '-f', 'qcow2', path, `${v.sizeMiB}M`];
      const signal = ctx?.signal ? { signal: ctx.signal } : {};
      if (!key) await this.runner.run(create, signal);
      else await createRetryingLuks(this.runner, create, key, path, ctx?.signal);
    }
    await this.own(path, v.owner);
    return path;
  }

  /** Creates `<dir>/<name>.qcow2` backed by `base` (its format as `qemu-img info` reports it) unless it exists. */
  async createOverlay(v: OverlaySpec, ctx?: OpContext): Promise<string> {
    const path = this.volumePath(v);
    ctx?.signal?.throwIfAborted();
    if (!(await exists(v.base))) throw new NotFoundError('base image', v.base);
    if (!(await exists(path))) {
      const info = await this.runner.run(['qemu-img', 'info', '--output=json', v.base]);
      const format = (JSON.parse(info.stdout || '{}') as { format?: string }).format ?? 'qcow2';
      if (format !== 'qcow2' && format !== 'raw') {
        throw new InvalidRequestError(
          `base image ${v.base} is ${format}; only qcow2 and raw images can back an overlay`,
          v.base,
        );
      }
      ctx?.progress?.(`creating overlay ${path} on ${v.base}`);
      await this.runner.run(
        ['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', format, '-b', v.base, path],
        ctx?.signal ? { signal: ctx.signal } : {},
      );
    }
    await this.own(path, v.owner);
    return path;
  }

  /**
   * Copies `v.source` into `<dir>/<name>.qcow2` with `qemu-img convert` (flattened; `--bitmaps` keeps a qcow2's
   * persistent dirty bitmaps, so the next backup stays incremental) through a temporary name published only once
   * flushed: a copy cut short leaves no volume, and the next try starts over.
   */
  async copyVolume(v: CopySpec, ctx?: OpContext): Promise<string> {
    const path = this.volumePath(v);
    ctx?.signal?.throwIfAborted();
    if (await exists(path))
      throw new ConflictError(`volume ${path} exists already; a copy never overwrites one`, v.name);
    const src = await lstat(v.source).catch(() => undefined);
    if (!src) throw new NotFoundError('image', v.source);
    if (!src.isFile())
      throw new InvalidRequestError(`${v.source} is not a regular file; not copied`, v.source);
    const tmp = `${v.dir}/.${v.name}.qcow2.part`;
    await rm(tmp, { force: true });
    ctx?.progress?.(`copying ${v.source} to ${path}`);
    const bitmaps = v.sourceFormat === 'qcow2' ? ['--bitmaps', '--skip-broken-bitmaps'] : [];
    const argv = [
      'qemu-img',
      'convert',
      '-q',
      '-f',
      v.sourceFormat,
      '-O',
      'qcow2',
      ...bitmaps,
      v.source,
      tmp,
    ];
    try {
      await this.runner.run(argv, ctx?.signal ? { signal: ctx.signal } : {});
      await renameDurably(tmp, path);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    await this.own(path, v.owner);
    return path;
  }

  /** Removes `<dir>/<name>.qcow2`; a missing file is fine. */
  async deleteVolume(v: VolumeRef, ctx?: OpContext): Promise<void> {
    const path = this.volumePath(v);
    ctx?.signal?.throwIfAborted();
    ctx?.progress?.(`deleting volume ${path}`);
    await rm(path, { force: true });
  }

  // The unprivileged QEMU user reads and writes the file through its owner or group; nobody else sees it.
  private async own(path: string, owner: VolumeOwner | undefined): Promise<void> {
    if (!owner || !(await exists(path))) return;
    await chown(path, owner.uid, owner.gid);
    await chmod(path, 0o660);
  }
}
