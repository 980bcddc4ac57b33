// Verify's load-balancer checks (docs/load-balancers.md), pure: which probes to run for each LB of the spec, and how
// to judge them with what the LB hosts report. Four questions per LB: does exactly one host hold the VIP; do the LB
// hosts run HAProxy and Keepalived; does a peer reach the VIP on each frontend port, answered by backends HAProxy
// marks UP only; and does HAProxy's view of each backend (UP or taken out) agree with the backend itself.
import type { ProbeSpec } from '../exec/probe.js';
import type { ObservedLb } from '../shared/lb.js';
import type { ProbeResult } from '../shared/results.js';
import type { Spec } from '../spec/schema.js';
import { type Endpoint, expectCell, type Router, type VmEndpoint } from './expect.js';
import { type GroupContext, groupVerdict } from './security-groups.js';

/** Requests sent to the VIP per source and frontend: enough for round robin to visit each backend twice. */
export const LB_REQUESTS_MIN = 2;
export const LB_REQUESTS_MAX = 8;
/** Probe sources per load balancer (the gateway host and a peer are enough to show the VIP is reachable). */
export const LB_SOURCES_MAX = 2;
/** Most LB probes one verify runs (all LBs); frontends beyond it are left out, with a note. */
export const LB_PROBES_MAX = 256;
/** Longest answer text kept in a cell's detail. */
const DETAIL_MAX = 160;

/** One LB check as verify reports it (`VerifyResult.loadBalancers`). */
export interface LbCell {
  lb: string;
  /**
   * `vip`: exactly one host holds the VIP; `host`: HAProxy and Keepalived run there, nothing wrong; `reach`: a
   * source reaches the VIP on a frontend port; `healthy`: those answers came from backends HAProxy marks UP only;
   * `backend`: HAProxy's view of one backend agrees with a direct probe of it (a failed one is taken out).
   */
  check: 'vip' | 'host' | 'reach' | 'healthy' | 'backend';
  /** The probe source (reach, healthy, backend) or the LB host (host). */
  from?: string;
  /** What was checked: `VIP:port`, a backend VM, a host. */
  to: string;
  port?: number;
  detail: string;
  /** A backend HAProxy has taken out (DOWN), named so an operator sees it even when the cell is ok. */
  takenOut?: boolean;
  unmeasured?: boolean;
  ok: boolean;
}

/** One LB's probes: the VIP on each frontend from each source, and each backend directly from the first source. */
export interface LbPlan {
  name: string;
  vip: string;
  hosts: string[];
  frontends: { port: number; protocol: 'tcp' | 'http'; backendPort: number }[];
  backends: { vm: string; address?: string; endpoint?: VmEndpoint }[];
  sources: Endpoint[];
  /** Requests per source and frontend. */
  requests: number;
  /** Why a backend is not probed directly (groups, topology), by VM. */
  notDirect: Map<string, string>;
}

/** What the LB checks measured: per source id, per frontend port, the answers; per backend VM, the direct probe. */
export interface LbMeasured {
  vip: Map<string, Map<number, ProbeResult[]>>;
  direct: Map<string, ProbeResult>;
}

/** A host's answer about one LB: its report entry, or why the host did not answer. */
export type LbHostAnswer = { host: string; lb?: ObservedLb; error?: string };

const PAGE = /^vmlink-guest ([a-z][a-z0-9-]{0,30})$/;

/** The probe kind of a frontend: HTTP where the backends speak it, a TCP connect otherwise. */
const kindOf = (p: 'tcp' | 'http'): ProbeSpec['kind'] => (p === 'http' ? 'http' : 'tcp');

/**
 * The LB checks of a spec. Sources are the hosts and lab peers the topology lets reach an address on the LB's
 * network (as if the VIP were a VM there); with none, a VM on the network that is not a backend, else a backend.
 */
