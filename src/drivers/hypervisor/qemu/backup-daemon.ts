// A stopped VM's backup view through ONE `qemu-storage-daemon` (Debian qemu-system-common) per job: it opens the
// VM's images, does the bitmap work over its QMP (what two `qemu-img bitmap` and two `qemu-img info` runs did) and
// serves every disk on one NBD socket (what a `qemu-nbd` per disk did). Five or more processes per backup become one;
// the bitmaps end as a running VM's do (`bitmapActions`, one transaction), and QEMU writes them to the images when the
// daemon quits. An encrypted disk's key reaches the daemon over its root-only QMP socket (`object-add`, deleted once
// the image is open): never argv, never a file. The daemon runs detached from the agent with its identity recorded: an
// agent that dies mid-backup leaves it serving; the cleanup stops it with SIGTERM (QEMU stores the bitmaps as they are
// then: base disabled, next added) and folds them as for any stopped view (`foldOffline`). A daemon killed outright
// leaves the base marked in-use: the next backup reads that disk whole and says why (`bitmap-inconsistent`).
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../../../exec/runner.js';
import { InvalidStateError, TimeoutError, UnsupportedError, VmlinkError } from '../../../shared/errors.js';
import {
  AGENT_GLIBC_TUNABLES,
  BACKUP_DAEMON_QMP_TIMEOUT_MS,
  BACKUP_DAEMON_START_TIMEOUT_MS,
  DAEMON_STOP_GRACE_MS,
  KILL_WAIT_MS,
} from '../../../shared/limits.js';
import {
  type ExpectedProcess,
  identify,
  isRunning,
  type ProcessIdentity,
  processFromIdentityFile,
  readPidfile,
  terminate,
  waitExited,
  writeIdentityFile,
} from '../../../shared/process.js';
import { readTail } from '../../../shared/safe-file.js';
import { pollUntil, sleep } from '../../../shared/time.js';
import type { BackupOpenOptions, BackupViewDisk } from '../types.js';
import { type BackupDisk, checkBitmapNames, type ViewRecord, viewDisk } from './backup-disks.js';
import { baseState, bitmapActions, changedOf, type NodeInfo, queryNodes } from './backup-live.js';
import { foldOffline, type OfflineDeps, offlineRefusal } from './backup-offline.js';
import { networkProtocolNode } from './disk-sources.js';
import { QmpClient } from './qmp.js';

/** The daemon's files in the VM's root-only socket directory. */
export function daemonFiles(socketDir: string): {
  qmp: string;
  nbd: string;
  identity: string;
  pidfile: string;
  log: string;
} {
  const base = join(socketDir, 'qsd');
  return {
    qmp: `${base}.qmp`,
    nbd: `${base}-nbd.sock`,
    identity: `${base}.id.json`,
    pidfile: `${base}.pid`,
    log: `${base}.log`,
  };
}

/** The daemon's argv: a QMP monitor on a unix socket and a pidfile; everything else goes over QMP. */
export function daemonArgv(socketDir: string): string[] {
  const f = daemonFiles(socketDir);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them is the point
  if (!socketDir.startsWith('/') || /[\u0000-\u001f]/.test(socketDir))
    throw new InvalidStateError(`storage daemon directory ${JSON.stringify(socketDir)} is not a host path`);
  return [
    'qemu-storage-daemon',
    '--chardev',
    `socket,id=vmlink-qmp,path=${f.qmp.replaceAll(',', ',,')},server=on,wait=off`,
    '--monitor',
    'chardev=vmlink-qmp',
    '--pidfile',
    f.pidfile,
  ];
}

/** The directory of the host's spare daemons (backup-spare.ts) in the driver's state dir. */
export const SPARE_DIR_NAME = 'backup-spare';

/** A spare's pidfile: `<root>/backup-spare/<8 hex>/qsd.pid` (backup-spare.ts). */
const SPARE_PIDFILE = new RegExp(`^/.+/${SPARE_DIR_NAME}/[0-9a-f]{8}/qsd\\.pid$`);

/**
 * What the recorded process must be before it is signalled: a storage daemon started for this directory, or a
 * host's spare (its pidfile in the spare directory) that a backup of this directory's VM took.
 */
function expected(socketDir: string, netns?: string): ExpectedProcess {
  const f = daemonFiles(socketDir);
  return {
    comm: 'qemu-storage-da',
    argv: (argv) => {
      const pidfile = argv[argv.indexOf('--pidfile') + 1];
      return argv.includes('--pidfile') && (pidfile === f.pidfile || SPARE_PIDFILE.test(pidfile ?? ''));
    },
    ...(netns ? { netns } : {}),
  };
}

