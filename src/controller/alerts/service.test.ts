import { describe, expect, it } from 'vitest';
import type { MetricsSnapshot } from '../../shared/metrics.js';
import { AlertRuleSchema } from '../../spec/schema-observe.js';
import { SqliteStore } from '../store/sqlite.js';
import { type AlertCount, AlertEngine } from './engine.js';
import { alertService } from './service.js';

describe('alert service', () => {
  it('evaluates after each collection while started, publishes the counts, and stops listening when stopped', async () => {
    const store = new SqliteStore(':memory:');
    const engine = new AlertEngine({
      store,
      rules: async () => [
        AlertRuleSchema.parse({ name: 'up', expr: 'vmlink_host_up', op: '<', threshold: 1 }),
      ],
    });
    const listeners = new Set<(s: MetricsSnapshot) => void | Promise<void>>();
    const source = {
      onCollected(l: (s: MetricsSnapshot) => void | Promise<void>) {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    };
    const published: AlertCount[][] = [];
    const svc = alertService(engine, source, (c) => published.push(c));
    const collect = async (value: number) => {
      for (const l of listeners)
        await l({ at: Date.now(), series: [{ name: 'vmlink_host_up', labels: { host: 'h1' }, value }] });
    };
    svc.start();
    svc.start(); // a second start (a new term) does not subscribe twice
    expect(listeners.size).toBe(1);
    await collect(0);
    expect(published).toEqual([[{ rule: 'up', state: 'firing', severity: 'warning', count: 1 }]]);
    await svc.stop();
    expect(listeners.size).toBe(0);
    await collect(1);
    expect(published).toHaveLength(1);
    await store.close();
  });
});
