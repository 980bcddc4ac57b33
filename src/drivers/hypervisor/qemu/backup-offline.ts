// A stopped VM's disks for a restore (writable): one `qemu-nbd` per disk (the nbd helper's servers); the refusals,
// keys and image facts a stopped VM's backup (backup-daemon.ts) shares; and its persistent dirty bitmaps ended with
// `qemu-img bitmap` while nothing else has the image open (the cleanup after a crash). A local image opens by path,
// an NFS volume by its `nfs://` URL, an iSCSI LUN by its URL or, with CHAP, by `--image-opts` naming its password.
// A secret (the LUKS key of an encrypted qcow2, vmlink's only encrypted format: storage/qemu-img.ts; a CHAP password)
// goes to qemu-img on stdin, to qemu-nbd in a 0600 file of the 0700 socket directory removed once it is open.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import type { Runner } from '../../../exec/runner.js';
import { BadResponseError, InvalidStateError, UnsupportedError } from '../../../shared/errors.js';
import { QEMU_IMG_INFO_MAX_BYTES } from '../../../shared/limits.js';
import type { DiskConfig } from '../../../shared/model.js';
import { keyObjectOnStdin } from '../../storage/qemu-img.js';
import type { RestoreView, SecretValues } from '../types.js';
import type { BackupDisk, ViewRecord } from './backup-disks.js';
import { diskSecrets } from './disk-keys.js';

/** One `qemu-nbd` serving a disk on a unix socket (drivers/backup/qemu-nbd.ts). */
export interface NbdServerHandle {
  socket: string;
  exportName: string;
  stop(): Promise<void>;
}

/** How the capture starts and stops `qemu-nbd` (the nbd helper's `startQemuNbd`/`stopQemuNbd`). */
export interface NbdServers {
  start(opts: {
    /** A path, or `--image-opts` naming the secrets (an encrypted disk); the same shape as `QemuNbdOptions`. */
    image: string | { imageOpts: string };
    format?: 'qcow2' | 'raw';
    readOnly: boolean;
    bitmap?: string;
    socketDir: string;
    exportName: string;
    secrets?: { id: string; file: string }[];
  }): Promise<NbdServerHandle>;
  /** Stops a server an earlier agent left (by its recorded identity); none running is not an error. */
  stopLeft(socketDir: string, exportName: string): Promise<void>;
}

/** What the stopped-VM views need of the driver. */
export interface OfflineDeps {
  vm: string;
  runner: Runner;
  netns?: string;
  nbd: NbdServers;
  /** Root's directory for the servers' sockets and identity files. */
  socketDir: string;
  record: { write(r: ViewRecord): Promise<void>; remove(): Promise<void> };
  /** Base64 LUKS keys of the encrypted disks, by disk name (`offlineKeys`); held in memory only. */
  keys?: ReadonlyMap<string, string>;
  /** Base64 CHAP passwords of the iSCSI disks that log in with one, by disk name (`offlineChap`); in memory only. */
  chap?: ReadonlyMap<string, string>;
}

/**
 * The LUKS key of each encrypted disk among `disks` (by name) from the step's secrets; refuses, naming the disk and
 * the secret (never a value), when one was not sent.
 */
export function offlineKeys(
  vm: string,
  configDisks: readonly Pick<DiskConfig, 'name' | 'encryption'>[],
  disks: readonly BackupDisk[],
  secrets: SecretValues | undefined,
): Map<string, string> {
  const keys = new Map<string, string>();
  for (const x of disks) {
    if (!x.encrypted) continue;
    const c = configDisks.find((d) => d.name === x.name);
    const key = c ? diskSecrets(vm, c, secrets).keyBase64 : undefined;
    if (key === undefined)
      throw new InvalidStateError(`VM ${vm}: encrypted disk ${x.name} has no key in its config`, `vm/${vm}`);
    keys.set(x.name, key);
  }
  return keys;
}

