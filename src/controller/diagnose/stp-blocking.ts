// `stp-blocking`: a port of a managed network's Linux bridge that STP keeps from forwarding. vmlink's bridges run
// without STP, so a port in blocking/listening/learning means STP was turned on and found a loop (or is still
// converging after one): frames through that port are dropped.
import type { Diagnosis } from '../wire-observe.js';
import type { Diagnose } from './types.js';

const NOT_FORWARDING = new Set(['blocking', 'listening', 'learning']);

export const stpBlocking: Diagnose = ({ desired, hosts }) => {
  const out: Diagnosis[] = [];
  for (const h of hosts) {
    const obs = h.answer?.observations;
    if (!obs) continue;
    const bridges = new Map(
      (desired[h.host]?.networks ?? []).filter((n) => n.backend === 'linux').map((n) => [n.bridge, n.name]),
    );
    for (const p of obs.bridgePorts) {
      const network = bridges.get(p.bridge);
      if (network === undefined || !NOT_FORWARDING.has(p.state)) continue;
      out.push({
        id: 'stp-blocking',
        severity: p.state === 'blocking' ? 'critical' : 'warning',
        host: h.host,
        object: `network ${network} port ${p.port}`,
        summary: `port ${p.port} of bridge ${p.bridge} (network ${network}) on ${h.host} is in STP state ${p.state}: it forwards no frames`,
        evidence: [
          `bridge -j link show on ${h.host}: ${p.port} master ${p.bridge} state ${p.state}`,
          ...obs.bridgePorts
            .filter((o) => o.bridge === p.bridge && o.port !== p.port)
            .slice(0, 8)
            .map((o) => `other port of ${p.bridge}: ${o.port} state ${o.state}`),
        ],
        fix:
          p.state === 'blocking'
            ? `STP found a loop through ${p.port}: remove the second path between ${p.bridge} and the LAN (a cable or a port enslaved twice), or turn STP off where vmlink left it off: ip link set ${p.bridge} type bridge stp_state 0`
            : `STP is on for ${p.bridge} and the port is still converging: vmlink's bridges run without STP (ip link set ${p.bridge} type bridge stp_state 0); if it stays so, look for a loop`,
      });
    }
  }
  return out;
};
