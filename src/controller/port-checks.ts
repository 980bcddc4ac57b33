// Verify's security-group port checks at run time: listeners started in the guests through their agents, each probe
// turned into a cell, the listeners stopped again. Which checks run and what they expect: ../verify/port-checks.ts.
import type { ProbeResult } from '../shared/results.js';
import type { VmEndpoint } from '../verify/expect.js';
import type { PortCheck } from '../verify/port-checks.js';
import { guestPage, listenScript, parseListen, stopScript } from '../verify/port-listeners.js';
import { limit } from './probe-sources.js';

/** Runs a command in a VM's guest (through its host's agent). */
export type GuestExec = (
  vm: string,
  host: string,
  argv: string[],
  timeoutMs: number,
) => Promise<{ exitCode: number; stdout: string; stderr: string }>;

/** Per VM: the ports whose listener answers, or why none could be started. */
export type Listening = Map<string, { up: Set<number>; why?: string }>;

/** How long one guest's listen script may take (10 tries of 2 s at most per port, usually well under a second). */
const LISTEN_TIMEOUT_MS = 60_000;
/** Guests whose listeners are started at once. */
const GUESTS_AT_ONCE = 8;

/** The ports to listen on per VM (a VM with two NICs with groups gets one listener per port, on every address). */
function portsByVm(
  listeners: ReadonlyMap<VmEndpoint, number[]>,
): Map<string, { host: string; ports: number[] }> {
  const out = new Map<string, { host: string; ports: number[] }>();
  for (const [nic, ports] of listeners) {
    const e = out.get(nic.vm) ?? { host: nic.host, ports: [] };
    for (const p of ports) if (!e.ports.includes(p)) e.ports.push(p);
    out.set(nic.vm, e);
  }
  return out;
}

/** Starts the listeners the checks need, one guest-agent exec per VM, and reports which answer. */
export async function startListeners(
  listeners: ReadonlyMap<VmEndpoint, number[]>,
  exec: GuestExec,
): Promise<Listening> {
  const out: Listening = new Map();
  await limit(
    [...portsByVm(listeners)].map(([vm, { host, ports }]) => async () => {
      try {
        const r = await exec(vm, host, ['sh', '-c', listenScript(ports, vm)], LISTEN_TIMEOUT_MS);
        out.set(vm, { up: parseListen(r.stdout, ports) });
      } catch (e) {
        out.set(vm, { up: new Set(), why: e instanceof Error ? e.message.split('\n')[0]! : String(e) });
      }
    }),
    GUESTS_AT_ONCE,
  );
  return out;
}

/** Stops the listeners `startListeners` started (best effort: a guest that does not answer keeps them). */
export async function stopListeners(
  listeners: ReadonlyMap<VmEndpoint, number[]>,
  exec: GuestExec,
): Promise<string[]> {
  const problems: string[] = [];
  await limit(
    [...portsByVm(listeners)].map(([vm, { host, ports }]) => async () => {
      await exec(vm, host, ['sh', '-c', stopScript(ports)], 10_000).catch((e: unknown) => {
        problems.push(
          `${vm}: port-check listeners not stopped (${e instanceof Error ? e.message : String(e)})`,
        );
      });
    }),
    GUESTS_AT_ONCE,
  );
  return problems;
}

/** A port-check cell as verify reports it (the fields of a matrix cell for kind `port`). */
export interface PortCell {
  from: string;
  to: string;
  kind: 'port';
  protocol: 'tcp';
  port: number;
  expected: boolean;
  observed: boolean;
  rttMs?: number;
  detail: string;
  rule: string;
  blockedBy?: 'security-group' | 'topology';
  unmeasured?: boolean;
  ok: boolean;
}

/**
 * The cell of one port check from its probe's outcome. A port whose listener did not answer in the guest proves
 * nothing (unmeasured); an answer that is not the destination's page came from someone else (not reached).
 */
export function portCell(check: PortCheck, r: ProbeResult, listening: Listening): PortCell {
  const l = listening.get(check.dst.vm);
  if (!l?.up.has(check.port))
    r = {
      reachable: false,
      detail: `not measured: no listener on ${check.protocol} ${check.port} in ${check.dst.vm}${l?.why ? ` (${l.why})` : ''}`,
      unmeasured: true,
    };
  else if (r.reachable && r.detail !== guestPage(check.dst.vm))
    r = { reachable: false, detail: `answered by another service: ${r.detail.slice(0, 80)}` };
  return {
    from: check.src.id,
    to: check.dst.id,
    kind: 'port',
    protocol: check.protocol,
    port: check.port,
    expected: check.expected,
    observed: r.reachable,
    ...(r.rttMs === undefined ? {} : { rttMs: r.rttMs }),
    detail: r.detail,
    rule: check.rule,
    ...(check.expected ? {} : { blockedBy: 'security-group' as const }),
    ...(r.unmeasured ? { unmeasured: true } : {}),
    ok: !r.unmeasured && r.reachable === check.expected,
  };
}