/**
 * The CHAP password of each iSCSI disk among `disks` that logs in with one (by name) from the step's secrets; refuses,
 * naming the disk and the secret (never a value), when one was not sent.
 */
export function offlineChap(
  vm: string,
  disks: readonly BackupDisk[],
  secrets: SecretValues | undefined,
): Map<string, string> {
  const chap = new Map<string, string>();
  for (const x of disks) {
    if (x.volume?.kind !== 'iscsi' || !x.volume.chap) continue;
    const password = diskSecrets(vm, { name: x.name, source: x.volume }, secrets).chapBase64;
    if (password !== undefined) chap.set(x.name, password);
  }
  return chap;
}

/** The secret id an encrypted image's options name, and an iSCSI LUN's CHAP password. */
const KEY_ID = 'vmlink-key';
const CHAP_ID = 'vmlink-chap';

/** How qemu-img and qemu-nbd open one disk: a path or URL, or `--image-opts` naming one secret (base64). */
type OfflineImage =
  | { image: string; format: 'qcow2' | 'raw' }
  | { imageOpts: string; secretId: string; secretBase64: string };

/** One `--image-opts` value: QEMU's option syntax doubles a comma; control characters are refused. */
function optValue(v: string, what: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them is the point
  if (/[\u0000-\u001f]/.test(v))
    throw new InvalidStateError(`${what} ${JSON.stringify(v)} has control characters`);
  return v.replaceAll(',', ',,');
}

/**
 * How a disk opens while its VM is stopped (`keys`/`chap` as `OfflineDeps`). `unlock: false` opens an encrypted
 * qcow2 without its key: `qemu-img info` reads its header so, without paying LUKS's key derivation (~2 s).
 */
function offlineImage(
  d: Pick<OfflineDeps, 'vm' | 'keys' | 'chap'>,
  x: Pick<BackupDisk, 'name' | 'image' | 'qcow2' | 'volume'> & { encrypted?: boolean },
  unlock = true,
): OfflineImage {
  const key = unlock ? d.keys?.get(x.name) : undefined;
  if (unlock && x.encrypted && key === undefined)
    throw new InvalidStateError(
      `VM ${d.vm}: disk ${x.name} is encrypted and its key was not given`,
      `vm/${d.vm}`,
    );
  if (key !== undefined)
    return { imageOpts: encryptedImageOpts(x.image), secretId: KEY_ID, secretBase64: key };
  const v = x.volume;
  if (v?.kind === 'iscsi' && v.chap) {
    const password = d.chap?.get(x.name);
    if (password === undefined)
      throw new InvalidStateError(
        `VM ${d.vm}: disk ${x.name} logs in to its iSCSI target with CHAP and its password was not given`,
        `vm/${d.vm}`,
      );
    const opts = [
      'driver=raw',
      'file.driver=iscsi',
      'file.transport=tcp',
      `file.portal=${optValue(v.portal, 'iSCSI portal')}`,
      `file.target=${optValue(v.iqn, 'iSCSI target')}`,
      `file.lun=${v.lun}`,
      `file.user=${optValue(v.chap.user, 'CHAP user')}`,
      `file.password-secret=${CHAP_ID}`,
    ];
    return { imageOpts: opts.join(','), secretId: CHAP_ID, secretBase64: password };
  }
  return { image: x.image, format: x.qcow2 ? 'qcow2' : 'raw' };
}

/** `qemu-img SUB [--image-opts] ARGS... IMAGE REST...` on `img`, its secret on stdin when it has one. */
async function qemuImgOn(
  d: Pick<OfflineDeps, 'runner' | 'netns'>,
  sub: string,
  args: string[],
  img: OfflineImage,
  rest: string[],
  maxOutputBytes?: number,
): Promise<string> {
  const o = { ...(d.netns ? { netns: d.netns } : {}), ...(maxOutputBytes ? { maxOutputBytes } : {}) };
  if ('image' in img) return (await d.runner.run(['qemu-img', sub, ...args, img.image, ...rest], o)).stdout;
  const argv = keyObjectOnStdin(
    ['qemu-img', sub, '--image-opts', ...args, img.imageOpts, ...rest],
    img.secretId,
  );
  return (await d.runner.run(argv, { ...o, input: img.secretBase64 })).stdout;
}

