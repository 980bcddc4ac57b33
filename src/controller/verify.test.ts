import { describe, expect, it } from 'vitest';
import type { VmEndpoint } from '../verify/expect.js';
import { attributeReply } from './verify.js';

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
