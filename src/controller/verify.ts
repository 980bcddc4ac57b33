import { z } from 'zod';
import type { ProbeResult } from '../agent/wire-probe.js';
import { neighArgv, type ProbeSpec, parseNeighMac, probeArgv, runProbeBatch } from '../exec/probe.js';
import type { Runner } from '../exec/runner.js';
import { machineNs } from '../lab/names.js';
import { runnerSide } from '../lab/throughput.js';
import { resolveSpec } from '../plan/resolve.js';
import { InvalidRequestError, NotFoundError, TimeoutError } from '../shared/errors.js';
import { PROBE_BATCH_MAX, PROBE_HOST_MARGIN_MS } from '../shared/limits.js';
import { sleep } from '../shared/time.js';
import type { Spec } from '../spec/schema.js';
import {
  addressTwins,
  type Endpoint,
  type Expectation,
  endpointsOf,
  expectForward,
  forwardsOf,
  type Router,
  routersOf,
  type VmEndpoint,
} from '../verify/expect.js';
import { type LbCell, lbPlansOf } from '../verify/lb.js';
import { portChecksOf } from '../verify/port-checks.js';
import { expectPing, type GroupContext, groupContextOf, groupVerdict } from '../verify/security-groups.js';
import {
  guestSide,
  measureThroughput,
  type ThroughputResult,
  type ThroughputSide,
} from '../verify/throughput.js';
import { AgentClient, agentAddress } from './agents.js';
import { addLbProbes, verifyLbs } from './lb-checks.js';
import { measurePathMtus, type PmtuResult } from './path-mtu.js';
import { type GuestExec, portCell, startListeners, stopListeners } from './port-checks.js';
import { notMeasured, type PendingProbe, probeBySource, unbound } from './probe-sources.js';
import { type StorageCell, verifyStorage } from './storage-checks.js';
import type { TaskContext } from './tasks.js';

/**
 * One measured cell: expected vs observed reachability from one endpoint to another (or to a forward, or to a TCP
 * port of a VM NIC with security groups: `port`).
 * `expected: 'any'` asserts nothing (a router VM joins both networks; or the probe cannot tell): always ok.
 */
export interface MatrixCell {
  from: string;
  to: string;
  kind: 'ping' | 'forward' | 'port';
  /** kind `port`: the probed protocol and destination port. */
  protocol?: 'tcp';
  port?: number;
  expected: Expectation;
  /** Where security groups are on the path: the rule that allows it, or what no rule allows. */
  rule?: string;
  /** Why an unreachable cell is expected so: the topology, or a security group (shown as such, not as a failure). */
  blockedBy?: 'topology' | 'security-group';
  observed: boolean;
  rttMs?: number;
  detail: string;
  /** The probe did not run or proved nothing (see ProbeResult.unmeasured). */
  unmeasured?: boolean;
  ok: boolean;
}

export type { PmtuResult } from './path-mtu.js';

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
  /** Storage paths (portals from compute hosts, volumes open in QEMU, guest reads and writes); absent: no pool disks. */
  storage?: StorageCell[];
  /** Load balancers (../verify/lb.ts): the VIP held once, reached, served by UP backends, failed ones taken out. */
  loadBalancers?: LbCell[];
  /** What verify left out or could not do, for the operator (NICs with groups not port-checked, say). */
  notes?: string[];
  /** Every cell and every path-MTU check ok. */
  ok: boolean;
  /** Cells, path-MTU and storage checks that are not ok. */
  mismatches: number;
  measuredAt: string;
  durationMs: number;
}

