import { SqliteStore } from './sqlite.js';
import type { Store } from './types.js';

/** Store implementations by name; etcd joins this registry for clusters. */
export const stores = {
  sqlite: (path: string) => new SqliteStore(path),
} satisfies Record<string, (location: string) => Store>;
