// The join exchange between a new agent and the controller (`POST /v1/join`, `GET /v1/pki/ca`), shared by both
// sides: the agent is no client of the rest of the controller's API.
import { z } from 'zod';
import { NAME_PATTERN } from '../spec/schema.js';
import { InvalidRequestError } from './errors.js';

/** Largest PEM accepted in the exchange (a P-256 certificate or CSR is well under 2 KiB). */
const MAX_PEM = 16 * 1024;
const Pem = z.string().min(1).max(MAX_PEM);

/** `POST /v1/join`: a host spends its join token on a certificate for the key of `csr`. */
export const JoinBodySchema = z
  .object({ host: z.string().regex(NAME_PATTERN), token: z.string().max(200), csr: Pem })
  .strict();
/** Answer of `POST /v1/join`: the host's certificate and the CA. */
export const JoinAnswerSchema = z.object({ cert: Pem, ca: Pem }).strict();
/** `GET /v1/pki/ca`: the CA certificate (public) and its SHA-256 fingerprint. */
export const CaAnswerSchema = z.object({ ca: Pem, fingerprint: z.string().regex(/^[0-9a-f]{64}$/) }).strict();

/** The prefix and version of a join token. */
export const JOIN_TOKEN_PREFIX = 'vmlink-join-1';

/** Splits a join token (`vmlink-join-1.<CA fingerprint>.<secret>`) into the fingerprint it pins and its secret. */
export function parseJoinToken(token: string): { caFingerprint: string; secret: string } {
  const m = token.trim().match(/^vmlink-join-1\.([0-9a-f]{64})\.([A-Za-z0-9_-]{43})$/);
  if (!m)
    throw new InvalidRequestError('not a vmlink join token (expected vmlink-join-1.<fingerprint>.<secret>)');
  return { caFingerprint: m[1]!, secret: m[2]! };
}
