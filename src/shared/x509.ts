// @peculiar/x509 set up once (it needs a Reflect polyfill and a WebCrypto provider): loaded only by the processes
// that make certificates or requests, never by a plain CLI call.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { KEY_ALGORITHM, type KeyPair, subjectOf } from './tls.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export { x509 };

/** A PKCS#10 request for `name` signed by `pair` (the controller sets the subject it issues; the key is what counts). */
export async function createCsr(name: string, pair: KeyPair): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: subjectOf('host', name),
    keys: pair.keys,
    signingAlgorithm: KEY_ALGORITHM,
  });
  return csr.toString('pem');
}
