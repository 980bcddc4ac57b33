// Resolution: a validated spec -> per-host network and VM configs with every default and derived name filled in.

import type {
  DhcpReservation,
  ForwardConfig,
  NetworkConfig,
  NicConfig,
  UplinkConfig,
  VmConfig,
} from '../shared/model.js';
import type { SecurityGroupConfig } from '../shared/security-groups.js';
import type { PoolConfig } from '../shared/storage.js';
import {
  bridgeName,
  cidrContains,
  derivedMac,
  formatCidr,
  formatIpv4,
  ovsVlanBridgeName,
  parseCidr,
  parseIpv4,
  tapName,
  vxlanDeviceName,
} from '../spec/net.js';
import type { HostSpec, MultiHostNetworkSpec, NetworkSpec, NicSpec, Spec } from '../spec/schema.js';
import { hostAddress, hostSegments, isMultiHost, networkHosts, VXLAN_PORT } from '../spec/topology.js';
import { subnetPlan } from '../spec/validate/addressing.js';
import { vmResourceConfig } from './resolve-resources.js';
import { resolveSecurityGroups } from './security-groups.js';
import { type DesiredVolume, resolveDisk, resolveStorage, vmStorageFields } from './storage.js';

export { bridgeName, derivedMac, ovsVlanBridgeName, tapName, vxlanDeviceName } from '../spec/net.js';

/** What one host must realise. */
export interface HostDesired {
  networks: NetworkConfig[];
  vms: VmConfig[];
  /** Security groups the host realises (its NICs' and the remote groups their rules name); absent: none. */
  securityGroups?: SecurityGroupConfig[];
  /** The host's uplink NIC: network steps that enslave it are risky. Absent in hand-built states. */
  uplinkDevice?: string;
  /** Commit-confirm window of this host's risky steps in ms (`hosts[].confirmTimeoutSeconds`); default 60 s. */
  confirmTimeoutMs?: number;
  /** Storage pools the host holds; absent (a destroy, hand-built states): its pools are left as they are. */
  pools?: PoolConfig[];
  /** Volumes in those pools, each with the spec path that asks for it. */
  volumes?: DesiredVolume[];
  /** Spec path of each pool (`pools[2]`), by name. */
  poolPaths?: Record<string, string>;
}

/** Desired state of every host, keyed by host name. */
export type DesiredState = Record<string, HostDesired>;

/** Desired uplink config of every spec host, keyed by host name; undefined where `hosts[].network` is not set. */
export type DesiredUplinks = Record<string, UplinkConfig | undefined>;

/** Default prefix of a fixed address on a bridge network outside any lab LAN: the spec cannot say the LAN's. */
export const BRIDGE_DEFAULT_PREFIX = 24;

const byIp = (a: string, b: string) => (parseIpv4(a) ?? 0) - (parseIpv4(b) ?? 0);

/** Bridge a network's ports join on `host`: the OVS bridge of the trunk NIC for ovs vlan networks, else its own. */
function bridgeOn(spec: Spec, net: NetworkSpec, host: HostSpec | undefined): string {
  if (net.mode === 'vlan' && net.backend === 'ovs' && host) {
    const trunk = hostSegments(spec, host)[net.segment];
    if (trunk === undefined)
      throw new Error(`network ${net.name}: no segment ${net.segment} on ${host.name}`);
    return ovsVlanBridgeName(trunk);
  }
  return bridgeName(net.name);
}

