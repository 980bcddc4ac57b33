// The pools an agent realised, one record per pool (`<stateDir>/pools/<name>.json`: its PoolConfig and configHash),
// shared by every pool backend (dir, iscsi, nfs): `listPools` answers after an agent restart, and actions that
// name only a pool (`volume.resize`, `volume.delete`, snapshots) find its config here. Written atomically; a file of
// another version, or for another name, reads as absent; a corrupt one, or a link, is an error for an operator.
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { InvalidRequestError } from '../../shared/errors.js';
import { jsonRecordNames, readJsonFile, writeFileAtomic } from '../../shared/state-file.js';
import { POOL_CLIENTS_MAX, type PoolConfig, type PoolType, PoolTypes } from '../../shared/storage.js';

/** A pool's name (the spec's name pattern). */
export const POOL_NAME = /^[a-z][a-z0-9-]{0,30}$/;

/** A pool as its agent last realised it. */
export interface PoolRecord {
  config: PoolConfig;
  /** Hash of `config` as the controller computed it (the plan compares it). */
  configHash: string;
}

// The config was checked by the wire schema before it was realised and written; what the backends use of it when
// they read it back (name, type, path) is checked again, so a hand-edited file cannot point a backend elsewhere.
const recordFile = z
  .object({
    version: z.number(),
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

/** The pool records of one agent state directory. */
export class PoolStateStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'pools');
  }

  private file(name: string): string {
    return join(this.dir, `${name}.json`);
  }

  /** The pool as last realised; undefined when absent (or written by another version). */
  async read(name: string): Promise<PoolRecord | undefined> {
    if (!POOL_NAME.test(name)) return undefined;
    const s = await readJsonFile(this.file(name), recordFile);
    if (s?.version !== 1 || s.config.name !== name) return undefined;
    return { config: s.config as unknown as PoolConfig, configHash: s.configHash };
  }

  /** Every pool recorded (of one type when given), by name. */
  async readAll(type?: PoolType): Promise<PoolRecord[]> {
    const records = await Promise.all((await jsonRecordNames(this.dir)).map((n) => this.read(n)));
    return records
      .filter((r): r is PoolRecord => r !== undefined && (type === undefined || r.config.type === type))
      .sort((a, b) => (a.config.name < b.config.name ? -1 : 1));
  }

  /** Records a pool just realised. */
  async write(r: PoolRecord): Promise<void> {
    if (!POOL_NAME.test(r.config.name))
      throw new InvalidRequestError(`pool name ${JSON.stringify(r.config.name)} must match ${POOL_NAME}`);
    await mkdir(this.dir, { recursive: true, mode: 0o750 });
    await writeFileAtomic(this.file(r.config.name), `${JSON.stringify({ version: 1, ...r })}\n`, {
      mode: 0o640,
    });
  }

  /** Forgets a pool; missing is fine. */
  async remove(name: string): Promise<void> {
    if (POOL_NAME.test(name)) await rm(this.file(name), { force: true });
  }
}
