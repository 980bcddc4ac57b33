import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { postWebhook, WEBHOOK_ANSWER_MAX_BYTES } from './webhook.js';

/** A local receiver running `handle` for each request; closed after `fn`. */
async function withReceiver(
  handle: (req: IncomingMessage, res: ServerResponse) => void,
  fn: (url: string) => Promise<void>,
) {
  const server = createServer(handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    await fn(`http://127.0.0.1:${(server.address() as AddressInfo).port}/hook/token-in-path`);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

const opts = { timeoutMs: 500, tries: 3, backoffMs: 1, sleep: async () => {} };

describe('webhook', () => {
  it('reads an endless answer only up to the bound, then drops it', async () => {
    let sent = 0;
    await withReceiver(
      (_req, res) => {
        res.writeHead(200);
        const chunk = Buffer.alloc(16 * 1024, 120);
        const pump = () => {
          while (sent < 64 * WEBHOOK_ANSWER_MAX_BYTES && res.write(chunk)) sent += chunk.length;
          if (sent < 64 * WEBHOOK_ANSWER_MAX_BYTES) res.once('drain', pump);
        };
        pump();
      },
      async (url) => {
        expect(await postWebhook(url, { a: 1 }, opts)).toEqual({
          status: 200,
          tries: 1,
          target: url.replace('/hook/token-in-path', ''),
        });
      },
    );
    // The receiver wrote far less than it would have: the client stopped reading.
    expect(sent).toBeLessThan(64 * WEBHOOK_ANSWER_MAX_BYTES);
  });

  it('a receiver that never answers times out each try, and the error names the origin only', async () => {
    let tries = 0;
    await withReceiver(
      () => {
        tries++;
      },
      async (url) => {
        const e = await postWebhook(url, {}, opts).catch((x: Error) => x);
        expect(String(e)).toMatch(/did not answer within 500 ms \(after 3 tries\)/);
        expect(String(e)).not.toContain('token-in-path');
      },
    );
    expect(tries).toBe(3);
  });
});
