// Verify's path-MTU checks: don't-fragment pings between two VMs per network, searching the largest size that passes.
import { dfPingArgv, parsePing } from '../exec/probe.js';
import { MTU_MIN } from '../shared/limits.js';
import type { Spec } from '../spec/schema.js';
import { type Endpoint, expectReachable, type VmEndpoint } from '../verify/expect.js';
import { searchPathMtu } from '../verify/pmtu.js';
import { expectPing, type GroupContext } from '../verify/security-groups.js';
import type { AgentClient } from './agents.js';
import { limit, notMeasured } from './probe-sources.js';
import type { TaskContext } from './tasks.js';

/** One path-MTU check: don't-fragment pings from one VM to another on the same network. */
export interface PmtuResult {
  network: string;
  from: string;
  to: string;
  /** The network's MTU from the spec. */
  expectedMtu: number;
  /** Largest MTU that passed; absent when no size passed (see `detail`). */
  measuredMtu?: number;
  ok: boolean;
  detail: string;
}

/** Don't-fragment pings attempted per size before a size counts as failed (TCG guests drop the odd reply). */
const PMTU_ATTEMPTS = 2;

/**
 * One path-MTU check per network with two or more VM endpoints that should reach each other: the pair spans two
 * hosts where the network has VMs on two. Pings run in the source guest (iputils `ping -M do`).
 */
export async function measurePathMtus(
  spec: Spec,
  endpoints: readonly Endpoint[],
  groups: GroupContext,
  agents: Map<string, Pick<AgentClient, 'exec'>>,
  ctx: TaskContext,
): Promise<PmtuResult[]> {
  const pairs: Array<{ network: string; mtu: number; a: VmEndpoint; b: VmEndpoint }> = [];
  for (const net of spec.networks) {
    const vms = endpoints.filter(
      (e): e is VmEndpoint => e.kind === 'vm' && e.network === net.name && e.address !== undefined,
    );
    const a = vms[0];
    if (!a) continue;
    // Security groups may keep ICMP from b: only a pair whose echoes they let through measures the path.
    const others = vms.filter(
      (v) => v.vm !== a.vm && expectReachable(a, v) && expectPing(a, v, [], groups).expected === true,
    );
    const b = others.find((v) => v.host !== a.host) ?? others[0];
    if (b) pairs.push({ network: net.name, mtu: net.mtu, a, b });
  }
  if (!pairs.length) return [];
  ctx.progress(`measuring the path MTU of ${pairs.length} network(s)`);
  return limit(
    pairs.map(({ network, mtu, a, b }) => async (): Promise<PmtuResult> => {
      const agent = agents.get(a.host)!;
      let last = '';
      const probe = async (payload: number) => {
        for (let i = 0; i < PMTU_ATTEMPTS; i++) {
          const r = await agent
            .exec(a.vm, dfPingArgv(b.address!, payload, 1_000, a.ifname), 10_000)
            .then((x) => parsePing(x.exitCode, x.stdout, x.stderr))
            .catch(notMeasured);
          if (r.reachable) return true;
          last = r.detail;
        }
        return false;
      };
      const base = { network, from: a.id, to: b.id, expectedMtu: mtu };
      const s = await searchPathMtu(probe, mtu);
      if (s.measuredMtu === mtu) return { ...base, measuredMtu: mtu, ok: true, detail: 'full MTU passes' };
      if (s.measuredMtu === undefined)
        return {
          ...base,
          ok: false,
          detail: `no don't-fragment echo passed, even at ${Math.min(MTU_MIN, mtu - 1)} bytes (${last})`,
        };
      return {
        ...base,
        measuredMtu: s.measuredMtu,
        ok: false,
        detail: `largest passing MTU ${s.measuredMtu} < ${mtu} (${last})`,
      };
    }),
    3,
  );
}
