// The qcow2 volumes of one pool directory, as the dir and nfs pool backends keep them: `<path>/<name>.qcow2` (and
// imported ISOs as `<name>.iso`), made and changed with qemu-img on the pool's host.
//
// Why it looks the way it does:
// - A volume is built under a hidden temporary name and linked into place only when complete: a failed or aborted
//   create, clone or import never leaves a half-made volume that a later ensure would keep.
// - A linked clone names its base by a bare file name (`-b base.qcow2`, resolved next to the clone), so a pool can
//   move as a whole.
// - qemu-img follows backing files and external data files named inside an image, and an nfs pool's files are
//   written by its clients: before qemu-img opens a volume's chain, every link of it is checked to be a regular qcow2
//   file of this pool (`checkChain`); a name outside the pool, a link, a `json:` pseudo-file or a data file is
//   refused. Formats are always given (`-f`), never probed, except for an import's source, which may be qcow2 or raw
//   only (vmdk and others name further files).
// - An encrypted volume's key goes to qemu-img on stdin only (qemu-img.ts).
// - A write lock QEMU holds on a volume (a running VM) turns qemu-img's failure into a ConflictError that says so.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, chown, copyFile, link, lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ExecError, type Runner } from '../../exec/runner.js';
import { ConflictError, InvalidRequestError, NotFoundError } from '../../shared/errors.js';
import { DISK_SIZE_MIB_MAX } from '../../shared/limits.js';
import { UnsafeFileError } from '../../shared/safe-file.js';
import {
  type ObservedVolume,
  VOLUME_SNAPSHOTS_MAX,
  type VolumeConfig,
  volumeFileName,
} from '../../shared/storage.js';
import type { SecretValues } from '../hypervisor/types.js';
import type { OpContext } from '../network/types.js';
import { checkImportSource } from './image-import.js';
import { checkBackingChain } from './qcow2-chain.js';
import { listVolumes } from './qcow2-listing.js';
import {
  createRetryingLuks,
  type ImageInfo,
  imageInfo,
  keyObjectOnStdin,
  QEMU_IMG_INFO_MAX_BYTES,
  snapshotsOf,
} from './qemu-img.js';

/** A volume's name: lower-case letters, digits and dashes (a VM's own volume is `<vm>-<disk>`). */
export const VOLUME_NAME = /^[a-z][a-z0-9-]{0,62}$/;
/** A snapshot's name (the wire's SnapshotNameSchema). */
export const SNAPSHOT_NAME = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$/;

const VOLUME_FILE = /^([a-z][a-z0-9-]{0,62})\.(qcow2|iso)$/;
/** A volume being built (`build`): hidden, never listed. */
const TEMP_FILE = /^\.[a-z][a-z0-9-]{0,62}\.[0-9a-f]{8}\.tmp$/;
const MiB = 1024 * 1024;
/** Formats a pool directory holds. */
type FileFormat = 'qcow2' | 'iso';

/** How volume files are owned (an nfs pool's files belong to the uid its clients are squashed to). */
export interface Qcow2VolumesOptions {
  /** Default 0o600. */
  mode?: number;
  owner?: { uid: number; gid: number };
}

function checkSize(sizeMiB: number, subject: string): void {
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1 || sizeMiB > DISK_SIZE_MIB_MAX)
    throw new InvalidRequestError(
      `${subject}: size must be a whole number of MiB from 1 to ${DISK_SIZE_MIB_MAX}`,
      subject,
    );
}

/** The key of an encrypted volume from the values sent with the step: the named one, else the only one. */
function keyOf(secrets: SecretValues | undefined, subject: string, name?: string): string {
  const s = name === undefined ? secrets?.[0] : secrets?.find((x) => x.name === name);
  if (!s)
    throw new InvalidRequestError(
      `${subject} is encrypted${name ? ` with secret ${name}` : ''}, and its key did not come with the request`,
      subject,
    );
  return s.value;
}

/** The qcow2 volumes of one pool directory. */
export class Qcow2Volumes {
  constructor(
    private readonly runner: Runner,
    private readonly pool: { name: string; path: string },
    private readonly opts: Qcow2VolumesOptions = {},
  ) {
    // The path goes into qemu-img's --image-opts (comma-separated) for encrypted volumes.
    if (!/^\/[\w./-]{1,250}$/.test(pool.path) || pool.path.split('/').includes('..'))
      throw new InvalidRequestError(`pool ${pool.name}: path ${JSON.stringify(pool.path)} is not usable`);
  }

