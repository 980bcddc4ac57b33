// The Debian packages the test guest is made of: which ones (kernel, busybox, qemu-ga and its dependencies, the guest
// programs), the versions apt picks now, and their .deb files fetched into a cache.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../exec/runner.js';
import { NotFoundError, VmlinkError } from '../shared/errors.js';

/** The guest agent's package. */
export const QGA_PACKAGE = 'qemu-guest-agent';
/** busybox, statically linked: the guest's shell and tools. */
export const BUSYBOX_PACKAGE = 'busybox-static';
/** The metapackage naming the current kernel package. */
export const KERNEL_META = 'linux-image-amd64';

/**
 * Dynamically linked programs copied from Debian packages, with their shared libraries: path in the package ->
 * path in the image. iputils ping replaces busybox's (don't-fragment pings, `-M do`, for path-MTU checks);
 * iperf3 measures throughput (started on demand through guest-exec, never at boot).
 */
export const GUEST_PROGRAMS = [
  { pkg: QGA_PACKAGE, path: 'usr/sbin/qemu-ga' },
  { pkg: 'iputils-ping', path: 'bin/ping' },
  { pkg: 'iperf3', path: 'usr/bin/iperf3' },
] as const;
/** Packages fetched up front besides kernel, busybox, qemu-ga (+ its Depends) and the programs' packages. */
export const EXTRA_PACKAGES = ['libiperf0'] as const;

/** A Debian package the image was built from. */
export interface GuestPackage {
  name: string;
  version: string;
}

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

/** `apt-cache depends` of `pkgs`: their direct Depends. */
export async function aptDepends(runner: Runner, pkgs: string[]): Promise<Map<string, string[]>> {
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

/** apt's candidate version of each of `names`; `NotFoundError` for one without. */
export async function candidates(runner: Runner, names: readonly string[]): Promise<Map<string, string>> {
  const { stdout } = await runner.run(['apt-cache', 'policy', ...new Set(names)]);
  const got = parseAptPolicy(stdout);
  for (const n of names) {
    if (!got.has(n)) throw new NotFoundError('Debian package', n);
  }
  return got;
}

/** The packages an image is built from, as apt would pick them now. */
export interface Wanted {
  kernelPackage: string;
  /** Packages and the versions apt picks now: kernel, busybox, qemu-ga and its direct dependencies, programs. */
  packages: GuestPackage[];
  /** Candidate versions of every package asked about (including `also`). */
  versions: Map<string, string>;
}

/** Resolves the packages and the versions apt would pick now; `also` are more packages to look up. */
export async function resolvePackages(runner: Runner, also: string[] = []): Promise<Wanted> {
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

/** Fetches one exact package version into the cache unless it is there already; returns the .deb path. */
export async function download(
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
