// Certificates shared by controller, agents and the CLI: one vmlink CA, a role and a name in every certificate's
// subject (`O=vmlink, OU=<role>, CN=<name>`), keys made where they are used (ECDSA P-256), PEM files on disk.
import { createHash, createPrivateKey, createPublicKey, webcrypto, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { PeerCertificate } from 'node:tls';
import { InvalidRequestError } from './errors.js';
import { readFileCappedSync, writeFileAtomicSync } from './state-file.js';

/** The signature and key algorithm of every vmlink key. */
export const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** The controller's name in its certificates (its role is `controller`). */
export const CONTROLLER_NAME = 'vmlink-controller';

/** What a certificate holder is: the CA itself, the controller, a host's agent, or a lab etcd member. */
export type CertRole = 'ca' | 'controller' | 'host' | 'etcd';

/** A key pair made here (the private key never leaves this process unless written to a 0600 file). */
export interface KeyPair {
  keys: CryptoKeyPair;
  /** PKCS#8 PEM of the private key. */
  keyPem: string;
}

/** What a TLS endpoint presents and trusts: its key, its certificate and the CA, all PEM. */
export interface TlsCredentials {
  key: string;
  cert: string;
  ca: string;
}

/** Makes an ECDSA P-256 key pair. */
export async function generateKeyPair(): Promise<KeyPair> {
  const keys = (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const der = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { keys, keyPem: pem('PRIVATE KEY', Buffer.from(der)) };
}

/** The subject of a vmlink certificate with `role` and `name`. */
export const subjectOf = (role: CertRole, name: string): string => `CN=${name}, OU=${role}, O=vmlink`;

/** SHA-256 of a certificate's DER, lowercase hex: how a CA is pinned before it is trusted. */
export function fingerprint(certPem: string): string {
  return createHash('sha256').update(new X509Certificate(certPem).raw).digest('hex');
}

/** Role and name read from a certificate's subject (`OU` and `CN`); undefined where either is missing. */
export function identityOf(subject: string | Record<string, unknown> | undefined): {
  role?: string;
  name?: string;
} {
  if (!subject) return {};
  if (typeof subject === 'string') {
    const field = (k: string) => subject.match(new RegExp(`(?:^|\\n)${k}=([^\\n]*)`))?.[1];
    return withDefined({ role: field('OU'), name: field('CN') });
  }
  const one = (v: unknown) => (typeof v === 'string' ? v : undefined);
  return withDefined({ role: one(subject.OU), name: one(subject.CN) });
}

function withDefined(o: { role: string | undefined; name: string | undefined }) {
  return { ...(o.role ? { role: o.role } : {}), ...(o.name ? { name: o.name } : {}) };
}

/**
 * Why a peer's certificate (already chained to the CA by TLS) is not the one expected, or undefined when it is:
 * the role and name must match, and its serial must not be refused by `revoked`.
 */
export function peerMismatch(
  cert: Pick<PeerCertificate, 'subject' | 'serialNumber'> | undefined,
  expected: { role: CertRole; name: string },
  revoked?: (serial: string) => string | undefined,
): string | undefined {
  if (!cert?.subject) return 'it presented no certificate';
  const id = identityOf(cert.subject as unknown as Record<string, unknown>);
  if (id.role !== expected.role || id.name !== expected.name)
    return `its certificate names ${id.role ?? '?'} ${JSON.stringify(id.name ?? '')}, not ${expected.role} ${JSON.stringify(expected.name)}`;
  const why = revoked?.(normalSerial(cert.serialNumber));
  return why ? `its certificate (serial ${normalSerial(cert.serialNumber)}) ${why}` : undefined;
}

/** A serial number as lowercase hex without leading zeros (Node and the x509 library spell them differently). */
export const normalSerial = (s: string): string => s.toLowerCase().replace(/^(00)+(?=.)/, '');

/** Operator-readable reasons for Node's certificate verification codes. */
const TLS_REASONS: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'its certificate was not issued by this CA',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'its certificate was not issued by this CA',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'its certificate is self-signed, not issued by this CA',
  SELF_SIGNED_CERT_IN_CHAIN: 'its certificate was not issued by this CA (it chains to another CA)',
  CERT_SIGNATURE_FAILURE: 'its certificate has a bad signature',
  CERT_HAS_EXPIRED: 'its certificate has expired',
  CERT_NOT_YET_VALID: 'its certificate is not valid yet',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: 'it does not trust our certificate (another CA)',
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: 'it refused our certificate',
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED: 'it refused our certificate as expired',
  ERR_SSL_TLSV1_ALERT_CERTIFICATE_REQUIRED: 'it requires a client certificate',
  ERR_SSL_WRONG_VERSION_NUMBER: 'it does not speak TLS there',
  EPROTO: 'the TLS handshake failed',
};

/** An operator-readable reason for a TLS failure (a Node error code or message), or undefined if it is not one. */
export function tlsFailureReason(e: { code?: string; message?: string }): string | undefined {
  if (e.code && TLS_REASONS[e.code]) return TLS_REASONS[e.code];
  if (e.code?.startsWith('ERR_SSL_') || e.code?.startsWith('ERR_TLS_'))
    return `the TLS handshake failed (${e.code})`;
  return undefined;
}

/** Whether `certPem` was issued and signed by `caPem`. */
export function issuedBy(certPem: string, caPem: string): boolean {
  const cert = new X509Certificate(certPem);
  const ca = new X509Certificate(caPem);
  return cert.checkIssued(ca) && cert.verify(ca.publicKey);
}

/** The files of a credential directory: `key.pem` (0600), `cert.pem`, `ca.pem`. */
export const credentialFiles = (dir: string) => ({
  key: join(dir, 'key.pem'),
  cert: join(dir, 'cert.pem'),
  ca: join(dir, 'ca.pem'),
});

/** Reads a credential directory; undefined where any file is missing. */
export function readCredentials(dir: string): TlsCredentials | undefined {
  const f = credentialFiles(dir);
  if (!existsSync(f.key) || !existsSync(f.cert) || !existsSync(f.ca)) return undefined;
  const read = (p: string) => readFileCappedSync(p, { maxBytes: 64 * 1024 }) ?? '';
  return { key: read(f.key), cert: read(f.cert), ca: read(f.ca) };
}

/** Writes a credential directory (0700; key 0600), each file atomically; missing parents are made 0755. */
export function writeCredentials(dir: string, c: TlsCredentials): void {
  privateDir(dir);
  const f = credentialFiles(dir);
  writeFileAtomicSync(f.key, c.key, { mode: 0o600 });
  writeFileAtomicSync(f.cert, c.cert, { mode: 0o644 });
  writeFileAtomicSync(f.ca, c.ca, { mode: 0o644 });
}

/**
 * Makes `dir` 0700, its missing parents 0755: a parent such as a lab host's state dir must stay traversable (its
 * VMs' QEMU identities reach their files through it).
 */
export function privateDir(dir: string): void {
  mkdirSync(dirname(dir), { recursive: true, mode: 0o755 });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

/** Checks that `cert` belongs to `keyPem`'s key and chains to `ca`; fails naming `what`. */
export function assertCertMatches(c: TlsCredentials, what: string): void {
  const certKey = new X509Certificate(c.cert).publicKey.export({ type: 'spki', format: 'der' });
  const own = createPublicKey(createPrivateKey(c.key)).export({ type: 'spki', format: 'der' });
  if (!Buffer.from(certKey).equals(Buffer.from(own)))
    throw new InvalidRequestError(`${what}: the certificate is not for this key`);
  if (!issuedBy(c.cert, c.ca))
    throw new InvalidRequestError(`${what}: the certificate was not issued by the CA`);
}

/** PEM armour around DER. */
export function pem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64.replace(/\n$/, '')}\n-----END ${label}-----\n`;
}
