// Where network backends keep their files under the agent's state directory: each backend its own directory
// (`network-linux/<name>/`, `network-ovs/<name>/`), so no backend reads or changes another's files. Before that
// layout both shared `networks/<name>/`; `moveLegacyNetworkDirs` moves a backend's networks out of it once.
import { access, mkdir, readdir, rename, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { log } from '../../shared/log.js';
import { writeFileAtomic } from '../../shared/state-file.js';

/** The directory both backends shared before each had its own (read only to move what is in it). */
export const LEGACY_NETWORKS_DIR = 'networks';
/** Names a network may have here: they become directory names under a backend's directory. */
export const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** What `moveLegacyNetworkDirs` needs from the backend that owns the directories it moves. */
export interface LegacyMove {
  /** Agent state directory. */
  stateDir: string;
  /** The backend's own networks directory (created when something moves). */
  target: string;
  /** The file that marks a legacy network directory as this backend's (`network.json`, `ovs.json`). */
  marker: string;
  /** Called before a directory moves, with its old path: stop what runs with files in it. */
  beforeMove?(name: string, oldDir: string): Promise<void>;
  /** Called after a directory moved, with its new path: start again what `beforeMove` stopped. */
  afterMove?(name: string, newDir: string): Promise<void>;
}

const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

/**
 * Moves every legacy network directory holding `marker` into `target` (one rename each, so a directory is
 * either in the old place or the new one, never both or half), then removes the legacy directory once empty.
 * Idempotent: a second run, or a run after an interrupted one, moves what is left. A directory whose name is
 * already taken in `target` stays where it is (the newer one wins; the older is kept for an operator).
 * Returns the names moved.
 */
export async function moveLegacyNetworkDirs(m: LegacyMove): Promise<string[]> {
  const legacy = join(m.stateDir, LEGACY_NETWORKS_DIR);
  let names: string[];
  try {
    names = (await readdir(legacy)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const moved: string[] = [];
  for (const name of names.filter((n) => NETWORK_NAME.test(n))) {
    const from = join(legacy, name);
    if (!(await exists(join(from, m.marker)))) continue;
    const to = join(m.target, name);
    if (await exists(to)) {
      log.warn({ from, to }, 'legacy network directory not moved: the new one exists; left for an operator');
      continue;
    }
    await mkdir(m.target, { recursive: true, mode: 0o755 });
    await m.beforeMove?.(name, from);
    await rename(from, to);
    await m.afterMove?.(name, to);
    moved.push(name);
  }
  await rmdir(legacy).catch(() => undefined); // ENOTEMPTY: another backend's, or a leftover; kept
  return moved;
}

/** One backend's per-network records: `<root>/<name>/<file>`, one JSON record per network directory. */
export class NetworkStateFiles<S extends { config: { name: string } }> {
  constructor(
    /** The directory of every network's directory. */
    readonly root: string,
    private readonly file: string,
    /** Reads and checks one record; undefined when it is absent or not this backend's (version, name). */
    private readonly load: (path: string, name: string) => Promise<S | undefined>,
  ) {}

  /** The directory of one network's files (its state, its dnsmasq files). */
  networkDir(name: string): string {
    return join(this.root, name);
  }

  /** The persisted state of network `name`; undefined when absent or not this backend's. */
  read(name: string): Promise<S | undefined> {
    return this.load(join(this.networkDir(name), this.file), name);
  }

  /** Every persisted network's state, sorted by name. */
  async readAll(): Promise<S[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const states = await Promise.all(names.filter((n) => NETWORK_NAME.test(n)).map((n) => this.read(n)));
    return states
      .filter((s): s is Awaited<S> => s !== undefined)
      .sort((a, b) => (a.config.name < b.config.name ? -1 : 1));
  }

  /** Persists one network's state. */
  async write(s: S): Promise<void> {
    const dir = this.networkDir(s.config.name);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await writeFileAtomic(join(dir, this.file), `${JSON.stringify(s, null, 2)}\n`, { mode: 0o644 });
  }

  /** Removes one network's directory (state and dnsmasq files); missing is fine. */
  async remove(name: string): Promise<void> {
    await rm(this.networkDir(name), { recursive: true, force: true });
  }
}
