import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../exec/runner.js';
import { BUILD_FORMAT, ensureTestGuest, type GuestManifest, guestContentHash } from './build.js';
import { parseAptDepends, parseAptPolicy } from './packages.js';

const DEPENDS = `linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
qemu-guest-agent
  Depends: libc6
  Depends: libglib2.0-0
 |Depends: libfoo1
  Depends: <libvirtual>
  Depends: python3:any
`;

const POLICY = `linux-image-6.1.0-56-amd64:
  Installed: (none)
  Candidate: 6.1.192-2
  Version table:
     6.1.192-2 500
busybox-static:
  Installed: 1:1.35.0-4+deb12u1+b1
  Candidate: 1:1.35.0-4+deb12u1+b1
qemu-guest-agent:
  Installed: (none)
  Candidate: 1:7.2+dfsg-7+deb12u18+b3
libc6:
  Candidate: 2.36-9+deb12u14
libglib2.0-0:
  Candidate: 2.74.6-2+deb12u9
libfoo1:
  Candidate: 1.0
python3:
  Candidate: 3.11.2-1+b1
libpcre2-8-0:
  Candidate: 10.42-1+deb12u2
iputils-ping:
  Candidate: 3:20221126-1+deb12u1
iperf3:
  Candidate: 3.12-1+deb12u2
libiperf0:
  Candidate: 3.12-1+deb12u2
gone:
  Candidate: (none)
`;

describe('apt output parsers', () => {
  it('reads Depends per package', () => {
    const d = parseAptDepends(DEPENDS);
    expect(d.get('linux-image-amd64')).toEqual(['linux-image-6.1.0-56-amd64']);
    expect(d.get('qemu-guest-agent')).toEqual(['libc6', 'libglib2.0-0', 'libfoo1', 'python3']);
  });

  it('reads candidate versions, leaving out packages without one', () => {
    const p = parseAptPolicy(POLICY);
    expect(p.get('busybox-static')).toBe('1:1.35.0-4+deb12u1+b1');
    expect(p.get('linux-image-6.1.0-56-amd64')).toBe('6.1.192-2');
    expect(p.has('gone')).toBe(false);
  });
});

describe('ensureTestGuest cache check', () => {
  let dir: string;
  const runner = () =>
    new RecordingRunner()
      .on(['apt-cache', 'depends'], { stdout: DEPENDS })
      .on(['apt-cache', 'policy'], { stdout: POLICY });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-guest-test-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Writes a fake image whose manifest matches POLICY (with the given kernel version). */
  async function seed(version = '6.1.192-2'): Promise<GuestManifest> {
    const sha = (s: string) => createHash('sha256').update(s).digest('hex');
    await writeFile(join(dir, 'vmlinuz'), 'kernel');
    await writeFile(join(dir, 'initrd.img'), 'initrd');
    const m: GuestManifest = {
      format: BUILD_FORMAT,
      contentSha256: await guestContentHash(),
      kernelRelease: '6.1.0-56-amd64',
      kernelPackage: 'linux-image-6.1.0-56-amd64',
      packages: [
        { name: 'linux-image-6.1.0-56-amd64', version },
        { name: 'busybox-static', version: '1:1.35.0-4+deb12u1+b1' },
        { name: 'qemu-guest-agent', version: '1:7.2+dfsg-7+deb12u18+b3' },
        { name: 'libc6', version: '2.36-9+deb12u14' },
        { name: 'libglib2.0-0', version: '2.74.6-2+deb12u9' },
        { name: 'libfoo1', version: '1.0' },
        { name: 'python3', version: '3.11.2-1+b1' },
        { name: 'iputils-ping', version: '3:20221126-1+deb12u1' },
        { name: 'iperf3', version: '3.12-1+deb12u2' },
        { name: 'libiperf0', version: '3.12-1+deb12u2' },
        { name: 'libpcre2-8-0', version: '10.42-1+deb12u2' },
      ],
      modules: [],
      builtAt: '2026-01-01T00:00:00Z',
      buildMs: 1,
      files: {
        vmlinuz: { sha256: sha('kernel'), size: 6 },
        'initrd.img': { sha256: sha('initrd'), size: 6 },
      },
    };
    await writeFile(join(dir, 'manifest.json'), JSON.stringify(m));
    return m;
  }

  it('reuses an image whose packages are still the candidates, asking apt twice and nothing else', async () => {
    await seed();
    const r = runner();
    const lines: string[] = [];
    const g = await ensureTestGuest({
      runner: r,
      outDir: dir,
      cacheDir: dir,
      progress: (l) => lines.push(l),
    });
    expect(lines).toEqual(['test guest up to date']);
    expect(g.rebuilt).toBe(false);
    expect(g.kernel).toBe(join(dir, 'vmlinuz'));
    expect(r.calls.map((c) => c.argv.slice(0, 2).join(' '))).toEqual([
      'apt-cache depends',
      'apt-cache policy',
    ]);
    expect(r.calls[1]!.argv).toContain('libpcre2-8-0');
  });

  it('rebuilds when a package version changed or a file was altered', async () => {
    await seed('6.1.180-1');
    const r = runner();
    await expect(ensureTestGuest({ runner: r, outDir: dir, cacheDir: dir })).rejects.toThrow();
    expect(r.calls.some((c) => c.argv[0] === 'apt-get')).toBe(true);

    await seed();
    await writeFile(join(dir, 'initrd.img'), 'tampered');
    const r2 = runner();
    await expect(ensureTestGuest({ runner: r2, outDir: dir, cacheDir: dir })).rejects.toThrow();
    expect(r2.calls.some((c) => c.argv[0] === 'apt-get')).toBe(true);
    expect(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')).kernelPackage).toBe(
      'linux-image-6.1.0-56-amd64',
    );
  });
});
