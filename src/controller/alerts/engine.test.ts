import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MetricsSnapshot, Series } from '../../shared/metrics.js';
import { AlertRuleSchema, type AlertRuleSpec } from '../../spec/schema-observe.js';
import { SqliteStore } from '../store/sqlite.js';
import type { Store } from '../store/types.js';
import type { VolumeGrower } from './actions.js';
import { type AlertCount, AlertEngine, RESOLVED_KEEP_MS } from './engine.js';

const rule = (r: Record<string, unknown>): AlertRuleSpec => AlertRuleSchema.parse(r);
const cpu = (host: string, value: number): Series => ({
  name: 'vmlink_host_cpu_utilization',
  labels: { host },
  value,
});

/** A webhook receiver on 127.0.0.1: records each POST body; answers the statuses of `answers` in turn, then 200. */
async function receiver(answers: number[] = []) {
  const bodies: unknown[] = [];
  const server: Server = createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => {
      text += c.toString();
    });
    req.on('end', () => {
      bodies.push(JSON.parse(text));
      res.statusCode = answers.shift() ?? 200;
      res.end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook/secret-token`;
  return { bodies, url, close: () => new Promise<void>((r) => server.close(() => r())) };
}

describe('alert engine', () => {
  let store: Store;
  let now: number;
  let rules: AlertRuleSpec[];
  let counts: AlertCount[];
  const snap = (...series: Series[]): MetricsSnapshot => ({ at: now, series });
  const engine = (extra: Partial<ConstructorParameters<typeof AlertEngine>[0]> = {}) =>
    new AlertEngine({
      store,
      rules: async () => rules,
      now: () => now,
      onCounts: (c) => {
        counts = c;
      },
      actions: { sleep: async () => {}, webhookTimeoutMs: 2000 },
      ...extra,
    });
  const events = async (prefix = 'alert.') =>
    (await store.events(100)).filter((e) => e.kind.startsWith(prefix)).map((e) => `${e.kind} ${e.message}`);

  beforeEach(() => {
    store = new SqliteStore(':memory:');
    now = Date.parse('2026-12-01T10:00:00Z');
    counts = [];
  });
  afterEach(async () => {
    await store.close();
  });

  it('pending, firing after `for`, resolved; a webhook on firing and resolved; one instance per series', async () => {
    const hook = await receiver();
    try {
      rules = [
        rule({
          name: 'host-cpu',
          expr: 'vmlink_host_cpu_utilization',
          threshold: 0.85,
          for: '5m',
          severity: 'critical',
          summary: 'CPU of {{host}} at {{value}}',
          actions: [{ type: 'log' }, { type: 'webhook', url: hook.url }],
        }),
      ];
      const e = engine();
      expect(await e.evaluate(snap(cpu('h1', 0.9), cpu('h2', 0.2)))).toEqual([
        { rule: 'host-cpu', labels: { host: 'h1' }, state: 'pending' },
      ]);
      now += 4 * 60_000;
      expect(await e.evaluate(snap(cpu('h1', 0.95), cpu('h2', 0.2)))).toEqual([]);
      now += 60_000;
      expect(await e.evaluate(snap(cpu('h1', 0.97), cpu('h2', 0.2)))).toEqual([
        { rule: 'host-cpu', labels: { host: 'h1' }, state: 'firing' },
      ]);
      expect(counts).toEqual([{ rule: 'host-cpu', state: 'firing', severity: 'critical', count: 1 }]);
      await e.drain();
      expect(hook.bodies).toEqual([
        {
          rule: 'host-cpu',
          state: 'firing',
          severity: 'critical',
          labels: { host: 'h1' },
          value: 0.97,
          summary: 'CPU of h1 at 0.97',
          startsAt: '2026-12-01T10:00:00.000Z',
        },
      ]);
      now += 60_000;
      expect(await e.evaluate(snap(cpu('h1', 0.97)))).toEqual([]); // still firing: no second POST
      now += 60_000;
      expect(await e.evaluate(snap(cpu('h1', 0.3)))).toEqual([
        { rule: 'host-cpu', labels: { host: 'h1' }, state: 'resolved' },
      ]);
      await e.drain();
      expect(hook.bodies).toHaveLength(2);
      expect(hook.bodies[1]).toMatchObject({ state: 'resolved', endsAt: '2026-12-01T10:07:00.000Z' });
      const ev = await events();
      expect(ev[0]).toMatch(/^alert\.pending host-cpu\{host="h1"\} pending \(critical\): CPU of h1 at 0\.9$/);
      expect(ev).toContainEqual(expect.stringMatching(/^alert\.firing host-cpu\{host="h1"\} firing/));
      expect(ev).toContainEqual(expect.stringMatching(/^alert\.resolved host-cpu\{host="h1"\} resolved/));
      // The webhook's events name its origin only: the path may carry a token.
      const hooks = ev.filter((x) => x.startsWith('alert.action '));
      expect(hooks).toHaveLength(2);
      expect(hooks.join('\n')).not.toContain('secret-token');
      const view = await e.view();
      expect(view.instances).toMatchObject([
        { rule: 'host-cpu', state: 'resolved', firedAt: '2026-12-01T10:05:00.000Z' },
      ]);
      // A resolved instance is listed for an hour, then dropped.
      now += RESOLVED_KEEP_MS;
      await e.evaluate(snap(cpu('h1', 0.3)));
      expect((await e.view()).instances).toEqual([]);
    } finally {
      await hook.close();
    }
  });

  it('a condition that stops holding while pending goes back to inactive without firing', async () => {
    rules = [rule({ name: 'hot', expr: 'vmlink_host_cpu_utilization', threshold: 0.5, for: '1m' })];
    const e = engine();
    await e.evaluate(snap(cpu('h1', 0.9)));
    now += 30_000;
    expect(await e.evaluate(snap(cpu('h1', 0.1)))).toEqual([
      { rule: 'hot', labels: { host: 'h1' }, state: 'inactive' },
    ]);
    now += 60_000;
    // Holding again starts a new pending: the earlier `for` does not count.
    expect((await e.evaluate(snap(cpu('h1', 0.9))))[0]?.state).toBe('pending');
    expect((await e.view()).instances).toMatchObject([
      { state: 'pending', activeSince: new Date(now).toISOString() },
    ]);
  });

  it('`for: 0s` fires at once; aggregations give one instance per group', async () => {
    rules = [
      rule({ name: 'vm-hot', expr: 'max by (host) (vmlink_vm_cpu_utilization{vm=~"web-.*"})', threshold: 1 }),
    ];
    const vm = (host: string, name: string, value: number): Series => ({
      name: 'vmlink_vm_cpu_utilization',
      labels: { host, vm: name },
      value,
    });
    const t = await engine().evaluate(
      snap(vm('h1', 'web-1', 0.5), vm('h1', 'web-2', 1.5), vm('h1', 'db', 3), vm('h2', 'web-3', 0.2)),
    );
    expect(t).toEqual([{ rule: 'vm-hot', labels: { host: 'h1' }, state: 'firing' }]);
  });

  it('state survives a new engine on the same store (a restart): `for` is not restarted, actions do not rerun', async () => {
    const hook = await receiver();
    try {
      rules = [
        rule({
          name: 'hot',
          expr: 'vmlink_host_cpu_utilization',
          threshold: 0.5,
          for: '2m',
          actions: [{ type: 'webhook', url: hook.url }],
        }),
      ];
      await engine().evaluate(snap(cpu('h1', 0.9)));
      now += 2 * 60_000;
      const second = engine();
      expect((await second.evaluate(snap(cpu('h1', 0.9))))[0]?.state).toBe('firing');
      await second.drain();
      const third = engine();
      now += 60_000;
      expect(await third.evaluate(snap(cpu('h1', 0.9)))).toEqual([]);
      await third.drain();
      expect(hook.bodies).toHaveLength(1);
    } finally {
      await hook.close();
    }
  });

  it('a silence suppresses actions but not transitions; unsilence ends it; an ack marks firing instances until resolved', async () => {
    const hook = await receiver();
    try {
      rules = [
        rule({
          name: 'hot',
          expr: 'vmlink_host_cpu_utilization',
          threshold: 0.5,
          actions: [{ type: 'webhook', url: hook.url }],
        }),
      ];
      const e = engine();
      const s = await e.silence(
        { rule: 'hot', labels: { host: 'h1' }, forSeconds: 3600, comment: 'maintenance' },
        'alice',
      );
      expect(s).toMatchObject({
        rule: 'hot',
        labels: { host: 'h1' },
        createdBy: 'alice',
        until: '2026-12-01T11:00:00.000Z',
      });
      const t = await e.evaluate(snap(cpu('h1', 0.9), cpu('h2', 0.9)));
      expect(t).toEqual([
        { rule: 'hot', labels: { host: 'h1' }, state: 'firing', silencedBy: s.id },
        { rule: 'hot', labels: { host: 'h2' }, state: 'firing' },
      ]);
      await e.drain();
      expect(hook.bodies).toMatchObject([{ labels: { host: 'h2' } }]);
      expect((await e.view()).instances.map((i) => i.silencedBy)).toEqual([s.id, undefined]);
      expect(await events('alert.firing')).toContainEqual(
        expect.stringContaining(`[silenced by ${s.id}: no actions]`),
      );

      expect(await e.ack({ rule: 'hot', labels: { host: 'h2' } }, 'bob')).toBe(1);
      expect(await e.ack({ rule: 'hot', labels: { host: 'h2' } }, 'bob')).toBe(0); // once
      expect((await e.view()).instances.find((i) => i.labels.host === 'h2')?.acknowledgedBy).toBe('bob');

      await e.unsilence(s.id, 'alice');
      await expect(e.unsilence(s.id, 'alice')).rejects.toThrow(/silence .* not found/);
      now += 60_000;
      await e.evaluate(snap(cpu('h1', 0.1), cpu('h2', 0.1)));
      await e.drain();
      // h1's resolve is no longer silenced: it is posted; h2's too; the ack ended with the resolve.
      expect(hook.bodies.map((b) => (b as { state: string }).state)).toEqual([
        'firing',
        'resolved',
        'resolved',
      ]);
      expect((await e.view()).instances.every((i) => i.acknowledgedBy === undefined)).toBe(true);
      // An expired silence no longer applies and is not listed.
      const short = await e.silence({ rule: 'hot', labels: {}, forSeconds: 60 }, 'alice');
      now += 61_000;
      expect((await e.view()).silences.map((x) => x.id)).not.toContain(short.id);
    } finally {
      await hook.close();
    }
  });

  it('refuses silences and acks of unknown rules or of labels the rule never carries', async () => {
    rules = [rule({ name: 'hot', expr: 'max(vmlink_host_cpu_utilization)', threshold: 0.5 })];
    const e = engine();
    await expect(e.silence({ rule: 'cold', labels: {}, forSeconds: 60 }, 'a')).rejects.toThrow(
      /alert rule "cold" is not in the applied spec \(its rules: hot\)/,
    );
    await expect(e.ack({ rule: 'hot', labels: { host: 'h1' } }, 'a')).rejects.toThrow(
      /hot's instances have no label host \(their labels: none\)/,
    );
  });

  it('a webhook is retried on 5xx and failures are events; a 4xx is not retried', async () => {
    const hook = await receiver([503, 500, 200]);
    const bad = await receiver([404]);
    try {
      rules = [
        rule({
          name: 'hot',
          expr: 'vmlink_host_cpu_utilization',
          threshold: 0.5,
          actions: [
            { type: 'webhook', url: hook.url },
            { type: 'webhook', url: bad.url },
            { type: 'webhook', url: 'http://127.0.0.1:9/closed' },
          ],
        }),
      ];
      const e = engine();
      await e.evaluate(snap(cpu('h1', 0.9)));
      await e.drain();
      expect(hook.bodies).toHaveLength(3);
      expect(bad.bodies).toHaveLength(1);
      const ev = await events('alert.action');
      expect(ev).toContainEqual(expect.stringMatching(/alert\.action .*answered 200 \(try 3\)/));
      expect(ev).toContainEqual(
        expect.stringMatching(/alert\.action-failed .*HTTP 404 \(try 1; not retried\)/),
      );
      expect(ev).toContainEqual(
        expect.stringMatching(/alert\.action-failed .*127\.0\.0\.1:9.*after 3 tries/),
      );
    } finally {
      await hook.close();
      await bad.close();
    }
  });

  it('scale grows a volume by growByMiB through the resize path, never past maxMiB', async () => {
    const sizes = new Map([['v1', 100]]);
    const resized: string[] = [];
    const volumes: VolumeGrower = {
      volumes: async () => [...sizes].map(([name, sizeMiB]) => ({ name, sizeMiB })),
      resize: async (pool, name, sizeMiB) => {
        resized.push(`${pool}/${name} ${sizeMiB}`);
        sizes.set(name, sizeMiB);
      },
    };
    rules = [
      rule({
        name: 'pool-full',
        expr: 'vmlink_pool_utilization{pool="data"}',
        threshold: 0.8,
        actions: [{ type: 'scale', volume: 'data/v1', growByMiB: 64, maxMiB: 200 }],
      }),
    ];
    const e = engine({ actions: { volumes } });
    const pool = (v: number): Series => ({
      name: 'vmlink_pool_utilization',
      labels: { host: 'h1', pool: 'data' },
      value: v,
    });
    for (const v of [0.9, 0.1, 0.9, 0.1, 0.9]) {
      await e.evaluate(snap(pool(v)));
      await e.drain();
      now += 15_000;
    }
    expect(resized).toEqual(['data/v1 164', 'data/v1 200']);
    expect(await events('alert.action')).toContainEqual(
      expect.stringMatching(
        /alert\.action-failed .*volume data\/v1 is 200 MiB, at its maxMiB 200: not grown/,
      ),
    );
  });

  it('rules gone from the spec resolve their firing instances without actions', async () => {
    const hook = await receiver();
    try {
      rules = [
        rule({
          name: 'hot',
          expr: 'vmlink_host_cpu_utilization',
          threshold: 0.5,
          actions: [{ type: 'webhook', url: hook.url }],
        }),
      ];
      const e = engine();
      await e.evaluate(snap(cpu('h1', 0.9)));
      rules = [];
      expect(await e.evaluate(snap(cpu('h1', 0.9)))).toEqual([
        { rule: 'hot', labels: { host: 'h1' }, state: 'resolved' },
      ]);
      await e.drain();
      expect(hook.bodies).toHaveLength(1);
      expect(await events('alert.resolved')).toContainEqual(
        expect.stringContaining('(rule removed from the spec)'),
      );
    } finally {
      await hook.close();
    }
  });
});
