import { z } from 'zod';
import type { ProbeResult } from '../agent/wire.js';
import {
  dfPingArgv,
  neighArgv,
  type ProbeSpec,
  parseNeighMac,
  parsePing,
  probeArgv,
  runProbeBatch,
} from '../exec/probe.js';
import type { Runner } from '../exec/runner.js';
import { machineNs } from '../lab/names.js';
import { runnerSide } from '../lab/throughput.js';
import { resolveSpec } from '../plan/resolve.js';
import { InvalidRequestError, NotFoundError, TimeoutError } from '../shared/errors.js';
import { MTU_MIN, PROBE_BATCH_MAX, PROBE_HOST_MARGIN_MS } from '../shared/limits.js';
import { sleep } from '../shared/time.js';
import type { Spec } from '../spec/schema.js';
import {
  addressTwins,
  type Endpoint,
  type Expectation,
  endpointsOf,
  expectCell,
  expectForward,
  expectReachable,
  forwardsOf,
  type Router,
  routersOf,
  type VmEndpoint,
} from '../verify/expect.js';
import { searchPathMtu } from '../verify/pmtu.js';
import {
  guestSide,
  measureThroughput,
  type ThroughputResult,
  type ThroughputSide,
} from '../verify/throughput.js';
import { AgentClient, agentAddress } from './agents.js';
import { limit, notMeasured, type PendingProbe, probeBySource } from './probe-sources.js';
import type { TaskContext } from './tasks.js';

/**
 * One measured cell: expected vs observed reachability from one endpoint to another (or to a forward).
 * `expected: 'any'` asserts nothing (a router VM joins both networks; or the probe cannot tell): always ok.
 */
export interface MatrixCell {
  from: string;
  to: string;
  kind: 'ping' | 'forward';
  expected: Expectation;
  observed: boolean;
  rttMs?: number;
  detail: string;
  /** The probe did not run or proved nothing (see ProbeResult.unmeasured). */
  unmeasured?: boolean;
  ok: boolean;
}

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

/** The result of `vmlink verify`. */
export interface VerifyResult {
  /** `nic`: the guest interface a VM endpoint's probes were bound to. */
  endpoints: Array<{
    id: string;
    kind: Endpoint['kind'];
    address?: string;
    host?: string;
    network?: string;
    nic?: string;
  }>;
  cells: MatrixCell[];
  /** Path MTU per network with two or more VM endpoints (one pair each, across hosts where possible). */
  pmtu: PmtuResult[];
  /** VMs with trunk NICs: not in the ICMP matrix (their guests route as they please). */
  routers: Router[];
  /** Every cell and every path-MTU check ok. */
  ok: boolean;
  /** Cells and path-MTU checks that are not ok. */
  mismatches: number;
  measuredAt: string;
  durationMs: number;
}

