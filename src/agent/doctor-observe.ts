// The agent's observations for the doctor (agent/wire-doctor.ts): its bridges' port STP states (`bridge -j link
// show`), its OVS ports' VLAN settings, its links' MTUs, and its clock. Read-only; each source that fails is named in
// `errors` rather than failing the whole answer (an unreachable OVS must not hide a blocked bridge port).
import type { OvsDaemons } from '../drivers/network/ovs/daemon.js';
import { Bridge } from '../exec/bridge.js';
import { Ip } from '../exec/ip.js';
import type { Runner } from '../exec/runner.js';
import {
  type BridgePortObservation,
  DOCTOR_OBSERVATIONS_MAX,
  type DoctorObservations,
  type LinkObservation,
  type OvsPortObservation,
  STP_STATES,
  type StpState,
} from './wire-doctor.js';

/** What observing needs: the host's runner (its namespace), and its own OVS instance where it has one. */
export interface DoctorObserveDeps {
  runner: Runner;
  ovs?: Pick<OvsDaemons, 'pid' | 'ovs'>;
  now?: () => number;
}

const IFNAME = /^[A-Za-z0-9_.@:-]{1,15}$/;

/** Ports of Linux bridges with their STP state, from `bridge -json link show` (others' entries skipped). */
export function parseBridgeLinks(text: string): BridgePortObservation[] {
  const rows: unknown = JSON.parse(text || '[]');
  if (!Array.isArray(rows)) throw new Error('bridge -json link show: not a JSON array');
  const out: BridgePortObservation[] = [];
  for (const r of rows as Array<Record<string, unknown>>) {
    const port = r?.ifname;
    const bridge = r?.master;
    const state = r?.state;
    if (typeof port !== 'string' || typeof bridge !== 'string' || typeof state !== 'string') continue;
    if (!IFNAME.test(port) || !IFNAME.test(bridge) || !STP_STATES.includes(state as StpState)) continue;
    out.push({ bridge, port, state: state as StpState });
  }
  return out;
}

const firstLine = (e: unknown) =>
  String((e as Error).message ?? e)
    .split('\n')[0]!
    .slice(0, 400);

/** Observes this host for the doctor. */
export async function observeForDoctor(deps: DoctorObserveDeps): Promise<DoctorObservations> {
  const at = (deps.now ?? Date.now)();
  const errors: string[] = [];
  const ip = new Ip(deps.runner);
  const [bridgePorts, links, ovsPorts] = await Promise.all([
    new Bridge(deps.runner)
      .exec(['link', 'show'], { json: true })
      .then((r) => parseBridgeLinks(r.stdout))
      .catch((e): BridgePortObservation[] => {
        errors.push(`bridge ports: ${firstLine(e)}`);
        return [];
      }),
    ip.link
      .list()
      .then((ls) =>
        ls
          .filter((l) => l.name !== 'lo' && IFNAME.test(l.name))
          .map(
            (l): LinkObservation => ({
              name: l.name,
              mtu: l.mtu,
              ...(l.kind ? { kind: l.kind.slice(0, 32) } : {}),
              ...(l.master && IFNAME.test(l.master) ? { master: l.master } : {}),
            }),
          ),
      )
      .catch((e): LinkObservation[] => {
        errors.push(`links: ${firstLine(e)}`);
        return [];
      }),
    observeOvs(deps.ovs, errors),
  ]);
  const cap = <T>(what: string, l: T[]): T[] => {
    if (l.length <= DOCTOR_OBSERVATIONS_MAX) return l;
    errors.push(`${what}: ${l.length} found, the first ${DOCTOR_OBSERVATIONS_MAX} reported`);
    return l.slice(0, DOCTOR_OBSERVATIONS_MAX);
  };
  return {
    at,
    bridgePorts: cap('bridge ports', bridgePorts),
    ovsPorts: cap('OVS ports', ovsPorts),
    links: cap('links', links),
    errors,
  };
}

/** The VLAN settings of every port of the agent's OVS (none where it has no OVS or its daemons are down). */
async function observeOvs(ovs: DoctorObserveDeps['ovs'], errors: string[]): Promise<OvsPortObservation[]> {
  if (!ovs) return [];
  try {
    // No daemon: no OVS network on this host yet (the report names a network whose daemons are missing).
    if ((await ovs.pid('ovsdb-server')) === undefined) return [];
    return (await ovs.ovs.ports()).flatMap((p): OvsPortObservation[] =>
      p.bridge && IFNAME.test(p.bridge) && IFNAME.test(p.name)
        ? [
            {
              bridge: p.bridge,
              port: p.name,
              ...(p.tag !== undefined ? { tag: p.tag } : {}),
              trunks: p.trunks,
              ...(p.vlanMode ? { vlanMode: p.vlanMode.slice(0, 32) } : {}),
            },
          ]
        : [],
    );
  } catch (e) {
    errors.push(`OVS ports: ${firstLine(e)}`);
    return [];
  }
}
