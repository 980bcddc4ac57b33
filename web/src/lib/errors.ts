// API errors in plain words for the page: the controller's error body (`{error: {kind, message, issues}}`) when it
// sent one, else what the HTTP status means. Pure: unit-tested in errors.test.ts.

/** An API call that failed, with a sentence an operator can read. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly kind?: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Longest message shown (a controller's message is short; anything longer is cut). */
const MESSAGE_MAX = 2000;

const STATUS_WORDS: Record<number, string> = {
  401: 'your session has expired or is not valid: open a new login link (`vmlink ui`)',
  403: 'your role does not allow this',
  404: 'not found',
  409: 'refused: something else is in progress or the request conflicts with the current state',
  413: 'the request is too large',
  422: 'the request is not valid',
  429: 'too many requests: wait a moment',
  502: 'the controller could not reach a host agent',
  503: 'the controller is not ready (a standby, or starting)',
};

/** The error for a failed answer: `status` and its body's text (JSON or not). */
export function apiErrorOf(status: number, body: string, what: string): ApiError {
  let kind: string | undefined;
  let message: string | undefined;
  try {
    const parsed = JSON.parse(body) as {
      error?: { kind?: unknown; message?: unknown; issues?: Array<{ path?: unknown; message?: unknown }> };
    };
    if (parsed && typeof parsed.error?.message === 'string') {
      message = parsed.error.message;
      kind = typeof parsed.error.kind === 'string' ? parsed.error.kind : undefined;
      const issues = Array.isArray(parsed.error.issues) ? parsed.error.issues.slice(0, 20) : [];
      const lines = issues
        .filter((i) => typeof i.message === 'string')
        .map((i) => `${typeof i.path === 'string' && i.path ? `${i.path}: ` : ''}${i.message as string}`);
      if (lines.length > 0) message += `\n${lines.join('\n')}`;
    }
  } catch {
    // Not JSON: fall back to the status's words.
  }
  const text = message ?? STATUS_WORDS[status] ?? `the controller answered HTTP ${status}`;
  return new ApiError(`${what} failed: ${text.slice(0, MESSAGE_MAX)}`, status, kind);
}

/** A network failure (the controller is unreachable) in plain words. */
export function networkError(what: string, e: unknown): ApiError {
  const why = e instanceof Error ? e.message : String(e);
  return new ApiError(`${what} failed: the controller cannot be reached (${why.slice(0, 200)})`, 0);
}
