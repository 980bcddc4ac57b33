import { afterEach, describe, expect, it, vi } from 'vitest';
import type { GuestList } from '../agent/wire-guests.js';
import type { HostReport } from '../shared/model.js';
import { loadSpec } from '../spec/load.js';
import type { AgentPort } from './hosts.js';
import type { HostHealth } from './monitor.js';
import { ReportCache, withReportCache } from './report-cache.js';
import { hostGuests, ReportRefresher } from './report-refresh.js';

const names = Array.from({ length: 10 }, (_, i) => `h${i}`);
const spec = loadSpec(
  `version: 1\nhosts:\n${names.map((h) => `  - { name: ${h}, agent: "unix:///fake/${h}.sock" }`).join('\n')}\n`,
);
const reportOf = (vms: Array<{ name: string; state: string }>) =>
  ({ vms, networks: [] }) as unknown as HostReport;
const up: HostHealth = { state: 'up', missed: 0, since: '2026-01-01T00:00:00Z' };

afterEach(() => {
  vi.useRealTimers();
});

describe('the report refresher', () => {
  it('asks every host once a period, at most `concurrency` at once, leaving hosts the monitor gave up on', async () => {
    vi.useFakeTimers();
    let running = 0;
    let most = 0;
    const asked: string[] = [];
    const agents = (_s: unknown, host: string) =>
      ({
        report: async () => {
          asked.push(host);
          running++;
          most = Math.max(most, running);
          await new Promise((r) => setTimeout(r, 100)); // each report takes 100 ms of (fake) time
          running--;
          return reportOf([]);
        },
      }) as unknown as AgentPort;
    const cache = new ReportCache({ now: () => Date.now() });
    const health = Object.fromEntries(names.map((h) => [h, up]));
    health.h9 = { ...up, state: 'unreachable', missed: 3 };
    const refresher = new ReportRefresher({
      cache,
      spec: async () => spec,
      agents: withReportCache(agents, cache),
      health: async () => health,
      concurrency: 3,
    });
    refresher.start(5_000);
    expect(cache.serving).toBe(true);
    // 9 hosts, 3 at a time, 100 ms each: the round takes 300 ms.
    await vi.advanceTimersByTimeAsync(350);
    expect(most).toBe(3);
    expect(asked.sort()).toEqual(names.slice(0, 9));
    expect(refresher.lastRound).toMatchObject({ hosts: 9 });
    expect(cache.report('h0')).toBeDefined();
    expect(cache.report('h9')).toBeUndefined();
    // Nothing more until the period is over; then the next round.
    await vi.advanceTimersByTimeAsync(4_000);
    expect(asked).toHaveLength(9);
    await vi.advanceTimersByTimeAsync(1_400);
    expect(asked).toHaveLength(18);
    refresher.stop();
    expect(cache.serving).toBe(false);
    await vi.advanceTimersByTimeAsync(20_000);
    expect(asked).toHaveLength(18);
  });

  it("keeps each host's guest addresses beside its report: one bulk call for its running VMs", async () => {
    const bulk: GuestList = {
      vms: [
        {
          name: 'web',
          interfaces: [
            {
              name: 'eth0',
              mac: '52:54:00:AA:00:01',
              addresses: ['10.0.0.5/24', 'fe80::1/64', '127.0.0.1/8'],
            },
          ],
        },
        { name: 'db', error: 'its guest agent did not answer within 3 s' },
      ],
      truncated: false,
    };
    const calls: string[] = [];
    const agent = {
      report: async () =>
        reportOf([
          { name: 'web', state: 'running' },
          { name: 'db', state: 'running' },
          { name: 'old', state: 'stopped' },
        ]),
      guestList: async () => {
        calls.push('bulk');
        return bulk;
      },
      interfaces: async (vm: string) => {
        calls.push(vm);
        return [];
      },
    } as unknown as AgentPort;
    const cache = new ReportCache({ guestPatienceMs: 0 });
    const one = loadSpec('version: 1\nhosts: [{ name: h0, agent: "unix:///fake/h0.sock" }]\n');
    await new ReportRefresher({
      cache,
      spec: async () => one,
      agents: () => agent,
      health: async () => ({ h0: up }),
    }).round();
    expect(calls).toEqual(['bulk']);
    const g = cache.guests('h0')?.value;
    // Loopback and link-local addresses left out, MACs in lower case; a guest that did not answer: undefined.
    expect(g?.get('web')).toEqual(new Map([['52:54:00:aa:00:01', ['10.0.0.5/24']]]));
    expect(g?.has('db')).toBe(true);
    expect(g?.get('db')).toBeUndefined();
    expect(g?.has('old')).toBe(false);
  });

  it('asks guests every third round only, and never more than once per 5 s whatever the heartbeat', async () => {
    vi.useFakeTimers();
    const calls: string[] = [];
    const agent = {
      report: async () => {
        calls.push('report');
        return reportOf([{ name: 'web', state: 'running' }]);
      },
      guestList: async () => {
        calls.push('bulk');
        return { vms: [], truncated: false };
      },
    } as unknown as AgentPort;
    const one = loadSpec('version: 1\nhosts: [{ name: h0, agent: "unix:///fake/h0.sock" }]\n');
    const refresher = new ReportRefresher({
      cache: new ReportCache({ now: () => Date.now() }),
      spec: async () => one,
      agents: () => agent,
      health: async () => ({ h0: up }),
    });
    refresher.start(1_000); // a 1 s heartbeat: rounds every 5 s
    await vi.advanceTimersByTimeAsync(100);
    expect(calls).toEqual(['report', 'bulk']);
    await vi.advanceTimersByTimeAsync(4_000);
    expect(calls).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(11_000); // rounds 2 and 3 (reports only), round 4 asks guests again
    expect(calls).toEqual(['report', 'bulk', 'report', 'report', 'report', 'bulk']);
    refresher.stop();
  });
});