/** Stops the daemon an earlier agent left in `socketDir` (SIGTERM: it stores its bitmaps); whether one ran. */
export async function stopLeftDaemon(socketDir: string, netns?: string): Promise<boolean> {
  const f = daemonFiles(socketDir);
  const id = await processFromIdentityFile(f.identity, expected(socketDir, netns));
  if (id) await stopProcess(id, f.qmp);
  await Promise.all([f.qmp, f.nbd, f.pidfile, f.identity].map((p) => rm(p, { force: true })));
  return id !== undefined;
}

export async function stopProcess(id: ProcessIdentity, what: string): Promise<void> {
  if ((await terminate(id, { graceMs: DAEMON_STOP_GRACE_MS, killMs: KILL_WAIT_MS })) === 'survived')
    throw new VmlinkError('exec', `qemu-storage-daemon (pid ${id.pid}) on ${what} survived SIGKILL`, {
      subject: what,
    });
}

/** A started daemon and its QMP connection. */
export interface Daemon {
  id: ProcessIdentity;
  qmp: QmpClient;
}

/**
 * Where a view's daemon can come from other than a start of its own: the host's spare (backup-spare.ts), started
 * ahead with no image open. `take` hands it over with its identity recorded at `identityFile` (undefined: none ready,
 * the caller starts one); `refill` starts the next in the background once a view ended.
 */
export interface DaemonSource {
  take(identityFile: string): Promise<Daemon | undefined>;
  refill(): void;
}

/** A stopped VM's view deps, with the host's spare daemon when it keeps one. */
export type DaemonDeps = OfflineDeps & { spare?: DaemonSource };

/**
 * Starts a daemon whose files are in `dir` (its identity recorded there), in `netns`, and connects to its QMP
 * monitor; `subject` names what it is for in errors. A daemon that does not come up is stopped.
 */
export async function spawnDaemon(
  runner: Runner,
  dir: string,
  netns: string | undefined,
  what: string,
  subject?: string,
): Promise<Daemon> {
  const f = daemonFiles(dir);
  await rm(f.log, { force: true });
  const pid = await runner.spawnDetached(daemonArgv(dir), {
    logFile: f.log,
    // Its NBD server takes a bounce buffer per request (a chunk, 1 MiB): with glibc's defaults each is a fresh mmap,
    // faulted in page by page; with the agent's settings they come from its heap, reused.
    env: { GLIBC_TUNABLES: AGENT_GLIBC_TUNABLES },
    ...(netns ? { netns } : {}),
  });
  const id = await identify(pid);
  if (id) await writeIdentityFile(f.identity, id);
  // It writes its pidfile once its options (the monitor's socket among them) are set up.
  const outcome = await pollUntil(
    async () => {
      if (id && (await readPidfile(f.pidfile)) === pid) return 'up';
      return id && (await isRunning(id)) ? undefined : 'exited';
    },
    // Polled often: the daemon is up 40-70 ms after its start, and each poll is one small file read.
    { timeoutMs: BACKUP_DAEMON_START_TIMEOUT_MS, intervalMs: 3 },
  );
  try {
    if (outcome !== 'up' || !id) {
      const tail = (await readTail(f.log, 2048).catch(() => '')).trim();
      const full = `${what}: qemu-storage-daemon (${f.qmp})`;
      if (outcome === undefined)
        throw new TimeoutError(`${full} was not ready within ${BACKUP_DAEMON_START_TIMEOUT_MS} ms`, subject);
      throw new VmlinkError('exec', `${full} exited at once${tail ? `: ${tail}` : ''}`, {
        ...(subject ? { subject } : {}),
      });
    }
    const qmp = await QmpClient.connect(f.qmp, {
      timeoutMs: BACKUP_DAEMON_QMP_TIMEOUT_MS,
      ...(subject ? { subject } : {}),
    });
    return { id, qmp };
  } catch (e) {
    await stopLeftDaemon(dir, netns).catch(() => {});
    throw e;
  }
}

/** The view's daemon: the host's spare when one is ready, else one started for it in the VM's socket directory. */
async function startDaemon(d: DaemonDeps): Promise<Daemon> {
  const f = daemonFiles(d.socketDir);
  await mkdir(d.socketDir, { recursive: true, mode: 0o700 });
  await stopLeftDaemon(d.socketDir, d.netns);
  const spare = await d.spare?.take(f.identity);
  if (spare) return spare;
  return spawnDaemon(d.runner, d.socketDir, d.netns, `VM ${d.vm}`, `vm/${d.vm}`);
}

