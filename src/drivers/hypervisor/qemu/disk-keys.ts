// Secrets of a VM's disks: which key opens which encrypted disk, which CHAP password logs in to which iSCSI LUN
// (from the secret values the controller sent with the step, held in memory only).
import { InvalidRequestError, InvalidStateError } from '../../../shared/errors.js';
import type { DiskConfig, VmConfig } from '../../../shared/model.js';
import type { SecretValues } from '../types.js';

/**
 * The base64 key of each encrypted disk (by its index in `cfg.disks`); refuses, naming disk and secret (never a
 * value), when the controller did not send one the disk needs.
 */
export function diskKeys(cfg: VmConfig, secrets: SecretValues | undefined): Map<number, string> {
  const byName = new Map((secrets ?? []).map((s) => [s.name, s.value]));
  const keys = new Map<number, string>();
  cfg.disks.forEach((d, i) => {
    if (!d.encryption) return;
    const key = byName.get(d.encryption.secret);
    if (key === undefined)
      throw new InvalidRequestError(
        `VM ${cfg.name}: disk ${d.name} is encrypted with secret ${d.encryption.secret}, whose value the controller did not send with this step`,
        `vm/${cfg.name}`,
      );
    keys.set(i, key);
  });
  return keys;
}

/** Refuses a config that changes the encryption of a disk that exists: LUKS keeps the key a disk was made with. */
export function assertEncryptionKept(old: VmConfig, cfg: VmConfig): void {
  for (const d of cfg.disks) {
    const was = old.disks.find((o) => o.name === d.name);
    if (was && was.encryption?.secret !== d.encryption?.secret)
      throw new InvalidStateError(
        `VM ${cfg.name}: disk ${d.name} exists ${was.encryption ? `encrypted with secret ${was.encryption.secret}` : 'unencrypted'}; encryption is fixed when a disk is made: give the disk a new name to get a new one`,
        `vm/${cfg.name}`,
      );
  }
}

/** The secret values one disk needs to open (base64): its LUKS key, its iSCSI CHAP password. */
export interface DiskSecrets {
  keyBase64?: string;
  chapBase64?: string;
}

/**
 * The secret values of `disk` (a `disks[]` entry or the root volume) from the step's `secrets`; refuses, naming the
 * disk and the secret (never a value), when one it needs was not sent.
 */
export function diskSecrets(
  vm: string,
  disk: Pick<DiskConfig, 'name' | 'encryption' | 'source'>,
  secrets: SecretValues | undefined,
): DiskSecrets {
  const byName = new Map((secrets ?? []).map((s) => [s.name, s.value]));
  const need = (secret: string, what: string): string => {
    const v = byName.get(secret);
    if (v === undefined)
      throw new InvalidRequestError(
        `VM ${vm}: disk ${disk.name} ${what} secret ${secret}, whose value the controller did not send with this step`,
        `vm/${vm}`,
      );
    return v;
  };
  const out: DiskSecrets = {};
  if (disk.encryption) out.keyBase64 = need(disk.encryption.secret, 'is encrypted with');
  if (disk.source?.kind === 'iscsi' && disk.source.chap)
    out.chapBase64 = need(disk.source.chap.secret, 'logs in to its iSCSI target with the CHAP password of');
  return out;
}
