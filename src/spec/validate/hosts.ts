// Hosts and their uplinks: underlay addresses, gateway and MTU; which networks may enslave which NIC.
import { type Cidr, cidrContains, formatCidr, parseCidr, parseIpv4 } from '../net.js';
import type { Spec } from '../schema.js';
import { hostAddress, hostSegments, labLanMtu, networkHosts } from '../topology.js';
import { type Add, addressProblem } from './common.js';

/** Hosts: addresses (unique, agreeing with the lab), underlay network addresses, gateway and MTU. */
export function checkHosts(spec: Spec, hostIdx: Map<string, number>, add: Add) {
  const lanMtu = labLanMtu(spec);
  const addresses = new Map<string, string>();
  spec.hosts.forEach((h, i) => {
    if (hostIdx.get(h.name) !== i) return;
    const base = `hosts[${i}]`;
    const labList = h.role === 'storage' ? 'storage' : 'hosts';
    const labIdx = spec.lab?.[labList].findIndex((m) => m.name === h.name) ?? -1;
    const labAddr = labIdx >= 0 ? spec.lab?.[labList][labIdx]?.address : undefined;
    if (h.address !== undefined && labAddr !== undefined && h.address !== labAddr)
      add(
        `${base}.address`,
        `${h.address} differs from the lab machine's address ${labAddr} (lab.${labList}[${labIdx}].address); leave address out in a lab (it defaults to the lab address) or make them equal`,
      );
    const addr = hostAddress(spec, h);
    if (addr !== undefined) {
      const first = addresses.get(addr);
      if (first !== undefined && h.address !== undefined)
        add(`${base}.address`, `${addr} is already the address of host "${first}"; every host needs its own`);
      else if (first === undefined) addresses.set(addr, h.name);
    }
    const net = h.network;
    if (!net) return;
    if (spec.lab && net.mtu !== undefined && net.mtu > lanMtu)
      add(
        `${base}.network.mtu`,
        `${net.mtu} exceeds the lab LAN's MTU ${lanMtu}: the lab switch would drop bigger frames; set lab.lan.mtu: ${net.mtu} too, or lower it`,
      );
    const own: Cidr[] = [];
    const ips: number[] = [];
    (net.addresses ?? []).forEach((a, k) => {
      const c = parseCidr(a);
      const ip = parseIpv4(a.split('/')[0] ?? '');
      if (!c || ip === undefined) return;
      own.push(c);
      ips.push(ip);
      if (c.prefix <= 30) {
        const err = addressProblem(ip, c, formatCidr(c));
        if (err) add(`${base}.network.addresses[${k}]`, err);
      }
    });
    const addrIp = addr === undefined ? undefined : parseIpv4(addr);
    if (net.addresses && addrIp !== undefined && !ips.includes(addrIp)) {
      const prefix = own[0]?.prefix ?? 24;
      add(
        `${base}.network.addresses`,
        `none of them is host "${h.name}"'s underlay address ${addr} (${h.address !== undefined ? `${base}.address` : 'its lab address'}); add ${addr}/${prefix} or change the address`,
      );
    }
    if (net.gateway !== undefined && net.addresses) {
      const gw = parseIpv4(net.gateway);
      if (gw !== undefined && !own.some((c) => cidrContains(c, gw)))
        add(
          `${base}.network.gateway`,
          `${net.gateway} is not inside any of ${base}.network.addresses (${net.addresses.join(', ')}); the default gateway must be on the uplink's subnet`,
        );
    }
  });
}

/** Uplinks: one bridge network per uplink NIC, and no ovs vlan trunk on a NIC a linux bridge enslaves. */
export function checkBridges(spec: Spec, add: Add) {
  const hostUplink = new Map(spec.hosts.map((h) => [h.name, h.uplink] as const));
  const seen = new Map<string, string>();
  spec.networks.forEach((n, i) => {
    if (n.mode !== 'bridge') return;
    const uplink = n.uplink ?? hostUplink.get(n.host);
    if (uplink === undefined) return;
    const key = `${n.host}\0${uplink}`;
    const first = seen.get(key);
    const path = n.uplink === undefined ? `networks[${i}]` : `networks[${i}].uplink`;
    if (first !== undefined)
      add(
        path,
        `uplink ${uplink} on host "${n.host}" is already enslaved by bridge network "${first}"; one bridge network per uplink — attach VMs to "${first}" instead`,
      );
    else seen.set(key, n.name);
  });
  // An OVS vlan network makes its trunk NIC a port of an OVS bridge: that NIC cannot sit in a linux bridge too.
  const hosts = new Map(spec.hosts.map((h) => [h.name, h] as const));
  spec.networks.forEach((n, i) => {
    if (n.mode !== 'vlan' || n.backend !== 'ovs') return;
    for (const name of new Set(networkHosts(spec, n))) {
      const h = hosts.get(name);
      const nic = h ? hostSegments(spec, h)[n.segment] : undefined;
      if (nic === undefined) continue;
      const bridged = seen.get(`${name}\0${nic}`);
      if (bridged !== undefined)
        add(
          `networks[${i}].segment`,
          `segment ${n.segment} is ${nic} on host "${name}", which bridge network "${bridged}" already enslaves in a linux bridge; an ovs vlan network needs that NIC as an OVS port: use another segment or backend: linux`,
        );
    }
  });
}
