// ganesha.conf of one nfs-ganesha instance (one per storage machine): pure, golden-tested. One EXPORT per nfs pool,
// FSAL VFS, every client squashed to the one uid/gid that owns the pool files, so a client's claimed uid (AUTH_SYS is
// only a claim) never matters. The process side (rpcbind, ganesha.nfsd, reloads) is nfs-server.ts.
import { join } from 'node:path';
import { InvalidRequestError } from '../../shared/errors.js';
import { NFS_PORT, type PoolConfig } from '../../shared/storage.js';

/** TCP port of ganesha's MOUNT service (NFSv3 clients mount through it): fixed, so firewalls can name it. */
export const NFS_MOUNTD_PORT = 20048;

/**
 * Default owner of an nfs pool's files, and the uid/gid every client is squashed to: a number in the range systemd
 * leaves unused (0x70000000..0x7FFDFFFF), so no account or service on the storage host is likely to share it.
 */
export const NFS_FILE_OWNER_DEFAULT = { uid: 2_000_000_000, gid: 2_000_000_000 } as const;

/** The uid/gid that owns an instance's exported files and that every client acts as. */
export interface NfsFileOwner {
  uid: number;
  gid: number;
}

/** One export: an nfs pool's directory under its pseudo path. */
export interface GaneshaExport {
  /** Stable and unique per instance (NFSv3 file handles carry it): `PoolConfig.nfs.exportId`. */
  exportId: number;
  /** Directory exported (the pool's path). */
  path: string;
  /** Path clients mount (`/vmlink/<pool>`). */
  pseudoPath: string;
  /** Networks (CIDR or address) allowed; absent: any client. */
  clients?: string[];
}

/** What one instance's config is made from. */
export interface GaneshaConfigInput {
  /** The instance's directory: its log and NFSv4 recovery state live there. */
  dir: string;
  owner: NfsFileOwner;
  exports: readonly GaneshaExport[];
}

/** Files of an instance the config names. */
export function ganeshaConfigPaths(dir: string): { log: string; recoveryDir: string } {
  return { log: join(dir, 'ganesha.log'), recoveryDir: join(dir, 'recovery') };
}

/** The export of an nfs pool; an `InvalidRequestError` when the pool has no `nfs` settings. */
export function ganeshaExportOf(pool: PoolConfig): GaneshaExport {
  if (pool.type !== 'nfs' || !pool.nfs)
    throw new InvalidRequestError(
      `pool ${pool.name}: not an nfs pool with an export id and pseudo path`,
      `pools.${pool.name}`,
    );
  return {
    exportId: pool.nfs.exportId,
    path: pool.path,
    pseudoPath: pool.nfs.pseudoPath,
    ...(pool.clients?.length ? { clients: pool.clients } : {}),
  };
}

// Values are validated, not escaped: ganesha's parser has no escape for a quote inside a string, so a value that
// could need one is refused.
const ABS_PATH = /^\/[A-Za-z0-9._/-]{0,1023}$/;
const CLIENT = /^[0-9A-Fa-f.:]{2,45}(\/\d{1,3})?$/;
const ID = (n: number) => Number.isInteger(n) && n >= 0 && n <= 0xffff_fffe;

function path(v: string, what: string): string {
  if (!ABS_PATH.test(v) || v.split('/').includes('..'))
    throw new InvalidRequestError(
      `${what}: ${JSON.stringify(v)} is not an absolute path ganesha may name`,
      what,
    );
  return `"${v}"`;
}

function client(v: string, what: string): string {
  if (!CLIENT.test(v))
    throw new InvalidRequestError(`${what}: ${JSON.stringify(v)} is not an address or CIDR`, what);
  // ganesha reads addresses as bare tokens (a quoted one is refused).
  return v;
}

