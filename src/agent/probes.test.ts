import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import { type RunOptions, SystemRunner } from '../exec/runner.js';
import { PROBE_BATCH_MAX } from '../shared/limits.js';
import { Agent } from './agent.js';
import { Prober } from './probes.js';
import { createAgentServer } from './server.js';

// The batch script runs for real (sh); only `ping` is a stand-in: it answers for 10.0.0.1, times out for
// 10.0.0.2, and finds no route to anything else, like iputils ping does.
const dir = mkdtempSync(join(tmpdir(), 'vmlink-probes-'));
const bin = join(dir, 'bin');
const FAKE_PING = `#!/bin/sh
for a in "$@"; do target=$a; done
echo "$*" >> ${dir}/argv
case $target in
  10.0.0.1) echo "64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.7 ms"; exit 0 ;;
  10.0.0.2) echo "1 packets transmitted, 0 received, 100% packet loss"; exit 1 ;;
  *) echo "ping: connect: Network is unreachable" >&2; exit 2 ;;
esac
`;
beforeAll(() => {
  rmSync(bin, { recursive: true, force: true });
  mkdirSync(bin);
  writeFileSync(join(bin, 'ping'), FAKE_PING);
  chmodSync(join(bin, 'ping'), 0o755);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The real runner, with the stand-in ping first on the PATH; counts the commands it runs. */
class CountingRunner extends SystemRunner {
  readonly calls: string[][] = [];
  override run(argv: readonly string[], opts: RunOptions = {}) {
    this.calls.push([...argv]);
    return super.run(argv, { ...opts, env: { ...opts.env, PATH: `${bin}:${process.env.PATH}` } });
  }
}

/** A hypervisor whose guest agent runs commands on this machine (as the guest's busybox would). */
function guestHypervisor(state = 'running') {
  const runner = new CountingRunner();
  const execs: string[][] = [];
  const hv = {
    list: async () => [{ name: 'g1', state }],
    guestExec: async (_vm: string, argv: string[], opts: { timeoutMs?: number } = {}) => {
      execs.push(argv);
      const r = await runner.run(argv, { allowFailure: true, timeoutMs: opts.timeoutMs ?? 10_000 });
      return { exitCode: r.code, stdout: r.stdout, stderr: r.stderr };
    },
  } as unknown as HypervisorDriver;
  return { hv, execs };
}

const probes = [
  { kind: 'ping' as const, target: '10.0.0.1', timeoutMs: 1000 },
  { kind: 'ping' as const, target: '10.0.0.2', timeoutMs: 1000 },
  { kind: 'ping' as const, target: '10.9.9.9', timeoutMs: 1000 },
];

describe('a probe batch', () => {
  it('runs all of a guest’s probes in one guest-agent exec, each bound to the NIC, results in order', async () => {
    const { hv, execs } = guestHypervisor();
    const p = new Prober({ runner: new CountingRunner(), hypervisor: hv });
    rmSync(join(dir, 'argv'), { force: true });
    const r = await p.probeBatch({ from: { kind: 'vm', name: 'g1', nic: 'eth1' }, probes });
    expect(execs).toHaveLength(1);
    expect(execs[0]!.slice(0, 2)).toEqual(['sh', '-c']);
    expect(r).toEqual([
      { reachable: true, rttMs: 0.7, detail: 'echo reply' },
      { reachable: false, detail: 'no reply' },
      { reachable: false, detail: 'ping: connect: Network is unreachable' },
    ]);
    const seen = readFileSync(join(dir, 'argv'), 'utf8').trim().split('\n').sort();
    expect(seen).toEqual([
      '-I eth1 -c 1 -W 1 10.0.0.1',
      '-I eth1 -c 1 -W 1 10.0.0.2',
      '-I eth1 -c 1 -W 1 10.9.9.9',
    ]);
  });

  it('runs all of the host’s probes in one command', async () => {
    const runner = new CountingRunner();
    const p = new Prober({ runner, hypervisor: guestHypervisor().hv });
    const r = await p.probeBatch({ from: { kind: 'host' }, probes });
    expect(runner.calls).toHaveLength(1);
    expect(r.map((x) => x.reachable)).toEqual([true, false, false]);
  });

  it('calls probes whose outcome the guest cut off unmeasured', async () => {
    const { hv } = guestHypervisor();
    const cut = {
      ...hv,
      list: hv.list,
      guestExec: async (vm: string, argv: string[], o?: { timeoutMs?: number }) => {
        const r = await hv.guestExec(vm, argv, o);
        return { ...r, stdout: r.stdout.slice(0, r.stdout.indexOf(' 1 end\n') + 7) };
      },
    } as unknown as HypervisorDriver;
    const r = await new Prober({ runner: new CountingRunner(), hypervisor: cut }).probeBatch({
      from: { kind: 'vm', name: 'g1' },
      probes,
    });
    expect(r[0]).toMatchObject({ reachable: true });
    expect(r[1]).toMatchObject({ reachable: false, detail: 'no reply' });
    expect(r[2]).toMatchObject({ reachable: false, unmeasured: true });
  });

  it('refuses a stopped or unknown source VM and a NIC-bound http probe, before running anything', async () => {
    const stopped = guestHypervisor('stopped');
    const p = new Prober({ runner: new CountingRunner(), hypervisor: stopped.hv });
    await expect(p.probeBatch({ from: { kind: 'vm', name: 'g1' }, probes })).rejects.toThrow(
      /requires running/,
    );
    await expect(p.probeBatch({ from: { kind: 'vm', name: 'g9' }, probes })).rejects.toThrow(/g9/);
    const { hv, execs } = guestHypervisor();
    await expect(
      new Prober({ runner: new CountingRunner(), hypervisor: hv }).probeBatch({
        from: { kind: 'vm', name: 'g1', nic: 'eth1' },
        probes: [...probes, { kind: 'http', target: '10.0.0.1', timeoutMs: 1000 }],
      }),
    ).rejects.toThrow(/cannot be bound to NIC eth1/);
    expect([...stopped.execs, ...execs]).toEqual([]);
  });
});

describe('POST /v1/probes', () => {
  let app: FastifyInstance;
  const state = mkdtempSync(join(tmpdir(), 'vmlink-probes-api-'));
  beforeAll(async () => {
    const agent = new Agent({
      host: 'host1',
      runner: new CountingRunner(),
      networks: {},
      hypervisor: guestHypervisor().hv,
      stateDir: state,
    });
    app = await createAgentServer(agent, { prerequisites: async () => [] });
  });
  afterAll(async () => {
    await app.close();
    rmSync(state, { recursive: true, force: true });
  });

  it('answers a batch with its results in order', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/probes',
      payload: { from: { kind: 'vm', name: 'g1' }, probes },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json().results.map((x: { detail: string }) => x.detail)).toEqual([
      'echo reply',
      'no reply',
      'ping: connect: Network is unreachable',
    ]);
  });

  it('refuses an empty batch, an oversized one and unknown fields', async () => {
    const post = (payload: object) => app.inject({ method: 'POST', url: '/v1/probes', payload });
    const many = Array.from({ length: PROBE_BATCH_MAX + 1 }, () => probes[0]);
    expect((await post({ from: { kind: 'host' }, probes: [] })).statusCode).toBe(422);
    expect((await post({ from: { kind: 'host' }, probes: many })).statusCode).toBe(422);
    expect((await post({ from: { kind: 'host' }, probes: [{ ...probes[0], extra: 1 }] })).statusCode).toBe(
      422,
    );
    expect(
      (await post({ from: { kind: 'host' }, probes: [{ ...probes[0], target: '10.0.0.1; id' }] })).statusCode,
    ).toBe(422);
  });
});
