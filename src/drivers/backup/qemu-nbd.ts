// qemu-nbd (Debian qemu-utils) serving one disk image on a unix socket: a stopped VM's disk read for a backup
// (read-only, with `-B` exporting its persistent dirty bitmap), or a restore target (writable). Started through the
// exec layer in the foreground (so the pid we spawn is the server's), with its identity (pid + start time) recorded
// next to its socket; stopped only while it is still that process. It runs `--persistent`: its lifetime is ours
// (stop()), not the first client's, so a reconnect after a failed request still finds it; `--shared` (default 1)
// bounds how many clients it serves at once. Ready means its pidfile names it: qemu-nbd writes it only once the
// image is open and the export made (the socket itself appears earlier, and stays behind when the image fails).
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../../exec/runner.js';
import { InvalidRequestError, TimeoutError, VmlinkError } from '../../shared/errors.js';
import { DAEMON_STOP_GRACE_MS, KILL_WAIT_MS, QEMU_NBD_START_TIMEOUT_MS } from '../../shared/limits.js';
import {
  type ExpectedProcess,
  identify,
  isRunning,
  processFromIdentityFile,
  readPidfile,
  signalProcess,
  terminate,
  waitExited,
  writeIdentityFile,
} from '../../shared/process.js';
import { readTail } from '../../shared/safe-file.js';
import { pollUntil } from '../../shared/time.js';

/** A running qemu-nbd: where to connect, and how to stop it. */
export interface QemuNbdServer {
  socket: string;
  exportName: string;
  /** Stops it by its recorded identity (SIGTERM: qemu-nbd flushes and exits; SIGKILL after a grace) and removes its files. */
  stop(): Promise<void>;
}

/** What to serve and how. */
export interface QemuNbdOptions {
  /** A host path (absolute), an `iscsi://` or `nfs://` URL, or a full `--image-opts` string (driver=...,...). */
  image: string | { imageOpts: string };
  /** The image's format (not with `imageOpts`, which names its driver itself). Default: qcow2. */
  format?: 'qcow2' | 'raw';
  readOnly: boolean;
  /** A persistent dirty bitmap of the image to export (`qemu:dirty-bitmap:NAME`); refused at start when missing. */
  bitmap?: string;
  /** Where the socket and the server's files go (created 0700 when missing). */
  socketDir: string;
  /** `--object secret,id=ID,file=FILE` each (a LUKS passphrase, an iSCSI password), named in `imageOpts`. */
  secrets?: { id: string; file: string }[];
  /** Network namespace to run in (a lab host's, to reach its iSCSI/NFS storage). */
  netns?: string;
  /** The export's name, also naming its files in `socketDir` (default `disk`). */
  exportName?: string;
  /** How many clients at once (default 1). */
  shared?: number;
  /** Host page cache: `writeback` (qemu's default), or `none` (O_DIRECT, with `aio: native`). Default writeback. */
  cache?: 'none' | 'writeback';
  aio?: 'threads' | 'native' | 'io_uring';
}

const EXPORT_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const BITMAP_NAME = /^[A-Za-z0-9_.:-]{1,1023}$/;
const SECRET_ID = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
/** A unix socket path is at most 107 bytes (sun_path). */
const SOCKET_PATH_MAX = 107;

/** The files of the qemu-nbd serving `exportName` in `socketDir`. */
export function qemuNbdFiles(
  socketDir: string,
  exportName = 'disk',
): { socket: string; identity: string; pidfile: string; log: string } {
  if (!EXPORT_NAME.test(exportName) || exportName === '.' || exportName === '..')
    throw new InvalidRequestError(
      `NBD export name ${JSON.stringify(exportName)}: letters, digits, _ . - only`,
    );
  const base = join(socketDir, `qemu-nbd-${exportName}`);
  return { socket: `${base}.sock`, identity: `${base}.id.json`, pidfile: `${base}.pid`, log: `${base}.log` };
}