  private subject(name: string): string {
    return `volume ${name} of pool ${this.pool.name}`;
  }

  /** Where volume `name` is (or would be) in the pool; refuses a name that is not a volume name. */
  fileOf(name: string, format: FileFormat = 'qcow2'): string {
    if (!VOLUME_NAME.test(name))
      throw new InvalidRequestError(`volume name ${JSON.stringify(name)} must match ${VOLUME_NAME}`, name);
    return join(this.pool.path, volumeFileName(name, format));
  }

  /** The volume's file and format; undefined when absent; `UnsafeFileError` for a link or a non-regular file. */
  async find(name: string): Promise<{ path: string; format: FileFormat } | undefined> {
    for (const format of ['qcow2', 'iso'] as const) {
      const path = this.fileOf(name, format);
      const st = await lstat(path).catch(() => undefined);
      if (!st) continue;
      if (!st.isFile()) throw new UnsafeFileError(path, 'is not a regular file');
      return { path, format };
    }
    return undefined;
  }

  private async mustFind(name: string): Promise<{ path: string; format: FileFormat }> {
    const f = await this.find(name);
    if (!f) throw new NotFoundError('volume', `${this.pool.name}/${name}`);
    return f;
  }

  /**
   * `qemu-img info` of a qcow2 volume after checking each link of its backing chain (qcow2-chain.ts); only then may
   * qemu-img open it whole (clone, convert, resize, snapshot).
   */
  checkChain(name: string, signal?: AbortSignal, unlocked = false): Promise<ImageInfo> {
    return checkBackingChain(this.runner, this.pool, this.fileOf(name), signal, unlocked).catch(
      (e: unknown) => {
        throw this.lockConflict(e, name);
      },
    );
  }

  /** qemu-img's failure to take the lock QEMU holds on volume `name` (a running VM) as a ConflictError. */
  private lockConflict(e: unknown, name: string): unknown {
    if (!(e instanceof ExecError) || !/Failed to get .*lock/.test(e.result.stderr)) return e;
    return new ConflictError(
      `${this.subject(name)} is in use (a running VM has it open): stop the VM, or act through it`,
      this.subject(name),
    );
  }

  // Runs a qemu-img command changing a volume (its key, if any, on stdin).
  private async change(argv: string[], name: string, ctx?: OpContext, key?: string): Promise<void> {
    await this.runner
      .run(key === undefined ? argv : keyObjectOnStdin(argv, 'key0'), {
        ...(key === undefined ? {} : { input: key }),
        ...(ctx?.signal ? { signal: ctx.signal } : {}),
      })
      .catch((e: unknown) => {
        throw this.lockConflict(e, name);
      });
  }

  /** qemu-img's --image-opts for a qcow2 volume file (an encrypted one opened with key object `key0`). */
  private static imageOpts(path: string, encrypted: boolean): string {
    return `driver=qcow2,file.driver=file,file.filename=${path}${encrypted ? ',encrypt.key-secret=key0' : ''}`;
  }