/** `--image-opts` of a LUKS qcow2 at `image` (a host path: commas doubled, QEMU's escape). */
function encryptedImageOpts(image: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them is the point
  if (!image.startsWith('/') || /[\u0000-\u001f]/.test(image))
    throw new InvalidStateError(`encrypted image ${JSON.stringify(image)} is not a host path`, image);
  return `driver=qcow2,file.driver=file,file.filename=${image.replaceAll(',', ',,')},encrypt.key-secret=${KEY_ID}`;
}

/**
 * Starts the server of one disk: a secret (an encrypted disk's key, an iSCSI LUN's CHAP password) goes to qemu-nbd
 * as a file (never argv) in the 0700 socket directory, made 0600 and removed as soon as qemu-nbd has the image open
 * (or failed to).
 */
async function startServer(
  d: Pick<OfflineDeps, 'nbd' | 'socketDir' | 'keys' | 'chap' | 'vm'>,
  x: BackupDisk,
  readOnly: boolean,
  bitmap: string | undefined,
): Promise<NbdServerHandle> {
  const common = { readOnly, socketDir: d.socketDir, exportName: x.name, ...(bitmap ? { bitmap } : {}) };
  const img = offlineImage(d, x);
  if ('image' in img) return d.nbd.start({ ...common, image: img.image, format: img.format });
  const file = `${d.socketDir}/secret-${x.name}`;
  await rm(file, { force: true });
  try {
    await writeFile(file, Buffer.from(img.secretBase64, 'base64'), { mode: 0o600, flag: 'wx' });
    return await d.nbd.start({
      ...common,
      image: { imageOpts: img.imageOpts },
      secrets: [{ id: img.secretId, file }],
    });
  } finally {
    await rm(file, { force: true });
  }
}

/** What `qemu-img info` says of an image, as far as a backup reads it. */
export interface ImageInfo {
  sizeBytes: number;
  /** Persistent bitmaps; `inUse`: QEMU had it open when it stopped uncleanly (inconsistent). */
  bitmaps: Map<string, { inUse: boolean }>;
}

/** Parses `qemu-img info --output=json`. */
export function parseImageInfo(image: string, text: string): ImageInfo {
  let info: Record<string, unknown>;
  try {
    info = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new BadResponseError(`qemu-img info ${image}: not JSON`);
  }
  const size = info['virtual-size'];
  if (typeof size !== 'number' || size < 0)
    throw new BadResponseError(`qemu-img info ${image}: no virtual-size`);
  const fs = info['format-specific'] as { data?: { bitmaps?: unknown } } | undefined;
  const list = Array.isArray(fs?.data?.bitmaps) ? (fs.data.bitmaps as Array<Record<string, unknown>>) : [];
  const bitmaps = new Map<string, { inUse: boolean }>();
  for (const b of list)
    if (typeof b?.name === 'string')
      bitmaps.set(b.name, { inUse: Array.isArray(b.flags) && b.flags.includes('in-use') });
  return { sizeBytes: size, bitmaps };
}

async function imageInfo(d: Pick<OfflineDeps, 'runner' | 'netns'>, img: OfflineImage): Promise<ImageInfo> {
  const text = await qemuImgOn(d, 'info', ['-U', '--output=json'], img, [], QEMU_IMG_INFO_MAX_BYTES);
  return parseImageInfo('image' in img ? img.image : 'the image', text);
}

