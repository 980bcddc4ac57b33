// The controller's secrets key and the AES-256-GCM sealing of secret values at rest.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { UnsafeFileError } from '../../shared/safe-file.js';
import { readFileCappedSync, writeFileAtomicSync } from '../../shared/state-file.js';

/** AES-256 key length, and GCM's nonce and tag lengths. */
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** A sealed value as the store keeps it (base64 fields). */
export interface Sealed {
  alg: 'aes-256-gcm';
  nonce: string;
  /** Ciphertext followed by the 16-byte tag. */
  data: string;
}

/**
 * The key in `path` (0600, 32 random bytes, base64), made at first start. A key file readable by others is refused:
 * whoever reads it reads every secret in the store.
 */
export function loadOrCreateSecretsKey(path: string): Buffer {
  if (!existsSync(path))
    writeFileAtomicSync(path, `${randomBytes(KEY_BYTES).toString('base64')}\n`, { mode: 0o600 });
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o077)
    throw new UnsafeFileError(
      path,
      `mode ${mode.toString(8)}: the secrets key must be 0600 (chmod 600 ${path})`,
    );
  const key = Buffer.from((readFileCappedSync(path, { maxBytes: 1024 }) ?? '').trim(), 'base64');
  if (key.length !== KEY_BYTES)
    throw new UnsafeFileError(path, `not a ${KEY_BYTES}-byte key (base64): restore it from a backup`);
  return key;
}

/** Seals `value` under `key`; `name` is authenticated with it, so a sealed value cannot be moved to another name. */
export function seal(key: Buffer, name: string, value: Buffer): Sealed {
  const nonce = randomBytes(NONCE_BYTES);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.from(`vmlink-secret:${name}`));
  const data = Buffer.concat([c.update(value), c.final(), c.getAuthTag()]);
  return { alg: 'aes-256-gcm', nonce: nonce.toString('base64'), data: data.toString('base64') };
}

/** Opens a sealed value of `name`; throws when the key, the name or the bytes do not match. */
export function unseal(key: Buffer, name: string, sealed: Sealed): Buffer {
  const data = Buffer.from(sealed.data, 'base64');
  if (sealed.alg !== 'aes-256-gcm' || data.length < TAG_BYTES) throw new Error('not a sealed secret');
  const d = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.nonce, 'base64'));
  d.setAAD(Buffer.from(`vmlink-secret:${name}`));
  d.setAuthTag(data.subarray(data.length - TAG_BYTES));
  return Buffer.concat([d.update(data.subarray(0, data.length - TAG_BYTES)), d.final()]);
}
