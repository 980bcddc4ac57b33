// Verify's load-balancer checks at run time: the probes of each LB join the other probes of their source (one batch
// per source), then the LB hosts' agents report what runs, who holds the VIP and which backends HAProxy sees up, and
// ../verify/lb.ts judges. No host command here: probes and reports go through the agents (peers: the lab runner).
import type { ObservedLb } from '../shared/lb.js';
import type { Endpoint } from '../verify/expect.js';
import {
  judgeLb,
  type LbCell,
  type LbHostAnswer,
  type LbMeasured,
  type LbPlan,
  lbNotes,
  lbProbesOf,
} from '../verify/lb.js';
import type { AgentClient } from './agents.js';
import type { PendingProbe } from './probe-sources.js';

/** What the LB checks ask of a host's agent. */
export type LbReportAgent = Partial<Pick<AgentClient, 'report'>>;

/** How long an LB host's report may take. */
const REPORT_TIMEOUT_MS = 10_000;

/**
 * Adds every LB probe to `pending` (by source; `sourceOf` maps a VM source to the one its other probes use) and
 * returns where their outcomes land.
 */
export function addLbProbes(
  plans: readonly LbPlan[],
  pending: Map<Endpoint, PendingProbe[]>,
  timeoutMs: number,
  sourceOf: (e: Endpoint) => Endpoint = (e) => e,
): Map<string, LbMeasured> {
  const measured = new Map<string, LbMeasured>();
  for (const plan of plans) {
    const m: LbMeasured = { vip: new Map(), direct: new Map() };
    measured.set(plan.name, m);
    for (const p of lbProbesOf(plan, timeoutMs)) {
      const src = sourceOf(p.src);
      const list = pending.get(src) ?? [];
      list.push({
        probe: p.probe,
        finish: async (r) => {
          if (p.backend) m.direct.set(p.backend, r);
          else {
            const byPort = m.vip.get(p.src.id) ?? new Map();
            m.vip.set(p.src.id, byPort);
            byPort.set(p.port!, [...(byPort.get(p.port!) ?? []), r]);
          }
        },
      });
      pending.set(src, list);
    }
  }
  return measured;
}

/** Asks each LB host once for its report and judges every LB; cells and the operator's notes (backends taken out). */
export async function verifyLbs(
  plans: readonly LbPlan[],
  measured: ReadonlyMap<string, LbMeasured>,
  agents: ReadonlyMap<string, LbReportAgent>,
): Promise<{ cells: LbCell[]; notes: string[] }> {
  if (!plans.length) return { cells: [], notes: [] };
  const hosts = [...new Set(plans.flatMap((p) => p.hosts))];
  type Answer = { lbs: ObservedLb[] } | { error: string };
  const reports = new Map(
    await Promise.all(
      hosts.map(async (h): Promise<[string, Answer]> => {
        const agent = agents.get(h);
        try {
          if (!agent?.report) throw new Error(`no agent for host ${h}`);
          const r = await agent.report(REPORT_TIMEOUT_MS);
          return [h, { lbs: r.loadBalancers ?? [] }];
        } catch (e) {
          return [h, { error: e instanceof Error ? e.message.split('\n')[0]! : String(e) }];
        }
      }),
    ),
  );
  const cells: LbCell[] = [];
  for (const plan of plans) {
    const answers: LbHostAnswer[] = plan.hosts.map((host) => {
      const r = reports.get(host)!;
      if ('error' in r) return { host, error: `its agent did not answer: ${r.error}` };
      const lb = r.lbs.find((l) => l.name === plan.name);
      return lb ? { host, lb } : { host, error: 'the host does not report this load balancer' };
    });
    cells.push(...judgeLb(plan, answers, measured.get(plan.name) ?? { vip: new Map(), direct: new Map() }));
  }
  return { cells, notes: lbNotes(cells) };
}
