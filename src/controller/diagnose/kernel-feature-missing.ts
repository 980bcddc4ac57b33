// `kernel-feature-missing`: a feature the applied spec uses on a host that the host's capability report lacks (802.1Q
// VLAN devices, VXLAN, nftables, tap, Open vSwitch, a confidential-VM technology). Admission refuses such a spec
// before any change; this catches a host that lost the feature since (another kernel booted, a module blacklisted,
// OVS removed) and says what needs it. A feature the report does not mention (an older agent) is not judged.
import type { HostCapabilities } from '../../shared/model.js';
import type { Diagnosis } from '../wire-observe.js';
import type { Diagnose } from './types.js';

/** How to bring each kernel network feature back. */
const REMEDY: Record<string, string> = {
  vlan: 'load the 802.1Q module (modprobe 8021q), or use backend: ovs for vlan networks (OVS does VLANs without it)',
  vxlan: 'load the vxlan module (modprobe vxlan), or use backend: ovs for the overlay',
  nftables: 'load nf_tables (modprobe nf_tables) and install nftables',
  tap: 'load the tun module (modprobe tun)',
};

/** What the spec needs of one host: feature -> what uses it. */
type Needs = Map<string, string[]>;

const need = (m: Needs, feature: string, user: string) => m.set(feature, [...(m.get(feature) ?? []), user]);

export const kernelFeatureMissing: Diagnose = ({ desired, hosts }) => {
  const out: Diagnosis[] = [];
  for (const h of hosts) {
    const caps: HostCapabilities | undefined = h.report?.capabilities;
    const want = desired[h.host];
    if (!caps || !want) continue;
    const kernel: Needs = new Map();
    const other: Array<{ feature: string; users: string[]; fix: string; evidence: string }> = [];
    const ovsUsers: string[] = [];
    for (const n of want.networks) {
      need(kernel, 'nftables', `network ${n.name}`);
      if (n.backend === 'ovs') ovsUsers.push(`network ${n.name}`);
      else if (n.mode === 'vxlan') need(kernel, 'vxlan', `network ${n.name}`);
      else if (n.mode === 'vlan') need(kernel, 'vlan', `network ${n.name}`);
    }
    for (const vm of want.vms) {
      if (vm.nics.length) need(kernel, 'tap', `vm ${vm.name}`);
      const kind = vm.confidential;
      const support = kind ? caps.confidential?.[kind] : undefined;
      if (kind && support && !support.available)
        other.push({
          feature: kind,
          users: [`vm ${vm.name}`],
          fix: `run vm ${vm.name} on a host with ${kind} (the report says: ${support.reason}), or drop vms[${vm.name}].confidential`,
          evidence: `capabilities.confidential.${kind}: not available (${support.reason})`,
        });
    }
    if (ovsUsers.length && !caps.backends.includes('ovs'))
      other.push({
        feature: 'Open vSwitch',
        users: ovsUsers,
        fix: `install Open vSwitch on ${h.host} (apt-get install openvswitch-switch) and restart its agent`,
        evidence: `capabilities.backends: ${caps.backends.join(', ')} (no ovs)`,
      });
    for (const [feature, users] of kernel) {
      if (caps.network[feature] !== false) continue;
      other.push({
        feature,
        users,
        fix: REMEDY[feature] ?? `load the kernel module that provides ${feature}`,
        evidence: `capabilities.network.${feature}: false (the agent's probe could not create one)`,
      });
    }
    for (const f of other)
      out.push({
        id: 'kernel-feature-missing',
        severity: 'critical',
        host: h.host,
        object: `host ${h.host} feature ${f.feature}`,
        summary: `${h.host} lacks ${f.feature}, which ${f.users.slice(0, 4).join(', ')}${f.users.length > 4 ? ` and ${f.users.length - 4} more` : ''} need${f.users.length === 1 ? 's' : ''}`,
        evidence: [f.evidence, ...f.users.slice(0, 16).map((u) => `${u} uses it on ${h.host}`)],
        fix: f.fix,
      });
  }
  return out;
};
