// `overlay-mtu`: a VXLAN network whose MTU plus the 50 bytes VXLAN adds exceeds its underlay's MTU on a member host,
// as the host's links are now (spec validation checked the spec's MTUs; this catches an underlay lowered since, or
// a NIC that never had the MTU the spec assumed). Full-size frames are then dropped or fragmented on the underlay.
import type { LinkObservation } from '../../agent/wire-doctor.js';
import { VXLAN_OVERHEAD } from '../../shared/limits.js';
import type { Diagnosis } from '../wire-observe.js';
import type { Diagnose } from './types.js';

export const overlayMtu: Diagnose = ({ desired, hosts }) => {
  const out: Diagnosis[] = [];
  for (const h of hosts) {
    const obs = h.answer?.observations;
    if (!obs) continue;
    const link = new Map(obs.links.map((l) => [l.name, l]));
    for (const n of desired[h.host]?.networks ?? []) {
      if (!n.vxlan) continue;
      const nic = link.get(n.vxlan.underlay);
      if (!nic) continue;
      // Where the NIC is enslaved (a bridge network on the uplink), the tunnel leaves through both.
      const path: LinkObservation[] = [
        nic,
        ...(nic.master && link.has(nic.master) ? [link.get(nic.master)!] : []),
      ];
      const narrowest = path.reduce((a, b) => (b.mtu < a.mtu ? b : a));
      if (n.mtu + VXLAN_OVERHEAD <= narrowest.mtu) continue;
      out.push({
        id: 'overlay-mtu',
        severity: 'critical',
        host: h.host,
        object: `network ${n.name}`,
        summary: `network ${n.name} on ${h.host} has MTU ${n.mtu}: with ${VXLAN_OVERHEAD} bytes of VXLAN overhead its packets need ${n.mtu + VXLAN_OVERHEAD}, but underlay ${narrowest.name} has MTU ${narrowest.mtu}`,
        evidence: [
          ...path.map((l) => `ip link on ${h.host}: ${l.name} mtu ${l.mtu}${l.kind ? ` (${l.kind})` : ''}`),
          `network ${n.name}: vxlan ${n.vxlan.vni} over ${n.vxlan.underlay}, mtu ${n.mtu}`,
          ...(link.has(n.vxlan.device)
            ? [`vxlan device ${n.vxlan.device} mtu ${link.get(n.vxlan.device)!.mtu}`]
            : []),
        ],
        fix: `lower networks[${n.name}].mtu to ${narrowest.mtu - VXLAN_OVERHEAD} or less, or raise ${narrowest.name}'s MTU on ${h.host} to ${n.mtu + VXLAN_OVERHEAD} (hosts[].network.mtu, and the switch's), then \`vmlink apply -f SPEC\``,
      });
    }
  }
  return out;
};
