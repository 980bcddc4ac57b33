import { describe, expect, it } from 'vitest';
import { UnavailableError } from '../shared/errors.js';
import type { HostReport } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import { HEARTBEAT_CONCURRENCY, hostHealth, LAST_SEEN_REFRESH_MS, Monitor } from './monitor.js';
import { SqliteStore } from './store/sqlite.js';

const spec = loadSpec(
  `version: 1
hosts:
  - { name: host1, agent: "unix:///nonexistent/h1.sock" }
  - { name: host2, agent: "unix:///nonexistent/h2.sock" }
`,
  'spec.yaml',
);

/** Fake agents: every host answers (2 CPUs) but those in `dead`. */
const agentsBut = (dead: ReadonlySet<string>) => (_s: unknown, host: string) => ({
  health: async () => {
    if (dead.has(host)) throw new UnavailableError(`cannot reach agent of ${host}`);
    return { ok: true, version: 'x' };
  },
  report: async () => ({ capabilities: { cpus: 2 } }) as unknown as HostReport,
});

describe('heartbeat monitor', () => {
  it('marks a host unreachable after 3 missed heartbeats, up again when it answers, with one event per change', async () => {
    const store = new SqliteStore(':memory:');
    const dead = new Set<string>();
    const monitor = new Monitor(store, async () => spec, {
      client: agentsBut(dead),
    });
    await monitor.tick();
    let h = await hostHealth(store);
    expect(h.host1).toMatchObject({ state: 'up', missed: 0, capabilities: { cpus: 2 } });
    expect(h.host2!.state).toBe('up');
    const seen = h.host2!.lastSeen;

    dead.add('host2');
    await monitor.tick();
    await monitor.tick();
    h = await hostHealth(store);
    expect(h.host2).toMatchObject({ state: 'up', missed: 2, lastSeen: seen });
    await monitor.tick();
    h = await hostHealth(store);
    expect(h.host2).toMatchObject({ state: 'unreachable', missed: 3, lastSeen: seen });
    expect(h.host2!.error).toContain('cannot reach agent of host2');
    await monitor.tick();

    dead.delete('host2');
    await monitor.tick();
    h = await hostHealth(store);
    expect(h.host2).toMatchObject({ state: 'up', missed: 0 });

    const events = (await store.events(50)).map((e) => `${e.kind} ${e.message.split(':')[0]}`);
    expect(events).toEqual([
      'host.up host1 is up',
      'host.up host2 is up',
      'host.unreachable host2 is unreachable',
      expect.stringMatching(/^host.up host2 is up again/),
    ]);
    await store.close();
  });

  it('forgets hosts that leave the spec', async () => {
    const store = new SqliteStore(':memory:');
    let current: typeof spec | undefined = spec;
    const monitor = new Monitor(store, async () => current, {
      client: () => ({
        health: async () => ({ ok: true, version: 'x' }),
        report: async () => {
          throw new Error('no report');
        },
      }),
    });
    await monitor.tick();
    expect(Object.keys(await hostHealth(store))).toEqual(['host1', 'host2']);
    current = undefined;
    await monitor.tick();
    expect(await hostHealth(store)).toEqual({});
    await store.close();
  });

  it(`polls at most ${HEARTBEAT_CONCURRENCY} hosts at once and reads the records in one list, not a get per host`, async () => {
    const many = loadSpec(
      `version: 1\nhosts:\n${Array.from({ length: 100 }, (_, i) => `  - { name: h${i}, agent: "unix:///nonexistent/h${i}.sock" }\n`).join('')}`,
      'spec.yaml',
    );
    const store = new SqliteStore(':memory:');
    let gets = 0;
    const get = store.get.bind(store);
    store.get = (async (key: string) => {
      gets++;
      return get(key);
    }) as typeof store.get;
    let inFlight = 0;
    let most = 0;
    const polled = new Set<string>();
    const monitor = new Monitor(store, async () => many, {
      client: (_s, host) => ({
        health: async () => {
          polled.add(host);
          most = Math.max(most, ++inFlight);
          await new Promise((r) => setTimeout(r, 2));
          inFlight--;
          return { ok: true, version: 'x' };
        },
        report: async () => ({ capabilities: { cpus: 2 } }) as unknown as HostReport,
      }),
    });
    await monitor.tick();
    await monitor.tick();
    expect(polled.size).toBe(100);
    expect(most).toBe(HEARTBEAT_CONCURRENCY);
    expect(gets).toBe(0);
    expect(Object.values(await hostHealth(store)).every((h) => h.state === 'up')).toBe(true);
    await store.close();
  });

  it('writes a record only when it changed or its lastSeen is older than the refresh period; the first miss keeps the exact last answer', async () => {
    const store = new SqliteStore(':memory:');
    const puts: string[] = [];
    const put = store.put.bind(store);
    store.put = (async (key: string, value: unknown, ...rest: unknown[]) => {
      puts.push(key);
      return (put as (...a: unknown[]) => Promise<unknown>)(key, value, ...rest);
    }) as typeof store.put;
    let clock = Date.parse('2026-12-02T15:00:00Z');
    const at = (ms: number) => new Date(ms).toISOString();
    const start = clock;
    // A round's period, well inside the refresh period (several rounds without a write).
    const step = LAST_SEEN_REFRESH_MS / 5;
    const dead = new Set<string>();
    const monitor = new Monitor(store, async () => spec, {
      now: () => clock,
      client: agentsBut(dead),
    });
    await monitor.tick();
    expect(puts).toEqual(['hosts/host1', 'hosts/host2']);
    puts.length = 0;
    clock += step;
    await monitor.tick();
    expect(puts).toEqual([]); // both up, nothing changed
    expect((await hostHealth(store)).host1!.lastSeen).toBe(at(start));

    clock = start + LAST_SEEN_REFRESH_MS;
    await monitor.tick();
    expect(puts.sort()).toEqual(['hosts/host1', 'hosts/host2']);
    expect((await hostHealth(store)).host1).toMatchObject({
      state: 'up',
      lastSeen: at(clock),
      since: at(start),
    });
    puts.length = 0;

    clock += step;
    const lastAnswer = clock;
    await monitor.tick(); // answered, not written
    expect(puts).toEqual([]);
    dead.add('host2');
    clock += step;
    await monitor.tick();
    expect(puts).toEqual(['hosts/host2']);
    expect((await hostHealth(store)).host2).toMatchObject({
      state: 'up',
      missed: 1,
      lastSeen: at(lastAnswer),
    });
    puts.length = 0;
    clock += step;
    await monitor.tick();
    expect(puts).toEqual(['hosts/host2']); // a miss is a change (missed: 2)
    puts.length = 0;

    dead.delete('host2');
    clock += step;
    await monitor.tick();
    expect(puts).toEqual(['hosts/host2']); // up again with nothing missed
    expect((await hostHealth(store)).host2).toMatchObject({ state: 'up', missed: 0, lastSeen: at(clock) });
    expect((await hostHealth(store)).host2!.error).toBeUndefined();
    await store.close();
  });
});
