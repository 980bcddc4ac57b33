// Records of the iscsi pools this agent realised (`<stateDir>/pools/<name>.json`: PoolConfig and configHash), in
// the layout of the shared pool state store the dir backend brings (pool-state.ts); this file goes once that store
// is on main. Never holds a secret: a pool's CHAP names its secret, the value only passes through ensurePool.
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { InvalidRequestError } from '../../shared/errors.js';
import { readJsonFile, writeFileAtomic } from '../../shared/state-file.js';
import { POOL_CLIENTS_MAX, type PoolConfig, PoolTypes } from '../../shared/storage.js';

/** A pool's name (the spec's name pattern). */
export const POOL_NAME = /^[a-z][a-z0-9-]{0,30}$/;

/** A pool as its agent last realised it. */
export interface PoolRecord {
  config: PoolConfig;
  configHash: string;
}

const recordFile = z
  .object({
    version: z.literal(1),
    configHash: z.string().max(256),
    config: z
      .object({
        name: z.string().regex(POOL_NAME),
        type: z.enum(PoolTypes),
        path: z
          .string()
          .regex(/^\/[\w./-]{1,250}$/)
          .refine((p) => !p.split('/').includes('..')),
        clients: z.array(z.string()).max(POOL_CLIENTS_MAX).optional(),
      })
      .passthrough(),
  })
  .passthrough();

/** The iscsi pool records of one agent state directory. */
export class IscsiPoolRecords {
  private readonly dir: string;
  constructor(stateDir: string) {
    this.dir = join(stateDir, 'pools');
  }
  private file(name: string): string {
    return join(this.dir, `${name}.json`);
  }
  async read(name: string): Promise<PoolRecord | undefined> {
    if (!POOL_NAME.test(name)) return undefined;
    const s = await readJsonFile(this.file(name), recordFile);
    if (!s || s.config.name !== name) return undefined;
    return { config: s.config as unknown as PoolConfig, configHash: s.configHash };
  }
  /** The iscsi pools recorded, by name. */
  async readAll(): Promise<PoolRecord[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const all = await Promise.all(
      names.filter((n) => n.endsWith('.json')).map((n) => this.read(n.slice(0, -'.json'.length))),
    );
    return all
      .filter((r): r is PoolRecord => r !== undefined && r.config.type === 'iscsi')
      .sort((a, b) => (a.config.name < b.config.name ? -1 : 1));
  }
  async write(r: PoolRecord): Promise<void> {
    if (!POOL_NAME.test(r.config.name))
      throw new InvalidRequestError(`pool name ${JSON.stringify(r.config.name)} must match ${POOL_NAME}`);
    await mkdir(this.dir, { recursive: true, mode: 0o750 });
    await writeFileAtomic(this.file(r.config.name), `${JSON.stringify({ version: 1, ...r })}\n`, {
      mode: 0o640,
    });
  }
  async remove(name: string): Promise<void> {
    if (POOL_NAME.test(name)) await rm(this.file(name), { force: true });
  }
}
