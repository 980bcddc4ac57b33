import { describe, expect, it } from 'vitest';
import { UnavailableError } from '../shared/errors.js';
import type { HostReport } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import { hostHealth, Monitor } from './monitor.js';
import { SqliteStore } from './store/sqlite.js';

const spec = loadSpec(
  `version: 1
hosts:
  - { name: host1, agent: "unix:///nonexistent/h1.sock" }
  - { name: host2, agent: "unix:///nonexistent/h2.sock" }
`,
  'spec.yaml',
);

describe('heartbeat monitor', () => {
  it('marks a host unreachable after 3 missed heartbeats, up again when it answers, with one event per change', async () => {
    const store = new SqliteStore(':memory:');
    const dead = new Set<string>();
    const monitor = new Monitor(store, async () => spec, {
      client: (_s, host) => ({
        health: async () => {
          if (dead.has(host)) throw new UnavailableError(`cannot reach agent of ${host}`);
          return { ok: true, version: 'x' };
        },
        report: async () => ({ capabilities: { cpus: 2 } }) as unknown as HostReport,
      }),
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
});
