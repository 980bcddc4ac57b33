// A stopped VM's disks for a restore (writable): one `qemu-nbd` per disk (the nbd helper's servers); the refusals,
// keys and image facts a stopped VM's backup (backup-daemon.ts) shares; and its persistent dirty bitmaps ended with
// `qemu-img bitmap` while nothing else has the image open (the cleanup after a crash). An encrypted disk (a
// LUKS-encrypted qcow2, vmlink's only encrypted format: storage/qemu-img.ts) opens with its key: for qemu-img on
// stdin, for qemu-nbd in a 0600 file of the 0700 socket directory removed once it is open.
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

/** The secret id an encrypted image's options name. */
const KEY_ID = 'vmlink-key';

/** `--image-opts` of a LUKS qcow2 at `image` (a host path: commas doubled, QEMU's escape). */
function encryptedImageOpts(image: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them is the point
  if (!image.startsWith('/') || /[\u0000-\u001f]/.test(image))
    throw new InvalidStateError(`encrypted image ${JSON.stringify(image)} is not a host path`, image);
  return `driver=qcow2,file.driver=file,file.filename=${image.replaceAll(',', ',,')},encrypt.key-secret=${KEY_ID}`;
}

/** `qemu-img bitmap ARGS... IMAGE NAME` on `image`, keyed (stdin, `--image-opts`) when `key` is given. */
async function qemuImgBitmap(
  d: Pick<OfflineDeps, 'runner' | 'netns'>,
  args: string[],
  image: string,
  name: string,
  key: string | undefined,
): Promise<void> {
  const o = d.netns ? { netns: d.netns } : {};
  if (key === undefined) {
    await d.runner.run(['qemu-img', 'bitmap', ...args, image, name], o);
    return;
  }
  await d.runner.run(
    keyObjectOnStdin(
      ['qemu-img', 'bitmap', '--image-opts', ...args, encryptedImageOpts(image), name],
      KEY_ID,
    ),
    { ...o, input: key },
  );
}

/**
 * Starts the server of one disk: an encrypted one's key goes to qemu-nbd as a file (never argv) in the 0700 socket
 * directory, made 0600 and removed as soon as qemu-nbd has the image open (or failed to).
 */
async function startServer(
  d: Pick<OfflineDeps, 'nbd' | 'socketDir' | 'keys' | 'vm'>,
  x: BackupDisk,
  readOnly: boolean,
  bitmap: string | undefined,
): Promise<NbdServerHandle> {
  const common = { readOnly, socketDir: d.socketDir, exportName: x.name, ...(bitmap ? { bitmap } : {}) };
  if (!x.encrypted) return d.nbd.start({ ...common, image: x.image, format: x.qcow2 ? 'qcow2' : 'raw' });
  const key = d.keys?.get(x.name);
  if (key === undefined)
    throw new InvalidStateError(
      `VM ${d.vm}: disk ${x.name} is encrypted and its key was not given`,
      `vm/${d.vm}`,
    );
  const file = `${d.socketDir}/key-${x.name}`;
  await rm(file, { force: true });
  try {
    await writeFile(file, Buffer.from(key, 'base64'), { mode: 0o600, flag: 'wx' });
    return await d.nbd.start({
      ...common,
      image: { imageOpts: encryptedImageOpts(x.image) },
      secrets: [{ id: KEY_ID, file }],
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

async function qemuImg(
  d: Pick<OfflineDeps, 'runner' | 'netns'>,
  args: string[],
  maxOutputBytes?: number,
): Promise<string> {
  const r = await d.runner.run(['qemu-img', ...args], {
    ...(d.netns ? { netns: d.netns } : {}),
    ...(maxOutputBytes ? { maxOutputBytes } : {}),
  });
  return r.stdout;
}

async function imageInfo(d: Pick<OfflineDeps, 'runner' | 'netns'>, image: string): Promise<ImageInfo> {
  return parseImageInfo(
    image,
    await qemuImg(d, ['info', '-U', '--output=json', image], QEMU_IMG_INFO_MAX_BYTES),
  );
}

/** Only local images (encrypted ones as LUKS qcow2) for now: qemu-nbd would need the iSCSI/NFS options. */
export function offlineRefusal(vm: string, disks: readonly BackupDisk[], what: string): void {
  const bad = disks.find((x) => (x.source !== undefined && x.source !== 'file') || (x.encrypted && !x.qcow2));
  if (bad)
    throw new UnsupportedError(
      `VM ${vm} is stopped and disk ${bad.name} is ${bad.source !== undefined && bad.source !== 'file' ? `an ${bad.source} volume` : 'an encrypted raw image'}: a ${what} of a stopped VM reads local images (plain, or LUKS-encrypted qcow2) only so far (start the VM and back it up running)`,
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
    if (!x.qcow2 || !x.image) continue;
    const key = d.keys?.get(x.name);
    const bitmap = (args: string[], name: string) => qemuImgBitmap(d, args, x.image!, name, key);
    const info = await imageInfo(d, x.image);
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
      const info = await imageInfo(d as OfflineDeps, x.image);
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