/** Resolves a validated spec (see `loadSpec`) into per-host configs; every spec host gets an entry. */
export function resolveSpec(spec: Spec): DesiredState {
  const out: DesiredState = {};
  for (const h of spec.hosts)
    out[h.name] = {
      networks: [],
      vms: [],
      uplinkDevice: h.uplink,
      confirmTimeoutMs: h.confirmTimeoutSeconds * 1000,
    };
  const hosts = new Map(spec.hosts.map((h) => [h.name, h] as const));
  const hostUplink = new Map(spec.hosts.map((h) => [h.name, h.uplink] as const));
  const nets = new Map(spec.networks.map((n) => [n.name, n] as const));
  const lan = spec.lab ? parseCidr(spec.lab.lan.cidr) : undefined;

  const nicMac = (vm: string, i: number, mac: string | undefined) => mac ?? derivedMac(vm, i);

  /** DHCP reservations for the fixed addresses of NICs on `network`, sorted so spec order does not matter. */
  const reservationsOf = (network: string): DhcpReservation[] => {
    const reservations: DhcpReservation[] = [];
    for (const vm of spec.vms) {
      vm.nics.forEach((nic, i) => {
        if (nic.network === network && nic.trunk === undefined && nic.ip !== undefined)
          reservations.push({ mac: nicMac(vm.name, i, nic.mac), ip: nic.ip, hostname: vm.name });
      });
    }
    return reservations.sort((a, b) => byIp(a.ip, b.ip) || a.mac.localeCompare(b.mac));
  };

  const subnetOf = (n: NetworkSpec): NetworkConfig['subnet'] => {
    const plan = subnetPlan(n);
    const cidr = n.mode === 'bridge' || n.cidr === undefined ? undefined : parseCidr(n.cidr);
    if (!plan || !cidr) throw new Error(`network ${n.name}: unvalidated cidr or gateway`);
    return {
      cidr: formatCidr(cidr),
      gateway: formatIpv4(plan.gateway),
      prefixLength: cidr.prefix,
      dhcpStart: formatIpv4(plan.dhcp.start),
      dhcpEnd: formatIpv4(plan.dhcp.end),
      reservations: reservationsOf(n.name),
    };
  };

  for (const n of spec.networks) {
    if (isMultiHost(n)) {
      resolveMultiHost(spec, n, out, hosts, subnetOf);
      continue;
    }
    const host = out[n.host];
    if (!host) continue;
    const base = {
      name: n.name,
      mode: n.mode,
      backend: n.backend,
      bridge: bridgeName(n.name),
      mtu: n.mtu,
      ...hostServicesOf(n),
    };
    if (n.mode === 'bridge') {
      host.networks.push({ ...base, uplink: n.uplink ?? hostUplink.get(n.host), forwards: [] });
      continue;
    }
    const forwards: ForwardConfig[] = [];
    if (n.mode === 'nat') {
      for (const f of n.forwards) {
        const vm = spec.vms.find((v) => v.name === f.vm);
        const nic = vm?.nics.find((x) => x.network === n.name && x.ip !== undefined);
        if (!nic?.ip)
          throw new Error(`forward to ${f.vm}: no fixed ip on ${n.name} (validate the spec first)`);
        forwards.push({
          protocol: f.protocol,
          hostPort: f.hostPort,
          vm: f.vm,
          targetIp: nic.ip,
          targetPort: f.vmPort,
        });
      }
    }
    // Sorted so that reordering the spec does not change the hash.
    forwards.sort((a, b) => a.protocol.localeCompare(b.protocol) || a.hostPort - b.hostPort);
    const cfg: NetworkConfig = { ...base, subnet: subnetOf(n), forwards };
    if (n.mode === 'nat') cfg.uplink = hostUplink.get(n.host);
    host.networks.push(cfg);
  }

  for (const vm of spec.vms) {
    const host = out[vm.host];
    if (!host) continue;
    const vmHost = hosts.get(vm.host);
    const nics: NicConfig[] = vm.nics.map((nic, i) => {
      const common = {
        tap: tapName(vm.name, i),
        mac: nicMac(vm.name, i, nic.mac),
        ...portSecurityOf(nic),
        ...(nic.securityGroups?.length && nic.trunk === undefined
          ? { securityGroups: [...nic.securityGroups] }
          : {}),
      };
      if (nic.trunk !== undefined) {
        const members = nic.trunk.map((name) => nets.get(name));
        const first = members[0];
        if (first?.mode !== 'vlan' || !members.every((m) => m?.mode === 'vlan'))
          throw new Error(`vm ${vm.name}: trunk of unvalidated networks ${nic.trunk.join(', ')}`);
        const vlans = members as Extract<NetworkSpec, { mode: 'vlan' }>[];
        return {
          network: first.name,
          backend: first.backend,
          bridge: bridgeOn(spec, first, vmHost),
          trunk: { networks: vlans.map((m) => m.name), vlans: vlans.map((m) => m.vlan) },
          ...common,
          mtu: Math.max(...vlans.map((m) => m.mtu)),
        };
      }
      const name = nic.network ?? '';
      const net = nets.get(name);
      const cfg: NicConfig = {
        network: name,
        backend: net?.backend ?? 'linux',
        bridge: net ? bridgeOn(spec, net, vmHost) : bridgeName(name),
        ...common,
        mtu: net?.mtu ?? 1500,
      };
      if (net?.mode === 'vlan') cfg.vlan = net.vlan;
      if (nic.ip === undefined) return cfg;
      if (net?.mode === 'bridge') {
        const ip = parseIpv4(nic.ip);
        if (lan && spec.lab && ip !== undefined && cidrContains(lan, ip))
          cfg.staticIp = { address: nic.ip, prefixLength: lan.prefix, gateway: spec.lab.lan.gateway };
        else cfg.staticIp = { address: nic.ip, prefixLength: BRIDGE_DEFAULT_PREFIX };
      } else if (net && isMultiHost(net) && net.gateway === undefined) {
        // No host serves DHCP on this overlay: the guest configures the address itself.
        const cidr = net.cidr === undefined ? undefined : parseCidr(net.cidr);
        cfg.staticIp = { address: nic.ip, prefixLength: cidr?.prefix ?? BRIDGE_DEFAULT_PREFIX };
      } else if (net && nic.portSecurity !== false) {
        // A DHCP reservation (reservationsOf): the port guard trusts it on any host the VM runs on.
        cfg.reservedIp = nic.ip;
      }
      return cfg;
    });
    host.vms.push({
      name: vm.name,
      cpus: vm.cpus,
      memoryMiB: vm.memoryMiB,
      image: vm.image,
      disks: vm.disks.map((d) => resolveDisk(spec, vm, d)),
      nics,
      state: vm.state,
      ...(vm.confidential ? { confidential: vm.confidential } : {}),
      ...vmStorageFields(spec, vm),
      ...vmResourceConfig(vm),
    });
  }
  for (const [name, storage] of Object.entries(resolveStorage(spec))) {
    const host = out[name];
    if (host) Object.assign(host, storage);
  }
  for (const [name, groups] of Object.entries(resolveSecurityGroups(spec))) {
    const host = out[name];
    if (host) host.securityGroups = groups;
  }
  return out;
}

