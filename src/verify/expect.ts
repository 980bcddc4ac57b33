// The reachability the topology implies, derived from the spec alone (pure).
import type { Spec } from '../spec/schema.js';

/** One endpoint of the connectivity matrix. */
export type Endpoint =
  | { id: string; kind: 'host'; host: string; address: string }
  | { id: string; kind: 'peer'; ns: string; address: string }
  | { id: string; kind: 'upstream'; ns: string; address: string }
  | {
      id: string;
      kind: 'vm';
      vm: string;
      host: string;
      network: string;
      mode: 'nat' | 'bridge' | 'isolated';
      mac: string;
      address?: string;
    };

/** A port-forward probe target: a host address and port that must lead to `vm`. */
export interface ForwardTarget {
  id: string;
  host: string;
  address: string;
  hostPort: number;
  vm: string;
  protocol: 'tcp' | 'udp';
}

const onLan = (e: Endpoint): boolean =>
  e.kind === 'host' || e.kind === 'peer' || (e.kind === 'vm' && e.mode === 'bridge');

/**
 * Whether `src` should reach `dst` by ICMP, given vmlink's network modes:
 * nat and isolated subnets are private to their host (only it and same-network VMs reach them);
 * isolated VMs get no route off their network (the host's address on it aside); nat VMs and LAN members reach the LAN and, through the
 * router's NAT, the upstream; the upstream reaches nothing behind the router.
 */
export function expectReachable(src: Endpoint, dst: Endpoint): boolean {
  if (dst.kind === 'vm' && dst.mode !== 'bridge') {
    if (src.kind === 'host') return src.host === dst.host;
    return src.kind === 'vm' && src.network === dst.network && src.host === dst.host;
  }
  if (src.kind === 'vm' && src.mode === 'isolated') return false;
  if (src.kind === 'upstream') return false;
  // dst is a LAN member or the upstream; src is a LAN member or a nat VM.
  return onLan(src) || (src.kind === 'vm' && src.mode === 'nat');
}

/** Whether a forward probe from `src` should arrive: from the LAN (the host included) yes, from the upstream no. */
export function expectForward(src: Endpoint): boolean {
  return src.kind === 'host' || src.kind === 'peer';
}

/** The matrix's endpoints: lab hosts, peers and upstream (when the spec has a lab), and one per VM NIC. */
export function endpointsOf(spec: Spec, macs: Record<string, string[]>): Endpoint[] {
  const out: Endpoint[] = [];
  const lab = spec.lab;
  for (const h of spec.hosts) {
    const address = lab?.hosts.find((l) => l.name === h.name)?.address;
    if (address) out.push({ id: h.name, kind: 'host', host: h.name, address });
  }
  if (lab) {
    for (const p of lab.peers)
      out.push({ id: p.name, kind: 'peer', ns: `vl-${lab.name}-${p.name}`, address: p.address });
    out.push({ id: 'upstream', kind: 'upstream', ns: `vl-${lab.name}--up`, address: lab.upstream.address });
  }
  for (const vm of spec.vms) {
    if (vm.state !== 'running') continue;
    vm.nics.forEach((nic, i) => {
      const net = spec.networks.find((n) => n.name === nic.network)!;
      out.push({
        id: vm.nics.length === 1 ? vm.name : `${vm.name}/${nic.network}`,
        kind: 'vm',
        vm: vm.name,
        host: vm.host,
        network: nic.network,
        mode: net.mode,
        mac: macs[vm.name]?.[i] ?? '',
      });
    });
  }
  return out;
}

/** Every port forward of the spec with the host address it listens on. */
export function forwardsOf(spec: Spec): ForwardTarget[] {
  const out: ForwardTarget[] = [];
  for (const net of spec.networks) {
    if (net.mode !== 'nat') continue;
    const address = spec.lab?.hosts.find((h) => h.name === net.host)?.address;
    if (!address) continue;
    for (const f of net.forwards) {
      out.push({
        id: `${net.host}:${f.hostPort}->${f.vm}:${f.vmPort}`,
        host: net.host,
        address,
        hostPort: f.hostPort,
        vm: f.vm,
        protocol: f.protocol,
      });
    }
  }
  return out;
}
