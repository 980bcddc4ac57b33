// Test harness of the directory chunk store's unit tests: a scratch directory per test, removed after it, in which
// `open` opens (or reopens, as an agent restarting would) the store `site`.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import type { ChunkId } from '../../shared/backup.js';
import { DirChunkStore, type DirChunkStoreOptions } from './chunk-store.js';

/** Where chunk `id`'s blob lies in the store at `root` (docs/backup.md's layout). */
export const chunkFile = (root: string, id: ChunkId) => join(root, 'chunks', id.slice(0, 4), id);

/** Registers a scratch directory per test (call inside a `describe`); `root` is the store's path in it. */
export function scratchStores(): {
  readonly dir: string;
  readonly root: string;
  open: (opts?: DirChunkStoreOptions) => Promise<DirChunkStore>;
} {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-chunkstore-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  return {
    get dir() {
      return dir;
    },
    get root() {
      return join(dir, 'store');
    },
    open: (opts = {}) => DirChunkStore.open({ name: 'site', path: join(dir, 'store'), offsite: false }, opts),
  };
}
