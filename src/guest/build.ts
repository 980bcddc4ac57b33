// The test guest image (kernel + initramfs from Debian packages): whether the one on disk is current, and its build.
// Which packages and their .debs: packages.ts; the programs' shared libraries: libraries.ts; modules: modules.ts.
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Runner } from '../exec/runner.js';
import { NotFoundError, VmlinkError } from '../shared/errors.js';
import { writeFileAtomic } from '../shared/state-file.js';
import { FsTree } from './cpio.js';
import { pvhKernelFrom } from './kernel-elf.js';
import { addLibraries, type Extracted, resolveInRoot } from './libraries.js';
import { GUEST_MODULES, moduleLoadOrder, parseModulesBuiltin, parseModulesDep } from './modules.js';
import {
  BUSYBOX_PACKAGE,
  download,
  GUEST_PROGRAMS,
  type GuestPackage,
  resolvePackages,
  type Wanted,
} from './packages.js';

/** Where the test guest image lives by default. */
export const DEFAULT_GUEST_DIR = '/var/lib/vmlink/images/test-guest';
/** Where downloaded .deb files are kept between builds. */
export const DEFAULT_DEB_CACHE = '/var/cache/vmlink/debs';
/** Bumped whenever the builder changes what it puts in the image, so cached images get rebuilt. */
export const BUILD_FORMAT = 3;

/** Guest content shipped in the initramfs, beside this file: path in the image -> source file name. */
const GUEST_SCRIPTS = {
  init: 'init.sh',
  'etc/udhcpc.script': 'udhcpc.sh',
  'sbin/shutdown': 'shutdown.sh',
} as const;
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
  /** `vmlinux`: the kernel as a PVH-bootable ELF (kernel-elf.ts), present when the bzImage's kernel has a PVH entry. */
  files: Record<'vmlinuz' | 'initrd.img', { sha256: string; size: number }> &
    Partial<Record<'vmlinux', { sha256: string; size: number }>>;
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
  /** The bzImage. */
  kernel: string;
  /** What to boot: the PVH ELF `vmlinux` where the image has one, else `kernel`. */
  bootKernel: string;
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
    return { kernel, bootKernel: bootKernelOf(outDir, old), initrd, manifest: old, rebuilt: false };
  }
  const manifest = await build({ ...opts, outDir, progress }, wanted, content);
  return { kernel, bootKernel: bootKernelOf(outDir, manifest), initrd, manifest, rebuilt: true };
}

function bootKernelOf(outDir: string, m: GuestManifest): string {
  return join(outDir, m.files.vmlinux ? 'vmlinux' : 'vmlinuz');
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
  for (const f of ['vmlinuz', 'initrd.img', ...(m.files?.vmlinux ? (['vmlinux'] as const) : [])] as const) {
    try {
      if ((await sha256File(join(outDir, f))) !== m.files?.[f]?.sha256) return false;
    } catch {
      return false;
    }
  }
  return true;
}

// Build.

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
    const pvh = await pvhKernelFrom(vmlinuz, runner, work);
    progress(
      'elf' in pvh
        ? `kernel for PVH boot: ${mib(pvh.elf.length)} MiB`
        : `no PVH kernel (the bzImage boots, slower under TCG): ${pvh.reason}`,
    );
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
        ...('elf' in pvh ? { vmlinux: { sha256: sha256(pvh.elf), size: pvh.elf.length } } : {}),
      },
    };
    await writeAtomic(join(outDir, 'vmlinuz'), vmlinuz);
    if ('elf' in pvh) await writeAtomic(join(outDir, 'vmlinux'), pvh.elf);
    else await rm(join(outDir, 'vmlinux'), { force: true });
    await writeAtomic(join(outDir, 'initrd.img'), initrd);
    manifest.buildMs = Date.now() - started;
    await writeAtomic(join(outDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    progress(`test guest built in ${((Date.now() - started) / 1000).toFixed(1)} s: ${outDir}`);
    return manifest;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
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
