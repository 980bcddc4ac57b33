// The reachability the topology implies, derived from the spec alone (pure).
import type { NetworkSpec, Spec } from '../spec/schema.js';

/** A network's mode as the matrix sees it. */
export type NetworkMode = NetworkSpec['mode'];

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
      mode: NetworkMode;
      mac: string;
      address?: string;
      /** The guest's name for this NIC (from its guest agent): probes from this endpoint are bound to it. */
      ifname?: string;
      /** vxlan/vlan: the host holding the network's gateway address (and DHCP); absent without a gateway. */
      gatewayHost?: string;
      /** vxlan/vlan: the gateway masquerades the network, so its VMs reach out like nat VMs. */
      nat?: boolean;
      /** The NIC's security groups (absent: none, today's behaviour); see ./security-groups.ts. */
      groups?: string[];
    };

/** A VM endpoint. */
export type VmEndpoint = Extract<Endpoint, { kind: 'vm' }>;

/** A VM with a trunk NIC: it may route between its networks as its guest pleases, so it is not a matrix endpoint. */
export interface Router {
  vm: string;
  host: string;
  /** Every network the VM is on: trunk members and access NICs. */
  networks: string[];
}

/** What a cell asserts: reachable, unreachable, or nothing (`any`: a router VM decides). */
export type Expectation = boolean | 'any';

/** A port-forward probe target: a host address and port that must lead to `vm`. */
export interface ForwardTarget {
  id: string;
  host: string;
  address: string;
  hostPort: number;
  vm: string;
  /** The nat network the forward leads into, and the port on the VM's NIC there. */
  network: string;
  vmPort: number;
  protocol: 'tcp' | 'udp';
}

const multiHost = (mode: NetworkMode): boolean => mode === 'vxlan' || mode === 'vlan';

/** The host that has an address on a private VM network (nat/isolated: its host; vxlan/vlan: the gateway host). */
function homeHost(e: VmEndpoint): string | undefined {
  return multiHost(e.mode) ? e.gatewayHost : e.host;
}

/** The host a VM's packets enter from its port or its network's bridge: the host input policy applies there. */
function entryHost(e: VmEndpoint): string | undefined {
  return e.mode === 'bridge' ? e.host : homeHost(e);
}

/** Whether a VM on a private network is routed (and masqueraded) off it: nat, or vxlan/vlan with `gateway.nat`. */
function egresses(e: VmEndpoint): boolean {
  return e.mode === 'nat' || (multiHost(e.mode) && e.nat === true);
}

/**
 * Whether `src` should reach `dst` by ICMP, given vmlink's network modes:
 * nat, isolated, vxlan and vlan networks are private: only VMs on the same network reach their VMs (nat/isolated
 * live on one host; vxlan/vlan span hosts), plus the one host with an address on the network (nat/isolated: its
 * host; vxlan/vlan: the gateway host, if any). Different networks never reach each other, even with overlapping
 * CIDRs. Isolated VMs, and vxlan/vlan VMs without `gateway.nat`, get no route off their network; nat VMs, vxlan/vlan
 * VMs with `gateway.nat` and LAN members (hosts, peers, bridged VMs) reach the LAN and, through the router's NAT, the
 * upstream; the upstream reaches nothing behind the router. No VM reaches the host its packets enter (its own host,
 * or the gateway host of its overlay) at the host's LAN address: the host input policy lets VMs ping only their gateway.
 */
export function expectReachable(src: Endpoint, dst: Endpoint): boolean {
  if (dst.kind === 'vm' && dst.mode !== 'bridge') {
    if (src.kind === 'host') return src.host === homeHost(dst);
    if (src.kind !== 'vm' || src.network !== dst.network) return false;
    return multiHost(dst.mode) || src.host === dst.host;
  }
  if (src.kind === 'upstream') return false;
  // The host a VM's packets enter drops them unless a network opens a service (ping only to the gateway address).
  if (src.kind === 'vm' && dst.kind === 'host' && dst.host === entryHost(src)) return false;
  // dst is a LAN member or the upstream.
  if (src.kind === 'vm' && src.mode !== 'bridge') return egresses(src);
  return true;
}

/**
 * The expectation of one matrix cell: `expectReachable`, except between VMs of two different networks that one
 * router VM joins (its guest may route between them or not): `any`.
 */
export function expectCell(src: Endpoint, dst: Endpoint, routers: readonly Router[] = []): Expectation {
  if (
    src.kind === 'vm' &&
    dst.kind === 'vm' &&
    src.network !== dst.network &&
    routers.some((r) => r.networks.includes(src.network) && r.networks.includes(dst.network))
  )
    return 'any';
  return expectReachable(src, dst);
}

/** Whether a forward probe from `src` should arrive: from the LAN (the host included) yes, from the upstream no. */
export function expectForward(src: Endpoint): boolean {
  return src.kind === 'host' || src.kind === 'peer';
}

