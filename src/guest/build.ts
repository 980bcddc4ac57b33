import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Runner } from '../exec/runner.js';
import { NotFoundError, VmlinkError } from '../shared/errors.js';
import { writeFileAtomic } from '../shared/state-file.js';
import { FsTree } from './cpio.js';
import { GUEST_MODULES, moduleLoadOrder, parseModulesBuiltin, parseModulesDep } from './modules.js';

/** Where the test guest image lives by default. */
export const DEFAULT_GUEST_DIR = '/var/lib/vmlink/images/test-guest';
/** Where downloaded .deb files are kept between builds. */
export const DEFAULT_DEB_CACHE = '/var/cache/vmlink/debs';
/** Bumped whenever the builder changes what it puts in the image, so cached images get rebuilt. */
export const BUILD_FORMAT = 2;

/** Guest content shipped in the initramfs, beside this file: path in the image -> source file name. */
const GUEST_SCRIPTS = {
  init: 'init.sh',
  'etc/udhcpc.script': 'udhcpc.sh',
  'sbin/shutdown': 'shutdown.sh',
} as const;
const LIB_DIRS = ['lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu', 'lib64', 'usr/lib64', 'lib', 'usr/lib'];
const QGA_PACKAGE = 'qemu-guest-agent';
const BUSYBOX_PACKAGE = 'busybox-static';
const KERNEL_META = 'linux-image-amd64';

/**
 * Dynamically linked programs copied from Debian packages, with their shared libraries: path in the package ->
 * path in the image. iputils ping replaces busybox's (don't-fragment pings, `-M do`, for path-MTU checks);
 * iperf3 measures throughput (started on demand through guest-exec, never at boot).
 */
const GUEST_PROGRAMS = [
  { pkg: QGA_PACKAGE, path: 'usr/sbin/qemu-ga' },
  { pkg: 'iputils-ping', path: 'bin/ping' },
  { pkg: 'iperf3', path: 'usr/bin/iperf3' },
] as const;
/** Packages fetched up front besides kernel, busybox, qemu-ga (+ its Depends) and the programs' packages. */
const EXTRA_PACKAGES = ['libiperf0'] as const;

/** A Debian package the image was built from. */
export interface GuestPackage {
  name: string;
  version: string;
}

/** Contents of `manifest.json` beside the image. */
export interface GuestManifest {
  format: number;
  /** sha256 over the guest scripts, module list and `BUILD_FORMAT`. */
  contentSha256: string;
  kernelRelease: string;
  kernelPackage: string;
  packages: GuestPackage[];
  /** Modules loaded at boot, in load order (paths under /lib/modules). */
  modules: string[];
  builtAt: string;
  buildMs: number;
  files: Record<'vmlinuz' | 'initrd.img', { sha256: string; size: number }>;
}

/** Options of `ensureTestGuest`. */
export interface EnsureTestGuestOptions {
  runner: Runner;
  /** Output directory (default `DEFAULT_GUEST_DIR`). */
  outDir?: string;
  /** .deb cache (default `DEFAULT_DEB_CACHE`). */
  cacheDir?: string;
  /** Rebuild even if the image is up to date. */
  force?: boolean;
  /** Receives one human-readable line per build step. */
  progress?: (line: string) => void;
}

/** The image on disk. */
export interface TestGuest {
  kernel: string;
  initrd: string;
  manifest: GuestManifest;
  rebuilt: boolean;
}

/**
 * Makes sure the test guest image (kernel + initramfs from Debian packages) exists in `outDir` and matches
 * the package versions apt would pick now; builds it otherwise. Needs root (apt-get download, dpkg-deb).
 */
export async function ensureTestGuest(opts: EnsureTestGuestOptions): Promise<TestGuest> {
  const outDir = opts.outDir ?? DEFAULT_GUEST_DIR;
  const progress = opts.progress ?? (() => {});
  const kernel = join(outDir, 'vmlinuz');
  const initrd = join(outDir, 'initrd.img');
  const content = await guestContentHash();
  const old = opts.force ? undefined : await readManifest(join(outDir, 'manifest.json'));
  const oldNames = Array.isArray(old?.packages) ? old.packages.map((p) => p.name) : [];
  // Packages of the old image may have left the archive; then look up only the current set.
  const wanted = await resolvePackages(opts.runner, oldNames).catch(() => resolvePackages(opts.runner));
  if (old && (await isCurrent(old, wanted, content, outDir))) {
    progress('test guest up to date');
    return { kernel, initrd, manifest: old, rebuilt: false };
  }
  const manifest = await build({ ...opts, outDir, progress }, wanted, content);
  return { kernel, initrd, manifest, rebuilt: true };
}

