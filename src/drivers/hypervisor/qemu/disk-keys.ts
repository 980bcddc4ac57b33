// Encrypted disks of a VM: which key opens which disk (from the secret values the controller sent with the step),
// and attaching them over QMP to a QEMU started paused.
import { InvalidRequestError, InvalidStateError } from '../../../shared/errors.js';
import { LUKS_OPEN_TIMEOUT_MS } from '../../../shared/limits.js';
import type { VmConfig } from '../../../shared/model.js';
import type { SecretValues } from '../types.js';
import { encryptedDiskCommands, type VmPaths } from './cmdline.js';
import type { QmpClient } from './qmp.js';

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

/**
 * Attaches the encrypted disks of a QEMU started paused (`-S`, status `prelaunch`): each key, node and device over
 * QMP (`encryptedDiskCommands`), then lets the guest run. Opening a LUKS header takes seconds (its PBKDF).
 */
export async function attachEncryptedDisks(
  qmp: Pick<QmpClient, 'execute'>,
  cfg: VmConfig,
  paths: VmPaths,
  keys: ReadonlyMap<number, string>,
): Promise<void> {
  for (const [i, key] of keys)
    for (const c of encryptedDiskCommands(cfg, paths, i, key))
      await qmp.execute(c.execute, c.arguments, LUKS_OPEN_TIMEOUT_MS);
  await qmp.execute('cont');
}