export function lbPlansOf(
  spec: Spec,
  endpoints: readonly Endpoint[],
  routers: readonly Router[],
  groups: GroupContext,
): { plans: LbPlan[]; notes: string[] } {
  const plans: LbPlan[] = [];
  const notes: string[] = [];
  let budget = LB_PROBES_MAX;
  for (const lb of spec.loadBalancers ?? []) {
    const net = spec.networks.find((n) => n.name === lb.network);
    if (!net) continue;
    const gw = net.mode === 'vxlan' || net.mode === 'vlan' ? net.gateway : undefined;
    const vipEp: VmEndpoint = {
      id: `${lb.name} VIP`,
      kind: 'vm',
      vm: `lb:${lb.name}`,
      host: lb.hosts[0]?.host ?? '',
      network: net.name,
      mode: net.mode,
      mac: '',
      address: lb.vip,
      ...(gw?.host ? { gatewayHost: gw.host } : {}),
      ...(gw ? { nat: gw.nat === true } : {}),
    };
    const onNet = endpoints.filter((e): e is VmEndpoint => e.kind === 'vm' && e.network === net.name);
    const backends = lb.backends.map((vm) => {
      const endpoint = onNet.find((e) => e.vm === vm);
      const ip = spec.vms.find((v) => v.name === vm)?.nics.find((n) => n.network === net.name)?.ip;
      return { vm, ...(ip ? { address: ip } : {}), ...(endpoint ? { endpoint } : {}) };
    });
    let sources: Endpoint[] = endpoints.filter(
      (e) => (e.kind === 'host' || e.kind === 'peer') && expectCell(e, vipEp, routers) === true,
    );
    // Peers first: the issue's "a peer reaches the VIP"; then the hosts (the gateway host of a private overlay).
    sources.sort((a, b) => (a.kind === b.kind ? 0 : a.kind === 'peer' ? -1 : 1));
    if (!sources.length) {
      const vm = onNet.find((e) => !lb.backends.includes(e.vm)) ?? onNet[0];
      sources = vm ? [vm] : [];
    }
    sources = sources.slice(0, LB_SOURCES_MAX);
    if (!sources.length)
      notes.push(`load balancer ${lb.name}: no endpoint can reach ${lb.vip}; its VIP is not probed`);
    const requests = Math.min(LB_REQUESTS_MAX, Math.max(LB_REQUESTS_MIN, 2 * backends.length));
    // Within the verify's probe budget: the direct probes, then as many frontends as fit (at least none).
    const perFrontend = sources.length * requests;
    const fit = perFrontend
      ? Math.max(0, Math.floor((budget - (sources.length ? backends.length : 0)) / perFrontend))
      : lb.frontends.length;
    const frontends = lb.frontends.slice(0, fit).map((f) => ({
      port: f.port,
      protocol: f.protocol,
      backendPort: f.backendPort ?? f.port,
    }));
    if (frontends.length < lb.frontends.length)
      notes.push(
        `load balancer ${lb.name}: frontend(s) ${lb.frontends
          .slice(fit)
          .map((f) => f.port)
          .join(', ')} not probed (at most ${LB_PROBES_MAX} load-balancer probes per verify)`,
      );
    budget -= frontends.length * perFrontend + (sources.length && frontends.length ? backends.length : 0);
    const notDirect = new Map<string, string>();
    const first = sources[0];
    const be = frontends[0];
    for (const b of backends) {
      if (!first || !be) continue;
      if (!b.endpoint || !b.address) notDirect.set(b.vm, 'not running, or no address on the network');
      else if (expectCell(first, b.endpoint, routers) !== true)
        notDirect.set(b.vm, `${first.id} cannot reach it directly`);
      else if (
        b.endpoint.groups?.length &&
        groupVerdict(first, b.endpoint, { protocol: 'tcp', port: be.backendPort }, groups)?.allowed !== true
      )
        notDirect.set(b.vm, `its security groups keep ${first.id} from tcp/${be.backendPort}`);
    }
    plans.push({
      name: lb.name,
      vip: lb.vip,
      hosts: lb.hosts.map((h) => h.host),
      frontends,
      backends,
      sources,
      requests,
      notDirect,
    });
  }
  return { plans, notes };
}

