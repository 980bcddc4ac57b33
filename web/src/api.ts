// The app's only way to the controller: same-origin calls to /v1/... carrying the session cookie; every change
// carries the CSRF header the controller requires of browser sessions. Answers are size-bounded before parsing.
import { ApiError, apiErrorOf, networkError } from './lib/errors.js';
import type {
  AlertsView,
  EventItem,
  NetworkItem,
  PlanResult,
  SessionInfo,
  StatusView,
  VerifyResult,
  VmItem,
} from './lib/types.js';

/** The header the controller requires on every browser request that changes something (CSRF). */
export const CSRF_HEADER = 'X-Vmlink-Csrf';
/** Largest answer read (a plan or a matrix of a big site stays far below). */
const ANSWER_MAX = 16 * 1024 * 1024;

async function call(method: string, path: string, what: string, body?: unknown): Promise<string> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (method !== 'GET') headers[CSRF_HEADER] = '1';
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (e) {
    throw networkError(what, e);
  }
  const declared = Number(res.headers.get('content-length') ?? '0');
  if (declared > ANSWER_MAX) throw new ApiError(`${what} failed: the answer is too large`, res.status);
  const text = await res.text();
  if (text.length > ANSWER_MAX) throw new ApiError(`${what} failed: the answer is too large`, res.status);
  if (!res.ok) throw apiErrorOf(res.status, text, what);
  return text;
}

async function json<T>(method: string, path: string, what: string, body?: unknown): Promise<T> {
  const text = await call(method, path, what, body);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ApiError(`${what} failed: the controller's answer is not JSON`, 200);
  }
}

const vm = (name: string) => `/v1/vms/${encodeURIComponent(name)}`;

export const api = {
  session: () => json<SessionInfo>('GET', '/v1/ui/session', 'Reading your session'),
  status: () => json<StatusView>('GET', '/v1/status', 'Reading the hosts'),
  networks: () => json<NetworkItem[]>('GET', '/v1/networks', 'Reading the networks'),
  vms: () => json<VmItem[]>('GET', '/v1/vms', 'Reading the VMs'),
  events: (limit: number) => json<EventItem[]>('GET', `/v1/events?limit=${limit}`, 'Reading the events'),
  alerts: () => json<AlertsView>('GET', '/v1/alerts', 'Reading the alerts'),
  metrics: () => call('GET', '/v1/metrics', 'Reading the metrics'),
  /** The last verify's matrix, or undefined when none has run yet (404). */
  lastVerify: async (): Promise<VerifyResult | undefined> => {
    try {
      return await json<VerifyResult>('GET', '/v1/verify/last', 'Reading the last verify');
    } catch (e) {
      if (e instanceof ApiError && e.status === 404 && e.kind === 'not-found') return undefined;
      throw e;
    }
  },
  startVerify: () => json<{ taskId: string }>('POST', '/v1/verify', 'Starting a verify'),
  task: (id: string) =>
    json<{ state: string; error?: { message: string } }>(
      'GET',
      `/v1/tasks/${encodeURIComponent(id)}`,
      'Reading the task',
    ),
  start: (name: string) => json<{ ok: true }>('POST', `${vm(name)}/start`, `Starting ${name}`),
  stop: (name: string) =>
    json<{ ok: true }>('POST', `${vm(name)}/stop`, `Stopping ${name}`, { force: false }),
  plan: (spec: string, source: string) =>
    json<PlanResult>('POST', '/v1/plan', 'Planning the spec', { spec, source }),
  logout: () => call('POST', '/v1/ui/logout', 'Logging out'),
};

/** The websocket URL of a same-origin path (wss on an https page). */
export function wsUrl(path: string): string {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}`;
}

export const consoleStreamPath = (name: string): string => `${vm(name)}/console/stream`;
export const EVENTS_STREAM_PATH = '/v1/events/stream';