// Packages.

/** Direct `Depends` per package in `apt-cache depends` output; virtual packages dropped, alternatives kept. */
export function parseAptDepends(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let deps: string[] | undefined;
  for (const line of text.split('\n')) {
    if (/^\S/.test(line)) {
      deps = [];
      out.set(line.trim(), deps);
      continue;
    }
    const m = /^\s*\|?Depends:\s*(\S+)/.exec(line);
    if (m && deps && !m[1]!.startsWith('<')) {
      const name = m[1]!.replace(/:any$/, '');
      if (!deps.includes(name)) deps.push(name);
    }
  }
  return out;
}

/** Candidate version of each package in `apt-cache policy` output (packages without one are left out). */
export function parseAptPolicy(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let pkg: string | undefined;
  for (const line of text.split('\n')) {
    const head = /^(\S+):$/.exec(line);
    if (head) pkg = head[1];
    const cand = /^\s+Candidate:\s*(\S+)/.exec(line);
    if (cand && pkg && cand[1] !== '(none)') out.set(pkg, cand[1]!);
  }
  return out;
}

async function aptDepends(runner: Runner, pkgs: string[]): Promise<Map<string, string[]>> {
  const { stdout } = await runner.run([
    'apt-cache',
    'depends',
    '--no-recommends',
    '--no-suggests',
    '--no-conflicts',
    '--no-breaks',
    '--no-replaces',
    '--no-enhances',
    '--no-pre-depends',
    ...pkgs,
  ]);
  return parseAptDepends(stdout);
}

async function candidates(runner: Runner, names: readonly string[]): Promise<Map<string, string>> {
  const { stdout } = await runner.run(['apt-cache', 'policy', ...new Set(names)]);
  const got = parseAptPolicy(stdout);
  for (const n of names) {
    if (!got.has(n)) throw new NotFoundError('Debian package', n);
  }
  return got;
}

interface Wanted {
  kernelPackage: string;
  /** Packages and the versions apt picks now: kernel, busybox, qemu-ga and its direct dependencies, programs. */
  packages: GuestPackage[];
  /** Candidate versions of every package asked about (including `also`). */
  versions: Map<string, string>;
}

/** Resolves the packages and the versions apt would pick now; `also` are more packages to look up. */
async function resolvePackages(runner: Runner, also: string[] = []): Promise<Wanted> {
  const deps = await aptDepends(runner, [KERNEL_META, QGA_PACKAGE]);
  const kernelPackage = deps.get(KERNEL_META)?.find((d) => /^linux-image-\d/.test(d));
  if (!kernelPackage) throw new NotFoundError('kernel package behind', KERNEL_META);
  const names = [
    kernelPackage,
    BUSYBOX_PACKAGE,
    QGA_PACKAGE,
    ...(deps.get(QGA_PACKAGE) ?? []),
    ...GUEST_PROGRAMS.map((p) => p.pkg).filter((p) => p !== QGA_PACKAGE),
    ...EXTRA_PACKAGES,
  ];
  const versions = await candidates(runner, [...names, ...also]);
  return { kernelPackage, packages: names.map((name) => ({ name, version: versions.get(name)! })), versions };
}

// Cache check.

/** sha256 over what the builder puts in the image besides packages: guest scripts, module list, format. */
export async function guestContentHash(): Promise<string> {
  const h = createHash('sha256').update(
    `format ${BUILD_FORMAT}\nmodules ${GUEST_MODULES.join(' ')}\nprograms ${GUEST_PROGRAMS.map((p) => `${p.pkg}:${p.path}`).join(' ')}\n`,
  );
  for (const [dest, src] of Object.entries(GUEST_SCRIPTS)) {
    h.update(`${dest}\n`).update(await readFile(new URL(`./${src}`, import.meta.url)));
  }
  return h.digest('hex');
}