/** A stopped VM's open view: its disks for the pipeline, and how it ends. */
export interface DaemonView {
  disks: BackupViewDisk[];
  record: ViewRecord;
  end(outcome: 'commit' | 'abort'): Promise<void>;
}

/**
 * Opens a stopped VM's backup view: the images opened in one daemon (qcow2 read-write, for their bitmaps; the
 * exports are read-only), the view recorded, then one transaction adds `next` and disables a usable base (an export
 * refuses a bitmap that still records), and each disk is exported with the base bitmap where it is usable. A failure
 * anywhere quits the daemon with the bitmaps as they were (a recorded view is folded back) and throws.
 */
export async function openDaemon(
  d: DaemonDeps,
  disks: readonly BackupDisk[],
  opts: BackupOpenOptions,
): Promise<DaemonView> {
  const { vm } = d;
  checkBitmapNames(vm, opts.bitmaps);
  if (disks.length === 0)
    throw new UnsupportedError(`VM ${vm} has no writable disk for a backup to read`, `vm/${vm}`);
  offlineRefusal(vm, disks, 'backup');
  const { base, next } = opts.bitmaps;
  const f = daemonFiles(d.socketDir);
  const daemon = await startDaemon(d);
  const { qmp } = daemon;
  let record: ViewRecord | undefined;
  try {
    for (const x of disks) await addNode(d, qmp, x);
    const nodes = await queryNodes(qmp);
    record = { version: 1, kind: 'stopped', ...(base ? { base } : {}), next, disks: [] };
    for (const x of disks) {
      const info = nodeOf(vm, nodes, x);
      if (info.bitmaps.has(next))
        throw new InvalidStateError(`VM ${vm}: disk ${x.name} already has a bitmap ${next}`, `vm/${vm}`);
      record.disks.push(viewDisk(x, baseState(vm, x.name, info, base)));
    }
    await d.record.write(record);
    const actions: Array<{ type: string; data: Record<string, unknown> }> = [];
    for (const [i, x] of disks.entries()) {
      if (!x.qcow2) continue;
      actions.push({ type: 'block-dirty-bitmap-add', data: { node: x.node, name: next, persistent: true } });
      if (record.disks[i]!.base === 'usable')
        actions.push({ type: 'block-dirty-bitmap-disable', data: { node: x.node, name: base } });
    }
    if (actions.length > 0) await qmp.execute('transaction', { actions });
    await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: f.nbd } } });
    const out: BackupViewDisk[] = [];
    for (const [i, x] of disks.entries()) {
      const changed = changedOf(opts, x, record.disks[i]!.base, true);
      await qmp.execute('block-export-add', {
        type: 'nbd',
        id: exportId(x),
        'node-name': x.node,
        name: x.name,
        writable: false,
        ...('context' in changed ? { bitmaps: [base!] } : {}),
      });
      out.push({
        name: x.name,
        sizeBytes: nodeOf(vm, nodes, x).sizeBytes,
        socket: f.nbd,
        exportName: x.name,
        changed,
      });
    }
    const rec = record;
    let ended: Promise<void> | undefined;
    return {
      disks: out,
      record: rec,
      end: (outcome) => {
        // The next spare starts once this daemon is gone: not beside the round's own work.
        ended ??= endDaemon(d, daemon, rec, disks, outcome).finally(() => d.spare?.refill());
        return ended;
      },
    };
  } catch (e) {
    if (record) await endDaemon(d, daemon, record, disks, 'abort').catch(() => {});
    else {
      qmp.close();
      await stopLeftDaemon(d.socketDir, d.netns).catch(() => {});
    }
    d.spare?.refill();
    throw e;
  }
}

const exportId = (x: Pick<BackupDisk, 'node'>) => `vmlink-backup-${x.node}`;

function nodeOf(vm: string, nodes: ReadonlyMap<string, NodeInfo>, x: BackupDisk): NodeInfo {
  const info = nodes.get(x.node);
  if (!info) throw new InvalidStateError(`VM ${vm}: disk ${x.name}'s image did not open`, `vm/${vm}`);
  return info;
}

/**
 * Opens one image as node `x.node`: a local file by path, a pool's NFS or iSCSI volume with the protocol node a
 * running VM's QEMU uses (an iSCSI CHAP password as a secret object deleted once the LUN is open), an encrypted one
 * with its key as a secret object deleted once it is open.
 */