/** A value inside a QEMU option string: commas doubled (QEMU's escape), nothing that could end the argument. */
function optValue(v: string, what: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them is the point
  if (v.length === 0 || /[\u0000-\u001f]/.test(v))
    throw new InvalidRequestError(`${what} ${JSON.stringify(v)} is empty or holds control characters`);
  return v.replaceAll(',', ',,');
}

/** qemu-nbd's argv for `opts` (pure; checked: nothing from the caller can become an option). */
export function qemuNbdArgv(opts: QemuNbdOptions): string[] {
  const exportName = opts.exportName ?? 'disk';
  const files = qemuNbdFiles(opts.socketDir, exportName);
  if (!opts.socketDir.startsWith('/'))
    throw new InvalidRequestError(`qemu-nbd socket directory ${opts.socketDir} is not an absolute path`);
  if (Buffer.byteLength(files.socket) > SOCKET_PATH_MAX)
    throw new InvalidRequestError(
      `qemu-nbd socket path ${files.socket} is longer than ${SOCKET_PATH_MAX} bytes (a unix socket's limit)`,
    );
  const shared = opts.shared ?? 1;
  if (!Number.isInteger(shared) || shared < 1 || shared > 16)
    throw new InvalidRequestError(`qemu-nbd --shared ${shared}: 1..16`);
  const argv = [
    'qemu-nbd',
    `--socket=${files.socket}`,
    `--export-name=${exportName}`,
    `--pid-file=${files.pidfile}`,
    '--persistent',
    `--shared=${shared}`,
    `--cache=${opts.cache ?? 'writeback'}`,
    ...(opts.aio ? [`--aio=${opts.aio}`] : []),
  ];
  if (opts.aio === 'native' && opts.cache !== 'none')
    throw new InvalidRequestError('qemu-nbd --aio=native needs --cache=none (O_DIRECT)');
  for (const s of opts.secrets ?? []) {
    if (!SECRET_ID.test(s.id))
      throw new InvalidRequestError(`qemu-nbd secret id ${JSON.stringify(s.id)} is not valid`);
    if (!s.file.startsWith('/'))
      throw new InvalidRequestError(`qemu-nbd secret file ${s.file} is not an absolute path`);
    argv.push('--object', `secret,id=${s.id},file=${optValue(s.file, 'secret file')}`);
  }
  if (opts.readOnly) argv.push('--read-only');
  else argv.push('--discard=unmap'); // write-zeroes on a restore target punches holes: the disk stays sparse
  if (opts.bitmap !== undefined) {
    if (!BITMAP_NAME.test(opts.bitmap))
      throw new InvalidRequestError(`dirty bitmap name ${JSON.stringify(opts.bitmap)} is not valid`);
    argv.push(`--bitmap=${opts.bitmap}`);
  }
  if (typeof opts.image === 'string') {
    const img = opts.image;
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them is the point
    if (/[\u0000-\u001f]/.test(img) || !(img.startsWith('/') || /^(iscsi|nfs):\/\/[^\s]+$/.test(img)))
      throw new InvalidRequestError(
        `qemu-nbd image ${JSON.stringify(img)}: an absolute path, or an iscsi:// or nfs:// URL`,
      );
    argv.push(`--format=${opts.format ?? 'qcow2'}`, '--', img);
  } else {
    if (opts.format !== undefined)
      throw new InvalidRequestError('qemu-nbd: with image options, the format is their driver= (no format)');
    const o = opts.image.imageOpts;
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them is the point
    if (!/^driver=[a-z0-9-]+(,|$)/.test(o) || /[\u0000-\u001f]/.test(o))
      throw new InvalidRequestError(
        `qemu-nbd image options must start with driver=... (${JSON.stringify(o.slice(0, 80))})`,
      );
    argv.push('--image-opts', '--', o);
  }
  return argv;
}

