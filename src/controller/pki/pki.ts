// The controller's certificate authority: created at first start (ECDSA P-256, key 0600), it issues one
// certificate per host bound to the host's name, the controller's own, and records which serial each host holds and
// which serials are revoked.
import { randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { RESERVED_ETCD_USERS } from '../../shared/cluster.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { readFileCappedSync, writeFileAtomicSync } from '../../shared/state-file.js';
import {
  assertCertMatches,
  type CertRole,
  CONTROLLER_NAME,
  fingerprint,
  generateKeyPair,
  identityOf,
  KEY_ALGORITHM,
  normalSerial,
  privateDir,
  readCredentials,
  subjectOf,
  type TlsCredentials,
  writeCredentials,
} from '../../shared/tls.js';
import { x509 } from '../../shared/x509.js';
import { NAME_PATTERN } from '../../spec/schema.js';
import { type PkiState, PkiStateStore } from './state.js';

/** How long a CA lives (10 years). */
const CA_DAYS = 3650;
/** How long a host's or the controller's certificate lives; `host rotate-cert` renews a host's. */
const LEAF_DAYS = 365;
/** The controller renews its own certificate at start when less than this is left. */
const RENEW_BEFORE_DAYS = 30;
const DAY_MS = 86_400_000;

/** A certificate just issued. */
export interface Issued {
  cert: string;
  serial: string;
  notAfter: string;
}

/** The CA and its records in one directory: `ca.key` (0600), `ca.pem`, `state.json`, `controller/`. */
export class Pki {
  private readonly state: PkiStateStore;

  private constructor(
    readonly dir: string,
    /** The CA certificate, PEM. */
    readonly caPem: string,
    private readonly caKey: CryptoKey,
  ) {
    this.state = new PkiStateStore(join(dir, 'state.json'));
  }

  /** Opens the CA in `dir`, creating it (and the directory, 0700) at the first start. */
  static async open(dir: string): Promise<Pki> {
    privateDir(dir);
    const keyFile = join(dir, 'ca.key');
    const certFile = join(dir, 'ca.pem');
    if (!existsSync(keyFile) || !existsSync(certFile)) {
      const pair = await generateKeyPair();
      const now = Date.now();
      const ca = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: newSerial(),
        name: subjectOf('ca', 'vmlink CA'),
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + CA_DAYS * DAY_MS),
        keys: pair.keys,
        signingAlgorithm: KEY_ALGORITHM,
        extensions: [
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          await x509.SubjectKeyIdentifierExtension.create(pair.keys.publicKey),
        ],
      });
      // The key first: a CA certificate without its key would be a CA nobody can use.
      writeFileAtomicSync(keyFile, pair.keyPem, { mode: 0o600 });
      writeFileAtomicSync(certFile, ca.toString('pem'), { mode: 0o644 });
    }
    const keyPem = readFileCappedSync(keyFile, { maxBytes: 64 * 1024 }) ?? '';
    const caKey = await webcrypto.subtle.importKey('pkcs8', pemBody(keyPem), KEY_ALGORITHM, false, ['sign']);
    return new Pki(dir, readFileCappedSync(certFile, { maxBytes: 64 * 1024 }) ?? '', caKey);
  }

  /** SHA-256 of the CA certificate (hex): what a joining agent pins. */
  get caFingerprint(): string {
    return fingerprint(this.caPem);
  }

  /** The records (hosts' serials, revocations, join tokens). */
  records(): PkiState {
    return this.state.read();
  }

  /** The controller's own credentials (client of agents, server of the TCP API), issued or renewed as needed. */
  async controllerCredentials(): Promise<TlsCredentials> {
    const dir = join(this.dir, 'controller');
    const have = readCredentials(dir);
    if (have && have.ca === this.caPem) {
      const cert = new X509Certificate(have.cert);
      const left = new Date(cert.validTo).getTime() - Date.now();
      // One from before the web console lacks 127.0.0.1 (a browser checks the address it was given): renewed.
      const local = (cert.subjectAltName ?? '').includes('IP Address:127.0.0.1');
      if (left > RENEW_BEFORE_DAYS * DAY_MS && local) return have;
    }
    const pair = await generateKeyPair();
    // Its name (what vmlink's clients check) and the loopback addresses, so a browser may use the web console on
    // https://127.0.0.1:PORT once it trusts the CA.
    const issued = await this.sign('controller', CONTROLLER_NAME, pair.keys.publicKey, ['127.0.0.1', '::1']);
    const creds = { key: pair.keyPem, cert: issued.cert, ca: this.caPem };
    writeCredentials(dir, creds);
    return creds;
  }

  /**
   * Issues `host` a certificate for the key of a PKCS#10 request (whose signature proves the requester holds the
   * key); the subject is set here, whatever the request says. The host's previous certificate is revoked, unless
   * `record: false` (a rotation records it with `recordHost` once the agent serves it).
   */
  async issueForCsr(host: string, csrPem: string, opts: { record?: boolean } = {}): Promise<Issued> {
    assertHostName(host);
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(csrPem);
    } catch (e) {
      throw new InvalidRequestError(
        `certificate request for ${host} is not a PKCS#10 PEM: ${(e as Error).message}`,
      );
    }
    if (!(await csr.verify()))
      throw new InvalidRequestError(`certificate request for ${host} has a bad signature`, `host/${host}`);
    const alg = csr.publicKey.algorithm as EcKeyAlgorithm;
    if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256')
      throw new InvalidRequestError(
        `certificate request for ${host} must carry an ECDSA P-256 key`,
        `host/${host}`,
      );
    const issued = await this.sign('host', host, await csr.publicKey.export(KEY_ALGORITHM, ['verify']));
    if (opts.record !== false) this.recordHost(host, issued, 'superseded by a new certificate');
    return issued;
  }

  /**
   * Makes a key and a certificate for a lab host (the lab's machines share this computer with the controller, so the
   * key is made here and written to the host's own directory); the host's previous certificate is revoked.
   */
  async issueLabHost(host: string): Promise<TlsCredentials & { serial: string }> {
    assertHostName(host);
    const pair = await generateKeyPair();
    const issued = await this.sign('host', host, pair.keys.publicKey);
    this.recordHost(host, issued, 'superseded by a new certificate');
    return { key: pair.keyPem, cert: issued.cert, ca: this.caPem, serial: issued.serial };
  }

  /**
   * Makes a key and a certificate for etcd member `name` at `ip` (`OU=etcd, CN=<name>`, subjectAltName the name and
   * the IP, server and client use: clients check the IP they dial, members check each other's). Not recorded as a
   * host's: a member's CN is no etcd user and no agent accepts role `etcd`.
   */
  async issueEtcdMember(name: string, ip: string): Promise<TlsCredentials & { serial: string }> {
    assertHostName(name);
    if ((RESERVED_ETCD_USERS as readonly string[]).includes(name) || !isIP(ip))
      throw new InvalidRequestError(
        `cannot issue an etcd member certificate to ${JSON.stringify(name)} at ${JSON.stringify(ip)}`,
      );
    const pair = await generateKeyPair();
    const issued = await this.sign('etcd', name, pair.keys.publicKey, [ip]);
    return { key: pair.keyPem, cert: issued.cert, ca: this.caPem, serial: issued.serial };
  }

  /** Whether `creds` are a certificate of this CA for `role`/`name` (and `ip`, when given) with 30 days left. */
  holdsCurrent(creds: TlsCredentials | undefined, role: CertRole, name: string, ip?: string): boolean {
    if (!creds || creds.ca !== this.caPem) return false;
    try {
      assertCertMatches(creds, name);
    } catch {
      return false;
    }
    const c = new X509Certificate(creds.cert);
    const id = identityOf(c.subject);
    const left = new Date(c.validTo).getTime() - Date.now();
    return (
      id.role === role &&
      id.name === name &&
      (ip === undefined || c.checkIP(ip) !== undefined) &&
      left > RENEW_BEFORE_DAYS * DAY_MS
    );
  }

  /** Whether `creds` are `host`'s current, valid certificate from this CA (so a lab up can keep them). */
  isCurrent(host: string, creds: TlsCredentials | undefined): boolean {
    if (!creds || creds.ca !== this.caPem) return false;
    try {
      assertCertMatches(creds, host);
    } catch {
      return false;
    }
    const c = new X509Certificate(creds.cert);
    const valid = new Date(c.validTo).getTime() - Date.now() > RENEW_BEFORE_DAYS * DAY_MS;
    return valid && this.refusal(host, c.serialNumber) === undefined;
  }

  /** Revokes `host`'s certificate (it left the spec, its lab went down, it was rotated); true if it had one. */
  revokeHost(host: string, reason: string): boolean {
    let had = false;
    this.state.update((s) => {
      const h = s.hosts[host];
      if (!h) return;
      had = true;
      s.revoked.push({ serial: h.serial, host, at: new Date().toISOString(), reason, notAfter: h.notAfter });
      delete s.hosts[host];
    });
    return had;
  }

  /**
   * Why a certificate `host` presents with `serial` is refused, or undefined when it is the host's current one:
   * revoked, superseded, or never issued to this host.
   */
  refusal(host: string, serial: string): string | undefined {
    const s = this.state.read();
    const n = normalSerial(serial);
    const r = s.revoked.find((x) => x.serial === n);
    if (r) return `was revoked at ${r.at} (${r.reason})`;
    const cur = s.hosts[host];
    if (!cur) return `is not current: ${host} holds no certificate of this controller (join it again)`;
    if (cur.serial !== n) return `is not ${host}'s current certificate (serial ${cur.serial})`;
    return undefined;
  }

  /** Signs a certificate for `role`/`name` over `publicKey`: EC key usage, TLS server and client, SAN = name. */
  private async sign(
    role: CertRole,
    name: string,
    publicKey: CryptoKey,
    ips: readonly string[] = [],
  ): Promise<Issued> {
    const now = Date.now();
    const serial = newSerial();
    const notAfter = new Date(now + LEAF_DAYS * DAY_MS);
    const ca = new x509.X509Certificate(this.caPem);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: subjectOf(role, name),
      issuer: ca.subject,
      notBefore: new Date(now - 60_000),
      notAfter,
      signingAlgorithm: KEY_ALGORITHM,
      publicKey,
      signingKey: this.caKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]),
        new x509.SubjectAlternativeNameExtension([
          { type: 'dns', value: name },
          ...ips.map((value) => ({ type: 'ip' as const, value })),
        ]),
        await x509.AuthorityKeyIdentifierExtension.create(ca),
      ],
    });
    return { cert: cert.toString('pem'), serial: normalSerial(serial), notAfter: notAfter.toISOString() };
  }

  /** Records `issued` as `host`'s current certificate; the one it replaces is revoked with `reason`. */
  recordHost(host: string, issued: Issued, reason: string): void {
    this.state.update((s) => {
      const old = s.hosts[host];
      if (old)
        s.revoked.push({
          serial: old.serial,
          host,
          at: new Date().toISOString(),
          reason,
          notAfter: old.notAfter,
        });
      s.hosts[host] = { serial: issued.serial, notAfter: issued.notAfter };
    });
  }
}

/** Refuses a name that is not a host name, or the controller's own (no host may hold the controller's identity). */
function assertHostName(host: string): void {
  if (!NAME_PATTERN.test(host) || host === CONTROLLER_NAME)
    throw new InvalidRequestError(
      `cannot issue a certificate to host ${JSON.stringify(host)}: not a host name`,
    );
}

/** A random positive 128-bit serial number, hex. */
function newSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x10;
  return b.toString('hex');
}

/** The DER inside a PEM block. */
function pemBody(text: string): Buffer {
  return Buffer.from(text.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}