function exportBlock(e: GaneshaExport, owner: NfsFileOwner, i: number): string[] {
  const at = `exports[${i}]`;
  if (!Number.isInteger(e.exportId) || e.exportId < 1 || e.exportId > 65_534)
    throw new InvalidRequestError(`${at}.exportId: ${e.exportId} is not 1..65534`, at);
  const restricted = e.clients !== undefined && e.clients.length > 0;
  return [
    'EXPORT {',
    `  Export_Id = ${e.exportId};`,
    `  Path = ${path(e.path, `${at}.path`)};`,
    `  Pseudo = ${path(e.pseudoPath, `${at}.pseudoPath`)};`,
    // Restricted: nobody but the CLIENT block's networks gets in.
    `  Access_Type = ${restricted ? 'None' : 'RW'};`,
    '  Squash = All_Squash;',
    `  Anonymous_Uid = ${owner.uid};`,
    `  Anonymous_Gid = ${owner.gid};`,
    '  Protocols = 3, 4;',
    '  Transports = TCP;',
    '  SecType = sys;',
    ...(restricted
      ? [
          '  CLIENT {',
          `    Clients = ${e.clients!.map((c, j) => client(c, `${at}.clients[${j}]`)).join(', ')};`,
          '    Access_Type = RW;',
          '  }',
        ]
      : []),
    '  FSAL {',
    '    Name = VFS;',
    '  }',
    '}',
  ];
}

/** The ganesha.conf of one instance. */
export function renderGaneshaConfig(input: GaneshaConfigInput): string {
  const { owner } = input;
  if (!ID(owner.uid) || !ID(owner.gid) || owner.uid === 0 || owner.gid === 0)
    throw new InvalidRequestError(
      `NFS file owner ${owner.uid}:${owner.gid} must be a non-root uid and gid`,
      'owner',
    );
  const ids = new Set<number>();
  const pseudo = new Set<string>();
  input.exports.forEach((e, i) => {
    if (ids.has(e.exportId) || pseudo.has(e.pseudoPath))
      throw new InvalidRequestError(
        `exports[${i}]: export id ${e.exportId} or pseudo path ${e.pseudoPath} is used twice`,
        `exports[${i}]`,
      );
    ids.add(e.exportId);
    pseudo.add(e.pseudoPath);
  });
  const files = ganeshaConfigPaths(input.dir);
  const lines = [
    '# vmlink nfs-ganesha instance; generated, edits are overwritten',
    'NFS_CORE_PARAM {',
    '  Protocols = 3, 4;',
    `  NFS_Port = ${NFS_PORT};`,
    `  MNT_Port = ${NFS_MOUNTD_PORT};`,
    // QEMU's libnfs client takes no locks and reads no quotas: no NLM, no rquota, no UDP.
    '  Enable_NLM = false;',
    '  Enable_RQUOTA = false;',
    '  Enable_UDP = false;',
    // NFSv3 clients mount the pseudo path (/vmlink/<pool>) as NFSv4 ones see it, not the directory's real path.
    '  mount_path_pseudo = true;',
    '}',
    'NFS_KRB5 {',
    '  Active_krb5 = false;',
    '}',
    'NFSV4 {',
    `  RecoveryRoot = ${path(files.recoveryDir, 'recoveryDir')};`,
    // VMs use NFSv3 (stateless, no locks): no grace period to wait out after a (re)start.
    '  Graceless = true;',
    '}',
    'LOG {',
    '  Default_Log_Level = EVENT;',
    '  Components {',
    // Every reset client connection is a WARN (each qemu-img run is one); no D-Bus is in the instance's own /run.
    '    TIRPC = CRIT;',
    '    DBUS = FATAL;',
    '  }',
    '  Facility {',
    '    name = FILE;',
    `    destination = ${path(files.log, 'log')};`,
    '    enable = active;',
    '  }',
    '}',
    ...input.exports.flatMap((e, i) => exportBlock(e, owner, i)),
  ];
  return `${lines.join('\n')}\n`;
}