describe('guest addresses of one host', () => {
  it('asks VM by VM when the agent predates the bulk route (404: undefined), each bounded', async () => {
    const asked: string[] = [];
    const agent = {
      guestList: async () => undefined,
      interfaces: async (vm: string) => {
        asked.push(vm);
        if (vm === 'b') throw new Error('guest agent of b did not answer');
        return [{ name: 'eth0', mac: '52:54:00:00:00:0A', addresses: ['10.0.0.10/24'] }];
      },
    } as unknown as AgentPort;
    const cache = new ReportCache();
    const g = await hostGuests(agent, 'h0', ['a', 'b'], cache);
    expect(asked.sort()).toEqual(['a', 'b']);
    expect(g.get('a')).toEqual(new Map([['52:54:00:00:00:0a', ['10.0.0.10/24']]]));
    expect(g.get('b')).toBeUndefined();
  });

  it('an agent without the method at all (a fake) is asked VM by VM too', async () => {
    const agent = {
      interfaces: async () => [{ name: 'eth0', mac: '52:54:00:00:00:0b', addresses: ['10.0.0.11/24'] }],
    } as unknown as AgentPort;
    expect((await hostGuests(agent, 'h0', ['a'])).get('a')?.get('52:54:00:00:00:0b')).toEqual([
      '10.0.0.11/24',
    ]);
  });

  it('keeps nothing when the bulk call fails (the agent did not answer): every guest unknown', async () => {
    const agent = {
      guestList: async () => {
        throw new Error('cannot reach the agent of h0');
      },
      interfaces: async () => {
        throw new Error('not asked');
      },
    } as unknown as AgentPort;
    const cache = new ReportCache({ guestPatienceMs: 0 });
    const g = await hostGuests(agent, 'h0', ['a'], cache);
    expect(g.get('a')).toBeUndefined();
    expect(cache.guests('h0')).toBeUndefined();
  });
});
