import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { ProbeBatchRequest, ProbeResult } from '../agent/wire-probe.js';
import type { Runner } from '../exec/runner.js';
import { loadSpecFile } from '../spec/load.js';
import { derivedMac } from '../spec/net.js';
import type { VmEndpoint } from '../verify/expect.js';
import { attributeReply, type VerifyAgent, verifySpec } from './verify.js';

const vm = (id: string, network: string, mac: string): VmEndpoint => ({
  id,
  kind: 'vm',
  vm: id,
  host: 'h1',
  network,
  mode: 'vxlan',
  mac,
  address: '10.20.0.100',
});
const a1 = vm('a1', 'ov1', '52:54:00:00:00:a1');
const b1 = vm('b1', 'ov2', '52:54:00:00:00:b1');
const reply = { reachable: true, rttMs: 0.5, detail: 'echo reply' };
const neigh =
  (stdout: string, exitCode = 0) =>
  async (argv: string[]) => {
    expect(argv).toEqual(['ip', 'neigh', 'show', '10.20.0.100']);
    return { exitCode, stdout };
  };

describe('attributing a reply from an overlapping address', () => {
  it("keeps the reply when dst's MAC answered", async () => {
    const r = await attributeReply(
      neigh('10.20.0.100 dev eth0 lladdr 52:54:00:00:00:b1 REACHABLE\n'),
      'a2',
      b1,
      [a1],
      reply,
    );
    expect(r).toBe(reply);
  });

  it('turns a twin answering for the address into "not reached", naming the twin', async () => {
    const r = await attributeReply(
      neigh('10.20.0.100 dev eth0 lladdr 52:54:00:00:00:A1 STALE\n'),
      'a2',
      b1,
      [a1],
      reply,
    );
    expect(r).toEqual({
      reachable: false,
      detail: 'answered by a1 (52:54:00:00:00:a1), which has the same address on ov1; b1 not reached',
    });
  });

  it('an unknown on-link MAC (e.g. a gateway with that address) is not dst either', async () => {
    const r = await attributeReply(
      neigh('10.20.0.100 dev eth0 lladdr 52:54:00:12:34:56 REACHABLE\n'),
      'a2',
      b1,
      [],
      reply,
    );
    expect(r.reachable).toBe(false);
    expect(r.detail).toContain('another holder of 10.20.0.100');
  });

  it('keeps a routed reply (no neighbour entry for the address) unless a twin makes it ambiguous', async () => {
    expect(await attributeReply(neigh(''), 'a2', b1, [], reply)).toBe(reply);
    expect((await attributeReply(neigh('', 1), 'a2', b1, [a1], reply)).reachable).toBe(false);
  });
});

// The guests of examples/security-groups.yaml, their addresses, and what a perfect network would answer.
const GUESTS: Record<string, string> = {
  web1: '10.10.0.10',
  app1: '192.168.50.101',
  front1: '192.168.50.102',
};
const guestAt = (address: string) => Object.keys(GUESTS).find((vm) => GUESTS[vm] === address);

/** Batch output as the probe script prints it: every probe failed (exit 1, no output). */
function failedBatch(script: string, count: number): string {
  const nonce = /printf '@@%s %s status %s\\n' ([0-9a-f]+)/.exec(script)?.[1] ?? 'none';
  return Array.from(
    { length: count },
    (_, i) => `@@${nonce} ${i} status 1\n\n@@${nonce} ${i} stderr\n\n@@${nonce} ${i} end\n`,
  ).join('');
}