/** What the recorded process must be: qemu-nbd on this socket (and in this namespace). */
function expected(socket: string, netns?: string): ExpectedProcess {
  return { comm: 'qemu-nbd', args: [`--socket=${socket}`], ...(netns ? { netns } : {}) };
}

/**
 * Starts qemu-nbd for `opts` and waits until it serves. A qemu-nbd left on the same socket (an agent that died) is
 * stopped first. `VmlinkError` quoting qemu-nbd's log when it exits at once (no such image or bitmap, a wrong
 * secret); `TimeoutError` when it is not ready within `QEMU_NBD_START_TIMEOUT_MS`.
 */
export async function startQemuNbd(runner: Runner, opts: QemuNbdOptions): Promise<QemuNbdServer> {
  const argv = qemuNbdArgv(opts);
  const exportName = opts.exportName ?? 'disk';
  const files = qemuNbdFiles(opts.socketDir, exportName);
  await mkdir(opts.socketDir, { recursive: true, mode: 0o700 });
  await stopQemuNbd(opts.socketDir, exportName, opts.netns);
  await Promise.all([files.log, files.pidfile].map((f) => rm(f, { force: true })));
  const pid = await runner.spawnDetached(argv, {
    logFile: files.log,
    ...(opts.netns ? { netns: opts.netns } : {}),
  });
  // `ip netns exec` execs qemu-nbd in place: the spawned pid is the server's.
  const id = await identify(pid);
  if (id) await writeIdentityFile(files.identity, id);
  const outcome = await pollUntil(
    async () => {
      if (id && (await readPidfile(files.pidfile)) === pid) return 'up';
      return id && (await isRunning(id)) ? undefined : 'exited';
    },
    { timeoutMs: QEMU_NBD_START_TIMEOUT_MS, intervalMs: 20 },
  );
  const server: QemuNbdServer = {
    socket: files.socket,
    exportName,
    stop: () => stopQemuNbd(opts.socketDir, exportName, opts.netns).then(() => undefined),
  };
  if (outcome === 'up') return server;
  if (id && (await signalProcess(id, 'SIGKILL'))) await waitExited(id, KILL_WAIT_MS);
  await Promise.all([files.socket, files.pidfile, files.identity].map((f) => rm(f, { force: true })));
  const tail = (await readTail(files.log, 2048).catch(() => '')).trim();
  const what = `qemu-nbd for ${typeof opts.image === 'string' ? opts.image : 'image options'} (${files.socket})`;
  if (outcome === 'exited' || !id)
    throw new VmlinkError('exec', `${what} exited at once${tail ? `: ${tail}` : ''}`, {
      subject: files.socket,
    });
  throw new TimeoutError(
    `${what} was not ready within ${QEMU_NBD_START_TIMEOUT_MS} ms${tail ? `: ${tail}` : ''}`,
    files.socket,
  );
}

/**
 * Stops the qemu-nbd serving `exportName` in `socketDir` when its recorded identity still runs as that server (a
 * process that took its pid over is never signalled), and removes its socket, pidfile and identity. Returns whether
 * one was running. For cleanup after an agent restart as much as for `QemuNbdServer.stop`.
 */
export async function stopQemuNbd(socketDir: string, exportName = 'disk', netns?: string): Promise<boolean> {
  const files = qemuNbdFiles(socketDir, exportName);
  const id = await processFromIdentityFile(files.identity, expected(files.socket, netns));
  if (id) {
    const outcome = await terminate(id, { graceMs: DAEMON_STOP_GRACE_MS, killMs: KILL_WAIT_MS });
    if (outcome === 'survived')
      throw new VmlinkError('exec', `qemu-nbd (pid ${id.pid}) on ${files.socket} survived SIGKILL`, {
        subject: files.socket,
      });
  }
  await Promise.all([files.socket, files.pidfile, files.identity].map((f) => rm(f, { force: true })));
  return id !== undefined;
}