async function readManifest(path: string): Promise<GuestManifest | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as GuestManifest;
  } catch {
    return undefined;
  }
}

async function sha256File(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

async function isCurrent(
  m: GuestManifest,
  wanted: Wanted,
  content: string,
  outDir: string,
): Promise<boolean> {
  if (m.format !== BUILD_FORMAT || m.contentSha256 !== content || m.kernelPackage !== wanted.kernelPackage)
    return false;
  if (!Array.isArray(m.packages)) return false;
  const have = new Map(m.packages.map((p) => [p.name, p.version]));
  if (wanted.packages.some((p) => have.get(p.name) !== p.version)) return false;
  // Packages pulled in for a library (e.g. libpcre2 for glib) must still be apt's candidates too.
  if (m.packages.some((p) => wanted.versions.get(p.name) !== p.version)) return false;
  for (const f of ['vmlinuz', 'initrd.img'] as const) {
    try {
      if ((await sha256File(join(outDir, f))) !== m.files?.[f]?.sha256) return false;
    } catch {
      return false;
    }
  }
  return true;
}

// Build.

interface Extracted {
  pkg: GuestPackage;
  root: string;
}

async function build(
  opts: EnsureTestGuestOptions & { outDir: string; progress: (l: string) => void },
  wanted: Wanted,
  content: string,
): Promise<GuestManifest> {
  const { runner, progress, outDir } = opts;
  const cacheDir = opts.cacheDir ?? DEFAULT_DEB_CACHE;
  const started = Date.now();
  await mkdir(cacheDir, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), 'vmlink-guest-'));
  try {
    const extracted = new Map<string, Extracted>();
    const fetch = async (pkgs: GuestPackage[]) => {
      for (const p of pkgs) {
        if (extracted.has(p.name)) continue;
        const deb = await download(runner, cacheDir, p, progress);
        const root = join(work, 'pkg', p.name);
        await mkdir(root, { recursive: true });
        progress(`extracting ${p.name}`);
        await runner.run(['dpkg-deb', '-x', deb, root], { timeoutMs: 300_000 });
        extracted.set(p.name, { pkg: p, root });
      }
    };
    await fetch(wanted.packages);

    const tree = new FsTree();
    for (const d of ['proc', 'sys', 'dev', 'run', 'tmp', 'var', 'etc', 'root', 'www', 'mnt']) tree.dir(d);
    tree.charDev('dev/console', 5, 1);
    tree.file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
    tree.file('etc/group', 'root:x:0:\n');

    // Kernel and modules.
    const kroot = extracted.get(wanted.kernelPackage)!.root;
    const [kernelRelease] = await readdir(join(kroot, 'lib/modules'));
    if (!kernelRelease) throw new VmlinkError('internal', `${wanted.kernelPackage} has no /lib/modules`);
    const moddir = join(kroot, 'lib/modules', kernelRelease);
    progress(`depmod ${kernelRelease}`);
    await runner.run(['depmod', '-b', kroot, kernelRelease], { timeoutMs: 120_000 });
    const order = moduleLoadOrder(
      parseModulesDep(await readFile(join(moddir, 'modules.dep'), 'utf8')),
      GUEST_MODULES,
      parseModulesBuiltin(await readFile(join(moddir, 'modules.builtin'), 'utf8')),
    );
    const modules = order.map((f) => `${kernelRelease}/${f}`);
    for (const f of order) tree.file(`lib/modules/${kernelRelease}/${f}`, await readFile(join(moddir, f)));
    tree.file('etc/vmlink/modules', modules.map((m) => `${m}\n`).join(''));

    // Busybox and its applets.
    const bbroot = extracted.get(BUSYBOX_PACKAGE)!.root;
    const bb = join(bbroot, 'bin/busybox');
    tree.file('bin/busybox', await readFile(bb), 0o755);
    const applets = (await runner.run([bb, '--list-full'])).stdout.split('\n').filter(Boolean);
    for (const a of applets) {
      // Our /init is PID 1; busybox's init must not be picked by accident.
      if (a === 'linuxrc' || a === 'sbin/init' || a === 'bin/busybox') continue;
      tree.symlink(a, '/bin/busybox');
    }

    // qemu-ga, ping, iperf3 with their shared libraries and the dynamic loader (they replace busybox applets).
    const programs: { file: string; pkg: string }[] = [];
    for (const p of GUEST_PROGRAMS) {
      const file = await resolveInRoot(extracted.get(p.pkg)!.root, p.path);
      if (!file) throw new NotFoundError(`${p.path} in package`, p.pkg);
      tree.file(p.path, await readFile(file), 0o755);
      programs.push({ file, pkg: p.pkg });
    }
    const used = await addLibraries(runner, tree, programs, extracted, fetch, progress);

    // Guest scripts.
    for (const [dest, src] of Object.entries(GUEST_SCRIPTS)) {
      tree.file(dest, await readFile(new URL(`./${src}`, import.meta.url)), 0o755);
    }
    // Every package apt resolved up front, plus those fetched only for a library that ended up in the image.
    const packages = [
      ...wanted.packages,
      ...[...extracted.values()]
        .map((e) => e.pkg)
        .filter((p) => used.has(p.name) && !wanted.packages.includes(p)),
    ];
    tree.file(
      'etc/vmlink/release',
      `${JSON.stringify({ kernelRelease, packages, contentSha256: content }, null, 1)}\n`,
    );

    const cpio = tree.toCpio();
    const initrd = gzipSync(cpio, { level: 9 });
    const vmlinuz = await readFile(join(kroot, 'boot', `vmlinuz-${kernelRelease}`));
    progress(
      `writing initramfs ${mib(initrd.length)} MiB (${mib(cpio.length)} MiB uncompressed), kernel ${mib(vmlinuz.length)} MiB`,
    );

    await mkdir(outDir, { recursive: true, mode: 0o755 });
    await chmod(outDir, 0o755);
    const manifest: GuestManifest = {
      format: BUILD_FORMAT,
      contentSha256: content,
      kernelRelease,
      kernelPackage: wanted.kernelPackage,
      packages,
      modules,
      builtAt: new Date().toISOString(),
      buildMs: 0,
      files: {
        vmlinuz: { sha256: sha256(vmlinuz), size: vmlinuz.length },
        'initrd.img': { sha256: sha256(initrd), size: initrd.length },
      },
    };
    await writeAtomic(join(outDir, 'vmlinuz'), vmlinuz);
    await writeAtomic(join(outDir, 'initrd.img'), initrd);
    manifest.buildMs = Date.now() - started;
    await writeAtomic(join(outDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    progress(`test guest built in ${((Date.now() - started) / 1000).toFixed(1)} s: ${outDir}`);
    return manifest;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Fetches one exact package version into the cache unless it is there already; returns the .deb path. */
async function download(
  runner: Runner,
  cacheDir: string,
  p: GuestPackage,
  progress: (l: string) => void,
): Promise<string> {
  const find = async () => {
    for (const f of await readdir(cacheDir)) {
      const [name, version] = f.split('_');
      if (f.endsWith('.deb') && name === p.name && version?.replace(/%3a/gi, ':') === p.version)
        return join(cacheDir, f);
    }
    return undefined;
  };
  const cached = await find();
  if (cached) return cached;
  progress(`downloading ${p.name} ${p.version}`);
  await runner.run(['apt-get', 'download', '-q', '-o', 'APT::Sandbox::User=root', `${p.name}=${p.version}`], {
    cwd: cacheDir,
    timeoutMs: 600_000,
  });
  const got = await find();
  if (!got)
    throw new VmlinkError('internal', `apt-get download ${p.name}=${p.version} left no .deb in ${cacheDir}`);
  return got;
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
async function addLibraries(
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

async function resolveInRoot(root: string, rel: string): Promise<string | undefined> {
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

/** An output file, replaced atomically and readable by all whatever the builder's umask (whoever boots it reads it). */
async function writeAtomic(path: string, data: Buffer | string): Promise<void> {
  await writeFileAtomic(path, data, { mode: 0o644 });
  await chmod(path, 0o644);
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function mib(n: number): string {
  return (n / 1048576).toFixed(1);
}
