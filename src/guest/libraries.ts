// The shared libraries of the guest's dynamically linked programs: their closure (and the dynamic loader) found in the
// extracted packages, fetching the packages that provide what is missing; links are followed only inside a package.
import { lstat, readFile, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Runner } from '../exec/runner.js';
import { NotFoundError } from '../shared/errors.js';
import type { FsTree } from './cpio.js';
import { aptDepends, candidates, type GuestPackage } from './packages.js';

const LIB_DIRS = ['lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu', 'lib64', 'usr/lib64', 'lib', 'usr/lib'];

/** A package unpacked in the build's work directory. */
export interface Extracted {
  pkg: GuestPackage;
  root: string;
}

/** NEEDED sonames and program interpreter of an ELF file, from `readelf`. */
export function parseReadelf(text: string): { needed: string[]; interp?: string } {
  const needed = [...text.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!);
  const interp = /\[Requesting program interpreter: ([^\]]+)\]/.exec(text)?.[1];
  return interp ? { needed, interp } : { needed };
}

/**
 * Adds the shared-library closure of `binaries` (and their loader) to the tree from the extracted packages,
 * fetching dependencies of the packages involved when a library is missing. Returns the packages used.
 */
export async function addLibraries(
  runner: Runner,
  tree: FsTree,
  binaries: readonly { file: string; pkg: string }[],
  extracted: Map<string, Extracted>,
  fetch: (p: GuestPackage[]) => Promise<void>,
  progress: (l: string) => void,
): Promise<Set<string>> {
  const used = new Set<string>(binaries.map((b) => b.pkg));
  for (let round = 0; ; round++) {
    const missing: string[] = [];
    const seen = new Set<string>();
    const queue: { file: string; pkg: string }[] = [...binaries];
    const needers = new Set<string>();
    while (queue.length) {
      const { file, pkg } = queue.shift()!;
      const elf = parseReadelf((await runner.run(['readelf', '-dlW', file])).stdout);
      if (elf.interp && !tree.has(elf.interp)) {
        const hit = await findIn(extracted, elf.interp.slice(1));
        if (!hit) throw new NotFoundError('dynamic loader', elf.interp);
        // One copy of the loader, in the library directory; the ELF interpreter path links to it.
        const base = posix.basename(elf.interp);
        tree.file(`lib/x86_64-linux-gnu/${base}`, await readFile(hit.file), 0o755);
        if (elf.interp !== `/lib/x86_64-linux-gnu/${base}`)
          tree.symlink(elf.interp, `/lib/x86_64-linux-gnu/${base}`);
        used.add(hit.pkg);
      }
      for (const so of elf.needed) {
        if (seen.has(so)) continue;
        seen.add(so);
        let hit: { file: string; pkg: string } | undefined;
        for (const d of LIB_DIRS) {
          hit = await findIn(extracted, `${d}/${so}`);
          if (hit) break;
        }
        if (!hit) {
          missing.push(so);
          needers.add(pkg);
          continue;
        }
        tree.file(`lib/x86_64-linux-gnu/${so}`, await readFile(hit.file), 0o755);
        used.add(hit.pkg);
        queue.push(hit);
      }
    }
    if (!missing.length) return used;
    if (round >= 6) throw new NotFoundError('shared libraries of the guest programs', missing.join(', '));
    progress(`resolving ${missing.join(', ')} (needed by ${[...needers].join(', ')})`);
    const more = new Set<string>();
    for (const ds of (await aptDepends(runner, [...needers])).values()) {
      for (const d of ds) if (!extracted.has(d)) more.add(d);
    }
    if (!more.size) throw new NotFoundError('shared libraries of the guest programs', missing.join(', '));
    const versions = await candidates(runner, [...more]);
    await fetch([...more].map((name) => ({ name, version: versions.get(name)! })));
  }
}

/** Finds `rel` in the extracted packages, following symlinks inside each package root. */
async function findIn(
  extracted: Map<string, Extracted>,
  rel: string,
): Promise<{ file: string; pkg: string } | undefined> {
  for (const { root, pkg } of extracted.values()) {
    const file = await resolveInRoot(root, rel);
    if (file) return { file, pkg: pkg.name };
  }
  return undefined;
}

/** `rel` inside `root`, following links only within `root`; undefined when it is not a regular file there. */
export async function resolveInRoot(root: string, rel: string): Promise<string | undefined> {
  let cur = posix.normalize(rel);
  for (let hops = 0; hops < 16; hops++) {
    const full = join(root, cur);
    let st: Awaited<ReturnType<typeof lstat>>;
    try {
      st = await lstat(full);
    } catch {
      return undefined;
    }
    if (!st.isSymbolicLink()) return st.isFile() ? full : undefined;
    const target = await readlink(full);
    cur = target.startsWith('/')
      ? posix.normalize(target.slice(1))
      : posix.normalize(posix.join(posix.dirname(cur), target));
    if (cur.startsWith('..')) return undefined;
  }
  return undefined;
}
