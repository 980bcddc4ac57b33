// The test guest's kernel as an uncompressed ELF with a PVH entry point, taken out of Debian's bzImage: QEMU boots
// such an ELF directly (`-kernel vmlinux`, PVH boot), skipping the bzImage's own decompressor. Under TCG that
// decompressor (XZ, ~66 MiB of output run as emulated code) is the largest part of a boot: 3-6 s of a 12-18 s boot
// on the development VM (2 Dec 2026, alternating boots, load 4-6). With KVM it costs ~0.3 s, so the gain is TCG's.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { Runner } from '../exec/runner.js';

/** The kernel ELF, or why there is none (the image then boots the bzImage, as before). */
export type PvhKernel = { elf: Buffer } | { reason: string };

/** Xen's ELF note type for the 32-bit PVH entry (XEN_ELFNOTE_PHYS32_ENTRY): QEMU boots an ELF only through it. */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;
/** Most bytes of a decompressed kernel taken (Debian's is ~66 MiB). */
const KERNEL_ELF_MAX_BYTES = 256 * 1024 * 1024;

/** Where the compressed kernel sits in a bzImage (boot protocol 2.08+: `payload_offset`/`payload_length`). */
export function bzImagePayload(bz: Buffer): Buffer | undefined {
  if (bz.length < 0x250 || bz.toString('latin1', 0x202, 0x206) !== 'HdrS') return undefined;
  if (bz.readUInt16LE(0x206) < 0x208) return undefined;
  const setupSects = bz[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + bz.readUInt32LE(0x248);
  const length = bz.readUInt32LE(0x24c);
  if (!length || start + length > bz.length) return undefined;
  return bz.subarray(start, start + length);
}

/** Whether `elf` is a 64-bit x86 ELF with a PVH entry note (read from its program headers' notes). */
export function hasPvhEntry(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length || elf.readUInt32LE(ph) !== 4 /* PT_NOTE */) continue;
    const off = Number(elf.readBigUInt64LE(ph + 8));
    const end = Math.min(elf.length, off + Number(elf.readBigUInt64LE(ph + 32)));
    for (let n = off; n + 12 <= end; ) {
      const namesz = elf.readUInt32LE(n);
      const descsz = elf.readUInt32LE(n + 4);
      const type = elf.readUInt32LE(n + 8);
      const name = elf.toString('latin1', n + 12, n + 12 + Math.max(0, namesz - 1));
      if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
      n += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

const align4 = (n: number) => (n + 3) & ~3;

/**
 * The kernel ELF inside bzImage `bz`, decompressed (gzip in process; xz and zstd with Debian's `xz` and `zstd`, in
 * `workDir`), if it has a PVH entry; otherwise why not.
 */
export async function pvhKernelFrom(bz: Buffer, runner: Runner, workDir: string): Promise<PvhKernel> {
  const payload = bzImagePayload(bz);
  if (!payload) return { reason: 'not a bzImage of boot protocol 2.08 or later' };
  let elf: Buffer;
  try {
    elf = await decompress(payload, runner, workDir);
  } catch (e) {
    return { reason: `its payload could not be decompressed: ${(e as Error).message}` };
  }
  if (!hasPvhEntry(elf)) return { reason: 'the kernel has no PVH entry (CONFIG_PVH)' };
  return { elf };
}

async function decompress(payload: Buffer, runner: Runner, workDir: string): Promise<Buffer> {
  const magic = payload.subarray(0, 6).toString('hex');
  if (magic.startsWith('1f8b')) return gunzipSync(payload, { maxOutputLength: KERNEL_ELF_MAX_BYTES });
  const tool = magic === 'fd377a585a00' ? 'xz' : magic.startsWith('28b52ffd') ? 'zstd' : undefined;
  if (!tool) throw new Error(`compression with magic ${magic} is not supported (gzip, xz and zstd are)`);
  // Kbuild appends the decompressed size (4 bytes, little-endian) to an xz or zstd payload: cut it off, check it.
  const size = payload.readUInt32LE(payload.length - 4);
  if (size > KERNEL_ELF_MAX_BYTES) throw new Error(`it says it holds ${size} bytes`);
  const packed = join(workDir, `kernel.${tool === 'xz' ? 'xz' : 'zst'}`);
  await writeFile(packed, payload.subarray(0, payload.length - 4));
  const out = join(workDir, 'kernel');
  await runner.run(
    tool === 'xz'
      ? ['xz', '--decompress', '--keep', '--force', packed]
      : ['zstd', '--decompress', '--quiet', '--force', '-o', out, packed],
    { timeoutMs: 120_000 },
  );
  const elf = await readFile(out);
  if (elf.length !== size) throw new Error(`${elf.length} bytes came out, the payload says ${size}`);
  return elf;
}
