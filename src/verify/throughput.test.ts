import { describe, expect, it } from 'vitest';
import {
  guestSide,
  iperfClientArgv,
  measureThroughput,
  parseIperf3Json,
  type SideRun,
  type ThroughputSide,
} from './throughput.js';

// Trimmed from a real `iperf3 -c 127.0.0.1 -t 1 -J` (iperf 3.12) run.
const OK = JSON.stringify({
  start: { version: 'iperf 3.12' },
  intervals: [],
  end: {
    sum_sent: {
      start: 0,
      end: 1.000038,
      seconds: 1.000038,
      bits_per_second: 15570761911.04738,
      retransmits: 3,
    },
    sum_received: { start: 0, end: 1.000089, seconds: 1.000089, bits_per_second: 15518592221.292305 },
  },
});
// iperf 3.12 prints this (and exits 0) when nothing listens.
const REFUSED =
  '{\n\t"start":\t{},\n\t"intervals":\t[],\n\t"end":\t{\n\t},\n\t"error":\t"unable to connect to server: Connection refused"\n}\n';

describe('iperf3 JSON', () => {
  it('reads the received rate, the sender retransmits and the duration', () => {
    expect(parseIperf3Json(OK)).toEqual({ mbps: 15518.59, retransmits: 3, durationS: 1 });
  });

  it('leaves retransmits out when iperf3 has none (non-Linux sender)', () => {
    const doc = { end: { sum_received: { bits_per_second: 9.4e8, seconds: 3.01 }, sum_sent: {} } };
    expect(parseIperf3Json(JSON.stringify(doc))).toEqual({ mbps: 940, durationS: 3.01 });
  });

  it("throws iperf3's own error, and a clear one for text that is not JSON", () => {
    expect(() => parseIperf3Json(REFUSED)).toThrow('iperf3: unable to connect to server: Connection refused');
    expect(() => parseIperf3Json('iperf3: error - some failure\n')).toThrow(
      'iperf3 printed no JSON: iperf3: error - some failure',
    );
    expect(() => parseIperf3Json('{"end":{}}')).toThrow('no end.sum_received');
  });
});

/** A scripted side: records commands, answers client runs from `replies` in order. */
function fakeSide(id: string, replies: SideRun[] = []): ThroughputSide & { log: string[] } {
  const log: string[] = [];
  return {
    id,
    address: `10.0.0.${id.length}`,
    log,
    async run(argv) {
      log.push(argv.join(' '));
      return replies.shift() ?? { code: 0, stdout: OK, stderr: '' };
    },
    async startServer(port) {
      log.push(`server ${port}`);
      return async () => {
        log.push('stop');
      };
    },
  };
}

describe('measureThroughput', () => {
  it('starts the server on b, runs the client on a, stops the server', async () => {
    const a = fakeSide('a');
    const b = fakeSide('bb');
    const r = await measureThroughput(a, b, { seconds: 2 });
    expect(r).toEqual({ from: 'a', to: 'bb', mbps: 15518.59, retransmits: 3, durationS: 1 });
    expect(b.log).toEqual(['server 5201', 'stop']);
    expect(a.log).toEqual([iperfClientArgv('10.0.0.2', 5201, 2).join(' ')]);
  });

  it('retries while the server is not listening yet, not on other errors; stops the server either way', async () => {
    const a = fakeSide('a', [
      { code: 0, stdout: REFUSED, stderr: '' },
      { code: 1, stdout: REFUSED, stderr: '' },
    ]);
    const b = fakeSide('b');
    expect((await measureThroughput(a, b, { retryMs: 1 })).mbps).toBe(15518.59);
    expect(a.log).toHaveLength(3);

    const timeout = '{"error":"unable to connect to server: Connection timed out"}';
    const c = fakeSide('c', [{ code: 1, stdout: timeout, stderr: '' }]);
    const d = fakeSide('d');
    await expect(measureThroughput(c, d, { retryMs: 1 })).rejects.toThrow(
      'throughput c -> d: iperf3: unable to connect to server: Connection timed out',
    );
    expect(c.log).toHaveLength(1);
    expect(d.log).toEqual(['server 5201', 'stop']);
  });
});

describe('sides', () => {
  it('a guest side daemonises the server and kills it through its pidfile', async () => {
    const calls: string[][] = [];
    const side = guestSide('web1', '10.0.0.5', async (argv) => {
      calls.push(argv);
      return { exitCode: 0, stdout: argv[0] === 'cat' ? '321\n' : '', stderr: '' };
    });
    const stop = await side.startServer(5201);
    await stop();
    await stop();
    expect(calls).toEqual([
      ['iperf3', '-s', '-1', '-D', '-p', '5201', '-I', '/tmp/vmlink-iperf3-5201.pid'],
      ['cat', '/tmp/vmlink-iperf3-5201.pid'],
      ['kill', '321'],
    ]);
  });

  it('a guest side refuses to go on when iperf3 cannot start', async () => {
    const side = guestSide('web1', '10.0.0.5', async () => ({
      exitCode: 127,
      stdout: '',
      stderr: 'exec: iperf3: not found',
    }));
    await expect(side.startServer(5201)).rejects.toThrow(
      'cannot start iperf3 in web1: exec: iperf3: not found',
    );
  });
});