/** Measures the connectivity matrix the spec implies: every endpoint pair by ICMP, and every forward by HTTP. */
export async function verifySpec(
  spec: Spec,
  runner: Runner,
  ctx: TaskContext,
  opts: { addressTimeoutMs?: number } = {},
): Promise<VerifyResult> {
  const started = Date.now();
  const desired = resolveSpec(spec);
  const macs: Record<string, string[]> = {};
  for (const h of Object.values(desired)) for (const vm of h.vms) macs[vm.name] = vm.nics.map((n) => n.mac);
  const endpoints = endpointsOf(spec, macs);
  const routers = routersOf(spec);
  const agents = agentsOf(spec);
  if (routers.length)
    ctx.progress(
      `left out of the ICMP matrix (trunk NICs, they route): ${routers.map((r) => r.vm).join(', ')}`,
    );

  await discoverVmAddresses(endpoints, agents, ctx, opts.addressTimeoutMs ?? 120_000);

  // Cells that need a probe, grouped by source: each source runs all of its probes at once, in one command.
  const slots: Array<MatrixCell | undefined> = [];
  const pending = new Map<Endpoint, PendingProbe[]>();
  const measure = (src: Endpoint, probe: ProbeSpec, finish: (r: ProbeResult) => Promise<MatrixCell>) => {
    const index = slots.length;
    slots.push(undefined);
    const list = pending.get(src) ?? [];
    list.push({
      probe,
      finish: async (r) => {
        slots[index] = await finish(r);
      },
    });
    pending.set(src, list);
  };
  for (const src of endpoints) {
    for (const dst of endpoints) {
      if (src === dst || (src.kind === 'vm' && dst.kind === 'vm' && src.vm === dst.vm)) continue;
      const expected = expectCell(src, dst, routers);
      if (!dst.address) {
        slots.push(
          cell(src.id, dst.id, 'ping', expected, {
            reachable: false,
            detail: 'not measured: address unknown (is the guest up?)',
            unmeasured: true,
          }),
        );
        continue;
      }
      // Overlapping CIDRs: dst's address may also live on src's own network; only dst's MAC proves dst answered.
      const { self, twins } = addressTwins(src, dst, endpoints);
      if (self) {
        slots.push(
          cell(src.id, dst.id, 'ping', 'any', {
            reachable: false,
            detail: `not measurable: ${dst.address} is also ${src.kind === 'vm' ? src.vm : src.id}'s own address (overlapping CIDRs)`,
          }),
        );
        continue;
      }
      // A host cannot tell which of its networks answered for an address on two of them: not asserted.
      if (src.kind === 'host' && twins.length) {
        slots.push(
          cell(src.id, dst.id, 'ping', 'any', {
            reachable: false,
            detail: `not measurable: ${dst.address} is also ${twins.map((t) => t.id).join(', ')}'s address on ${src.id}'s network ${twins[0]!.network}`,
          }),
        );
        continue;
      }
      measure(src, { kind: 'ping', target: dst.address, timeoutMs: PROBE_TIMEOUT_MS }, async (r) => {
        // A reply where none was expected may come from another holder of the address on src's own segment
        // (a twin VM, a gateway address): check who answered before calling it a leak.
        if (r.reachable && src.kind === 'vm' && dst.kind === 'vm' && (twins.length || expected === false))
          r = await attributeReply(
            (argv) => agents.get(src.host)!.exec(src.vm, argv, 10_000),
            src.vm,
            dst,
            twins,
            r,
          );
        return cell(src.id, dst.id, 'ping', expected, r);
      });
    }
  }
  const forwardSources = endpoints.filter((e) => e.kind !== 'vm');
  for (const f of forwardsOf(spec)) {
    for (const src of forwardSources) {
      const probe: ProbeSpec = {
        kind: 'http',
        target: f.address,
        port: f.hostPort,
        timeoutMs: PROBE_TIMEOUT_MS,
      };
      measure(src, probe, async (r) => {
        // The test guest names itself in its answer, which proves the forward reached the right VM.
        const vm = spec.vms.find((v) => v.name === f.vm);
        if (r.reachable && vm?.image.kind === 'test-guest' && r.detail !== `vmlink-guest ${f.vm}`) {
          r = { reachable: false, detail: `answered by the wrong service: ${r.detail}` };
        }
        return cell(src.id, `${f.address}:${f.hostPort} (${f.vm})`, 'forward', expectForward(src), r);
      });
    }
  }
  const probes = [...pending.values()].reduce((n, l) => n + l.length, 0);
  ctx.progress(
    `probing ${slots.length} paths between ${endpoints.length} endpoints (${probes} probes from ${pending.size} sources)`,
  );
  await probeBySource(pending, (src, probes) => probeBatch(src, probes, agents, runner), {
    sourcesAtOnce: SOURCES_AT_ONCE,
    batchMax: PROBE_BATCH_MAX,
  });
  // Every slot is filled by now: cells without a probe at once, the others by their source's batch.
  const cells = slots as MatrixCell[];
  const pmtu = await measurePathMtus(spec, endpoints, agents, ctx);
  const mismatches = cells.filter((c) => !c.ok).length + pmtu.filter((p) => !p.ok).length;
  return {
    endpoints: endpoints.map((e) => ({
      id: e.id,
      kind: e.kind,
      ...(e.address ? { address: e.address } : {}),
      ...(e.kind === 'vm' || e.kind === 'host' ? { host: e.host } : {}),
      ...(e.kind === 'vm' ? { network: e.network } : {}),
      ...(e.kind === 'vm' && e.ifname ? { nic: e.ifname } : {}),
    })),
    cells,
    pmtu,
    routers,
    ok: mismatches === 0,
    mismatches,
    measuredAt: new Date().toISOString(),
    durationMs: Date.now() - started,
  };
}

/** How long a probe waits for its answer (ping deadline, HTTP timeout). */
const PROBE_TIMEOUT_MS = 2_000;
/** Sources probing at once; each runs all of its probes in one command (one guest-agent exec per VM). */
const SOURCES_AT_ONCE = 16;