/** A network's `hostServices`, sorted, where it has any (absent otherwise: older configs keep their hash). */
function hostServicesOf(n: NetworkSpec): Pick<NetworkConfig, 'hostServices'> {
  const list = n.hostServices ?? [];
  if (list.length === 0) return {};
  return {
    hostServices: [...list]
      .sort((a, b) => a.protocol.localeCompare(b.protocol) || a.port - b.port)
      .map((s) => ({ protocol: s.protocol, port: s.port })),
  };
}

/** A NIC's port-security exceptions, only where the spec makes one (absent otherwise: configs keep their hash). */
function portSecurityOf(nic: NicSpec): Pick<NicConfig, 'portSecurity' | 'allowedAddresses'> {
  return {
    ...(nic.portSecurity === false ? { portSecurity: false as const } : {}),
    ...(nic.allowedAddresses?.length ? { allowedAddresses: [...nic.allowedAddresses].sort(byIp) } : {}),
  };
}

/** Adds a vxlan or vlan network to each member host; the subnet (and NAT) only on the gateway host. */
function resolveMultiHost(
  spec: Spec,
  n: MultiHostNetworkSpec,
  out: DesiredState,
  hosts: Map<string, HostSpec>,
  subnetOf: (n: NetworkSpec) => NetworkConfig['subnet'],
) {
  const members = [...new Set(networkHosts(spec, n))].flatMap((name) => {
    const h = hosts.get(name);
    return h ? [h] : [];
  });
  const addressOf = (h: HostSpec): string => {
    const a = hostAddress(spec, h);
    if (a === undefined) throw new Error(`host ${h.name}: no underlay address (validate the spec first)`);
    return a;
  };
  for (const h of members) {
    const host = out[h.name];
    if (!host) continue;
    const cfg: NetworkConfig = {
      name: n.name,
      mode: n.mode,
      backend: n.backend,
      bridge: bridgeOn(spec, n, h),
      mtu: n.mtu,
      forwards: [],
      ...hostServicesOf(n),
    };
    if (n.mode === 'vxlan') {
      const local = addressOf(h);
      cfg.vxlan = {
        vni: n.vni,
        device: vxlanDeviceName(n.name),
        local,
        remotes: members
          .filter((m) => m !== h)
          .map(addressOf)
          .sort(byIp),
        port: VXLAN_PORT,
        underlay: h.uplink,
      };
    } else {
      const trunk = hostSegments(spec, h)[n.segment];
      if (trunk === undefined) throw new Error(`network ${n.name}: no segment ${n.segment} on ${h.name}`);
      cfg.vlan = { id: n.vlan, trunk };
    }
    if (n.gateway?.host === h.name) {
      cfg.subnet = subnetOf(n);
      if (n.gateway.nat) {
        cfg.nat = true;
        cfg.uplink = h.uplink;
      }
    }
    host.networks.push(cfg);
  }
}

/** Resolves `hosts[].network` into uplink configs (device = the host's uplink); undefined where it is not set. */
export function resolveUplinks(spec: Spec): DesiredUplinks {
  const out: DesiredUplinks = {};
  for (const h of spec.hosts) {
    const n = h.network;
    if (!n) {
      out[h.name] = undefined;
      continue;
    }
    const cfg: UplinkConfig = { device: h.uplink };
    if (n.mtu !== undefined) cfg.mtu = n.mtu;
    if (n.addresses !== undefined) cfg.addresses = [...n.addresses];
    if (n.gateway !== undefined) cfg.gateway = n.gateway;
    out[h.name] = cfg;
  }
  return out;
}
