import type { ProbeResult } from '../agent/wire.js';
import { HOST_BUSYBOX, httpArgv, parseHttp, parsePing, pingArgv } from '../exec/probe.js';
import type { Runner } from '../exec/runner.js';
import { resolveSpec } from '../plan/resolve.js';
import { TimeoutError } from '../shared/errors.js';
import type { Spec } from '../spec/schema.js';
import { type Endpoint, endpointsOf, expectForward, expectReachable, forwardsOf } from '../verify/expect.js';
import { AgentClient, agentAddress } from './agents.js';
import type { TaskContext } from './tasks.js';

/** One measured cell: expected vs observed reachability from one endpoint to another (or to a forward). */
export interface MatrixCell {
  from: string;
  to: string;
  kind: 'ping' | 'forward';
  expected: boolean;
  observed: boolean;
  rttMs?: number;
  detail: string;
  ok: boolean;
}

/** The result of `vmlink verify`. */
export interface VerifyResult {
  endpoints: Array<{ id: string; kind: Endpoint['kind']; address?: string; host?: string; network?: string }>;
  cells: MatrixCell[];
  ok: boolean;
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
  const agents = new Map(
    spec.hosts.map((h) => [h.name, new AgentClient(h.name, agentAddress(spec, h.name))] as const),
  );

  await discoverVmAddresses(endpoints, agents, ctx, opts.addressTimeoutMs ?? 120_000);

  const probe = async (
    src: Endpoint,
    kind: 'ping' | 'http',
    target: string,
    port?: number,
  ): Promise<ProbeResult> => {
    const timeoutMs = 2_000;
    if (src.kind === 'host')
      return agents
        .get(src.host)!
        .probe({ from: { kind: 'host' }, kind, target, timeoutMs, ...(port ? { port } : {}) });
    if (src.kind === 'vm')
      return agents
        .get(src.host)!
        .probe({ from: { kind: 'vm', name: src.vm }, kind, target, timeoutMs, ...(port ? { port } : {}) });
    const t0 = Date.now();
    const argv =
      kind === 'ping'
        ? pingArgv(target, timeoutMs, false)
        : httpArgv(target, port ?? 80, timeoutMs, [HOST_BUSYBOX]);
    const r = await runner.run(argv, { netns: src.ns, allowFailure: true, timeoutMs: timeoutMs + 3_000 });
    return kind === 'ping'
      ? parsePing(r.code, r.stdout, r.stderr)
      : parseHttp(r.code, r.stdout, r.stderr, Date.now() - t0);
  };

  const jobs: Array<() => Promise<MatrixCell>> = [];
  for (const src of endpoints) {
    for (const dst of endpoints) {
      if (src === dst || (src.kind === 'vm' && dst.kind === 'vm' && src.vm === dst.vm)) continue;
      jobs.push(async () => {
        const expected = expectReachable(src, dst);
        const r: ProbeResult = dst.address
          ? await probe(src, 'ping', dst.address).catch(errorResult)
          : { reachable: false, detail: 'address unknown' };
        return cell(src.id, dst.id, 'ping', expected, r);
      });
    }
  }
  const forwardSources = endpoints.filter((e) => e.kind !== 'vm');
  for (const f of forwardsOf(spec)) {
    for (const src of forwardSources) {
      jobs.push(async () => {
        const expected = expectForward(src);
        let r = await probe(src, 'http', f.address, f.hostPort).catch(errorResult);
        // The test guest names itself in its answer, which proves the forward reached the right VM.
        const vm = spec.vms.find((v) => v.name === f.vm);
        if (r.reachable && vm?.image.kind === 'test-guest' && r.detail !== `vmlink-guest ${f.vm}`) {
          r = { reachable: false, detail: `answered by the wrong service: ${r.detail}` };
        }
        return cell(src.id, `${f.address}:${f.hostPort} (${f.vm})`, 'forward', expected, r);
      });
    }
  }
  ctx.progress(`probing ${jobs.length} paths between ${endpoints.length} endpoints`);
  const cells = await limit(jobs, 6);
  const mismatches = cells.filter((c) => !c.ok).length;
  return {
    endpoints: endpoints.map((e) => ({
      id: e.id,
      kind: e.kind,
      ...(e.address ? { address: e.address } : {}),
      ...(e.kind === 'vm' || e.kind === 'host' ? { host: e.host } : {}),
      ...(e.kind === 'vm' ? { network: e.network } : {}),
    })),
    cells,
    ok: mismatches === 0,
    mismatches,
    measuredAt: new Date().toISOString(),
    durationMs: Date.now() - started,
  };
}

function cell(
  from: string,
  to: string,
  kind: MatrixCell['kind'],
  expected: boolean,
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
    ok: expected === r.reachable,
  };
}

function errorResult(e: unknown): ProbeResult {
  return {
    reachable: false,
    detail: `probe failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`,
  };
}

/** Fills in each VM endpoint's IPv4 address from its guest agent, waiting for guests that are still booting. */
async function discoverVmAddresses(
  endpoints: Endpoint[],
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
            return;
          }
          last = nic ? 'no IPv4 address yet' : `no NIC with MAC ${e.mac}`;
        } catch (err) {
          last = err instanceof Error ? err.message.split('\n')[0]! : String(err);
        }
        await new Promise((r) => setTimeout(r, 1_000));
      }
      ctx.progress(`${e.id}: address unknown (${last})`);
    }),
  );
  if (ctx.signal.aborted) throw new TimeoutError('verify cancelled');
}

async function limit<T>(jobs: Array<() => Promise<T>>, n: number): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, jobs.length) }, async () => {
      while (next < jobs.length) {
        const i = next++;
        out[i] = await jobs[i]!();
      }
    }),
  );
  return out;
}