type NicLike = { network?: string; trunk?: string[]; securityGroups?: string[] };
const nicsOf = (vm: Spec['vms'][number]): NicLike[] => vm.nics as NicLike[];
const isRouterVm = (vm: Spec['vms'][number]): boolean => nicsOf(vm).some((n) => (n.trunk?.length ?? 0) > 0);

/** VMs with a trunk NIC (running ones): left out of the matrix, listed as routers. */
export function routersOf(spec: Spec): Router[] {
  return spec.vms
    .filter((vm) => vm.state === 'running' && isRouterVm(vm))
    .map((vm) => ({
      vm: vm.name,
      host: vm.host,
      networks: [
        ...new Set(nicsOf(vm).flatMap((n) => n.trunk ?? (n.network === undefined ? [] : [n.network]))),
      ],
    }));
}

/**
 * The matrix's endpoints: every spec host with an address (`hosts[].address`, else its lab machine's), the lab's
 * peers and upstream, and one per NIC of each running VM without a trunk NIC (see `routersOf`).
 * `macs[vm][i]` is the MAC of NIC i as resolved by the plan.
 */
export function endpointsOf(spec: Spec, macs: Record<string, string[]>): Endpoint[] {
  const out: Endpoint[] = [];
  const lab = spec.lab;
  for (const h of spec.hosts) {
    const address =
      (h as { address?: string }).address ??
      [...(lab?.hosts ?? []), ...(lab?.storage ?? [])].find((l) => l.name === h.name)?.address;
    if (address) out.push({ id: h.name, kind: 'host', host: h.name, address });
  }
  if (lab) {
    for (const p of lab.peers)
      out.push({ id: p.name, kind: 'peer', ns: `vl-${lab.name}-${p.name}`, address: p.address });
    out.push({ id: 'upstream', kind: 'upstream', ns: `vl-${lab.name}--up`, address: lab.upstream.address });
  }
  for (const vm of spec.vms) {
    if (vm.state !== 'running' || isRouterVm(vm)) continue;
    const nics = nicsOf(vm);
    nics.forEach((nic, i) => {
      const net = spec.networks.find((n) => n.name === nic.network);
      if (!net) return;
      const gw = net.mode === 'vxlan' || net.mode === 'vlan' ? net.gateway : undefined;
      out.push({
        id: nics.length === 1 ? vm.name : `${vm.name}/${net.name}`,
        kind: 'vm',
        vm: vm.name,
        host: vm.host,
        network: net.name,
        mode: net.mode,
        mac: macs[vm.name]?.[i] ?? '',
        ...(gw?.host ? { gatewayHost: gw.host } : {}),
        ...(gw ? { nat: gw.nat === true } : {}),
        ...(nic.securityGroups?.length ? { groups: [...nic.securityGroups] } : {}),
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
    const host = spec.hosts.find((h) => h.name === net.host);
    const address =
      (host as { address?: string } | undefined)?.address ??
      spec.lab?.hosts.find((h) => h.name === net.host)?.address;
    if (!address) continue;
    for (const f of net.forwards) {
      out.push({
        id: `${net.host}:${f.hostPort}->${f.vm}:${f.vmPort}`,
        host: net.host,
        address,
        hostPort: f.hostPort,
        vm: f.vm,
        network: net.name,
        vmPort: f.vmPort,
        protocol: f.protocol,
      });
    }
  }
  return out;
}

/**
 * Endpoints whose address equals `dst`'s on a network `src` is attached to (overlapping CIDRs): a packet from `src`
 * to that address goes to them, not to `dst`. `self` is true when the address is one of `src`'s own VM's. A VM
 * source is attached to its own NIC's network only (its probes are bound to that NIC); a host source to the
 * networks it holds an address on (nat/isolated on it, vxlan/vlan it is the gateway of).
 */
export function addressTwins(
  src: Endpoint,
  dst: Endpoint,
  endpoints: readonly Endpoint[],
): { self: boolean; twins: VmEndpoint[] } {
  if (dst.kind !== 'vm' || !dst.address || (src.kind !== 'vm' && src.kind !== 'host'))
    return { self: false, twins: [] };
  const same = endpoints.filter(
    (e): e is VmEndpoint => e.kind === 'vm' && e !== dst && e.address === dst.address,
  );
  const vms = endpoints.filter((e): e is VmEndpoint => e.kind === 'vm');
  const srcNetworks = new Set(
    src.kind === 'vm' ? [src.network] : vms.filter((e) => homeHost(e) === src.host).map((e) => e.network),
  );
  return {
    self: src.kind === 'vm' && same.some((e) => e.vm === src.vm),
    twins: same.filter(
      (e) =>
        (src.kind !== 'vm' || e.vm !== src.vm) && srcNetworks.has(e.network) && e.network !== dst.network,
    ),
  };
}