async function addNode(
  d: Pick<OfflineDeps, 'vm' | 'keys' | 'chap'>,
  qmp: QmpClient,
  x: BackupDisk,
): Promise<void> {
  if ((x.volume?.kind === 'iscsi' || x.volume?.kind === 'nfs') && !x.encrypted) {
    const ids = { file: `${x.node}-file`, chap: `vmlink-chap-${x.node}` };
    const chap = x.volume.kind === 'iscsi' && x.volume.chap ? d.chap?.get(x.name) : undefined;
    if (x.volume.kind === 'iscsi' && x.volume.chap && chap === undefined)
      throw new InvalidStateError(
        `VM ${d.vm}: disk ${x.name} logs in to its iSCSI target with CHAP and its password was not given`,
        `vm/${d.vm}`,
      );
    if (chap !== undefined)
      await qmp.execute('object-add', { 'qom-type': 'secret', id: ids.chap, data: chap, format: 'base64' });
    try {
      await qmp.execute('blockdev-add', {
        driver: x.qcow2 ? 'qcow2' : 'raw',
        'node-name': x.node,
        file: networkProtocolNode(x.volume, ids, !x.qcow2),
        'read-only': !x.qcow2,
      });
    } finally {
      if (chap !== undefined) await qmp.execute('object-del', { id: ids.chap }).catch(() => {});
    }
    return;
  }
  const file = { driver: 'file', filename: x.image };
  if (!x.encrypted) {
    await qmp.execute('blockdev-add', {
      driver: x.qcow2 ? 'qcow2' : 'raw',
      'node-name': x.node,
      file,
      // Only a qcow2 image's bitmaps change; a raw one is opened as the export reads it.
      'read-only': !x.qcow2,
    });
    return;
  }
  const key = d.keys?.get(x.name);
  if (key === undefined)
    throw new InvalidStateError(
      `VM ${d.vm}: disk ${x.name} is encrypted and its key was not given`,
      `vm/${d.vm}`,
    );
  const secret = `vmlink-key-${x.node}`;
  await qmp.execute('object-add', { 'qom-type': 'secret', id: secret, data: key, format: 'base64' });
  try {
    await qmp.execute('blockdev-add', {
      driver: 'qcow2',
      'node-name': x.node,
      file,
      encrypt: { format: 'luks', 'key-secret': secret },
    });
  } finally {
    await qmp.execute('object-del', { id: secret }).catch(() => {});
  }
}

/**
 * Ends the view: the exports go (a bitmap an export holds is busy), the bitmaps end in one transaction, and the
 * daemon quits, writing them to the images; the record goes last. When the daemon cannot end it (it died, a command
 * failed), it is stopped and `foldOffline` ends the bitmaps with qemu-img instead.
 */
async function endDaemon(
  d: OfflineDeps,
  daemon: Daemon,
  record: ViewRecord,
  disks: readonly BackupDisk[],
  outcome: 'commit' | 'abort',
): Promise<void> {
  const { qmp, id } = daemon;
  try {
    for (const x of disks)
      await qmp.execute('block-export-del', { id: exportId(x), mode: 'hard' }).catch(() => {});
    await waitExportsGone(d.vm, qmp);
    const actions = bitmapActions(record, await queryNodes(qmp), outcome);
    if (actions.length > 0) await qmp.execute('transaction', { actions });
    const closed = qmp.closed();
    await qmp.execute('quit').catch(async (e) => {
      // The reply may lose the race with the connection closing: the daemon exiting is what counts.
      if (!(await waitExited(id, DAEMON_STOP_GRACE_MS))) throw e;
    });
    await closed;
    // Its monitor closes after the images (bitmaps stored), a few ms before it exits: polled at 2 ms, not 20.
    if (!(await waitExited(id, DAEMON_STOP_GRACE_MS, 2))) await stopProcess(id, daemonFiles(d.socketDir).qmp);
    // It has exited: its files and the record go together (a record left alone undoes nothing that is not done).
    await Promise.all([stopLeftDaemon(d.socketDir, d.netns), d.record.remove()]);
  } catch {
    qmp.close();
    await stopLeftDaemon(d.socketDir, d.netns);
    await foldOffline(d, record, outcome);
  }
}

async function waitExportsGone(vm: string, qmp: QmpClient): Promise<void> {
  const deadline = Date.now() + BACKUP_DAEMON_QMP_TIMEOUT_MS;
  for (;;) {
    const r = await qmp.execute<unknown>('query-block-exports');
    if (!Array.isArray(r) || r.length === 0) return;
    if (Date.now() > deadline)
      throw new TimeoutError(`VM ${vm}: the backup's NBD exports did not go within the limit`, `vm/${vm}`);
    await sleep(10);
  }
}
