import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { testGuestKernel } from './vm-image.js';

const roots: string[] = [];
afterAll(async () => {
  for (const r of roots) await rm(r, { recursive: true, force: true });
});

describe('testGuestKernel', () => {
  it("boots the image's PVH ELF where it has one, else its bzImage (an image built before it)", async () => {
    const images = await mkdtemp(join(tmpdir(), 'vmlink-images-'));
    roots.push(images);
    await mkdir(join(images, 'test-guest'));
    await writeFile(join(images, 'test-guest', 'vmlinuz'), 'bz');
    expect(await testGuestKernel(images)).toBe(join(images, 'test-guest', 'vmlinuz'));
    await mkdir(join(images, 'test-guest', 'vmlinux'));
    expect(await testGuestKernel(images), 'a directory is not a kernel').toBe(
      join(images, 'test-guest', 'vmlinuz'),
    );
    await rm(join(images, 'test-guest', 'vmlinux'), { recursive: true });
    await writeFile(join(images, 'test-guest', 'vmlinux'), 'elf');
    expect(await testGuestKernel(images)).toBe(join(images, 'test-guest', 'vmlinux'));
  });
});
