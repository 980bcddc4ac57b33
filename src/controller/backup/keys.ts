// Backup keys: 32 random bytes sealed in the controller's vault as a secret. `create` shows the recovery key once (it is
// never stored in clear, never logged, never in an event); `import` takes one back (a new controller, a lost store).
// A key's value leaves the vault only to join the one agent request that needs it (keyFor).
import type { BackupKey } from '../../agent/wire-backup.js';
import { BackupKeySet, newBackupKey, parseRecoveryKey, recoveryKeyText } from '../../shared/backup-crypto.js';
import { ConflictError, InvalidStateError } from '../../shared/errors.js';
import type { SecretVault } from '../secrets/vault.js';
import { storedSecretNames } from '../secrets/vault.js';
import type { Store } from '../store/types.js';

/** Creates, imports and opens backup keys in the vault. */
export class BackupKeys {
  constructor(
    private readonly store: Store,
    private readonly vault: SecretVault | undefined,
  ) {}

  /** A new key sealed as secret `name` (refused when that secret exists: it would orphan the stores using it). */
  async create(name: string): Promise<{ name: string; fingerprint: string; recoveryKey: string }> {
    const vault = this.requireVault();
    await this.refuseExisting(name);
    const raw = newBackupKey();
    try {
      const keys = BackupKeySet.fromKey(raw, name);
      await vault.set(name, raw);
      await this.store.appendEvent('backup.key-created', `${name}: fingerprint ${keys.fingerprint}`);
      return { name, fingerprint: keys.fingerprint, recoveryKey: recoveryKeyText(raw) };
    } finally {
      raw.fill(0);
    }
  }

  /** Seals the key of recovery text `recoveryKey` as secret `name` (refused when that secret exists). */
  async import(name: string, recoveryKey: string): Promise<{ name: string; fingerprint: string }> {
    const vault = this.requireVault();
    const raw = parseRecoveryKey(recoveryKey);
    try {
      await this.refuseExisting(name);
      const keys = BackupKeySet.fromKey(raw, name);
      await vault.set(name, raw);
      await this.store.appendEvent('backup.key-imported', `${name}: fingerprint ${keys.fingerprint}`);
      return { name, fingerprint: keys.fingerprint };
    } finally {
      raw.fill(0);
    }
  }

  /** The value of key `name` for one agent request (base64; never logged). */
  async keyFor(name: string): Promise<BackupKey> {
    const [v] = await this.requireVault().values([name]);
    return { name, value: v!.value };
  }

  /** The key set of `name` (to open a sealed config, or compare fingerprints), in this process only. */
  async keySet(name: string): Promise<BackupKeySet> {
    return BackupKeySet.fromBase64((await this.keyFor(name)).value, name);
  }

  private async refuseExisting(name: string): Promise<void> {
    if ((await storedSecretNames(this.store)).has(name))
      throw new ConflictError(
        `secret ${name} exists already: a backup key is never replaced (snapshots under it could no longer be read); pick another name, or delete the secret first if nothing uses it`,
        `secret/${name}`,
      );
  }

  private requireVault(): SecretVault {
    if (!this.vault)
      throw new InvalidStateError(
        'this controller has no secrets key (it was started without one), so it cannot keep backup keys',
        'secrets',
      );
    return this.vault;
  }
}
