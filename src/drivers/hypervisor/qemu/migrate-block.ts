// Block migration of a VM's local disks (docs/mobility.md), the libvirt/QEMU "NBD storage copy" sequence
// (QEMU's docs/interop/live-block-operations.rst). The target QEMU, paused with `-incoming defer`, exports each local
// disk's format node over NBD on a unix socket in its run directory (`nbd-server-start`, `block-export-add`
// writable); the source QEMU opens an nbd node per disk on a unix socket its agent carries to that export, and
// `blockdev-mirror`s the disk onto it until READY. The RAM migration then runs with `pause-before-switchover`: with the
// guest paused and its disks still active, the mirrors end as copies (`block-job-cancel`: the target holds exactly
// the source's state), then QEMU completes. QEMU's answers are untrusted: parsed and bounded like every QMP answer.
import { UnsupportedError } from '../../../shared/errors.js';
import {
  abortMirrors,
  awaitMirrorsReady,
  finishMirrorsAsCopies,
  MIRROR_JOB_PREFIX,
  type MirrorProgress,
  type MirrorSpec,
  startMirrors,
} from './block-mirror.js';
import { diskSlotIds } from './disk-slots.js';
import { virtualSize } from './move-disk.js';
import type { QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

type Qmp = Pick<QmpClient, 'execute'>;

/** One disk copied by block migration: its name (the NBD export's), its format node, and what the mirror copies. */
export interface LocalDisk {
  disk: string;
  node: string;
  /** `top` for a qcow2 image's overlay (the target made a fresh one on the same base image), else `full`. */
  sync: 'full' | 'top';
}

/** An NBD stream may carry at most this multiple of the disks' virtual size (blocks rewritten while the guest writes). */
export const NBD_BYTES_FACTOR = 16;
/** Plus this much (NBD's headers and replies, zero writes), bytes. */
const NBD_BYTES_SLACK = 64 * 1024 * 1024;
/** NBD connections accepted per disk (QEMU's client opens one; a reconnect may open another). */
export const NBD_CONNECTIONS_PER_DISK = 2;

/** The NBD export's socket of the target, and the socket the source's QEMU connects to (both in the run dir). */
export const nbdInSocket = (runDir: string) => `${runDir}/nbd-in.sock`;
export const nbdOutSocket = (runDir: string) => `${runDir}/nbd-out.sock`;

/** The source's nbd node of disk `disk`. */
const nbdNode = (disk: string) => `mig-${disk}`;

/**
 * The disks of `vm` that block migration copies: a qcow2 image's overlay (root) and the disks in the VM's directory.
 * Shared volumes (iSCSI, NFS) stay. Refused with the reason: a dir-pool volume (root or disk), a local CD-ROM. The
 * explain blocks the same ones first.
 */
export function localDisks(vm: StoredVm): LocalDisk[] {
  const cfg = vm.config;
  const out: LocalDisk[] = [];
  const refuse = (why: string) =>
    new UnsupportedError(`VM ${cfg.name}: ${why}; move it to a shared pool first`, `vm/${cfg.name}`);
  if (cfg.image.kind === 'qcow2') out.push({ disk: 'root', node: 'root', sync: 'top' });
  else if (cfg.image.kind === 'volume' && cfg.rootSource?.kind === 'file')
    throw refuse('its root disk is a dir-pool volume, which block migration does not copy');
  for (const [i, d] of cfg.disks.entries()) {
    if (d.source && d.source.kind !== 'file') continue;
    if (d.source)
      throw refuse(
        `disk ${d.name} is a volume of dir pool ${d.source.pool}, which block migration does not copy`,
      );
    if (d.media === 'cdrom') throw refuse(`disk ${d.name} is a CD-ROM in its directory`);
    // An encrypted disk is copied like any other: the mirror reads the source's decrypted format node and writes the
    // target's, which the target made as its own LUKS container under the same secret (the incoming request carries
    // the disks' secrets), so the bytes on the wire are the guest's and the agents' TLS carries them.
    out.push({ disk: d.name, node: diskSlotIds(vm.diskSlots?.[i] ?? i).node, sync: 'full' });
  }
  return out;
}

/**
 * Target: exports each disk writable over NBD on `path` (QEMU makes the socket; at most NBD_CONNECTIONS_PER_DISK
 * connections per disk). Resolves with the bytes an NBD stream may carry to them (NBD_BYTES_FACTOR x their size).
 */
export async function exportDisks(
  qmp: Qmp,
  path: string,
  disks: readonly LocalDisk[],
  vm: string,
): Promise<number> {
  let bytes = 0;
  for (const d of disks) bytes += await virtualSize(qmp, d.node, vm);
  await qmp.execute('nbd-server-start', {
    addr: { type: 'unix', data: { path } },
    'max-connections': disks.length * NBD_CONNECTIONS_PER_DISK,
  });
  // block-export-add activates the node (it was opened inactive for the incoming migration), as libvirt relies on.
  for (const d of disks)
    await qmp.execute('block-export-add', {
      type: 'nbd',
      id: nbdNode(d.disk),
      'node-name': d.node,
      name: d.disk,
      writable: true,
    });
  return bytes * NBD_BYTES_FACTOR + NBD_BYTES_SLACK;
}

/** Target: the exports and the NBD server go (before the guest runs); none running is fine. */
export async function stopExports(qmp: Qmp): Promise<void> {
  await qmp.execute('nbd-server-stop').catch(() => {});
}

/** The mirrors of `disks`, each onto its nbd node. */
export function mirrorSpecs(disks: readonly LocalDisk[]): MirrorSpec[] {
  return disks.map((d) => ({
    job: `${MIRROR_JOB_PREFIX}${nbdNode(d.disk)}`,
    source: d.node,
    target: nbdNode(d.disk),
    sync: d.sync,
  }));
}

/**
 * Source: opens an nbd node per disk on `path` (the agent's tunnel socket) and mirrors each disk onto it, waiting
 * until all are READY (every guest write now goes to both). On failure everything it made is removed.
 */
export async function copyDisks(
  qmp: Qmp,
  path: string,
  disks: readonly LocalDisk[],
  opts: { vm: string; timeoutMs: number; onProgress?: (p: MirrorProgress) => void },
): Promise<MirrorSpec[]> {
  const specs = mirrorSpecs(disks);
  try {
    for (const d of disks)
      await qmp.execute('blockdev-add', {
        driver: 'nbd',
        'node-name': nbdNode(d.disk),
        server: { type: 'unix', path },
        export: d.disk,
      });
    await startMirrors(qmp, specs);
    await awaitMirrorsReady(qmp, specs, opts);
    return specs;
  } catch (e) {
    await dropCopies(qmp, specs, opts.vm);
    throw e;
  }
}

/**
 * Source, in `pre-switchover` (guest paused): the mirrors end leaving the target an exact copy, and the nbd nodes go
 * (closing the NBD connections). Throws when a mirror had failed meanwhile: the migration must not complete then.
 */
export async function finishCopies(qmp: Qmp, specs: readonly MirrorSpec[], vm: string, timeoutMs: number) {
  await finishMirrorsAsCopies(qmp, specs, vm, timeoutMs);
  for (const s of specs) await qmp.execute('blockdev-del', { 'node-name': s.target }).catch(() => {});
}

/** Source, rollback: the mirrors cancelled at once and the nbd nodes removed; the disks stay as they were. */
export async function dropCopies(qmp: Qmp, specs: readonly MirrorSpec[], vm: string): Promise<void> {
  await abortMirrors(qmp, specs, vm);
  for (const s of specs) await qmp.execute('blockdev-del', { 'node-name': s.target }).catch(() => {});
}
