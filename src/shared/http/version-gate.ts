// The server side of the version handshake: every answer says which version the server speaks, and a client
// whose version the server cannot speak is refused before its request runs, with a message naming both sides.
import type { FastifyInstance } from 'fastify';
import {
  checkClientVersion,
  formatVersionHeader,
  localVersion,
  type Protocol,
  VERSION_HEADER,
} from '../version.js';

/**
 * Adds `protocol`'s handshake to `app`. Requests without the header (curl, processes older than versions) pass:
 * they are judged as version 1 by the client side. `serverName` names this server in messages (`agent of host1`).
 */
export function addVersionGate(app: FastifyInstance, protocol: Protocol, serverName?: string): void {
  const header = VERSION_HEADER[protocol];
  const value = formatVersionHeader(localVersion(protocol));
  app.addHook('onRequest', async (req, reply) => {
    void reply.header(header, value);
    const got = req.headers[header];
    if (got === undefined) return;
    const mismatch = checkClientVersion(protocol, got, serverName);
    if (mismatch) throw mismatch;
  });
}
