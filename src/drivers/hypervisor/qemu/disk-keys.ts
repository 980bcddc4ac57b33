// Which key opens which encrypted disk of a VM, from the secret values the controller sent with the step.
import { InvalidRequestError } from '../../../shared/errors.js';
import type { VmConfig } from '../../../shared/model.js';
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
