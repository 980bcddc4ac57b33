// The agent's TLS identity: its credentials on disk (`<state-dir>/tls` unless told), the context its listener
// serves, and certificate rotation without a restart (a new key and CSR on request; the certificate installed
// and the listener's context swapped when it comes back).
import { X509Certificate } from 'node:crypto';
import { InvalidRequestError, InvalidStateError } from '../shared/errors.js';
import {
  assertCertMatches,
  generateKeyPair,
  identityOf,
  type KeyPair,
  readCredentials,
  type TlsCredentials,
  writeCredentials,
} from '../shared/tls.js';
import { createCsr } from '../shared/x509.js';

/** Loads the host's credentials from `dir`; fails saying how to get them when they are missing or wrong. */
export function loadHostCredentials(host: string, dir: string): TlsCredentials {
  const creds = readCredentials(dir);
  if (!creds)
    throw new InvalidRequestError(
      `no certificate in ${dir}: join this host first (\`vmlink host join ${host}\` on the controller prints the token for \`vmlink agent --join URL --join-token TOKEN\`)`,
    );
  assertCertMatches(creds, `credentials in ${dir}`);
  assertNamesHost(creds.cert, host, dir);
  return creds;
}

function assertNamesHost(cert: string, host: string, where: string): void {
  const id = identityOf(new X509Certificate(cert).subject);
  if (id.role !== 'host' || id.name !== host)
    throw new InvalidRequestError(
      `the certificate in ${where} is for ${id.role ?? '?'} ${id.name ?? '?'}, not host ${host}`,
    );
}

/** Rotates the agent's certificate: `csr()` makes a new key, `install()` takes its certificate and reloads. */
export class CertRotation {
  private pending: KeyPair | undefined;

  constructor(
    private readonly host: string,
    private readonly dir: string,
    private current: TlsCredentials,
    /** Swaps the TLS listener's context (new connections get the new certificate; open ones keep theirs). */
    private readonly reload: (c: TlsCredentials) => void,
  ) {}

  /** A CSR for a new key made here (the key never leaves the host); replaces an earlier pending one. */
  async csr(): Promise<string> {
    this.pending = await generateKeyPair();
    return createCsr(this.host, this.pending);
  }

  /**
   * Installs the certificate for the pending key: it must chain to the CA this agent already trusts (a rotation
   * never changes the CA) and name this host. Written to disk first, then served.
   */
  install(cert: string, ca: string): { serial: string } {
    if (!this.pending)
      throw new InvalidStateError('no certificate request is pending: POST /v1/tls/csr first');
    if (ca.trim() !== this.current.ca.trim())
      throw new InvalidRequestError('a rotated certificate must chain to the CA this agent already trusts');
    const next = { key: this.pending.keyPem, cert, ca: this.current.ca };
    assertCertMatches(next, 'rotated certificate');
    assertNamesHost(cert, this.host, 'the rotated certificate');
    writeCredentials(this.dir, next);
    this.reload(next);
    this.current = next;
    this.pending = undefined;
    return { serial: new X509Certificate(cert).serialNumber.toLowerCase() };
  }
}