  /**
   * Makes volume `name` with `make(tmp)` writing a hidden temporary file next to it, then links it into place (an
   * existing volume wins and is kept); the temporary file is removed whatever happens.
   */
  private async build(name: string, format: FileFormat, make: (tmp: string) => Promise<void>): Promise<void> {
    const final = this.fileOf(name, format);
    const tmp = join(this.pool.path, `.${name}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      await make(tmp);
      if (this.opts.owner) await chown(tmp, this.opts.owner.uid, this.opts.owner.gid);
      await chmod(tmp, this.opts.mode ?? 0o600);
      await link(tmp, final).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** Creates an empty thin qcow2 volume (LUKS-encrypted with `keyBase64`) unless the volume exists. */
  async create(name: string, sizeMiB: number, ctx?: OpContext, keyBase64?: string): Promise<void> {
    checkSize(sizeMiB, this.subject(name));
    ctx?.signal?.throwIfAborted();
    if (await this.find(name)) return;
    ctx?.progress?.(
      `creating ${keyBase64 ? 'encrypted ' : ''}volume ${name} in pool ${this.pool.name} (${sizeMiB} MiB)`,
    );
    await this.build(name, 'qcow2', async (tmp) => {
      const create = ['qemu-img', 'create', '-q', '-f', 'qcow2', tmp, `${sizeMiB}M`];
      if (keyBase64 === undefined) await this.runner.run(create, ctx?.signal ? { signal: ctx.signal } : {});
      else await createRetryingLuks(this.runner, create, keyBase64, tmp, ctx?.signal);
    });
  }

  /** A qcow2 volume to copy from: present, qcow2, not encrypted (its key would be needed), a checked chain. */
  private async cloneSource(source: string, kind: string, signal?: AbortSignal): Promise<ImageInfo> {
    const f = await this.mustFind(source);
    if (f.format !== 'qcow2')
      throw new InvalidRequestError(
        `${this.subject(source)} is an ISO image; only qcow2 volumes can be cloned`,
      );
    // A source a running VM writes is in use: a copy would be torn, a clone would see its base change.
    const info = await this.checkChain(source, signal, true);
    if (info.encrypted)
      throw new InvalidRequestError(
        `${this.subject(source)} is encrypted: a ${kind} of it would need its key at every open; clone an unencrypted template instead`,
        this.subject(source),
      );
    return info;
  }

  /**
   * Creates `name` as a linked clone of `base` (a qcow2 overlay naming `<base>.qcow2` relatively) unless it exists;
   * grown to `sizeMiB` when that is larger than the base.
   */
  async cloneLinked(name: string, base: string, sizeMiB?: number, ctx?: OpContext): Promise<void> {
    ctx?.signal?.throwIfAborted();
    if (await this.find(name)) return;
    const info = await this.cloneSource(base, 'linked clone', ctx?.signal);
    if (sizeMiB !== undefined) checkSize(sizeMiB, this.subject(name));
    const grow = sizeMiB !== undefined && sizeMiB * MiB > info['virtual-size'] ? [`${sizeMiB}M`] : [];
    ctx?.progress?.(`creating volume ${name} in pool ${this.pool.name} as a linked clone of ${base}`);
    await this.build(name, 'qcow2', (tmp) =>
      this.runner
        .run(
          [
            'qemu-img',
            'create',
            '-q',
            '-f',
            'qcow2',
            '-F',
            'qcow2',
            '-b',
            volumeFileName(base, 'qcow2'),
            tmp,
            ...grow,
          ],
          ctx?.signal ? { signal: ctx.signal } : {},
        )
        .then(() => undefined),
    );
  }

  /**
   * Creates `name` as a full copy of `source` (its chain flattened; LUKS-encrypted with `keyBase64`) unless it
   * exists; grown to `sizeMiB` when that is larger than the source.
   */
  async cloneFull(
    name: string,
    source: string,
    sizeMiB?: number,
    ctx?: OpContext,
    keyBase64?: string,
  ): Promise<void> {
    ctx?.signal?.throwIfAborted();
    if (await this.find(name)) return;
    const info = await this.cloneSource(source, 'full clone', ctx?.signal);
    if (sizeMiB !== undefined) checkSize(sizeMiB, this.subject(name));
    ctx?.progress?.(`creating volume ${name} in pool ${this.pool.name} as a full copy of ${source}`);
    const signal = ctx?.signal ? { signal: ctx.signal } : {};
    // In use since it was checked: qemu-img convert's own lock refuses it.
    const made = this.build(name, 'qcow2', async (tmp) => {
      const convert = ['qemu-img', 'convert', '-q', '-f', 'qcow2', '-O', 'qcow2', this.fileOf(source), tmp];
      if (keyBase64 === undefined) await this.runner.run(convert, signal);
      else await createRetryingLuks(this.runner, convert, keyBase64, tmp, ctx?.signal);
      if (sizeMiB !== undefined && sizeMiB * MiB > info['virtual-size'])
        await this.grow(tmp, name, sizeMiB, ctx, keyBase64);
    });
    await made.catch((e: unknown) => {
      throw this.lockConflict(e, source);
    });
  }

  /** Creates the volume a VolumeConfig describes unless it exists (kept as it is); keys from `secrets`. */
  async ensure(volume: VolumeConfig, ctx?: OpContext, secrets?: SecretValues): Promise<void> {
    const subject = this.subject(volume.name);
    if (volume.format !== 'qcow2')
      throw new InvalidRequestError(
        `${subject}: pool ${this.pool.name} holds qcow2 volumes, not ${volume.format} (ISO images come by import)`,
        subject,
      );
    checkSize(volume.sizeMiB, subject);
    if (await this.find(volume.name)) return;
    const key = volume.encryption ? keyOf(secrets, subject, volume.encryption.secret) : undefined;
    if (!volume.from) return this.create(volume.name, volume.sizeMiB, ctx, key);
    if (!volume.from.linked) return this.cloneFull(volume.name, volume.from.volume, volume.sizeMiB, ctx, key);
    if (key !== undefined)
      throw new InvalidRequestError(
        `${subject}: a linked clone reads its base unencrypted; make an encrypted full clone instead`,
        subject,
      );
    return this.cloneLinked(volume.name, volume.from.volume, volume.sizeMiB, ctx);
  }

  private async grow(
    path: string,
    name: string,
    sizeMiB: number,
    ctx?: OpContext,
    key?: string,
  ): Promise<void> {
    if (key === undefined)
      await this.change(['qemu-img', 'resize', '-q', '-f', 'qcow2', path, `${sizeMiB}M`], name, ctx);
    else
      await this.change(
        ['qemu-img', 'resize', '-q', '--image-opts', Qcow2Volumes.imageOpts(path, true), `${sizeMiB}M`],
        name,
        ctx,
        key,
      );
  }

  /**
   * Grows a volume to `sizeMiB`; a shrink is an `InvalidRequestError` and changes nothing; the same size is a no-op.
   * An encrypted volume needs its key in `secrets` (the first value).
   */
  async resize(name: string, sizeMiB: number, ctx?: OpContext, secrets?: SecretValues): Promise<void> {
    const subject = this.subject(name);
    checkSize(sizeMiB, subject);
    ctx?.signal?.throwIfAborted();
    const f = await this.mustFind(name);
    if (f.format !== 'qcow2')
      throw new InvalidRequestError(`${subject} is an ISO image: it cannot be resized`, subject);
    const info = await this.checkChain(name, ctx?.signal);
    const now = info['virtual-size'];
    if (sizeMiB * MiB < now)
      throw new InvalidRequestError(
        `${subject} is ${Math.ceil(now / MiB)} MiB: resizing it to ${sizeMiB} MiB would shrink it, and volumes only grow`,
        subject,
      );
    if (sizeMiB * MiB === now) return;
    ctx?.progress?.(`growing ${subject} to ${sizeMiB} MiB`);
    await this.grow(f.path, name, sizeMiB, ctx, info.encrypted ? keyOf(secrets, subject) : undefined);
  }

  /**
   * Imports a file of this host as new volume `name`: an ISO 9660 image is copied as `<name>.iso`; a qcow2 or raw
   * image is converted to qcow2. The source may not name other files (backing or data files) nor be encrypted.
   */
  async importFile(name: string, sourcePath: string, ctx?: OpContext): Promise<void> {
    const subject = this.subject(name);
    this.fileOf(name);
    ctx?.signal?.throwIfAborted();
    if (await this.find(name)) throw new ConflictError(`${subject} exists: pick another name`, subject);
    const source = await checkImportSource(this.runner, sourcePath, ctx?.signal);
    ctx?.progress?.(`importing ${sourcePath} as ${subject}`);
    if (source.format === 'iso') {
      await this.build(name, 'iso', (tmp) => copyFile(sourcePath, tmp, constants.COPYFILE_EXCL));
      return;
    }
    await this.build(name, 'qcow2', (tmp) =>
      this.runner
        .run(
          ['qemu-img', 'convert', '-q', '-f', source.format, '-O', 'qcow2', sourcePath, tmp],
          ctx?.signal ? { signal: ctx.signal } : {},
        )
        .then(() => undefined),
    );
  }

  /**
   * Creates, rolls back to, or deletes an internal snapshot of a volume no VM has open. A snapshot that exists is
   * a ConflictError to create; a missing one a NotFoundError to roll back to and fine to delete. A rollback of a
   * volume that linked clones use is refused: it would change what they read. An encrypted volume needs its key.
   */
  async snapshot(
    op: 'create' | 'rollback' | 'delete',
    volume: string,
    snapshot: string,
    ctx?: OpContext,
    secrets?: SecretValues,
  ): Promise<void> {
    const subject = this.subject(volume);
    if (!SNAPSHOT_NAME.test(snapshot))
      throw new InvalidRequestError(
        `snapshot name ${JSON.stringify(snapshot)} must match ${SNAPSHOT_NAME}`,
        subject,
      );
    ctx?.signal?.throwIfAborted();
    const f = await this.mustFind(volume);
    if (f.format !== 'qcow2')
      throw new InvalidRequestError(`${subject} is an ISO image: it has no snapshots`, subject);
    const info = await this.checkChain(volume, ctx?.signal);
    const snaps = snapshotsOf(info);
    const has = snaps.some((s) => s.name === snapshot);
    if (op === 'create' && has)
      throw new ConflictError(`${subject} has a snapshot ${snapshot} already`, subject);
    if (op === 'create' && snaps.length >= VOLUME_SNAPSHOTS_MAX)
      throw new InvalidRequestError(
        `${subject} has ${snaps.length} snapshots, the most a volume may hold`,
        subject,
      );
    if (op === 'rollback' && !has)
      throw new NotFoundError('snapshot', `${this.pool.name}/${volume}@${snapshot}`);
    if (op === 'delete' && !has) return;
    if (op === 'rollback') {
      const clones = await this.linkedClonesOf(volume);
      if (clones.length)
        throw new ConflictError(
          `${subject} is the base of linked clones ${clones.join(', ')}: a rollback would change what they read`,
          subject,
        );
    }
    const flag = { create: '-c', rollback: '-a', delete: '-d' }[op];
    ctx?.progress?.(
      `${op === 'create' ? 'snapshotting' : op === 'rollback' ? 'rolling back' : 'deleting snapshot of'} ${subject} (${snapshot})`,
    );
    // `qemu-img snapshot` has no -f: --image-opts names the format, so it is never probed.
    const key = info.encrypted ? keyOf(secrets, subject) : undefined;
    await this.change(
      [
        'qemu-img',
        'snapshot',
        '-q',
        '--image-opts',
        flag,
        snapshot,
        Qcow2Volumes.imageOpts(f.path, key !== undefined),
      ],
      volume,
      ctx,
      key,
    );
  }

  /**
   * Removes the temporary files of builds that never finished (an agent killed mid-create); only for a pool no
   * build runs in (its deletion).
   */
  async removeLeftovers(): Promise<void> {
    const files = await readdir(this.pool.path).catch(() => [] as string[]);
    for (const f of files) if (TEMP_FILE.test(f)) await rm(join(this.pool.path, f), { force: true });
  }

  /** Names of the volumes in the pool directory (regular files or not), sorted. */
  async names(): Promise<string[]> {
    let files: string[];
    try {
      files = await readdir(this.pool.path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    return files
      .map((f) => VOLUME_FILE.exec(f)?.[1])
      .filter((n): n is string => n !== undefined)
      .sort();
  }

  /** The volumes that are linked clones of `name` (their backing file is `<name>.qcow2`). */
  async linkedClonesOf(name: string): Promise<string[]> {
    const backing = volumeFileName(name, 'qcow2');
    const clones: string[] = [];
    for (const other of await this.names()) {
      if (other === name) continue;
      const f = await this.find(other).catch(() => undefined);
      if (f?.format !== 'qcow2') continue;
      const info = await imageInfo(this.runner, f.path, 'qcow2').catch(() => undefined);
      if (info?.['backing-filename'] === backing) clones.push(other);
    }
    return clones;
  }

  /**
   * Removes a volume; a missing one is fine. Refused (ConflictError) while linked clones use it, or while a process
   * on this host holds its lock (a running VM; QEMU on another host, through NFS, is not seen here).
   */
  async delete(name: string, ctx?: OpContext): Promise<void> {
    const subject = this.subject(name);
    ctx?.signal?.throwIfAborted();
    const f = await this.find(name);
    if (!f) return;
    const clones = await this.linkedClonesOf(name);
    if (clones.length)
      throw new ConflictError(
        `${subject} is the base of linked clones ${clones.join(', ')}: delete them first`,
        subject,
      );
    // Without -U qemu-img takes the image's locks, which QEMU holds while the volume is open.
    const probe = await this.runner.run(
      ['qemu-img', 'info', '--output=json', '-f', f.format === 'iso' ? 'raw' : 'qcow2', f.path],
      { allowFailure: true, maxOutputBytes: QEMU_IMG_INFO_MAX_BYTES },
    );
    if (probe.code !== 0 && /Failed to get .*lock/.test(probe.stderr))
      throw new ConflictError(`${subject} is in use (a running VM has it open): detach it first`, subject);
    ctx?.progress?.(`deleting ${subject}`);
    await rm(f.path, { force: true });
  }

  /** Every volume of the pool as observed, and problems with files that could not be read (qcow2-listing.ts). */
  list(): Promise<{ volumes: ObservedVolume[]; problems: string[] }> {
    return listVolumes(this, this.pool.name);
  }
}
