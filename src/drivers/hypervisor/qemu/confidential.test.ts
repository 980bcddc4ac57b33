import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CPUID_SEV_LEAF, detectConfidential, launchFor, parseQemuVersion } from './confidential.js';

const roots: string[] = [];
afterEach(async () => {
  for (const r of roots.splice(0)) await rm(r, { recursive: true, force: true });
});

/** A fake root with `files` (path -> content); `cpuid` writes EBX of leaf 0x8000001F into dev/cpu/0/cpuid. */
async function fixture(files: Record<string, string>, cpuidEbx?: number): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'vmlink-cvm-'));
  roots.push(root);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
  if (cpuidEbx !== undefined) {
    await mkdir(join(root, 'dev/cpu/0'), { recursive: true });
    const fh = await open(join(root, 'dev/cpu/0/cpuid'), 'w');
    const leaf = Buffer.alloc(16);
    leaf.writeUInt32LE(cpuidEbx, 4);
    await fh.write(leaf, 0, 16, CPUID_SEV_LEAF); // sparse: the cpuid device is read at offset = leaf
    await fh.close();
  }
  return root;
}

const QEMU_10_1 = 'QEMU emulator version 10.1.0 (Debian 1:10.1+ds-1)\n';
const QEMU_7_2 = 'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n';
const amdFlags = 'processor\t: 0\nflags\t\t: fpu vme sse2 svm sev sev_es sev_snp\n';
const amdHost = {
  'proc/cpuinfo': amdFlags,
  'sys/module/kvm_amd/parameters/sev': 'Y\n',
  'sys/module/kvm_amd/parameters/sev_es': 'Y\n',
  'sys/module/kvm_amd/parameters/sev_snp': 'Y\n',
  'dev/sev': '',
  'dev/kvm': '',
  'usr/share/ovmf/OVMF.amdsev.fd': 'fw',
};
// C-bit 51, 1 reduced physical bit: EBX = 51 | 1 << 6.
const EBX = 51 | (1 << 6);

describe('detectConfidential (fixture roots)', () => {
  it('an AMD host with SEV-SNP, its C-bit and firmware, and a new QEMU offers sev and sev-snp', async () => {
    const root = await fixture(amdHost, EBX);
    const r = await detectConfidential({ root, qemuVersionText: QEMU_10_1 });
    expect(r.sev.available).toBe(true);
    expect(r['sev-snp'].available).toBe(true);
    expect(r.tdx).toEqual({
      available: false,
      reason: 'the CPU has no tdx_host_platform flag in /proc/cpuinfo',
    });
    expect(r).toMatchObject({ cbitpos: 51, reducedPhysBits: 1 });
    expect(launchFor(r, 'sev-snp')).toEqual({
      firmware: '/usr/share/ovmf/OVMF.amdsev.fd',
      cbitpos: 51,
      reducedPhysBits: 1,
    });
  });

  it('names the missing piece: QEMU too old for SNP, module parameter off, /dev/sev, C-bit, firmware', async () => {
    const old = await detectConfidential({ root: await fixture(amdHost, EBX), qemuVersionText: QEMU_7_2 });
    expect(old.sev.available).toBe(true);
    expect(old['sev-snp'].reason).toBe('QEMU 7.2 is too old: sev-snp needs QEMU 9.1 or newer');

    const off = await fixture({ ...amdHost, 'sys/module/kvm_amd/parameters/sev_snp': 'N\n' }, EBX);
    expect((await detectConfidential({ root: off, qemuVersionText: QEMU_10_1 }))['sev-snp'].reason).toMatch(
      /kvm_amd has sev_snp off/,
    );

    const { 'dev/sev': _, ...noDev } = amdHost;
    expect(
      (await detectConfidential({ root: await fixture(noDev, EBX), qemuVersionText: QEMU_10_1 })).sev.reason,
    ).toMatch(/no \/dev\/sev/);
    expect(
      (await detectConfidential({ root: await fixture(amdHost), qemuVersionText: QEMU_10_1 })).sev.reason,
    ).toMatch(/modprobe cpuid/);
    const { 'usr/share/ovmf/OVMF.amdsev.fd': __, ...noFw } = amdHost;
    const r = await detectConfidential({ root: await fixture(noFw, EBX), qemuVersionText: QEMU_10_1 });
    expect(r['sev-snp'].reason).toMatch(/no sev-snp firmware/);
    expect(r.sev.available).toBe(false);
  });

  it('an Intel TDX host with QEMU 10.1 offers tdx; without the kvm_intel parameter it says so', async () => {
    const tdx = {
      'proc/cpuinfo': 'flags\t\t: fpu vmx tdx_host_platform\n',
      'sys/module/kvm_intel/parameters/tdx': 'Y\n',
      'dev/kvm': '',
      'usr/share/ovmf/OVMF.inteltdx.fd': 'fw',
    };
    const r = await detectConfidential({ root: await fixture(tdx), qemuVersionText: QEMU_10_1 });
    expect(r.tdx.available).toBe(true);
    expect(r.sev.reason).toMatch(/no sev flag/);
    const { 'sys/module/kvm_intel/parameters/tdx': _, ...noParam } = tdx;
    const n = await detectConfidential({ root: await fixture(noParam), qemuVersionText: QEMU_10_1 });
    expect(n.tdx.reason).toMatch(/kvm_intel is not loaded/);
    const old = await detectConfidential({
      root: await fixture(tdx),
      qemuVersionText: 'QEMU emulator version 9.2.0',
    });
    expect(old.tdx.reason).toBe('QEMU 9.2 is too old: tdx needs QEMU 10.1 or newer');
  });

  it('a host without KVM offers nothing, and says why', async () => {
    const r = await detectConfidential({
      root: await fixture({ 'proc/cpuinfo': amdFlags }),
      qemuVersionText: QEMU_10_1,
    });
    for (const k of ['sev', 'sev-snp', 'tdx'] as const)
      expect(r[k]).toEqual({ available: false, reason: 'no /dev/kvm (confidential VMs need KVM)' });
  });

  it('parses QEMU versions', () => {
    expect(parseQemuVersion(QEMU_7_2)).toEqual([7, 2]);
    expect(parseQemuVersion('garbage')).toBeUndefined();
  });
});