/** The probes of one plan, in a stable order: per source, each frontend `requests` times; then each direct one. */
export function lbProbesOf(
  plan: LbPlan,
  timeoutMs: number,
): { src: Endpoint; probe: ProbeSpec; port?: number; backend?: string }[] {
  const out: { src: Endpoint; probe: ProbeSpec; port?: number; backend?: string }[] = [];
  for (const src of plan.sources)
    for (const f of plan.frontends)
      for (let i = 0; i < plan.requests; i++)
        out.push({
          src,
          port: f.port,
          probe: { kind: kindOf(f.protocol), target: plan.vip, port: f.port, timeoutMs },
        });
  const first = plan.sources[0];
  const be = plan.frontends[0];
  if (first && be)
    for (const b of plan.backends)
      if (b.address && !plan.notDirect.has(b.vm))
        out.push({
          src: first,
          backend: b.vm,
          probe: { kind: kindOf(be.protocol), target: b.address, port: be.backendPort, timeoutMs },
        });
  return out;
}

const clip = (s: string) => (s.length > DETAIL_MAX ? `${s.slice(0, DETAIL_MAX)}…` : s);

/** Which backend an answer names (the test guest's page), if any. */
export function answeredBy(r: ProbeResult): string | undefined {
  return r.reachable ? PAGE.exec(r.detail.trim())?.[1] : undefined;
}

/** The backends HAProxy sees up: the VIP holder's view, else any host's that answers. */
function haproxyView(answers: readonly LbHostAnswer[]): { host: string; up: string[] } | undefined {
  const withStats = answers.filter((a) => a.lb?.backendsUp !== undefined);
  const a = withStats.find((x) => x.lb?.holdsVip) ?? withStats[0];
  return a ? { host: a.host, up: a.lb!.backendsUp! } : undefined;
}

