import { describe, expect, it } from 'vitest';
import { memoryArg, TCG_RAM_PAD_KIB } from './tcg-ram.js';

describe('memoryArg', () => {
  it('pads TCG RAM off a multiple of 256 KiB (QEMU then syncs dirty pages one by one, resetting the TLB)', () => {
    const arg = memoryArg(256, 'tcg', false);
    expect(arg).toBe('262152k');
    const kib = Number.parseInt(arg, 10);
    expect(kib % 256).not.toBe(0);
    expect(kib % 8).toBe(0); // QEMU rounds RAM to 8 KiB: the pad survives as given
    expect(kib - 256 * 1024).toBe(TCG_RAM_PAD_KIB);
  });

  it('leaves KVM guests and huge-page RAM (sized in whole huge pages) as given', () => {
    expect(memoryArg(256, 'kvm', false)).toBe('256');
    expect(memoryArg(1024, 'tcg', true)).toBe('1024');
  });
});
