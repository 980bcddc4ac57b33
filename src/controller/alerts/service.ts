// The alert engine as an active-only service (controller/main.ts): on the active controller it evaluates the rules
// after each of the collector's collections and publishes the instance counts as `vmlink_alerts`; a standby does not
// evaluate (its engine reads the store afresh when it becomes active).
import { log } from '../../shared/log.js';
import type { MetricsSnapshot } from '../../shared/metrics.js';
import type { AlertCount, AlertEngine } from './engine.js';

/** What the engine listens to: the collector's `onCollected` (returns the unsubscribe). */
export interface CollectionSource {
  onCollected(listener: (s: MetricsSnapshot) => void | Promise<void>): () => void;
}

/** The active-only service that runs `engine` on `source`'s collections; `publish` receives the counts. */
export function alertService(
  engine: AlertEngine,
  source: CollectionSource,
  publish?: (counts: AlertCount[]) => void,
): { name: string; start(): void; stop(): Promise<void> } {
  let unsubscribe: (() => void) | undefined;
  return {
    name: 'alert rules',
    start() {
      engine.reset();
      unsubscribe?.();
      unsubscribe = source.onCollected(async (s) => {
        try {
          await engine.evaluate(s);
          publish?.(engine.counts());
        } catch (e) {
          // One failed evaluation (a store hiccup) must not stop the next collection's.
          log.warn({ err: (e as Error).message }, 'alert evaluation failed');
        }
      });
    },
    async stop() {
      unsubscribe?.();
      unsubscribe = undefined;
      await engine.drain();
    },
  };
}
