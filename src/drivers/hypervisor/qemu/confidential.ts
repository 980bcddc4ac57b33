// Whether this host can launch confidential VMs: the CPU (flags, CPUID), KVM's module parameters, /dev/sev, the
// firmware and the QEMU version. Reads under a root directory so tests run it against fixture trees.
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  ConfidentialCapabilities,
  ConfidentialKind,
  ConfidentialSupport,
} from '../../../shared/model.js';
import type { ConfidentialLaunch } from './confidential-args.js';

/** The oldest QEMU that launches each kind (sev-guest with confidential-guest-support; sev-snp-guest; tdx-guest). */
export const QEMU_MIN_VERSION: Record<ConfidentialKind, readonly [number, number]> = {
  sev: [7, 2],
  'sev-snp': [9, 1],
  tdx: [10, 1],
};

/** OVMF builds each kind boots from, in order of preference (the distributions' names under /usr/share). */
export const FIRMWARE_CANDIDATES: Record<ConfidentialKind, readonly string[]> = {
  sev: ['/usr/share/ovmf/OVMF.amdsev.fd', '/usr/share/OVMF/OVMF.amdsev.fd', '/usr/share/ovmf/OVMF.fd'],
  'sev-snp': ['/usr/share/ovmf/OVMF.amdsev.fd', '/usr/share/OVMF/OVMF.amdsev.fd'],
  tdx: ['/usr/share/ovmf/OVMF.inteltdx.fd', '/usr/share/OVMF/OVMF.inteltdx.fd'],
};

/** CPUID leaf of AMD's memory-encryption parameters: EBX[5:0] the C-bit, EBX[11:6] the reduced physical bits. */
export const CPUID_SEV_LEAF = 0x8000001f;

/** Where the detector looks, and what it knows of QEMU. */
export interface ConfidentialProbe {
  /** Root of /proc, /sys, /dev and /usr (default `/`); tests pass a fixture tree. */
  root?: string;
  /** `qemu-system-x86_64 --version` output, or undefined when QEMU did not answer. */
  qemuVersionText: string | undefined;
}

/** What the host offers, and what a launch needs (firmware per kind, C-bit). */
export interface ConfidentialHost extends ConfidentialCapabilities {
  firmware: Partial<Record<ConfidentialKind, string>>;
}

