// What one NFS server instance keeps in its directory: where each file is, and its settings and exports (the state
// file ganesha's config is rendered from).
import { join } from 'node:path';
import { z } from 'zod';
import { type GaneshaExport, ganeshaConfigPaths, type NfsFileOwner } from './ganesha-config.js';

/** Most exports one instance serves. */
export const NFS_EXPORTS_MAX = 256;

/** Files of one instance, all in its directory. */
export interface NfsServerPaths {
  dir: string;
  /** ganesha.conf, rendered from `state`. */
  conf: string;
  /** The instance's settings and exports (JSON): the source the config is rendered from. */
  state: string;
  /** ganesha's own log. */
  log: string;
  /** stdout/stderr of rpcbind and ganesha. */
  output: string;
  /** NFSv4 recovery state. */
  recoveryDir: string;
  /** ganesha's pidfile (written by ganesha; never trusted alone). */
  ganeshaPidFile: string;
  rpcbindIdentity: string;
  ganeshaIdentity: string;
}

/** Where an instance in `dir` keeps its files. */
export function nfsServerPaths(dir: string): NfsServerPaths {
  const g = ganeshaConfigPaths(dir);
  return {
    dir,
    conf: join(dir, 'ganesha.conf'),
    state: join(dir, 'instance.json'),
    log: g.log,
    output: join(dir, 'output.log'),
    recoveryDir: g.recoveryDir,
    ganeshaPidFile: join(dir, 'ganesha.pid'),
    rpcbindIdentity: join(dir, 'rpcbind.identity.json'),
    ganeshaIdentity: join(dir, 'ganesha.identity.json'),
  };
}

/** An instance's settings and exports as kept in its state file. */
export interface NfsInstanceState {
  owner: NfsFileOwner;
  exports: GaneshaExport[];
}

const Id = z.number().int().min(1).max(0xffff_fffe);
/** The state file's schema (strict, bounded: the file is read back). */
export const NfsInstanceStateSchema = z
  .object({
    owner: z.object({ uid: Id, gid: Id }).strict(),
    exports: z
      .array(
        z
          .object({
            exportId: z.number().int().min(1).max(65_534),
            path: z.string().max(1024),
            pseudoPath: z.string().max(1024),
            clients: z.array(z.string().max(64)).max(64).optional(),
          })
          .strict(),
      )
      .max(NFS_EXPORTS_MAX),
  })
  .strict();

/** Whether two exports are the same (id, path, pseudo path, clients). */
export function sameExport(a: GaneshaExport, b: GaneshaExport): boolean {
  return (
    a.exportId === b.exportId &&
    a.path === b.path &&
    a.pseudoPath === b.pseudoPath &&
    (a.clients ?? []).join(',') === (b.clients ?? []).join(',')
  );
}
