// `nfs` pools: qcow2 volumes in a directory of a storage host, exported by its nfs-ganesha (nfs-server.ts), one
// export per pool at `/vmlink/<pool>`. VMs on compute hosts open `<volume>.qcow2` with QEMU's NFS client; the storage
// agent makes and changes the files locally with qemu-img, exactly as a dir pool does (qcow2-volumes.ts through
// DirPool). What differs:
// - every client is squashed to one uid/gid (the server's file owner), so volume files belong to it (0600);
// - the directory stays root's, 0711: clients may look up and open their volumes, never create, rename or delete an
//   entry (no link planted for the root agent to follow, no volume swapped under a VM);
// - the pool is only realised once its export is served: ensurePool adds or updates the export and reloads ganesha
//   (starting it when it does not run), deletePool removes it, listPools reports a missing export or a server down.
import { InvalidRequestError, UnsupportedError } from '../../shared/errors.js';
import type { ObservedPool, PoolConfig } from '../../shared/storage.js';
import type { OpContext } from '../network/types.js';
import { DirPool, type DirPoolOptions } from './dir-pool.js';
import { ganeshaExportOf } from './ganesha-config.js';
import type { NfsServer } from './nfs-server.js';
import { Qcow2Volumes } from './qcow2-volumes.js';

const NO_SERVER = 'this agent serves no NFS (no --nfs-dir)';

/** Mode of an nfs pool's directory: root's; others may traverse it, not list or change it. */
export const NFS_POOL_DIR_MODE = 0o711;

/** What an NfsPool needs (a subset of the registry's PoolBackendOptions). */
export interface NfsPoolOptions extends DirPoolOptions {
  /** The storage host's NFS server instance; absent: this agent serves no NFS (every change is refused). */
  ganesha?: NfsServer;
}

/** The `nfs` pool backend. */
export class NfsPool extends DirPool {
  private readonly server: NfsServer | undefined;

  constructor(opts: NfsPoolOptions) {
    super(opts, { type: 'nfs', dirMode: NFS_POOL_DIR_MODE });
    this.server = opts.ganesha;
  }

  private ganesha(pool: PoolConfig): NfsServer {
    if (!this.server)
      throw new UnsupportedError(
        `pool ${pool.name}: this agent serves no NFS (start it in the storage role with --nfs-dir)`,
        `pool/${pool.name}`,
      );
    return this.server;
  }

  // Volume files belong to the uid every client is squashed to: only so can a VM's QEMU, through NFS, open them.
  protected override volumes(pool: PoolConfig): Qcow2Volumes {
    if (pool.type !== 'nfs')
      throw new InvalidRequestError(
        `pool ${pool.name} is of type ${pool.type}, not nfs`,
        `pool/${pool.name}`,
      );
    return new Qcow2Volumes(this.runner, pool, { owner: this.ganesha(pool).ownerSync(), mode: 0o600 });
  }

  protected override async afterEnsure(pool: PoolConfig, ctx?: OpContext): Promise<void> {
    const server = this.ganesha(pool);
    const e = ganeshaExportOf(pool);
    ctx?.progress?.(`exporting pool ${pool.name} at ${e.pseudoPath}`);
    await server.putExport(e);
    // A storage host outside a lab has nobody else to start its server.
    if (!(await server.ready())) await server.start();
  }

  protected override async beforeRemove(pool: PoolConfig, ctx?: OpContext): Promise<void> {
    if (!pool.nfs) return;
    ctx?.progress?.(`removing the export of pool ${pool.name}`);
    await this.ganesha(pool).removeExport(pool.nfs.exportId);
  }

  // Without a server nothing of a pool can be served: its records are reported with that problem, volumes unread.
  override async listPools(): Promise<ObservedPool[]> {
    if (this.server) return super.listPools();
    return (await this.store.readAll('nfs')).map(({ config, configHash }) => ({
      name: config.name,
      type: 'nfs' as const,
      configHash,
      config,
      problems: [NO_SERVER],
      capacityMiB: 0,
      usedMiB: 0,
      freeMiB: 0,
      volumes: [],
    }));
  }

  protected override async poolProblems(pool: PoolConfig): Promise<string[]> {
    if (!this.server) return [NO_SERVER];
    const want = pool.nfs ? ganeshaExportOf(pool) : undefined;
    const served = (await this.server.exports()).find((e) => e.exportId === want?.exportId);
    const problems: string[] = [];
    if (!want || !served || served.path !== want.path || served.pseudoPath !== want.pseudoPath)
      problems.push(`export ${want?.pseudoPath ?? pool.name} is missing from nfs-ganesha's exports`);
    if (!(await this.server.ready()))
      problems.push(`nfs-ganesha (${this.server.paths.dir}) is not running or does not answer`);
    return problems;
  }
}
