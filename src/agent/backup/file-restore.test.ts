// Partition tables read for a file restore (MBR primary partitions, GPT), and what is refused.
import { describe, expect, it } from 'vitest';
import { partitionRange } from './file-restore.js';

const MiB = 1024 * 1024;

function mbr(entries: Array<{ type: number; start: number; sectors: number }>): Buffer {
  const b = Buffer.alloc(MiB);
  entries.forEach((e, i) => {
    b.writeUInt8(e.type, 446 + 16 * i + 4);
    b.writeUInt32LE(e.start, 446 + 16 * i + 8);
    b.writeUInt32LE(e.sectors, 446 + 16 * i + 12);
  });
  b.writeUInt16LE(0xaa55, 510);
  return b;
}

function gpt(parts: Array<{ first: number; last: number }>): Buffer {
  const b = mbr([{ type: 0xee, start: 1, sectors: 0xffffffff }]);
  b.write('EFI PART', 512, 'latin1');
  b.writeBigUInt64LE(2n, 512 + 72);
  b.writeUInt32LE(128, 512 + 80);
  b.writeUInt32LE(128, 512 + 84);
  parts.forEach((p, i) => {
    const at = 1024 + 128 * i;
    b.fill(0xab, at, at + 16); // a type GUID
    b.writeBigUInt64LE(BigInt(p.first), at + 32);
    b.writeBigUInt64LE(BigInt(p.last), at + 40);
  });
  return b;
}

describe('partitionRange', () => {
  it('reads MBR primary partitions', () => {
    const head = mbr([
      { type: 0x83, start: 2048, sectors: 8192 },
      { type: 0x83, start: 10240, sectors: 2048 },
    ]);
    expect(partitionRange(head, 1, 64 * MiB)).toEqual({ offset: MiB, length: 4 * MiB });
    expect(partitionRange(head, 2, 64 * MiB)).toEqual({ offset: 5 * MiB, length: MiB });
    expect(() => partitionRange(head, 3, 64 * MiB)).toThrow(/partition "3" not found/);
    expect(() => partitionRange(head, 5, 64 * MiB)).toThrow(/logical/);
  });

  it('reads GPT partitions', () => {
    const head = gpt([{ first: 2048, last: 4095 }]);
    expect(partitionRange(head, 1, 64 * MiB)).toEqual({ offset: MiB, length: MiB });
    expect(() => partitionRange(head, 2, 64 * MiB)).toThrow(/not found/);
  });

  it('refuses a partition outside the disk, and a disk without a table', () => {
    expect(() => partitionRange(mbr([{ type: 0x83, start: 2048, sectors: 1 << 20 }]), 1, 64 * MiB)).toThrow(
      /outside the disk/,
    );
    expect(() => partitionRange(gpt([{ first: 0, last: 10 }]), 1, 64 * MiB)).toThrow(/outside the disk/);
    expect(() => partitionRange(Buffer.alloc(MiB), 1, 64 * MiB)).toThrow(/no partition table/);
  });
});
