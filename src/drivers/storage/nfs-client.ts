// The client side of an nfs pool volume, as a compute host's QEMU opens it (libnfs, NFSv3).
//
// QEMU 7.2's NFS driver cannot open a linked clone by itself: it resolves a relative backing file name under the
// volume's own path (its `nfs_dirname` returns `nfs://server/<export>/<file>/`), so `base.qcow2` becomes
// `<export>/<clone>.qcow2/base.qcow2` and the mount fails. A linked clone on NFS is therefore opened with every link
// of its chain as a node of its own and `backing` naming the node below: `nfsBackingChain` reads the chain the way
// QEMU reads it (each link's `qemu-img info`, which never opens a backing file), `nfsChainBlockdevs` builds the nodes.
import type { Runner } from '../../exec/runner.js';
import { InvalidRequestError, InvalidStateError } from '../../shared/errors.js';
import type { OpContext } from '../network/types.js';
import { imageInfo } from './qemu-img.js';

/** Where an nfs pool volume is. */
export interface NfsVolumeLocation {
  /** The storage host's address. */
  server: string;
  /** The export's path (the pool's pseudo path, `/vmlink/<pool>`). */
  export: string;
  /** The volume's file in the export (`<volume>.qcow2`). */
  file: string;
}

/** Most links below a volume a client follows (as qcow2-volumes.ts allows on the storage host). */
export const NFS_BACKING_CHAIN_MAX = 16;

const SERVER = /^[A-Za-z0-9.:-]{1,253}$/;
const EXPORT = /^(\/[a-z0-9][a-z0-9-]{0,62}){1,8}$/;
/** A volume file of the same pool, named plainly: nothing else may back a volume. */
const VOLUME_FILE = /^[a-z][a-z0-9-]{0,62}\.qcow2$/;

function checkLocation(loc: NfsVolumeLocation): void {
  if (!SERVER.test(loc.server))
    throw new InvalidRequestError(`NFS server ${JSON.stringify(loc.server)} is not an address`);
  if (!EXPORT.test(loc.export))
    throw new InvalidRequestError(`NFS export ${JSON.stringify(loc.export)} is not usable`);
  if (!VOLUME_FILE.test(loc.file) && !/^[a-z][a-z0-9-]{0,62}\.(img|iso)$/.test(loc.file))
    throw new InvalidRequestError(`NFS volume file ${JSON.stringify(loc.file)} is not a volume file name`);
}

/** QEMU's `nfs` protocol node options of a file in the export (`-blockdev` / `blockdev-add` / `--image-opts`). */
export function nfsFileNode(loc: NfsVolumeLocation, file = loc.file): Record<string, unknown> {
  checkLocation({ ...loc, file });
  return { driver: 'nfs', server: { type: 'inet', host: loc.server }, path: `${loc.export}/${file}` };
}

/** The same as QEMU `--image-opts` keys under `prefix` (e.g. `file.`). */
export function nfsImageOpts(loc: NfsVolumeLocation, prefix = 'file.'): string {
  checkLocation(loc);
  return [
    `${prefix}driver=nfs`,
    `${prefix}server.type=inet`,
    `${prefix}server.host=${loc.server}`,
    `${prefix}path=${loc.export}/${loc.file}`,
  ].join(',');
}

/**
 * The files below a qcow2 volume on NFS, nearest first (empty: not a clone), read through NFS as QEMU would. Each
 * link must be a plain volume file of the same export: a header naming anything else (a path, a URL, a `json:`
 * pseudo file, an external data file: any NFS client can write a volume's header) is refused.
 */
export async function nfsBackingChain(
  runner: Runner,
  loc: NfsVolumeLocation,
  ctx?: OpContext,
): Promise<string[]> {
  checkLocation(loc);
  const chain: string[] = [];
  let file = loc.file;
  for (;;) {
    // The format is in the json: pseudo file (qcow2), never probed.
    const node = `json:${JSON.stringify({ driver: 'qcow2', file: nfsFileNode(loc, file) })}`;
    const info = await imageInfo(runner, node, undefined, ctx?.signal);
    if (info['format-specific']?.data?.['data-file'] !== undefined)
      throw new InvalidStateError(`NFS volume ${loc.export}/${file} names an external data file; refused`);
    const backing = info['backing-filename'];
    if (backing === undefined) return chain;
    if (!VOLUME_FILE.test(backing) || info['backing-filename-format'] !== 'qcow2')
      throw new InvalidStateError(
        `NFS volume ${loc.export}/${file} is backed by ${JSON.stringify(backing.slice(0, 100))}, which is not a qcow2 volume of its pool; refused`,
      );
    if (backing === loc.file || chain.includes(backing) || chain.length >= NFS_BACKING_CHAIN_MAX)
      throw new InvalidStateError(
        `NFS volume ${loc.export}/${loc.file}: its backing chain loops or is deeper than ${NFS_BACKING_CHAIN_MAX}; refused`,
      );
    chain.push(backing);
    file = backing;
  }
}

/**
 * `-blockdev` / `blockdev-add` objects opening a qcow2 volume on NFS with its backing chain (`nfsBackingChain`):
 * deepest link first, each `backing` naming the node below (the deepest `null`), the volume's own node last, named
 * `nodePrefix`. Links below the volume are read-only. Add them in order.
 */
export function nfsChainBlockdevs(
  loc: NfsVolumeLocation,
  chain: readonly string[],
  nodePrefix: string,
): Record<string, unknown>[] {
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,20}$/.test(nodePrefix))
    throw new InvalidRequestError(`node name prefix ${JSON.stringify(nodePrefix)} is not usable`);
  const files = [loc.file, ...chain];
  const out: Record<string, unknown>[] = [];
  for (let i = files.length - 1; i >= 0; i--) {
    const name = i === 0 ? nodePrefix : `${nodePrefix}-b${i}`;
    const below = i === files.length - 1 ? null : `${nodePrefix}-b${i + 1}`;
    const ro = i > 0 ? { 'read-only': true } : {};
    out.push({ 'node-name': `${name}-file`, ...nfsFileNode(loc, files[i]!), ...ro });
    out.push({ 'node-name': name, driver: 'qcow2', file: `${name}-file`, backing: below, ...ro });
  }
  return out;
}
