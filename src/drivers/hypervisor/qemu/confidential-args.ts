// QEMU's objects and machine options of a confidential VM (AMD SEV, SEV-SNP, Intel TDX): pure, golden-tested.
import { UnsupportedError } from '../../../shared/errors.js';
import type { ConfidentialKind } from '../../../shared/model.js';

/** What the host gives a confidential VM's launch: its firmware and, for SEV, the C-bit parameters from CPUID. */
export interface ConfidentialLaunch {
  /** UEFI firmware (OVMF build) for the kind: confidential guests cannot boot through SeaBIOS. */
  firmware?: string;
  cbitpos?: number;
  reducedPhysBits?: number;
}

/** The id of the confidential-guest-support object (one per VM). */
export const CGS_ID = 'cgs0';

/**
 * The machine suffix and extra arguments of a `kind` VM. KVM is required (a TCG guest's memory is the host's to
 * read); SEV and SEV-SNP need the host's C-bit position and reduced physical bits, which QEMU checks against CPUID.
 * `kernel-hashes=on` lets direct kernel boot (the test guest) be measured by the SEV firmware.
 */
export function confidentialArgs(
  kind: ConfidentialKind,
  accel: 'kvm' | 'tcg',
  launch: ConfidentialLaunch | undefined,
): { machine: string; args: string[] } {
  if (accel !== 'kvm')
    throw new UnsupportedError(`a ${kind} confidential VM needs KVM; this host runs VMs under TCG`);
  if (!launch?.firmware)
    throw new UnsupportedError(`a ${kind} confidential VM needs UEFI firmware with ${kind} support (OVMF)`);
  const bios = ['-bios', launch.firmware];
  if (kind === 'tdx')
    return {
      // TDX requires the split irqchip (KVM enforces KVM_IRQCHIP_SPLIT for TDs).
      machine: `,kernel-irqchip=split,confidential-guest-support=${CGS_ID}`,
      args: ['-object', `tdx-guest,id=${CGS_ID}`, ...bios],
    };
  if (launch.cbitpos === undefined || launch.reducedPhysBits === undefined)
    throw new UnsupportedError(
      `a ${kind} confidential VM needs the host's C-bit position (CPUID 0x8000001F)`,
    );
  const type = kind === 'sev' ? 'sev-guest' : 'sev-snp-guest';
  return {
    machine: `,confidential-guest-support=${CGS_ID}`,
    args: [
      '-object',
      `${type},id=${CGS_ID},cbitpos=${launch.cbitpos},reduced-phys-bits=${launch.reducedPhysBits},kernel-hashes=on`,
      ...bios,
    ],
  };
}