/**
 * Plain images (local, NFS, iSCSI) and LUKS-encrypted local qcow2 open while the VM is stopped; an encrypted raw
 * volume or an encrypted pool volume not yet (the key options name a host path).
 */
export function offlineRefusal(vm: string, disks: readonly BackupDisk[], what: string): void {
  const bad = disks.find((x) => x.encrypted && (!x.qcow2 || (x.source !== undefined && x.source !== 'file')));
  if (bad)
    throw new UnsupportedError(
      `VM ${vm} is stopped and disk ${bad.name} is ${bad.qcow2 ? `an encrypted ${bad.source} volume` : 'an encrypted raw image'}: a ${what} of a stopped VM reads encrypted disks only as local qcow2 images so far (start the VM and back it up running)`,
      `vm/${vm}`,
    );
}

/**
 * Ends a stopped view's bitmaps with qemu-img on images nothing has open (its server stopped): `commit` removes the
 * base (`next` counts from this snapshot), `abort` merges `next` into the base, enables the base and removes `next`.
 * The cleanup after a crash, for a stopped view (backup-daemon.ts) and a running one whose QEMU stopped before it ended.
 */
export async function foldOffline(
  d: Pick<OfflineDeps, 'vm' | 'runner' | 'netns' | 'record' | 'keys'>,
  record: ViewRecord,
  outcome: 'commit' | 'abort',
): Promise<void> {
  for (const x of record.disks) {
    // Only qcow2 keeps persistent bitmaps: never an iSCSI LUN, so no CHAP login here.
    if (!x.qcow2 || !x.image) continue;
    const disk = { name: x.name, image: x.image, qcow2: true };
    const img = offlineImage(d, disk);
    const bitmap = async (args: string[], name: string) => {
      await qemuImgOn(d, 'bitmap', args, img, [name]);
    };
    const info = await imageInfo(d, offlineImage(d, disk, false));
    const b = record.base === undefined ? undefined : info.bitmaps.get(record.base);
    const hasBase = b !== undefined;
    const hasNext = info.bitmaps.has(record.next);
    if (outcome === 'commit') {
      if (hasBase) await bitmap(['--remove'], record.base!);
      continue;
    }
    // A base left in-use (its QEMU or storage daemon killed outright) cannot be merged into or enabled: the next
    // backup reads the disk whole (bitmap-inconsistent).
    if (hasBase && x.base === 'usable' && !b.inUse) {
      if (hasNext) await bitmap(['--merge', record.next], record.base!);
      // A running view's base was disabled: a QEMU that stopped before the view ended stored it so.
      await bitmap(['--enable'], record.base!);
    }
    if (hasNext) await bitmap(['--remove'], record.next);
  }
  await d.record.remove();
}

/** A stopped VM's disks served writable for a restore; `close()` stops the servers (qemu-nbd flushes on exit). */
export async function openRestore(
  d: Omit<OfflineDeps, 'record'>,
  disks: readonly BackupDisk[],
): Promise<RestoreView> {
  if (disks.length === 0)
    throw new UnsupportedError(`VM ${d.vm} has no writable disk to restore`, `vm/${d.vm}`);
  offlineRefusal(d.vm, disks, 'restore');
  await mkdir(d.socketDir, { recursive: true, mode: 0o700 });
  const servers: NbdServerHandle[] = [];
  const out: RestoreView['disks'] = [];
  const stopAll = async () => {
    for (const s of servers.splice(0)) await s.stop();
  };
  try {
    for (const x of disks) {
      const info = await imageInfo(d, offlineImage(d, x, false));
      await d.nbd.stopLeft(d.socketDir, x.name);
      const s = await startServer(d, x, false, undefined);
      servers.push(s);
      out.push({ name: x.name, sizeBytes: info.sizeBytes, socket: s.socket, exportName: s.exportName });
    }
  } catch (e) {
    await stopAll().catch(() => {});
    throw e;
  }
  return { disks: out, close: stopAll };
}
