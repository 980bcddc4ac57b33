// The controller's secrets: values sealed with the secrets key in the store (`secret/<name>`), opened only to be sent
// to the host that needs them (delivery.ts).
import { ConflictError, InvalidRequestError, NotFoundError } from '../../shared/errors.js';
import { SECRET_VALUE_MAX_BYTES, SECRETS_MAX } from '../../shared/limits.js';
import type { Spec } from '../../spec/schema.js';
import type { Store } from '../store/types.js';
import { type Sealed, seal, unseal } from './sealing.js';
import { secretUses } from './usage.js';

const PREFIX = 'secret/';

/** Names of the secrets `store` holds (no key needed: planning checks names only). */
export async function storedSecretNames(store: Store): Promise<Set<string>> {
  return new Set((await store.list(PREFIX)).map((r) => r.key.slice(PREFIX.length)));
}

/** A secret as the store keeps it. */
interface StoredSecret {
  created: string;
  updated: string;
  sealed: Sealed;
}

/** What `secret list` shows: never a value. */
export interface SecretInfo {
  name: string;
  created: string;
  updated: string;
  /** Spec objects of the applied spec that use it (`vm NAME disk NAME`). */
  usedBy: string[];
}

/** Secrets sealed at rest under one key; `current` gives the applied spec (what uses them). */
export class SecretVault {
  constructor(
    private readonly store: Store,
    private readonly key: Buffer,
    private readonly current: () => Promise<Spec | undefined>,
  ) {}

  /** Creates or replaces secret `name`. Replacing the key of an existing encrypted disk does not re-key it. */
  async set(name: string, value: Buffer): Promise<{ created: boolean }> {
    if (value.length === 0 || value.length > SECRET_VALUE_MAX_BYTES)
      throw new InvalidRequestError(
        `secret ${name}: the value must be 1 to ${SECRET_VALUE_MAX_BYTES} bytes`,
        `secret/${name}`,
      );
    const old = await this.store.get<StoredSecret>(PREFIX + name);
    if (!old && (await this.store.list(PREFIX)).length >= SECRETS_MAX)
      throw new ConflictError(`the controller holds ${SECRETS_MAX} secrets already; delete one first`);
    const now = new Date().toISOString();
    await this.store.put(PREFIX + name, {
      created: old?.created ?? now,
      updated: now,
      sealed: seal(this.key, name, value),
    } satisfies StoredSecret);
    return { created: !old };
  }

  /** Every secret with its use in the applied spec, by name. */
  async list(): Promise<SecretInfo[]> {
    const uses = secretUses(await this.current());
    return (await this.store.list<StoredSecret>(PREFIX)).map(({ key, value }) => {
      const name = key.slice(PREFIX.length);
      return {
        name,
        created: value.created,
        updated: value.updated,
        usedBy: uses.filter((u) => u.secret === name).map((u) => u.user),
      };
    });
  }

  /** Deletes secret `name`; refused while the applied spec uses it (its disks could no longer be opened). */
  async delete(name: string): Promise<void> {
    if (!(await this.store.get(PREFIX + name))) throw new NotFoundError('secret', name);
    const users = secretUses(await this.current()).filter((u) => u.secret === name);
    if (users.length)
      throw new ConflictError(
        `secret ${name} is used by ${users.map((u) => u.user).join(', ')}: remove it from the spec and apply first`,
        `secret/${name}`,
      );
    await this.store.delete(PREFIX + name);
  }

  /** The values of `names` (base64) for one step to one host; a missing one is an error naming it. */
  async values(names: readonly string[]): Promise<Array<{ name: string; value: string }>> {
    return Promise.all(
      names.map(async (name) => {
        const s = await this.store.get<StoredSecret>(PREFIX + name);
        if (!s) throw new NotFoundError('secret', name);
        try {
          return { name, value: unseal(this.key, name, s.sealed).toString('base64') };
        } catch {
          throw new ConflictError(
            `secret ${name} cannot be opened with this controller's secrets key (the store and the key file do not belong together, or the store was altered)`,
            `secret/${name}`,
          );
        }
      }),
    );
  }
}
