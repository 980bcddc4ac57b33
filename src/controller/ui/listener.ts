// The web console's listener: the controller's TCP listener when it has one, else one `vmlink ui` asks for on
// 127.0.0.1 (TLS with the controller's certificate, whose subjectAltName covers 127.0.0.1; no bootstrap token: API
// tokens and browser sessions only). Started once; later calls name it.
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { InvalidRequestError } from '../../shared/errors.js';
import { SerialQueue } from '../../shared/queue.js';
import type { UiListenerAnswer } from '../wire-ui.js';
import type { EnsureUiListener } from './routes.js';

/** What the listener control needs from the daemon. */
export interface UiListenerOptions {
  /** The daemon's own TCP listener (`--listen`), if any. */
  existing?: string | undefined;
  /** Makes and starts a TCP app at `https://127.0.0.1:PORT` (0: any free port), returning it listening. */
  start(address: string): Promise<FastifyInstance>;
  ca: { path: string; fingerprint: string };
}

/** The `ensureListener` of the console's routes. */
export function uiListener(o: UiListenerOptions): EnsureUiListener {
  const once = new SerialQueue();
  let url = o.existing ? browsable(o.existing) : undefined;
  const answer = (started: boolean): UiListenerAnswer => ({
    url: url!,
    started,
    ca: o.ca.path,
    caFingerprint: o.ca.fingerprint,
  });
  return (port) =>
    once.run(async () => {
      if (url) return answer(false);
      if (port !== undefined && port !== 0 && port < 1024)
        throw new InvalidRequestError(
          `the console's listener port must be 0 (any) or 1024-65535, not ${port}`,
        );
      const app = await o.start(`https://127.0.0.1:${port ?? 0}`);
      url = `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      return answer(true);
    });
}

/** A listener's address as a browser on this machine reaches it (a wildcard address becomes 127.0.0.1). */
export function browsable(listen: string): string {
  const u = new URL(listen);
  const host = u.hostname === '0.0.0.0' || u.hostname === '[::]' ? '127.0.0.1' : u.hostname;
  return `https://${host}:${u.port}`;
}
