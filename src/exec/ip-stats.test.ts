import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { guestView, linkStats, parseLinkStats } from './ip-stats.js';
import { RecordingRunner } from './runner.js';

// Captured here: `ip -json -stats link show` in a namespace holding a bridge, a tap on it, and a veth pair
// (eth0 <-> eth0p) that carried a few pings.
const captured = readFileSync(new URL('./__fixtures__/ip-link-stats.json', import.meta.url), 'utf8');

describe('parseLinkStats', () => {
  it("reads every link's 64-bit counters by name", () => {
    const links = parseLinkStats(captured, 100);
    expect([...links.keys()]).toEqual(['lo', 'vlbr-lan', 'vl-web1-0', 'eth0p', 'eth0']);
    expect(links.get('eth0')).toEqual({
      rxBytes: 516,
      txBytes: 600,
      rxPackets: expect.any(Number),
      txPackets: expect.any(Number),
      rxDropped: 0,
      txDropped: 0,
      rxErrors: 0,
      txErrors: 0,
    });
    // What one end of the pair sent, the other received.
    expect(links.get('eth0p')?.rxBytes).toBe(links.get('eth0')?.txBytes);
    expect(links.get('vlbr-lan')?.txDropped).toBe(2);
  });

  it('keeps at most `max` links and leaves out entries that are not well formed', () => {
    expect(parseLinkStats(captured, 2).size).toBe(2);
    const entries = JSON.parse(captured) as Array<Record<string, unknown>>;
    const bad = [
      { ...entries[1], stats64: undefined },
      { ...entries[2], ifname: 'a b; rm -rf /' },
      { ...entries[3], stats64: { rx: { bytes: -1, packets: 0, errors: 0, dropped: 0 }, tx: {} } },
      entries[4],
    ];
    expect([...parseLinkStats(JSON.stringify(bad), 100).keys()]).toEqual(['eth0']);
    expect(parseLinkStats('', 100).size).toBe(0);
    expect(() => parseLinkStats('{"ifname":"x"}', 100)).toThrow(/expected an array/);
  });

  it("turns a tap's counters into its guest's view", () => {
    const tap = parseLinkStats(captured, 100).get('eth0')!;
    expect(guestView(tap)).toMatchObject({ rxBytes: 600, txBytes: 516 });
    expect(guestView(guestView(tap))).toEqual(tap);
  });

  it('runs one ip command, in the namespace asked', async () => {
    const runner = new RecordingRunner().on(['ip', '-json', '-stats', 'link', 'show'], { stdout: captured });
    expect((await linkStats(runner, 100, 'lab1')).size).toBe(5);
    expect(runner.calls).toEqual([{ argv: ['ip', '-json', '-stats', 'link', 'show'], netns: 'lab1' }]);
  });
});
