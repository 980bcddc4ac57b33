// What an alert does when it fires (and, for webhooks, when it resolves): a log line, a webhook POST, or growing a
// volume. Each outcome is an event; an action never throws into the engine (a failed action does not stop the
// others or the next evaluation).
import type { Logger } from '../../shared/log.js';
import { log as defaultLog } from '../../shared/log.js';
import { sleep as realSleep } from '../../shared/time.js';
import type { AlertAction } from '../../spec/schema-observe.js';
import type { Store } from '../store/types.js';
import { labelText } from './expr.js';
import { postWebhook, WEBHOOK_TIMEOUT_MS, WEBHOOK_TRIES } from './webhook.js';

/** What a webhook receives: the alert at one transition. */
export interface AlertNotice {
  rule: string;
  state: 'firing' | 'resolved';
  severity: string;
  labels: Record<string, string>;
  value: number;
  summary: string;
  /** When the condition first held (ISO). */
  startsAt: string;
  /** When it resolved (ISO). */
  endsAt?: string;
}

/** The storage side a `scale` action grows volumes through (StorageControl: the `vmlink volume resize` path). */
export interface VolumeGrower {
  volumes(pool: string): Promise<ReadonlyArray<{ name: string; sizeMiB: number }>>;
  resize(pool: string, name: string, sizeMiB: number): Promise<unknown>;
}

/** What actions need. */
export interface ActionDeps {
  store: Store;
  /** Absent: `scale` actions are refused (an event says so). */
  volumes?: VolumeGrower;
  /** Throws while an apply (or another host change) runs: a resize then waits for the next firing. */
  assertIdle?: () => void;
  log?: Logger;
  /** Backoff between webhook tries (tests: none). */
  sleep?: (ms: number) => Promise<void>;
  webhookTimeoutMs?: number;
  /** First backoff; doubled before each further try. */
  webhookBackoffMs?: number;
}

/** Runs one action for `notice`; records its outcome as an event and never throws. */
export async function runAction(action: AlertAction, notice: AlertNotice, deps: ActionDeps): Promise<void> {
  const who = `${notice.rule}${labelText(notice.labels)}`;
  const event = (kind: string, message: string) =>
    deps.store.appendEvent(kind, `${who}: ${message}`).catch((e: unknown) => {
      (deps.log ?? defaultLog).warn({ err: (e as Error).message }, 'alert event not recorded');
    });
  try {
    switch (action.type) {
      case 'log': {
        const log = deps.log ?? defaultLog;
        const line = {
          alert: notice.rule,
          labels: notice.labels,
          value: notice.value,
          severity: notice.severity,
        };
        if (notice.severity === 'info') log.info(line, `alert ${notice.state}: ${notice.summary}`);
        else log.warn(line, `alert ${notice.state}: ${notice.summary}`);
        return;
      }
      case 'webhook': {
        const r = await postWebhook(action.url, notice, {
          timeoutMs: deps.webhookTimeoutMs ?? WEBHOOK_TIMEOUT_MS,
          tries: WEBHOOK_TRIES,
          backoffMs: deps.webhookBackoffMs ?? 1000,
          sleep: deps.sleep ?? realSleep,
        });
        await event('alert.action', `webhook to ${r.target} answered ${r.status} (try ${r.tries})`);
        return;
      }
      case 'scale':
        await event('alert.action', await scale(action, deps));
        return;
    }
  } catch (e) {
    await event('alert.action-failed', `${action.type}: ${(e as Error).message}`);
  }
}

/** Grows the action's volume by `growByMiB`, never past `maxMiB`; says what it did. */
async function scale(action: Extract<AlertAction, { type: 'scale' }>, deps: ActionDeps): Promise<string> {
  const [pool, name] = action.volume.split('/') as [string, string];
  if (!deps.volumes)
    throw new Error(`scale: this controller cannot resize volumes, ${action.volume} was not grown`);
  deps.assertIdle?.();
  const v = (await deps.volumes.volumes(pool)).find((x) => x.name === name);
  if (!v) throw new Error(`scale: volume ${action.volume} is not in its pool, nothing was grown`);
  const have = Math.ceil(v.sizeMiB);
  if (have >= action.maxMiB)
    throw new Error(
      `scale: volume ${action.volume} is ${have} MiB, at its maxMiB ${action.maxMiB}: not grown`,
    );
  const to = Math.min(have + action.growByMiB, action.maxMiB);
  await deps.volumes.resize(pool, name, to);
  return `scale: volume ${action.volume} grown ${have} -> ${to} MiB (maxMiB ${action.maxMiB})`;
}