/** The major and minor version of `QEMU emulator version X.Y.Z ...`, or undefined. */
export function parseQemuVersion(text: string | undefined): [number, number] | undefined {
  const m = /version (\d+)\.(\d+)/.exec(text ?? '');
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

const at = (root: string, path: string) => join(root, path);

async function readSmall(path: string): Promise<string | undefined> {
  return readFile(path, 'utf8').then(
    (s) => s.slice(0, 1 << 20),
    () => undefined,
  );
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

/** A kvm module parameter: Y/1 on, N/0 off, undefined when the module or parameter is absent. */
async function moduleParam(root: string, module: string, param: string): Promise<boolean | undefined> {
  const v = (await readSmall(at(root, `/sys/module/${module}/parameters/${param}`)))?.trim();
  return v === undefined ? undefined : v === 'Y' || v === '1';
}

/** The CPU flags of the first processor in /proc/cpuinfo. */
async function cpuFlags(root: string): Promise<Set<string>> {
  const info = (await readSmall(at(root, '/proc/cpuinfo'))) ?? '';
  const line = info.split('\n').find((l) => /^flags\s*:/.test(l));
  return new Set(
    line
      ? line
          .replace(/^flags\s*:/, '')
          .trim()
          .split(/\s+/)
      : [],
  );
}

/** C-bit and reduced physical bits from the cpuid device (`modprobe cpuid`), or undefined. */
export async function sevCbit(
  root: string,
): Promise<{ cbitpos: number; reducedPhysBits: number } | undefined> {
  const fh = await open(at(root, '/dev/cpu/0/cpuid'), 'r').catch(() => undefined);
  if (!fh) return undefined;
  try {
    const buf = Buffer.alloc(16);
    // The cpuid device answers a read at offset LEAF with EAX, EBX, ECX, EDX of that leaf.
    const { bytesRead } = await fh.read(buf, 0, 16, CPUID_SEV_LEAF);
    if (bytesRead < 8) return undefined;
    const ebx = buf.readUInt32LE(4);
    const cbitpos = ebx & 0x3f;
    return cbitpos ? { cbitpos, reducedPhysBits: (ebx >> 6) & 0x3f } : undefined;
  } finally {
    await fh.close();
  }
}

const atLeast = (v: [number, number], min: readonly [number, number]) =>
  v[0] > min[0] || (v[0] === min[0] && v[1] >= min[1]);

async function firstExisting(root: string, paths: readonly string[]): Promise<string | undefined> {
  for (const p of paths) if (await exists(at(root, p))) return p;
  return undefined;
}

/**
 * What this host can launch, kind by kind, each with the first missing piece in words: the CPU flag, KVM's module
 * parameter, /dev/sev (SEV), the C-bit (SEV), the firmware, then the QEMU version.
 */
export async function detectConfidential(probe: ConfidentialProbe): Promise<ConfidentialHost> {
  const root = probe.root ?? '/';
  const flags = await cpuFlags(root);
  const qemu = parseQemuVersion(probe.qemuVersionText);
  const kvm = await exists(at(root, '/dev/kvm'));
  const devSev = await exists(at(root, '/dev/sev'));
  const cbit = flags.has('sev') ? await sevCbit(root) : undefined;
  const firmware: ConfidentialHost['firmware'] = {};

  const judge = async (
    kind: ConfidentialKind,
    cpu: { flag: string; module: string; param: string },
  ): Promise<ConfidentialSupport> => {
    const no = (reason: string): ConfidentialSupport => ({ available: false, reason });
    if (!kvm) return no('no /dev/kvm (confidential VMs need KVM)');
    if (!flags.has(cpu.flag)) return no(`the CPU has no ${cpu.flag} flag in /proc/cpuinfo`);
    const param = await moduleParam(root, cpu.module, cpu.param);
    if (param === undefined)
      return no(`${cpu.module} is not loaded (no /sys/module/${cpu.module}/parameters/${cpu.param})`);
    if (!param)
      return no(`${cpu.module} has ${cpu.param} off (load it with ${cpu.param}=1; check the BIOS setting)`);
    if (kind !== 'tdx') {
      if (!devSev) return no('no /dev/sev (the ccp driver and the SEV firmware are not up)');
      if (!cbit)
        return no(
          'the C-bit position is unknown: load the cpuid module (modprobe cpuid) so CPUID 0x8000001F can be read',
        );
    }
    const fw = await firstExisting(root, FIRMWARE_CANDIDATES[kind]);
    if (!fw) return no(`no ${kind} firmware (one of ${FIRMWARE_CANDIDATES[kind].join(', ')}; install ovmf)`);
    const min = QEMU_MIN_VERSION[kind];
    if (!qemu) return no('the QEMU version is unknown (qemu-system-x86_64 --version did not answer)');
    if (!atLeast(qemu, min))
      return no(`QEMU ${qemu.join('.')} is too old: ${kind} needs QEMU ${min.join('.')} or newer`);
    firmware[kind] = fw;
    return {
      available: true,
      reason: `${cpu.flag}, ${cpu.module} ${cpu.param}=Y, QEMU ${qemu.join('.')}, ${fw}`,
    };
  };

  const sev = await judge('sev', { flag: 'sev', module: 'kvm_amd', param: 'sev' });
  const snp = await judge('sev-snp', { flag: 'sev_snp', module: 'kvm_amd', param: 'sev_snp' });
  // TDX hosts show tdx_host_platform once the TDX module is initialised.
  const tdx = await judge('tdx', { flag: 'tdx_host_platform', module: 'kvm_intel', param: 'tdx' });
  return {
    sev,
    'sev-snp': snp,
    tdx,
    firmware,
    ...(cbit ? { cbitpos: cbit.cbitpos, reducedPhysBits: cbit.reducedPhysBits } : {}),
  };
}

/** What the command line of a `kind` VM needs of host `h`. */
export function launchFor(h: ConfidentialHost | undefined, kind: ConfidentialKind): ConfidentialLaunch {
  return {
    ...(h?.firmware[kind] ? { firmware: h.firmware[kind] } : {}),
    ...(h?.cbitpos === undefined ? {} : { cbitpos: h.cbitpos, reducedPhysBits: h.reducedPhysBits ?? 0 }),
  };
}
