// Resolution: a validated spec -> per-host network and VM configs with every default and derived name filled in.
import type { DhcpReservation, ForwardConfig, NetworkConfig, NicConfig, VmConfig } from '../shared/model.js';
import {
  bridgeName,
  cidrContains,
  derivedMac,
  formatCidr,
  formatIpv4,
  parseCidr,
  parseIpv4,
  tapName,
} from '../spec/net.js';
import type { Spec } from '../spec/schema.js';
import { subnetPlan } from '../spec/validate.js';

export { bridgeName, derivedMac, tapName } from '../spec/net.js';

/** What one host must realise. */
export interface HostDesired {
  networks: NetworkConfig[];
  vms: VmConfig[];
}

/** Desired state of every host, keyed by host name. */
export type DesiredState = Record<string, HostDesired>;

/** Default prefix of a fixed address on a bridge network outside any lab LAN: the spec cannot say the LAN's. */
export const BRIDGE_DEFAULT_PREFIX = 24;

/** Resolves a validated spec (see `loadSpec`) into per-host configs; every spec host gets an entry. */
export function resolveSpec(spec: Spec): DesiredState {
  const out: DesiredState = {};
  for (const h of spec.hosts) out[h.name] = { networks: [], vms: [] };
  const hostUplink = new Map(spec.hosts.map((h) => [h.name, h.uplink] as const));
  const nets = new Map(spec.networks.map((n) => [n.name, n] as const));
  const lan = spec.lab ? parseCidr(spec.lab.lan.cidr) : undefined;

  const nicMac = (vm: string, i: number, mac: string | undefined) => mac ?? derivedMac(vm, i);

  for (const n of spec.networks) {
    const host = out[n.host];
    if (!host) continue;
    const base = {
      name: n.name,
      mode: n.mode,
      backend: 'linux' as const,
      bridge: bridgeName(n.name),
      mtu: n.mtu,
    };
    if (n.mode === 'bridge') {
      host.networks.push({ ...base, uplink: n.uplink ?? hostUplink.get(n.host), forwards: [] });
      continue;
    }
    const plan = subnetPlan(n);
    const cidr = parseCidr(n.cidr);
    if (!plan || !cidr) throw new Error(`network ${n.name}: unvalidated cidr ${n.cidr}`);
    const reservations: DhcpReservation[] = [];
    const forwards: ForwardConfig[] = [];
    for (const vm of spec.vms) {
      vm.nics.forEach((nic, i) => {
        if (nic.network === n.name && nic.ip !== undefined)
          reservations.push({ mac: nicMac(vm.name, i, nic.mac), ip: nic.ip, hostname: vm.name });
      });
    }
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
    reservations.sort(
      (a, b) => (parseIpv4(a.ip) ?? 0) - (parseIpv4(b.ip) ?? 0) || a.mac.localeCompare(b.mac),
    );
    forwards.sort((a, b) => a.protocol.localeCompare(b.protocol) || a.hostPort - b.hostPort);
    const cfg: NetworkConfig = {
      ...base,
      subnet: {
        cidr: formatCidr(cidr),
        gateway: formatIpv4(plan.gateway),
        prefixLength: cidr.prefix,
        dhcpStart: formatIpv4(plan.dhcp.start),
        dhcpEnd: formatIpv4(plan.dhcp.end),
        reservations,
      },
      forwards,
    };
    if (n.mode === 'nat') cfg.uplink = hostUplink.get(n.host);
    host.networks.push(cfg);
  }

  for (const vm of spec.vms) {
    const host = out[vm.host];
    if (!host) continue;
    const nics: NicConfig[] = vm.nics.map((nic, i) => {
      const net = nets.get(nic.network);
      const cfg: NicConfig = {
        network: nic.network,
        backend: 'linux',
        bridge: bridgeName(nic.network),
        tap: tapName(vm.name, i),
        mac: nicMac(vm.name, i, nic.mac),
        mtu: net?.mtu ?? 1500,
      };
      if (net?.mode === 'bridge' && nic.ip !== undefined) {
        const ip = parseIpv4(nic.ip);
        if (lan && spec.lab && ip !== undefined && cidrContains(lan, ip))
          cfg.staticIp = { address: nic.ip, prefixLength: lan.prefix, gateway: spec.lab.lan.gateway };
        else cfg.staticIp = { address: nic.ip, prefixLength: BRIDGE_DEFAULT_PREFIX };
      }
      return cfg;
    });
    host.vms.push({
      name: vm.name,
      cpus: vm.cpus,
      memoryMiB: vm.memoryMiB,
      image: vm.image,
      disks: vm.disks.map((d) => ({ name: d.name, sizeMiB: d.sizeMiB })),
      nics,
      state: vm.state,
    });
  }
  return out;
}