/**
 * Runs probes from one source at once: through its agent for a host or a VM (bound to the VM endpoint's NIC, so a
 * VM on two networks does not answer for one NIC through the other), or in the lab namespace of a peer or upstream.
 */
async function probeBatch(
  src: Endpoint,
  probes: ProbeSpec[],
  agents: Map<string, AgentClient>,
  runner: Runner,
): Promise<ProbeResult[]> {
  if (src.kind === 'host') return agents.get(src.host)!.probeBatch({ from: { kind: 'host' }, probes });
  if (src.kind === 'vm')
    return agents.get(src.host)!.probeBatch({
      from: { kind: 'vm', name: src.vm, ...(src.ifname ? { nic: src.ifname } : {}) },
      probes,
    });
  const longest = Math.max(...probes.map((p) => p.timeoutMs));
  return runProbeBatch(
    probes.map((p) => ({ kind: p.kind, argv: probeArgv(p, 'host') })),
    (argv) =>
      runner.run(argv, { netns: src.ns, allowFailure: true, timeoutMs: longest + PROBE_HOST_MARGIN_MS }),
  );
}

function cell(
  from: string,
  to: string,
  kind: MatrixCell['kind'],
  expected: Expectation,
  r: ProbeResult,
): MatrixCell {
  return {
    from,
    to,
    kind,
    expected,
    observed: r.reachable,
    ...(r.rttMs === undefined ? {} : { rttMs: r.rttMs }),
    detail: r.detail,
    ...(r.unmeasured ? { unmeasured: true } : {}),
    // A probe that did not run proves nothing: never a match, whatever was expected (unless not asserted).
    ok: expected === 'any' || (!r.unmeasured && expected === r.reachable),
  };
}

function agentsOf(spec: Spec): Map<string, AgentClient> {
  return new Map(
    spec.hosts.map((h) => [h.name, new AgentClient(h.name, agentAddress(spec, h.name))] as const),
  );
}

/**
 * After a reply from `dst`'s address: reads the source guest's neighbour entry for that address. No entry means the
 * reply was routed (the result stands); dst's MAC means dst answered; another MAC means another holder of the same
 * address on the source's own segment answered (`twins`: VMs known to share it), so dst was not reached.
 */
export async function attributeReply(
  exec: (argv: string[]) => Promise<{ exitCode: number; stdout: string }>,
  vm: string,
  dst: VmEndpoint,
  twins: VmEndpoint[],
  r: ProbeResult,
): Promise<ProbeResult> {
  const n = await exec(neighArgv(dst.address!)).catch(() => undefined);
  const mac = n && n.exitCode === 0 ? parseNeighMac(n.stdout) : undefined;
  if (mac === undefined) {
    if (!twins.length) return r;
    return {
      reachable: false,
      detail: `reply not attributable: ${dst.address} also belongs to ${twins.map((t) => t.id).join(', ')}`,
    };
  }
  if (mac === dst.mac.toLowerCase()) return r;
  const twin = twins.find((t) => t.mac.toLowerCase() === mac);
  return {
    reachable: false,
    detail: twin
      ? `answered by ${twin.id} (${mac}), which has the same address on ${twin.network}; ${dst.id} not reached`
      : `answered by ${mac}, not ${dst.id} (${dst.mac}): another holder of ${dst.address} on ${vm}'s segment`,
  };
}

/** Don't-fragment pings attempted per size before a size counts as failed (TCG guests drop the odd reply). */
const PMTU_ATTEMPTS = 2;

/**
 * One path-MTU check per network with two or more VM endpoints that should reach each other: the pair spans two
 * hosts where the network has VMs on two. Pings run in the source guest (iputils `ping -M do`).
 */
