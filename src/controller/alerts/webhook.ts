// An alert's webhook: POST of the notice as JSON to an http(s) URL of the spec, each try bounded in time, retried
// with backoff, the answer read up to a bound and discarded. Redirects are not followed (node's http does not), and
// only the URL's origin is ever named in events and errors: its path may carry a token.
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

/** Time limit of one try (connect, send, answer). */
export const WEBHOOK_TIMEOUT_MS = 5_000;
/** Tries of one webhook call. */
export const WEBHOOK_TRIES = 3;
/** Most bytes of a receiver's answer read (then the connection is dropped). */
export const WEBHOOK_ANSWER_MAX_BYTES = 64 * 1024;

/** How a webhook is posted. */
export interface WebhookOptions {
  timeoutMs: number;
  tries: number;
  /** Wait before the second try; doubled before each further one. */
  backoffMs: number;
  sleep: (ms: number) => Promise<void>;
}

/** A receiver's refusal that another try will not change (a 4xx other than 408 and 429). */
class FinalError extends Error {}

/** The URL's origin (`https://host:port`): what events may name. */
export const webhookTarget = (url: string): string => {
  try {
    return new URL(url).origin;
  } catch {
    return '(invalid URL)';
  }
};

/** POSTs `body` as JSON to `url` until a 2xx answer or `tries` are spent; throws the last failure. */
export async function postWebhook(
  url: string,
  body: unknown,
  opts: WebhookOptions,
): Promise<{ status: number; tries: number; target: string }> {
  const target = webhookTarget(url);
  const payload = JSON.stringify(body);
  let last: Error | undefined;
  for (let i = 1; i <= opts.tries; i++) {
    if (i > 1) await opts.sleep(opts.backoffMs * 2 ** (i - 2));
    try {
      const status = await postOnce(url, payload, opts.timeoutMs);
      if (status >= 200 && status < 300) return { status, tries: i, target };
      const e = new Error(`webhook to ${target} answered HTTP ${status}`);
      if (status >= 400 && status < 500 && status !== 408 && status !== 429) throw new FinalError(e.message);
      last = e;
    } catch (e) {
      if (e instanceof FinalError) throw new Error(`${e.message} (try ${i}; not retried)`);
      last = e as Error;
    }
  }
  throw new Error(`${last?.message ?? 'webhook failed'} (after ${opts.tries} tries)`);
}

/** One POST; resolves with the status once the answer is read (at most WEBHOOK_ANSWER_MAX_BYTES of it). */
function postOnce(url: string, payload: string, timeoutMs: number): Promise<number> {
  const target = webhookTarget(url);
  const u = new URL(url);
  const request = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      req.destroy(new Error(`webhook to ${target} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const done = (fn: () => void) => {
      clearTimeout(timer);
      fn();
    };
    const req = request(
      u,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
          'user-agent': 'vmlink-alerts',
        },
      },
      (res) => {
        let read = 0;
        res.on('data', (chunk: Buffer) => {
          read += chunk.length;
          // The answer is discarded: past the bound there is nothing more worth reading.
          if (read > WEBHOOK_ANSWER_MAX_BYTES) {
            res.destroy();
            done(() => resolve(res.statusCode ?? 0));
          }
        });
        res.on('end', () => done(() => resolve(res.statusCode ?? 0)));
        res.on('error', (e) => done(() => reject(new Error(`webhook to ${target}: ${e.message}`))));
      },
    );
    req.on('error', (e) =>
      done(() =>
        reject(
          new Error(e.message.startsWith('webhook to') ? e.message : `webhook to ${target}: ${e.message}`),
        ),
      ),
    );
    req.end(payload);
  });
}
