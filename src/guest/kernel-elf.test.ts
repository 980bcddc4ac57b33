import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { SystemRunner } from '../exec/runner.js';
import { bzImagePayload, hasPvhEntry, pvhKernelFrom } from './kernel-elf.js';

/** A minimal 64-bit ELF with one PT_NOTE segment holding a note (name, type). */
function elfWithNote(name: string, type: number): Buffer {
  const nameBytes = Buffer.from(`${name}\0`);
  const namePad = (nameBytes.length + 3) & ~3;
  const note = Buffer.alloc(12 + namePad + 4);
  note.writeUInt32LE(nameBytes.length, 0);
  note.writeUInt32LE(4, 4);
  note.writeUInt32LE(type, 8);
  nameBytes.copy(note, 12);
  const elf = Buffer.alloc(64 + 56 + note.length);
  elf.writeUInt32BE(0x7f454c46, 0);
  elf[4] = 2; // 64-bit
  elf[5] = 1; // little-endian
  elf.writeBigUInt64LE(64n, 0x20); // e_phoff
  elf.writeUInt16LE(56, 0x36); // e_phentsize
  elf.writeUInt16LE(1, 0x38); // e_phnum
  elf.writeUInt32LE(4, 64); // PT_NOTE
  elf.writeBigUInt64LE(120n, 64 + 8); // p_offset
  elf.writeBigUInt64LE(BigInt(note.length), 64 + 32); // p_filesz
  note.copy(elf, 120);
  return elf;
}

/** A bzImage-shaped buffer (protocol 2.15) whose payload is `payload`, followed by a trailer. */
function bzImage(payload: Buffer): Buffer {
  const setupSects = 3;
  const pmStart = (setupSects + 1) * 512;
  const payloadOffset = 100;
  const bz = Buffer.alloc(pmStart + payloadOffset + payload.length + 64, 0xcc);
  bz[0x1f1] = setupSects;
  bz.write('HdrS', 0x202, 'latin1');
  bz.writeUInt16LE(0x20f, 0x206);
  bz.writeUInt32LE(payloadOffset, 0x248);
  bz.writeUInt32LE(payload.length, 0x24c);
  payload.copy(bz, pmStart + payloadOffset);
  return bz;
}

/** Kbuild's size_append: the decompressed size, 4 bytes little-endian, after an xz or zstd stream. */
function withSize(packed: Buffer, size: number): Buffer {
  const s = Buffer.alloc(4);
  s.writeUInt32LE(size);
  return Buffer.concat([packed, s]);
}

const dirs: string[] = [];
const work = () => {
  const d = mkdtempSync(join(tmpdir(), 'vmlink-kelf-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('the test guest kernel as a PVH ELF', () => {
  const pvhElf = elfWithNote('Xen', 18);

  it('finds the payload by the boot header and refuses what is not a bzImage of protocol 2.08+', () => {
    const payload = Buffer.from('payload bytes');
    expect(bzImagePayload(bzImage(payload))).toEqual(payload);
    expect(bzImagePayload(Buffer.alloc(4096))).toBeUndefined();
    const old = bzImage(payload);
    old.writeUInt16LE(0x207, 0x206);
    expect(bzImagePayload(old)).toBeUndefined();
    const past = bzImage(payload);
    past.writeUInt32LE(1 << 30, 0x24c);
    expect(bzImagePayload(past)).toBeUndefined();
  });

  it('knows a PVH entry note from other Xen notes and from no ELF at all', () => {
    expect(hasPvhEntry(pvhElf)).toBe(true);
    expect(hasPvhEntry(elfWithNote('Xen', 5))).toBe(false);
    expect(hasPvhEntry(elfWithNote('GNU', 18))).toBe(false);
    expect(
      hasPvhEntry(Buffer.from('MZ not an elf at all, padded out to sixty-four bytes or more ........')),
    ).toBe(false);
  });

  it('decompresses gzip in process and xz with the real xz, checking the size Kbuild appends', async () => {
    const runner = new SystemRunner();
    const gz = await pvhKernelFrom(bzImage(gzipSync(pvhElf)), runner, work());
    expect(gz).toEqual({ elf: pvhElf });
    const xzd = execFileSync('xz', ['--format=xz', '--check=crc32', '--stdout'], { input: pvhElf });
    const xz = await pvhKernelFrom(bzImage(withSize(xzd, pvhElf.length)), runner, work());
    expect(xz).toEqual({ elf: pvhElf });
    const lying = await pvhKernelFrom(bzImage(withSize(xzd, pvhElf.length + 1)), runner, work());
    expect(lying).toEqual({ reason: expect.stringMatching(/came out, the payload says/) });
  });

  it('says why when there is no PVH kernel: no entry note, an unknown compression', async () => {
    const runner = new SystemRunner();
    const noEntry = await pvhKernelFrom(bzImage(gzipSync(elfWithNote('Xen', 5))), runner, work());
    expect(noEntry).toEqual({ reason: 'the kernel has no PVH entry (CONFIG_PVH)' });
    const lz4 = await pvhKernelFrom(bzImage(Buffer.from('02214c18aaaaaaaa', 'hex')), runner, work());
    expect(lz4).toEqual({ reason: expect.stringMatching(/magic 02214c18aaaa is not supported/) });
    expect(await pvhKernelFrom(Buffer.alloc(100), runner, work())).toEqual({
      reason: 'not a bzImage of boot protocol 2.08 or later',
    });
  });
});