describe('verify on a spec with security groups (fake agent: every http probe answered by its target guest)', () => {
  it('starts listeners first, probes ports unbound from guests and from namespaces, stops the listeners, and reports port cells', async () => {
    const spec = loadSpecFile(fileURLToPath(new URL('../../examples/security-groups.yaml', import.meta.url)));
    const events: string[] = [];
    const batches: ProbeBatchRequest[] = [];
    const agent: VerifyAgent = {
      interfaces: async (vm) => [{ name: 'eth0', mac: derivedMac(vm, 0), addresses: [`${GUESTS[vm]}/24`] }],
      exec: async (vm, argv) => {
        const script = argv[2] ?? '';
        if (script.includes('httpd -f')) {
          events.push(`listen ${vm}`);
          const ports = /for p in ([\d ]+); do/.exec(script)![1]!.split(' ');
          return { exitCode: 0, stdout: ports.map((p) => `listen ${p} 1`).join('\n'), stderr: '' };
        }
        if (script.includes('kill')) events.push(`stop ${vm}`);
        return { exitCode: 1, stdout: '', stderr: '' };
      },
      probeBatch: async (req) => {
        events.push(`probe ${req.from.kind === 'vm' ? req.from.name : 'host'}`);
        batches.push(req);
        // The agent's own rule (Prober.guestSource): an http probe cannot be bound to a NIC.
        if (req.from.kind === 'vm' && req.from.nic && req.probes.some((p) => p.kind === 'http'))
          throw new Error('an http probe cannot be bound to a NIC');
        return req.probes.map(
          (p): ProbeResult =>
            p.kind === 'http'
              ? { reachable: true, rttMs: 1, detail: `vmlink-guest ${guestAt(p.target)}` }
              : { reachable: false, detail: 'no reply' },
        );
      },
    };
    const namespaces: string[] = [];
    const runner: Runner = {
      run: async (argv, opts) => {
        namespaces.push(opts?.netns ?? '');
        const script = argv[2] ?? '';
        const count = script.split('\n').filter((l) => l.startsWith('(read -r a _')).length;
        return { argv: [...argv], code: 0, stdout: failedBatch(script, count), stderr: '' };
      },
      spawnDetached: async () => 0,
    };
    const progress: string[] = [];
    const r = await verifySpec(
      spec,
      runner,
      { progress: (m) => progress.push(m), signal: new AbortController().signal },
      { agents: new Map([['host1', agent]]) },
    );
    // Listeners before any probe, stopped after the last.
    const firstProbe = events.findIndex((e) => e.startsWith('probe'));
    const lastProbe = events.length - 1 - [...events].reverse().findIndex((e) => e.startsWith('probe'));
    expect(events.slice(0, firstProbe).sort()).toEqual(['listen app1', 'listen front1', 'listen web1']);
    expect(events.slice(lastProbe + 1).sort()).toEqual(['stop app1', 'stop front1', 'stop web1']);
    // Guest port probes ran unbound, in batches of their own; pings stayed bound to the NIC.
    const fromGuests = batches.filter((b) => b.from.kind === 'vm');
    expect(fromGuests.some((b) => b.probes.some((p) => p.kind === 'http'))).toBe(true);
    for (const b of fromGuests)
      expect(b.from.kind === 'vm' && b.from.nic === undefined).toBe(b.probes.every((p) => p.kind === 'http'));
    const port = (from: string, to: string, p: number) =>
      r.cells.find((c) => c.kind === 'port' && c.from === from && c.to === to && c.port === p);
    // front1 -> app1:8080 allowed and answered; the peer's probe (in its namespace) timed out: a mismatch.
    expect(port('front1', 'app1', 8080)).toMatchObject({ expected: true, observed: true, ok: true });
    expect(port('front1', 'app1', 22)).toMatchObject({ expected: false, observed: true, ok: false });
    expect(port('pc1', 'app1', 22)).toMatchObject({ expected: true, observed: false, ok: false });
    expect(port('pc1', 'app1', 9)).toMatchObject({ expected: false, ok: true, blockedBy: 'security-group' });
    expect(namespaces).toContain('vl-sg-pc1');
    expect(r.cells.filter((c) => c.kind === 'port')).toHaveLength(22);
    // The ping matrix: host1 -> web1 is kept out by web's LAN-only icmp rule, pc1 -> web1 by the topology.
    const ping = (from: string, to: string) =>
      r.cells.find((c) => c.kind === 'ping' && c.from === from && c.to === to);
    expect(ping('host1', 'web1')).toMatchObject({ expected: false, blockedBy: 'security-group', ok: true });
    expect(ping('pc1', 'web1')).toMatchObject({ expected: false, blockedBy: 'topology', ok: true });
    expect(ping('pc1', 'front1')?.rule).toBe('allowed in by web: ingress icmp from 192.168.50.0/24');
    // The forward reaches web1 from the peer: web allows tcp 80 from anywhere.
    const fwd = r.cells.find((c) => c.kind === 'forward' && c.from === 'pc1');
    expect(fwd).toMatchObject({ expected: true, rule: 'allowed in by web: ingress tcp 80 from any' });
  });
});
