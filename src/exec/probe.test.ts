import { describe, expect, it } from 'vitest';
import {
  dfPingArgv,
  parseHttp,
  parseNeighMac,
  parsePing,
  parseProbe,
  parseTcp,
  pingArgv,
  probeArgv,
} from './probe.js';

it("builds a don't-fragment ping with an exact payload", () => {
  expect(dfPingArgv('10.0.0.2', 1422, 1000)).toEqual([
    'ping',
    '-n',
    '-M',
    'do',
    '-c',
    '1',
    '-W',
    '1',
    '-s',
    '1422',
    '10.0.0.2',
  ]);
});

it('reads iputils replies and local "message too long" errors', () => {
  const ok =
    'PING 10.0.0.2 (10.0.0.2) 1422(1450) bytes of data.\n1430 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.512 ms\n';
  expect(parsePing(0, ok, '')).toEqual({ reachable: true, rttMs: 0.512, detail: 'echo reply' });
  const big = parsePing(
    1,
    'PING 10.0.0.2 (10.0.0.2) 1473(1501) bytes of data.\n',
    'ping: local error: message too long, mtu=1500\n',
  );
  expect(big).toEqual({ reachable: false, detail: 'ping: local error: message too long, mtu=1500' });
});

it('reads the MAC of a neighbour entry', () => {
  expect(parseNeighMac('10.20.0.100 dev eth0 lladdr 52:54:00:AB:cd:01 REACHABLE\n')).toBe(
    '52:54:00:ab:cd:01',
  );
  expect(parseNeighMac('10.20.0.100 dev eth0  FAILED\n')).toBeUndefined();
  expect(parseNeighMac('')).toBeUndefined();
});

describe('measured vs unmeasured outcomes', () => {
  it('counts no reply and a refusing network as measured', () => {
    expect(parsePing(1, '1 packets transmitted, 0 received', '')).toEqual({
      reachable: false,
      detail: 'no reply',
    });
    expect(parsePing(2, '', 'ping: connect: Network is unreachable').unmeasured).toBeUndefined();
    expect(
      parsePing(1, 'From 10.0.0.1 icmp_seq=1 Destination Host Unreachable', 'x').unmeasured,
    ).toBeUndefined();
  });
  it('counts a ping that did not run as unmeasured, never as "unreachable"', () => {
    expect(parsePing(127, '', 'sh: ping: not found')).toMatchObject({ reachable: false, unmeasured: true });
    expect(parsePing(2, '', 'ping: unknown host')).toMatchObject({ unmeasured: true });
    expect(parseHttp(127, '', 'timeout: applet not found', 5)).toMatchObject({ unmeasured: true });
    expect(
      parseHttp(1, '', "wget: can't connect to remote host: Connection refused", 5).unmeasured,
    ).toBeUndefined();
  });
});

it('binds a ping to an interface when asked (busybox and iputils), and only then', () => {
  expect(pingArgv('10.0.0.2', 2000, true, 'eth1')).toEqual([
    'ping',
    '-I',
    'eth1',
    '-c',
    '1',
    '-W',
    '2',
    '10.0.0.2',
  ]);
  expect(pingArgv('10.0.0.2', 2000, false, 'eth1')).toEqual([
    'ping',
    '-n',
    '-I',
    'eth1',
    '-c',
    '1',
    '-W',
    '2',
    '10.0.0.2',
  ]);
  expect(pingArgv('10.0.0.2', 2000, true)).not.toContain('-I');
  expect(dfPingArgv('10.0.0.2', 1372, 1000, 'eth1').slice(0, 4)).toEqual(['ping', '-n', '-I', 'eth1']);
});

describe('tcp connect probes (service ports: iSCSI portals, NFS servers)', () => {
  it('connects and closes at once, and tells a refusal from a missing tool', async () => {
    const { createServer } = await import('node:net');
    const { execFile } = await import('node:child_process');
    const server = createServer((s) => s.end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const run = (argv: string[]) =>
      new Promise<{ code: number; stderr: string; ms: number }>((resolve) => {
        const t = Date.now();
        execFile(argv[0]!, argv.slice(1), (err, _out, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr, ms: Date.now() - t }),
        );
      });
    try {
      const argv = probeArgv({ kind: 'tcp', target: '127.0.0.1', port, timeoutMs: 2000 }, 'host');
      const up = await run(argv);
      expect(parseTcp(up.code, '', up.stderr, up.ms)).toMatchObject({ reachable: true, detail: 'connected' });
      await new Promise((r) => server.close(r));
      const down = await run(argv);
      expect(parseTcp(down.code, '', down.stderr, down.ms)).toEqual({
        reachable: false,
        detail: "can't connect to remote host (127.0.0.1): Connection refused",
      });
    } finally {
      server.close();
    }
  });

  it('reads timeouts as unreachable and a missing applet as unmeasured', () => {
    expect(parseTcp(143, '', '', 3000)).toEqual({
      reachable: false,
      detail: 'no answer (connect timed out)',
    });
    expect(parseTcp(127, '', 'nc: applet not found', 1)).toMatchObject({ unmeasured: true });
    expect(parseProbe('tcp', 0, '', '', 4)).toEqual({ reachable: true, rttMs: 4, detail: 'connected' });
  });
});
