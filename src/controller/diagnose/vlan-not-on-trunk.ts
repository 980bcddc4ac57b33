// `vlan-not-on-trunk`: an OVS trunk port that does not carry a VLAN a network (or a VM's trunk NIC) needs: the
// host's trunk NIC towards the switch, or a VM's trunk port. OVS reads an empty `trunks` as every VLAN; a port set
// to access mode carries only its tag. (A Linux bridge with VLAN filtering would be the same case; vmlink's linux
// backend realises vlan networks with 802.1Q devices, not bridge VLAN filtering.)
import type { OvsPortObservation } from '../../agent/wire-doctor.js';
import type { Diagnosis } from '../wire-observe.js';
import type { Diagnose } from './types.js';

/** Whether a port carries VLAN `id` tagged. */
function carries(p: OvsPortObservation, id: number): boolean {
  if (p.vlanMode === 'access' || (p.vlanMode === undefined && p.tag !== undefined)) return false;
  return p.trunks.length === 0 || p.trunks.includes(id);
}

const describe = (p: OvsPortObservation) =>
  `ovs port ${p.port} on bridge ${p.bridge}: vlan_mode ${p.vlanMode ?? '(default)'}, tag ${p.tag ?? 'none'}, trunks ${p.trunks.length ? `[${p.trunks.join(',')}]` : '[] (all)'}`;

export const vlanNotOnTrunk: Diagnose = ({ desired, hosts }) => {
  const out: Diagnosis[] = [];
  for (const h of hosts) {
    const obs = h.answer?.observations;
    const want = desired[h.host];
    if (!obs || !want) continue;
    const port = (bridge: string, name: string) =>
      obs.ovsPorts.find((p) => p.port === name && p.bridge === bridge);
    // The host's trunk NIC of each ovs vlan network: missing VLANs grouped per port.
    const missing = new Map<string, { p: OvsPortObservation; nets: Array<{ name: string; id: number }> }>();
    for (const n of want.networks) {
      if (n.backend !== 'ovs' || !n.vlan) continue;
      const p = port(n.bridge, n.vlan.trunk);
      if (!p || carries(p, n.vlan.id)) continue;
      const m = missing.get(p.port) ?? { p, nets: [] };
      m.nets.push({ name: n.name, id: n.vlan.id });
      missing.set(p.port, m);
    }
    for (const { p, nets } of missing.values()) {
      const ids = nets.map((n) => n.id);
      const all = [...new Set([...p.trunks, ...ids])].sort((a, b) => a - b);
      out.push({
        id: 'vlan-not-on-trunk',
        severity: 'critical',
        host: h.host,
        object: `trunk ${p.port} (network${nets.length > 1 ? 's' : ''} ${nets.map((n) => n.name).join(', ')})`,
        summary: `trunk port ${p.port} on ${h.host} does not carry VLAN ${ids.join(', ')}: ${nets.map((n) => n.name).join(', ')} cannot reach the switch from this host`,
        evidence: [describe(p), ...nets.map((n) => `network ${n.name} needs VLAN ${n.id} on ${p.port}`)],
        fix: `\`vmlink apply -f SPEC\` puts the VLAN back on the trunk; by hand: ovs-vsctl set port ${p.port} trunks=${all.join(',')} (and check the physical switch port allows VLAN ${ids.join(', ')} too)`,
      });
    }
    // VMs' trunk NICs: each must carry every VLAN of its networks.
    for (const vm of want.vms) {
      for (const nic of vm.nics) {
        if (!nic.trunk || nic.backend !== 'ovs') continue;
        const p = port(nic.bridge, nic.tap);
        if (!p) continue;
        const lacking = nic.trunk.vlans.filter((id) => !carries(p, id));
        if (!lacking.length) continue;
        out.push({
          id: 'vlan-not-on-trunk',
          severity: 'critical',
          host: h.host,
          object: `vm ${vm.name} trunk port ${p.port}`,
          summary: `the trunk port ${p.port} of vm ${vm.name} does not carry VLAN ${lacking.join(', ')}`,
          evidence: [
            describe(p),
            `vm ${vm.name} trunks networks ${nic.trunk.networks.join(', ')} (VLANs ${nic.trunk.vlans.join(', ')})`,
          ],
          fix: `\`vmlink apply -f SPEC\` resets the port; by hand: ovs-vsctl set port ${p.port} vlan_mode=trunk trunks=${nic.trunk.vlans.join(',')}`,
        });
      }
    }
  }
  return out;
};