/** Measures the connectivity matrix the spec implies: every endpoint pair by ICMP, and every forward by HTTP. */
export async function verifySpec(
  spec: Spec,
  runner: Runner,
  ctx: TaskContext,
  opts: { addressTimeoutMs?: number; agents?: Map<string, VerifyAgent> } = {},
): Promise<VerifyResult> {
  const started = Date.now();
  const desired = resolveSpec(spec);
  const macs: Record<string, string[]> = {};
  for (const h of Object.values(desired)) for (const vm of h.vms) macs[vm.name] = vm.nics.map((n) => n.mac);
  const endpoints = endpointsOf(spec, macs);
  const routers = routersOf(spec);
  const agents = opts.agents ?? agentsOf(spec);
  if (routers.length)
    ctx.progress(
      `left out of the ICMP matrix (trunk NICs, they route): ${routers.map((r) => r.vm).join(', ')}`,
    );

  await discoverVmAddresses(endpoints, agents, ctx, opts.addressTimeoutMs ?? 120_000);
  const groups = groupContextOf(spec, endpoints);

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
      const { expected, blockedBy, verdict } = expectPing(src, dst, routers, groups);
      const why = { ...(verdict ? { rule: verdict.reason } : {}), ...(blockedBy ? { blockedBy } : {}) };
      if (!dst.address) {
        slots.push(
          cell(
            src.id,
            dst.id,
            'ping',
            expected,
            {
              reachable: false,
              detail: 'not measured: address unknown (is the guest up?)',
              unmeasured: true,
            },
            why,
          ),
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
        return cell(src.id, dst.id, 'ping', expected, r, why);
      });
    }
  }
  const forwardSources = endpoints.filter((e) => e.kind !== 'vm');
  for (const f of forwardsOf(spec)) {
    const target = endpoints.find(
      (e): e is VmEndpoint => e.kind === 'vm' && e.vm === f.vm && e.network === f.network,
    );
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
        return forwardCell(src, f, target, groups, r);
      });
    }
  }
  const checks = portChecksOf(endpoints, routers, groups, (vm) =>
    spec.vms.some((v) => v.name === vm && v.image.kind === 'test-guest'),
  );
  const guestExec: GuestExec = (vm, host, argv, timeoutMs) => agents.get(host)!.exec(vm, argv, timeoutMs);
  for (const n of checks.notes) ctx.progress(n);
  if (checks.listeners.size)
    ctx.progress(`starting port-check listeners in ${checks.listeners.size} VM NIC(s) with security groups`);
  const listening = await startListeners(checks.listeners, guestExec);
  for (const check of checks.checks) {
    // A guest's TCP probe cannot be bound to a NIC (busybox wget): it runs as a source of its own, unbound.
    const src = check.src.kind === 'vm' ? unbound(check.src) : check.src;
    const probe: ProbeSpec = {
      kind: 'http',
      target: check.dst.address ?? '',
      port: check.port,
      timeoutMs: PROBE_TIMEOUT_MS,
    };
    if (!check.dst.address) {
      slots.push(portCell(check, notMeasured('address unknown (is the guest up?)'), listening));
      continue;
    }
    measure(src, probe, async (r) => portCell(check, r, listening));
  }
  const lbPlans = lbPlansOf(spec, endpoints, routers, groups);
  const lbMeasured = addLbProbes(lbPlans.plans, pending, PROBE_TIMEOUT_MS, (e) =>
    e.kind === 'vm' ? unbound(e) : e,
  );
  const probes = [...pending.values()].reduce((n, l) => n + l.length, 0);
  ctx.progress(
    `probing ${slots.length} paths between ${endpoints.length} endpoints (${probes} probes from ${pending.size} sources)`,
  );
  try {
    await probeBySource(pending, (src, probes) => probeBatch(src, probes, agents, runner), {
      sourcesAtOnce: SOURCES_AT_ONCE,
      batchMax: PROBE_BATCH_MAX,
    });
  } finally {
    for (const p of await stopListeners(checks.listeners, guestExec)) ctx.progress(p);
  }
  // Every slot is filled by now: cells without a probe at once, the others by their source's batch.
  const cells = slots as MatrixCell[];
  const pmtu = await measurePathMtus(spec, endpoints, groups, agents, ctx);
  const storage = await verifyStorage(desired, spec, agents, ctx.progress);
  const lbs = await verifyLbs(lbPlans.plans, lbMeasured, agents);
  const notes = [...checks.notes, ...storage.notes, ...lbPlans.notes, ...lbs.notes];
  const mismatches = [cells, pmtu, storage.cells, lbs.cells].reduce(
    (n, l) => n + l.filter((c) => !c.ok).length,
    0,
  );
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
    ...(storage.cells.length ? { storage: storage.cells } : {}),
    ...(lbs.cells.length ? { loadBalancers: lbs.cells } : {}),
    ...(notes.length ? { notes } : {}),
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
  agents: Map<string, VerifyAgent>,
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

/**
 * A forward's cell: reached from the LAN (`expectForward`), and past the groups of the VM's NIC, which see the
 * prober's own address (the forward only rewrites the destination).
 */
function forwardCell(
  src: Endpoint,
  f: ReturnType<typeof forwardsOf>[number],
  target: VmEndpoint | undefined,
  groups: GroupContext,
  r: ProbeResult,
): MatrixCell {
  const to = `${f.address}:${f.hostPort} (${f.vm})`;
  const topology = expectForward(src);
  const verdict =
    topology && target
      ? groupVerdict(src, target, { protocol: f.protocol, port: f.vmPort }, groups, { address: src.address })
      : undefined;
  const expected = topology && verdict?.allowed !== false;
  return cell(src.id, to, 'forward', expected, r, {
    ...(verdict ? { rule: verdict.reason } : {}),
    ...(expected ? {} : { blockedBy: verdict ? 'security-group' : 'topology' }),
  });
}

function cell(
  from: string,
  to: string,
  kind: MatrixCell['kind'],
  expected: Expectation,
  r: ProbeResult,
  why: Pick<MatrixCell, 'rule' | 'blockedBy'> = {},
): MatrixCell {
  return {
    from,
    to,
    kind,
    expected,
    ...why,
    observed: r.reachable,
    ...(r.rttMs === undefined ? {} : { rttMs: r.rttMs }),
    detail: r.detail,
    ...(r.unmeasured ? { unmeasured: true } : {}),
    // A probe that did not run proves nothing: never a match, whatever was expected (unless not asserted).
    ok: expected === 'any' || (!r.unmeasured && expected === r.reachable),
  };
}

/** What verify asks of a host's agent (an `AgentClient`; a fake in unit tests). */
export type VerifyAgent = Pick<AgentClient, 'probeBatch' | 'exec' | 'interfaces'> &
  Partial<Pick<AgentClient, 'openDisks' | 'report'>>;

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
  agents: Map<string, VerifyAgent>,
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