/** Judges one LB from its hosts' answers and what its probes measured. */
export function judgeLb(plan: LbPlan, answers: readonly LbHostAnswer[], m: LbMeasured): LbCell[] {
  const cells: LbCell[] = [];
  const lb = plan.name;
  // Exactly one VIP holder.
  const holders = answers.filter((a) => a.lb?.holdsVip).map((a) => a.host);
  const silent = answers.filter((a) => !a.lb);
  const vipTo = `${plan.vip} on ${plan.hosts.join(', ')}`;
  if (holders.length > 1)
    cells.push({
      lb,
      check: 'vip',
      to: vipTo,
      detail: `held by ${holders.join(' and ')} at once`,
      ok: false,
    });
  else if (holders.length === 1)
    cells.push({ lb, check: 'vip', to: vipTo, detail: `held by ${holders[0]}`, ok: true });
  else
    cells.push({
      lb,
      check: 'vip',
      to: vipTo,
      detail: silent.length
        ? `no answering host holds it (${silent.map((a) => `${a.host}: ${a.error ?? 'no report'}`).join('; ')})`
        : 'no host holds it',
      ...(silent.length ? { unmeasured: true } : {}),
      ok: false,
    });
  // Each LB host runs both processes and reports nothing wrong.
  for (const a of answers) {
    const o = a.lb;
    const problems = o ? o.problems : [a.error ?? 'the host does not report this load balancer'];
    cells.push({
      lb,
      check: 'host',
      from: a.host,
      to: a.host,
      detail: problems.length
        ? clip(problems.join('; '))
        : `HAProxy and Keepalived running${o?.holdsVip ? ', holds the VIP' : ''}`,
      ...(o ? {} : { unmeasured: true }),
      ok: !!o && o.haproxy && o.keepalived && problems.length === 0,
    });
  }
  const view = haproxyView(answers);
  const up = new Set(view?.up ?? []);
  // The VIP from each source on each frontend; for HTTP, who answered.
  for (const src of plan.sources)
    for (const f of plan.frontends) {
      const rs = m.vip.get(src.id)?.get(f.port) ?? [];
      const to = `${plan.vip}:${f.port}`;
      const answered = rs.filter((r) => r.reachable);
      const unmeasured = rs.length === 0 || rs.every((r) => r.unmeasured);
      const failed = rs.filter((r) => !r.reachable);
      cells.push({
        lb,
        check: 'reach',
        from: src.id,
        to,
        port: f.port,
        detail: unmeasured
          ? `not measured: ${rs[0]?.detail ?? 'no probe ran'}`
          : `${answered.length} of ${rs.length} ${f.protocol === 'http' ? 'requests answered' : 'connects'}${failed.length ? ` (${clip(failed[0]!.detail)})` : ''}`,
        ...(unmeasured ? { unmeasured: true } : {}),
        ok: !unmeasured && failed.length === 0,
      });
      if (f.protocol !== 'http' || !answered.length) continue;
      const by = answered.map(answeredBy);
      const named = [...new Set(by.filter((x): x is string => x !== undefined))].sort();
      const strangers = named.filter((b) => !plan.backends.some((x) => x.vm === b));
      const down = named.filter((b) => view && !up.has(b));
      const anonymous = by.filter((b) => b === undefined).length;
      let detail: string;
      let ok = true;
      let unknown = false;
      if (strangers.length || down.length) {
        ok = false;
        detail = [
          ...(down.length ? [`answered by ${down.join(', ')}, not UP in HAProxy on ${view!.host}`] : []),
          ...(strangers.length ? [`answered by ${strangers.join(', ')}, not a backend`] : []),
        ].join('; ');
      } else if (!named.length) {
        unknown = true;
        detail = 'answers do not name their backend (only the test guest names itself): not attributed';
      } else if (!view) {
        ok = false;
        unknown = true;
        detail = `answered by ${named.join(', ')}; HAProxy's stats did not answer on any LB host`;
      } else
        detail = `answered by ${named.join(', ')}, all UP in HAProxy on ${view.host}${anonymous ? ` (${anonymous} answer(s) not attributed)` : ''}`;
      cells.push({
        lb,
        check: 'healthy',
        from: src.id,
        to,
        port: f.port,
        detail: clip(detail),
        ...(unknown ? { unmeasured: true } : {}),
        ok,
      });
    }
  // Each backend: HAProxy's view against a direct probe; a backend taken out is named.
  const direct = plan.sources[0];
  for (const b of plan.backends) {
    const isUp = up.has(b.vm);
    const state = view ? (isUp ? 'UP' : 'DOWN') : undefined;
    const r = m.direct.get(b.vm);
    const why = plan.notDirect.get(b.vm);
    const base = { lb, check: 'backend' as const, to: b.vm, ...(direct ? { from: direct.id } : {}) };
    if (!state) {
      cells.push({
        ...base,
        detail: "not measured: HAProxy's stats did not answer on any LB host",
        unmeasured: true,
        ok: false,
      });
      continue;
    }
    const where = `in HAProxy on ${view!.host}`;
    const out = isUp ? {} : { takenOut: true };
    if (!r || r.unmeasured) {
      cells.push({
        ...base,
        ...out,
        detail: `${isUp ? 'UP' : 'taken out: DOWN'} ${where} (not probed directly: ${why ?? r?.detail ?? 'no probe ran'})`,
        ok: true,
      });
      continue;
    }
    const agree = r.reachable === isUp;
    cells.push({
      ...base,
      ...out,
      detail: agree
        ? isUp
          ? `UP ${where}, answers directly`
          : `taken out: DOWN ${where}; directly: ${clip(r.detail)}`
        : isUp
          ? `UP ${where} but does not answer directly (${clip(r.detail)}): still served`
          : `DOWN ${where} but answers directly (${clip(r.detail)})`,
      ok: agree,
    });
  }
  return cells;
}

/** Notes for the operator: each backend taken out, by LB. */
export function lbNotes(cells: readonly LbCell[]): string[] {
  return cells
    .filter((c) => c.check === 'backend' && c.takenOut)
    .map(
      (c) => `load balancer ${c.lb}: backend ${c.to} is taken out (${c.detail.replace(/^taken out: /, '')})`,
    );
}
