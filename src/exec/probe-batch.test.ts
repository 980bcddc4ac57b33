import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  HOST_BUSYBOX,
  PROBE_OUTPUT_MAX_BYTES,
  type ProbeCommand,
  parseProbeBatch,
  probeArgv,
  probeBatchScript,
  runProbeBatch,
  shellQuote,
} from './probe.js';
import { SystemRunner } from './runner.js';

const REPLY = '64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.4 ms\n';
const sh = (script: string): string[] => ['sh', '-c', script];
const tmp = mkdtempSync(join(tmpdir(), 'vmlink-probe-batch-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// The script runs for real: under dash (a host's /bin/sh) and under busybox ash (the test guest's sh).
const shells: Array<[string, string[]]> = [['sh', []]];
if (existsSync(HOST_BUSYBOX)) shells.push(['busybox ash', [HOST_BUSYBOX]]);

describe.each(shells)('a probe batch under %s', (_name, prefix) => {
  const runner = new SystemRunner();
  const run = (probes: ProbeCommand[]) =>
    runProbeBatch(probes, (argv) =>
      runner.run([...prefix, ...argv], { allowFailure: true, timeoutMs: 20_000, env: { TMPDIR: tmp } }),
    );

  it('reads every probe with its own parser, in order, and leaves no files behind', async () => {
    const r = await run([
      { kind: 'ping', argv: ['printf', REPLY] },
      { kind: 'ping', argv: sh('echo "1 packets transmitted, 0 received"; exit 1') },
      { kind: 'ping', argv: sh('echo "sh: ping: not found" >&2; exit 127') },
      { kind: 'http', argv: ['printf', 'vmlink-guest g1\n'] },
      {
        kind: 'http',
        argv: sh('echo "wget: can\'t connect to remote host: Connection refused" >&2; exit 1'),
      },
    ]);
    expect(r[0]).toEqual({ reachable: true, rttMs: 0.4, detail: 'echo reply' });
    expect(r[1]).toEqual({ reachable: false, detail: 'no reply' });
    expect(r[2]).toMatchObject({ reachable: false, unmeasured: true });
    expect(r[3]).toMatchObject({ reachable: true, detail: 'vmlink-guest g1' });
    expect(r[3]!.rttMs).toBeGreaterThanOrEqual(0);
    expect(r[4]).toEqual({
      reachable: false,
      detail: "wget: can't connect to remote host: Connection refused",
    });
    expect(readdirSync(tmp)).toEqual([]);
  });

  it('runs the probes at once: the first waits for a file only the last creates', async () => {
    const flag = join(tmp, `flag-${prefix.length}`);
    const r = await run([
      { kind: 'ping', argv: sh(`while [ ! -e ${flag} ]; do sleep 0.05; done; printf '${REPLY}'`) },
      { kind: 'ping', argv: ['touch', flag] },
    ]);
    rmSync(flag, { force: true });
    expect(r[0]).toMatchObject({ reachable: true, rttMs: 0.4 });
  });

  it('passes every argument as one word, whatever it holds', async () => {
    const word = `it's $(echo x); \`id\` "q" \\ * \n$HOME`;
    const r = await run([{ kind: 'http', argv: ['printf', '%s|', word, 'b c'] }]);
    expect(r[0]!.detail).toBe(`it's $(echo x); \`id\` "q" \\ * `);
    const r2 = await run([{ kind: 'http', argv: ['sh', '-c', 'printf "%s" "$1"', 'sh', word] }]);
    expect(r2[0]!.detail).toBe(`it's $(echo x); \`id\` "q" \\ * `);
  });

  it('cuts a probe that prints too much and still reads it and the next', async () => {
    const r = await run([
      {
        kind: 'http',
        argv: sh('i=0; while [ $i -lt 400 ]; do echo 0123456789abcdef0123456789abcdef; i=$((i+1)); done'),
      },
      { kind: 'ping', argv: ['printf', REPLY] },
    ]);
    expect(r[0]).toMatchObject({ reachable: true, detail: '0123456789abcdef0123456789abcdef' });
    expect(r[1]).toMatchObject({ reachable: true, rttMs: 0.4 });
  });
});

describe('reading a batch’s output (untrusted)', () => {
  const nonce = '0123456789abcdef01234567';
  const block = (i: number, status: string, out: string, err = '', n = nonce) =>
    `@@${n} ${i} status ${status}\n${out}\n@@${n} ${i} stderr\n${err}\n@@${n} ${i} end\n`;
  const read = (stdout: string, kinds: ProbeCommand['kind'][] = ['ping', 'ping', 'ping'], code = 0) =>
    parseProbeBatch(kinds, nonce, { code, stdout, stderr: code ? 'mktemp: cannot create\n' : '' });

  it('reads what the script prints', () => {
    const r = read(
      block(0, '0 100.10 100.35', REPLY) + block(1, '1 100.10 102.11', '') + block(2, '0', 'x'),
      ['ping', 'ping', 'http'],
    );
    expect(r).toEqual([
      { reachable: true, rttMs: 0.4, detail: 'echo reply' },
      { reachable: false, detail: 'no reply' },
      { reachable: true, detail: 'x' },
    ]);
  });

  it('times an http probe from its block', () => {
    expect(read(block(0, '0 100.10 100.35', 'ok'), ['http'])[0]).toEqual({
      reachable: true,
      rttMs: 250,
      detail: 'ok',
    });
  });

  it('calls a probe whose block is cut off unmeasured, never reachable', () => {
    const whole = block(0, '0 1.00 1.01', REPLY) + block(1, '0 1.00 1.01', REPLY);
    for (let cut = whole.length - 1; cut > 0; cut -= 7) {
      const r = read(whole.slice(0, cut), ['ping', 'ping']);
      expect(r[1]).toMatchObject({ reachable: false, unmeasured: true });
      if (cut < block(0, '0 1.00 1.01', REPLY).length)
        expect(r[0]).toMatchObject({ reachable: false, unmeasured: true });
    }
  });

  it('refuses forged, malformed and oversized blocks, and blocks out of order', () => {
    const other = 'ffffffffffffffffffffffff';
    const r = read(
      block(0, '0', REPLY, '', other) +
        block(1, '0; reboot', REPLY) +
        block(2, '0', 'x'.repeat(PROBE_OUTPUT_MAX_BYTES + 1)),
    );
    for (const x of r) expect(x).toMatchObject({ reachable: false, unmeasured: true });
    const swapped = read(block(1, '0', REPLY) + block(0, '0', REPLY), ['ping', 'ping']);
    expect(swapped[0]).toMatchObject({ reachable: true });
    expect(swapped[1]).toMatchObject({ unmeasured: true });
    expect(read(block(0, '999', REPLY), ['ping'])[0]).toMatchObject({ unmeasured: true });
  });

  it('reads a later block when an earlier one is missing', () => {
    const r = read(block(1, '0', REPLY), ['ping', 'ping']);
    expect(r[0]).toMatchObject({ unmeasured: true });
    expect(r[1]).toMatchObject({ reachable: true });
  });

  it('says why nothing was measured when the script itself failed', () => {
    const r = read('', ['ping'], 125);
    expect(r[0]).toEqual({
      reachable: false,
      detail:
        'not measured: the probe batch printed no outcome for it (probe script exit 125: mktemp: cannot create)',
      unmeasured: true,
    });
  });

  it('reads no further than a batch can print', () => {
    const flood = `${'@'.repeat(50_000_000)}${block(0, '0', REPLY)}`;
    expect(read(flood, ['ping'])[0]).toMatchObject({ unmeasured: true });
  });
});

describe('building a batch', () => {
  it('quotes every word and refuses a nonce that is not hex', () => {
    expect(shellQuote("a'b")).toBe(`'a'\\''b'`);
    const s = probeBatchScript([['ping', '-c', '1', '10.0.0.1']], 'abcdef0123456789');
    expect(s).toContain(`'ping' '-c' '1' '10.0.0.1' >"$d/0.o" 2>"$d/0.e"`);
    expect(() => probeBatchScript([['true']], 'x; rm -rf /')).toThrow(/hex/);
    expect(() => probeBatchScript([[]], 'abcdef0123456789')).toThrow(/empty argv/);
  });

  it('builds the argv of a probe for where it runs', () => {
    const ping = { kind: 'ping' as const, target: '10.0.0.2', timeoutMs: 2000 };
    expect(probeArgv(ping, 'guest', 'eth1')).toEqual([
      'ping',
      '-I',
      'eth1',
      '-c',
      '1',
      '-W',
      '2',
      '10.0.0.2',
    ]);
    expect(probeArgv(ping, 'host')).toEqual(['ping', '-n', '-c', '1', '-W', '2', '10.0.0.2']);
    const http = { kind: 'http' as const, target: '10.0.0.2', port: 8080, timeoutMs: 1500 };
    expect(probeArgv(http, 'host')).toEqual([
      HOST_BUSYBOX,
      'timeout',
      '2',
      HOST_BUSYBOX,
      'wget',
      '-q',
      '-O',
      '-',
      'http://10.0.0.2:8080/',
    ]);
    expect(probeArgv(http, 'guest')[0]).toBe('timeout');
  });
});