async function measurePathMtus(
  spec: Spec,
  endpoints: readonly Endpoint[],
  agents: Map<string, AgentClient>,
  ctx: TaskContext,
): Promise<PmtuResult[]> {
  const pairs: Array<{ network: string; mtu: number; a: VmEndpoint; b: VmEndpoint }> = [];
  for (const net of spec.networks) {
    const vms = endpoints.filter(
      (e): e is VmEndpoint => e.kind === 'vm' && e.network === net.name && e.address !== undefined,
    );
    const a = vms[0];
    if (!a) continue;
    const others = vms.filter((v) => v.vm !== a.vm && expectReachable(a, v));
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

/** Body of `POST /v1/verify/throughput`: two endpoint ids as the matrix names them (or VM names). */
export const ThroughputRequestSchema = z
  .object({
    from: z.string().min(1).max(64),
    to: z.string().min(1).max(64),
    seconds: z.number().int().min(1).max(60).default(3),
  })
  .strict();
/** A throughput request. */
export type ThroughputRequest = z.infer<typeof ThroughputRequestSchema>;

/**
 * Measures TCP throughput `from` -> `to` with iperf3 between two endpoints of the applied spec: VMs (through their
 * guest agents), or lab machines (hosts, peers, upstream: through their namespaces on this machine).
 */
export async function measureSpecThroughput(
  spec: Spec,
  runner: Runner,
  req: { from: string; to: string; seconds?: number },
  ctx: TaskContext,
  opts: { addressTimeoutMs?: number } = {},
): Promise<ThroughputResult> {
  if (req.from === req.to) throw new InvalidRequestError('throughput needs two different endpoints', 'to');
  const desired = resolveSpec(spec);
  const macs: Record<string, string[]> = {};
  for (const h of Object.values(desired)) for (const vm of h.vms) macs[vm.name] = vm.nics.map((n) => n.mac);
  const endpoints = endpointsOf(spec, macs);
  const find = (id: string, field: 'from' | 'to'): Endpoint => {
    const e = endpoints.find((x) => x.id === id) ?? endpoints.find((x) => x.kind === 'vm' && x.vm === id);
    if (e) return e;
    if (routersOf(spec).some((r) => r.vm === id))
      throw new InvalidRequestError(`${id} has a trunk NIC: its addresses are its guest's business`, field);
    throw new NotFoundError('endpoint', `${id} (one of ${endpoints.map((x) => x.id).join(', ')})`);
  };
  const a = find(req.from, 'from');
  const b = find(req.to, 'to');
  const agents = agentsOf(spec);
  await discoverVmAddresses([a, b], agents, ctx, opts.addressTimeoutMs ?? 120_000);
  const side = (e: Endpoint): ThroughputSide => {
    if (!e.address) throw new InvalidRequestError(`${e.id}: address unknown (is the guest up?)`);
    if (e.kind === 'vm') {
      const agent = agents.get(e.host)!;
      return guestSide(e.id, e.address, (argv, timeoutMs) => agent.exec(e.vm, argv, timeoutMs));
    }
    if (e.kind === 'host') {
      if (!spec.lab)
        throw new InvalidRequestError(
          `throughput from or to host ${e.id} needs a lab (its namespace runs iperf3)`,
        );
      return runnerSide(e.id, e.address, runner, machineNs(spec.lab.name, e.host));
    }
    return runnerSide(e.id, e.address, runner, e.ns);
  };
  ctx.progress(`iperf3 ${a.id} (${a.address}) -> ${b.id} (${b.address}) for ${req.seconds ?? 3} s`);
  return measureThroughput(side(a), side(b), { seconds: req.seconds ?? 3 });
}

/** Fills in each VM endpoint's IPv4 address from its guest agent, waiting for guests that are still booting. */
async function discoverVmAddresses(
  endpoints: readonly Endpoint[],
  agents: Map<string, AgentClient>,
  ctx: TaskContext,
  timeoutMs: number,
): Promise<void> {
  const vms = endpoints.filter((e): e is Extract<Endpoint, { kind: 'vm' }> => e.kind === 'vm');
  if (!vms.length) return;
  ctx.progress(`discovering the addresses of ${vms.length} VM NIC(s) through their guest agents`);
  const deadline = Date.now() + timeoutMs;
  await Promise.all(
    vms.map(async (e) => {
      let last = '';
      while (Date.now() < deadline && !ctx.signal.aborted) {
        try {
          const ifs = await agents.get(e.host)!.interfaces(e.vm);
          const nic = ifs.find((i) => i.mac.toLowerCase() === e.mac.toLowerCase());
          const v4 = nic?.addresses.find((a) => /^\d+\.\d+\.\d+\.\d+\//.test(a));
          if (v4) {
            e.address = v4.split('/')[0]!;
            e.ifname = nic!.name;
            return;
          }
          last = nic ? 'no IPv4 address yet' : `no NIC with MAC ${e.mac}`;
        } catch (err) {
          last = err instanceof Error ? err.message.split('\n')[0]! : String(err);
        }
        await sleep(1_000);
      }
      ctx.progress(`${e.id}: address unknown (${last})`);
    }),
  );
  if (ctx.signal.aborted) throw new TimeoutError('verify cancelled');
}
