import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecError, RecordingRunner, type RunOptions, SystemRunner } from '../../exec/runner.js';
import { DirStorage } from './dir.js';
import { FastLuksRunner } from './fast-luks.test-util.js';

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-dir-storage-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('DirStorage', () => {
  it('creates qcow2 volumes with qemu-img', async () => {
    const r = new RecordingRunner();
    const path = await new DirStorage(r).createVolume({ name: 'disk-data', dir, sizeMiB: 1024 });
    expect(path).toBe(`${dir}/disk-data.qcow2`);
    expect(r.lines()).toEqual([`qemu-img create -q -f qcow2 ${dir}/disk-data.qcow2 1024M`]);
  });

  it('makes a LUKS-encrypted volume with a real qemu-img, the key on stdin only', async () => {
    const key = Buffer.from('dir-test key').toString('base64');
    const path = await new DirStorage(new FastLuksRunner()).createVolume({
      name: 'disk-enc',
      dir,
      sizeMiB: 1,
      encryptionKeyBase64: key,
    });
    const info = JSON.parse(
      (await new SystemRunner().run(['qemu-img', 'info', '--output=json', path])).stdout,
    ) as unknown;
    expect(info).toMatchObject({
      encrypted: true,
      'format-specific': { data: { encrypt: { format: 'luks' } } },
    });
  }, 120_000); // qemu-img times the key derivation: over 1 s of CPU, far longer in wall time on a loaded machine

  it("tries an encrypted volume again when qemu-img could not time the key derivation, leaving no try's file", async () => {
    // qemu-img's PBKDF2 timing read 0 ms on a tick-based CPU clock: chance, so measured again; other errors are not.
    class FlakyQemuImg extends RecordingRunner {
      constructor(
        private failures: number,
        private readonly stderr: string,
      ) {
        super();
      }
      override async run(argv: readonly string[], opts: RunOptions = {}) {
        if (this.failures-- <= 0) return super.run(argv, opts);
        this.calls.push({ argv: [...argv] });
        await writeFile(`${dir}/disk-retry.qcow2`, 'half-made');
        throw new ExecError({ argv: [...argv], code: 1, stdout: '', stderr: this.stderr });
      }
    }
    const key = Buffer.from('k').toString('base64');
    const spec = { name: 'disk-retry', dir, sizeMiB: 1, encryptionKeyBase64: key };
    const timing = 'qemu-img: disk-retry.qcow2: Unable to get accurate CPU usage';
    const lucky = new FlakyQemuImg(2, timing);
    await new DirStorage(lucky).createVolume(spec);
    expect(lucky.calls).toHaveLength(3);
    expect(existsSync(`${dir}/disk-retry.qcow2`)).toBe(false); // the recorder made no file; the tries' files are gone
    const unlucky = new FlakyQemuImg(99, timing);
    await expect(new DirStorage(unlucky).createVolume(spec)).rejects.toThrow(/accurate CPU usage/);
    expect(unlucky.calls).toHaveLength(5);
    expect(existsSync(`${dir}/disk-retry.qcow2`)).toBe(false);
    const other = new FlakyQemuImg(1, 'qemu-img: Could not create: No space left on device');
    await expect(new DirStorage(other).createVolume(spec)).rejects.toThrow(/No space left/);
    expect(other.calls).toHaveLength(1);
    expect(existsSync(`${dir}/disk-retry.qcow2`)).toBe(false);
  });

  it('keeps an existing volume and gives it to its owner', async () => {
    await writeFile(`${dir}/disk-old.qcow2`, 'x');
    const r = new RecordingRunner();
    await new DirStorage(r).createVolume({ name: 'disk-old', dir, sizeMiB: 1, owner: { uid: 0, gid: 0 } });
    expect(r.calls).toEqual([]);
    expect((await stat(`${dir}/disk-old.qcow2`)).mode & 0o777).toBe(0o660);
  });

  it('creates overlays with the base format that qemu-img reports', async () => {
    await writeFile(`${dir}/base.img`, 'x');
    const r = new RecordingRunner().on(['qemu-img', 'info'], {
      stdout: '{"format": "raw", "virtual-size": 1}',
    });
    await new DirStorage(r).createOverlay({ name: 'root', dir, base: `${dir}/base.img` });
    expect(r.lines()[1]).toBe(`qemu-img create -q -f qcow2 -F raw -b ${dir}/base.img ${dir}/root.qcow2`);
  });

  it('refuses a missing base, an unsupported format, bad names and sizes', async () => {
    const s = new DirStorage(
      new RecordingRunner().on(['qemu-img', 'info'], { stdout: '{"format": "vmdk"}' }),
    );
    await expect(s.createOverlay({ name: 'root', dir, base: `${dir}/nope.qcow2` })).rejects.toThrow(
      /not found/,
    );
    await expect(s.createOverlay({ name: 'root2', dir, base: `${dir}/base.img` })).rejects.toThrow(
      /only qcow2 and raw/,
    );
    await expect(s.createVolume({ name: '../x', dir, sizeMiB: 1 })).rejects.toThrow(/must match/);
    await expect(s.createVolume({ name: 'x', dir, sizeMiB: 0 })).rejects.toThrow(/positive/);
  });

  it('deletes volumes; a missing one is fine', async () => {
    const s = new DirStorage(new RecordingRunner());
    await s.deleteVolume({ name: 'disk-old', dir });
    await s.deleteVolume({ name: 'disk-old', dir });
    await expect(stat(`${dir}/disk-old.qcow2`)).rejects.toThrow();
  });
});
