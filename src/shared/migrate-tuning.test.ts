import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { benchTuning, MIGRATION_TUNING_ENV } from './migrate-tuning.js';

let dir = '';
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function file(text: string): string {
  dir = mkdtempSync(join(tmpdir(), 'vmlink-gap-tuning-'));
  const f = join(dir, 'tuning.json');
  writeFileSync(f, text);
  return f;
}

describe('benchTuning', () => {
  it('reads nothing outside the bench (no env)', async () => {
    expect(await benchTuning({})).toBeUndefined();
  });

  it("reads the bench's variant for this migration", async () => {
    const f = file(JSON.stringify({ variant: 'nice', vcpuNice: -5, maxBandwidthMiB: 256 }));
    expect(await benchTuning({ [MIGRATION_TUNING_ENV]: f })).toEqual({
      variant: 'nice',
      vcpuNice: -5,
      maxBandwidthMiB: 256,
    });
  });

  it('refuses an unknown knob, a value out of range and a link, naming the file', async () => {
    const f = file(JSON.stringify({ variant: 'x', turbo: true }));
    await expect(benchTuning({ [MIGRATION_TUNING_ENV]: f })).rejects.toThrow(/tuning\.json.*turbo/);
    writeFileSync(f, JSON.stringify({ variant: 'x', vcpuNice: -20 }));
    await expect(benchTuning({ [MIGRATION_TUNING_ENV]: f })).rejects.toThrow(/vcpuNice/);
    const link = join(dir, 'link.json');
    symlinkSync(f, link);
    await expect(benchTuning({ [MIGRATION_TUNING_ENV]: link })).rejects.toThrow(/symbolic link/);
  });
});
