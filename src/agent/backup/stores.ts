// The backup stores an agent serves (docs/backup.md, "Chunks and the store"): each realised by `ensure` from the
// controller, recorded in `<stateDir>/backup-store-records/<name>.json` so it is served again after an agent restart,
// and opened once (a `ChunkStore`, the crypto-store helper's DirChunkStore in production). A store's directory lies
// below one of the agent's `--pool-root`s, or is the default `<stateDir>/backup-stores/<name>`.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { ChunkStore } from '../../drivers/backup/types.js';
import {
  type BackupStoreConfig,
  BackupStoreConfigSchema,
  type BackupStoreStatus,
} from '../../shared/backup.js';
import { ConflictError, InvalidRequestError, NotFoundError } from '../../shared/errors.js';
import { log } from '../../shared/log.js';
import { jsonRecordNames, readJsonFile, writeJsonFile } from '../../shared/state-file.js';

/** Opens (creating when new) the chunk store of a directory. */
export type OpenChunkStore = (config: BackupStoreConfig) => Promise<ChunkStore>;

/** A store as `ensure` names it: the path may be left to the agent's default. */
export type StoreRequest = Omit<BackupStoreConfig, 'path'> & { path?: string | undefined };

/** Options of `BackupStores`. */
export interface BackupStoresOptions {
  host: string;
  stateDir: string;
  /** Directories a store's path may lie below (the agent's `--pool-root`s). */
  poolRoots: readonly string[];
  open: OpenChunkStore;
}

const RecordSchema = z.object({ version: z.literal(1), store: BackupStoreConfigSchema }).strict();

const NAME = /^[a-z][a-z0-9-]{0,30}$/;

/** Whether `path` is `root` or lies below it. */
const within = (path: string, root: string) =>
  path === root || path.startsWith(root.endsWith('/') ? root : `${root}/`);

/** The stores of one agent. */
export class BackupStores {
  private readonly recordDir: string;
  private readonly open = new Map<string, Promise<ChunkStore>>();

  constructor(private readonly opts: BackupStoresOptions) {
    this.recordDir = join(opts.stateDir, 'backup-store-records');
  }

  /** The default directory of store `name`. */
  defaultPath(name: string): string {
    return join(this.opts.stateDir, 'backup-stores', name);
  }

  /** Why `path` may not hold store `name` (outside the roots), or undefined. */
  private pathRefusal(name: string, path: string): string | undefined {
    if (path === this.defaultPath(name)) return undefined;
    const ok = this.opts.poolRoots.some((r) => within(path, r) && path !== r);
    if (ok) return undefined;
    return `backup store ${name}'s directory ${path} is not below ${this.opts.poolRoots.join(' or ')} on host ${this.opts.host}: put it there, leave the path out (default ${this.defaultPath(name)}), or start the agent with --pool-root naming its parent`;
  }

  /**
   * Realises a store: checks its path, records it, opens it; idempotent for the same config. A store of the same
   * name elsewhere, or whose directory nests with another store's, is refused (ConflictError): moving a store is an
   * operator's job.
   */
  async ensure(req: StoreRequest): Promise<BackupStoreStatus> {
    const config: BackupStoreConfig = BackupStoreConfigSchema.parse({
      name: req.name,
      offsite: req.offsite,
      path: req.path ?? this.defaultPath(req.name),
    });
    const why = this.pathRefusal(config.name, config.path);
    if (why) throw new InvalidRequestError(why, `backup-store/${config.name}`);
    const known = await this.records();
    const same = known.find((k) => k.name === config.name);
    if (same && same.path !== config.path)
      throw new ConflictError(
        `backup store ${config.name} on host ${this.opts.host} is at ${same.path}, not ${config.path}: move its directory and its record by hand, or give it another name`,
        `backup-store/${config.name}`,
      );
    const nested = known.find(
      (k) => k.name !== config.name && (within(k.path, config.path) || within(config.path, k.path)),
    );
    if (nested)
      throw new ConflictError(
        `backup store ${config.name}'s directory ${config.path} overlaps store ${nested.name}'s (${nested.path}) on host ${this.opts.host}`,
        `backup-store/${config.name}`,
      );
    if (same && same.offsite !== config.offsite) {
      // Turning an offsite store into a writable one over the network would let the primary site delete from it.
      if (same.offsite)
        throw new ConflictError(
          `backup store ${config.name} on host ${this.opts.host} is offsite and stays so: a store cannot stop being offsite over the network (make a new store)`,
          `backup-store/${config.name}`,
        );
    }
    if (!same || same.offsite !== config.offsite) {
      await mkdir(this.recordDir, { recursive: true, mode: 0o700 });
      await writeJsonFile(this.file(config.name), { version: 1, store: config }, { mode: 0o600 });
      this.open.delete(config.name);
    }
    return (await this.get(config.name)).status();
  }

  /** The open store `name`; NotFoundError (with how to make it) when this agent holds none of that name. */
  async get(name: string): Promise<ChunkStore> {
    let p = this.open.get(name);
    if (!p) {
      const config = NAME.test(name) ? await this.record(name) : undefined;
      if (!config) throw new NotFoundError(`backup store on host ${this.opts.host}`, name);
      p = this.opts.open(config);
      this.open.set(name, p);
      p.catch(() => this.open.delete(name));
    }
    return p;
  }

  /** Every store's status (one that cannot be read is logged and left out). */
  async list(): Promise<BackupStoreStatus[]> {
    const out: BackupStoreStatus[] = [];
    for (const r of await this.records()) {
      try {
        out.push(await (await this.get(r.name)).status());
      } catch (e) {
        log.warn({ store: r.name, err: (e as Error).message }, 'backup store cannot be read');
      }
    }
    return out;
  }

  /** Opens every recorded store (at agent start: a DirChunkStore clears its tmp/ when opened). */
  async openAll(): Promise<void> {
    for (const r of await this.records())
      await this.get(r.name).catch((e: unknown) =>
        log.warn({ store: r.name, err: (e as Error).message }, 'backup store cannot be opened'),
      );
  }

  private file(name: string): string {
    return join(this.recordDir, `${name}.json`);
  }

  private async record(name: string): Promise<BackupStoreConfig | undefined> {
    const r = await readJsonFile(this.file(name), RecordSchema);
    return r?.store.name === name ? r.store : undefined;
  }

  private async records(): Promise<BackupStoreConfig[]> {
    const names = (await jsonRecordNames(this.recordDir)).filter((n) => NAME.test(n)).sort();
    const out: BackupStoreConfig[] = [];
    for (const n of names) {
      const r = await this.record(n).catch((e: unknown) => {
        log.warn({ store: n, err: (e as Error).message }, 'ignoring a bad backup store record');
        return undefined;
      });
      if (r) out.push(r);
    }
    return out;
  }
}
