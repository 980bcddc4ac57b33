// Commit-confirm from the controller's side: send a risky change armed with a rollback timer, then confirm it once
// the host answers on its management path again; if it never does, learn that the host rolled it back by itself.
import { randomUUID } from 'node:crypto';
import type { AgentAction, ConfirmState } from '../agent/wire.js';
import { UnavailableError, VmlinkError } from '../shared/errors.js';
import { CONFIRM_ROLLBACK_GRACE_MS, CONFIRM_ROLLBACK_POLL_MS, CONFIRM_WINDOW_MS } from '../shared/limits.js';
import { sleep } from '../shared/time.js';
import type { AgentPort } from './hosts.js';
import type { TaskContext } from './tasks.js';

/** A risky step cut its host's management path and the host reverted it by itself (commit-confirm). */
export class RolledBackError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('unavailable', message, subject === undefined ? {} : { subject });
  }
}

/** Default commit-confirm window of a risky step. */
export const DEFAULT_CONFIRM_MS = CONFIRM_WINDOW_MS;

/** The clock of the commit-confirm exchange (tests shorten it). */
export interface ConfirmTiming {
  /** Least time to wait for the answer to the armed action (the answer may be lost when the change cuts the path). */
  minSendMs: number;
  /** Time limit of one confirm or state query. */
  queryMs: number;
  /** Pause between two confirm or state queries. */
  retryMs: number;
  /** How long after the window the controller waits before asking the host what became of the change. */
  rollbackGraceMs: number;
  /** How long it then keeps asking. */
  rollbackPollMs: number;
  /** How often a waiting loop says so in the task's progress. */
  progressEveryMs: number;
}

/** The production timing. */
export const CONFIRM_TIMING: ConfirmTiming = {
  minSendMs: 3_000,
  queryMs: 2_000,
  retryMs: 1_000,
  rollbackGraceMs: CONFIRM_ROLLBACK_GRACE_MS,
  rollbackPollMs: CONFIRM_ROLLBACK_POLL_MS,
  progressEveryMs: 5_000,
};

/**
 * Sends `action` to `host` with commit-confirm (`timeoutMs` window) and confirms it once the host answers on its
 * management path again. Throws `RolledBackError` when the host never answered in the window and reverted the change
 * by itself, and the send error when the host refused the action before arming it.
 */
export async function actConfirmed(
  agent: AgentPort,
  host: string,
  action: AgentAction,
  timeoutMs: number,
  ctx: TaskContext,
  timing: ConfirmTiming = CONFIRM_TIMING,
): Promise<void> {
  const id = randomUUID();
  const deadline = Date.now() + timeoutMs;
  const secs = Math.round(timeoutMs / 1000);
  let sendError: unknown;
  try {
    // The answer itself may be lost when the change cuts the path: do not wait past half the window for it.
    await agent.act(
      { ...action, confirm: { id, timeoutMs } } as AgentAction,
      Math.max(timing.minSendMs, timeoutMs / 2),
    );
  } catch (e) {
    sendError = e;
  }
  if (sendError !== undefined) {
    ctx.progress(`${host} did not answer: ${(sendError as Error).message.split('\n')[0]}`);
    // Did the change happen at all? An agent that answers without the id refused it before arming.
    const st = await attempt(agent.confirmState(id, timing.queryMs));
    if (st instanceof VmlinkError && st.kind === 'not-found') throw sendError;
    if (!(st instanceof Error) && st.state !== 'pending') return rolledBack(host, st, secs);
  }
  // Confirm through the normal path; retry while the window lasts.
  let lastSaid = Number.NEGATIVE_INFINITY;
  while (Date.now() < deadline) {
    if (sendError !== undefined && Date.now() - lastSaid >= timing.progressEveryMs) {
      ctx.progress(
        `waiting for ${host} to answer on its management path (commit-confirm, ${Math.max(0, Math.round((deadline - Date.now()) / 1000))} s left)`,
      );
      lastSaid = Date.now();
    }
    const left = deadline - Date.now();
    const r = await attempt(agent.confirm(id, Math.min(timing.queryMs, Math.max(timing.queryMs / 4, left))));
    if (!(r instanceof Error)) {
      if (sendError !== undefined) ctx.progress(`${host} answers again; change confirmed`);
      return;
    }
    // 409: the host already rolled back (or refused the confirm); 404 after a send error: it never armed it.
    if (r instanceof VmlinkError && (r.kind === 'conflict' || r.kind === 'invalid-state')) break;
    if (r instanceof VmlinkError && r.kind === 'not-found') throw sendError ?? r;
    sendError ??= r;
    await sleep(Math.min(timing.retryMs, Math.max(0, deadline - Date.now())));
  }
  // The window is over: the host reverts by itself. Give it time, then ask what it did.
  ctx.progress(`${host} did not confirm within ${secs} s; waiting for it to roll the change back by itself`);
  const askFrom = deadline + timing.rollbackGraceMs;
  while (Date.now() < askFrom) {
    if (ctx.signal.aborted) break;
    await sleep(Math.min(timing.retryMs, askFrom - Date.now()));
  }
  const giveUp = Date.now() + timing.rollbackPollMs;
  lastSaid = 0;
  while (Date.now() < giveUp) {
    const st = await attempt(agent.confirmState(id, timing.queryMs));
    if (!(st instanceof Error) && st.state !== 'pending') {
      if (st.state === 'confirmed') return;
      return rolledBack(host, st, secs);
    }
    if (Date.now() - lastSaid >= timing.progressEveryMs) {
      ctx.progress(
        `waiting for ${host} to answer after its rollback (${Math.round((giveUp - Date.now()) / 1000)} s left)`,
      );
      lastSaid = Date.now();
    }
    await sleep(timing.retryMs);
  }
  throw new UnavailableError(
    `cut ${host}'s management path and ${host} has not answered since; it should have rolled the change back by itself after ${secs} s: check the host's console.`,
    `host/${host}`,
  );
}

function rolledBack(host: string, st: ConfirmState, secs: number): never {
  if (st.state === 'rollback-failed')
    throw new VmlinkError(
      'exec',
      `cut ${host}'s management path; ${host} tried to roll it back by itself after ${secs} s and failed: ${st.detail}.`,
      { subject: `host/${host}` },
    );
  throw new RolledBackError(
    `cut ${host}'s management path; ${host} rolled it back by itself after ${secs} s.`,
    `host/${host}`,
  );
}

/** The promise's value, or the error it failed with. */
const attempt = <T>(p: Promise<T>): Promise<T | Error> =>
  p.catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
