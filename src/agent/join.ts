// `vmlink agent --join URL --join-token TOKEN`: the agent makes its key here (it never leaves the host), fetches
// the controller's CA and pins it by the fingerprint the token carries, then sends a CSR over TLS checked against
// that CA and receives its certificate.
import { request } from 'node:https';
import { UnauthorizedError, UnavailableError } from '../shared/errors.js';
import { HttpClient } from '../shared/http/client.js';
import { CaAnswerSchema, JoinAnswerSchema, parseJoinToken } from '../shared/join-wire.js';
import {
  assertCertMatches,
  CONTROLLER_NAME,
  fingerprint,
  generateKeyPair,
  peerMismatch,
  type TlsCredentials,
  writeCredentials,
} from '../shared/tls.js';
import { createCsr } from '../shared/x509.js';

/** Largest answer read while the CA is not yet trusted. */
const MAX_CA_ANSWER = 32 * 1024;
const JOIN_TIMEOUT_MS = 30_000;

/** Joins `host` to the controller at `url` with `token`; writes the credentials to `dir` and returns them. */
export async function joinController(o: {
  host: string;
  url: string;
  token: string;
  dir: string;
}): Promise<TlsCredentials> {
  const { caFingerprint } = parseJoinToken(o.token);
  if (!o.url.startsWith('https://'))
    throw new UnauthorizedError(`--join must be the controller's https:// address, got ${o.url}`);
  const ca = await fetchCa(o.url);
  const got = fingerprint(ca);
  if (got !== caFingerprint)
    throw new UnauthorizedError(
      `the controller at ${o.url} offered a CA with fingerprint ${got}, not the join token's ${caFingerprint}; refusing to join`,
    );
  const pair = await generateKeyPair();
  const client = new HttpClient(o.url, {
    name: 'the controller',
    timeoutMs: JOIN_TIMEOUT_MS,
    tls: { ca, checkPeer: (c) => peerMismatch(c, { role: 'controller', name: CONTROLLER_NAME }) },
  });
  const answer = await client.post(
    '/v1/join',
    { host: o.host, token: o.token, csr: await createCsr(o.host, pair) },
    JoinAnswerSchema,
  );
  const creds = { key: pair.keyPem, cert: answer.cert, ca };
  assertCertMatches(creds, `the certificate the controller issued to ${o.host}`);
  writeCredentials(o.dir, creds);
  return creds;
}

/**
 * The CA certificate the controller serves, read before anything is trusted (its fingerprint is checked against
 * the token's right after), with the answer's size bounded.
 */
function fetchCa(url: string): Promise<string> {
  const u = new URL('/v1/pki/ca', url);
  return new Promise((resolve, reject) => {
    const fail = (why: string) =>
      reject(new UnavailableError(`cannot fetch the CA from the controller at ${url}: ${why}`, 'controller'));
    const req = request(u, { rejectUnauthorized: false, timeout: JOIN_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size > MAX_CA_ANSWER) {
          res.destroy();
          fail(`answer larger than ${MAX_CA_ANSWER} bytes`);
        } else chunks.push(d);
      });
      res.on('error', (e) => fail(e.message));
      res.on('end', () => {
        if (res.statusCode !== 200) return fail(`HTTP ${res.statusCode}`);
        try {
          resolve(CaAnswerSchema.parse(JSON.parse(Buffer.concat(chunks).toString('utf8'))).ca);
        } catch (e) {
          fail(`malformed answer (${(e as Error).message.slice(0, 200)})`);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e) => fail(e.message));
    req.end();
  });
}
