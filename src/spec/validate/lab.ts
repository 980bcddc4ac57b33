// The lab (namespaces as physical machines): its LAN, upstream and machine addresses.
import { RESERVED_ETCD_USERS } from '../../shared/cluster.js';
import {
  type Cidr,
  cidrsOverlap,
  formatIpv4,
  formatRange,
  hasHostBits,
  type IpRange,
  parseCidr,
  parseIpv4,
} from '../net.js';
import type { Spec } from '../schema.js';
import { DEFAULT_SEGMENT } from '../topology.js';
import { checkRange } from './addressing.js';
import { type Add, addressProblem, hostBitsMessage } from './common.js';

/** The lab's address plan, as NIC and host addresses are checked against it. */
export interface LabPlan {
  lan: Cidr;
  gateway: number | undefined;
  dhcp: IpRange | undefined;
  /** Machine addresses -> path of the machine that has it. */
  addresses: Map<number, string>;
  upstream: Cidr | undefined;
}

/** The lab: LAN and upstream CIDRs, machine addresses, DHCP range; returns its plan when sound. */
export function checkLab(spec: Spec, add: Add): LabPlan | undefined {
  const lab = spec.lab;
  if (!lab) return undefined;
  const lan = parseCidr(lab.lan.cidr);
  const upstream = parseCidr(lab.upstream.cidr);
  if (lan && hasHostBits(lab.lan.cidr)) add('lab.lan.cidr', hostBitsMessage(lab.lan.cidr, lan));
  if (upstream && hasHostBits(lab.upstream.cidr))
    add('lab.upstream.cidr', hostBitsMessage(lab.upstream.cidr, upstream));
  if (!lan) return undefined;

  lab.segments.forEach((seg, i) => {
    if (seg.name === DEFAULT_SEGMENT)
      add(
        `lab.segments[${i}].name`,
        `"${DEFAULT_SEGMENT}" is the segment of every host's uplink (the lab LAN); name this switch otherwise`,
      );
  });

  // Spec compute hosts and lab hosts must match one to one: each lab host runs that host's agent. Storage hosts
  // and lab.storage machines are matched in ./storage.ts.
  const labHostNames = new Set(lab.hosts.map((h) => h.name));
  const specHostNames = new Set(spec.hosts.filter((h) => h.role !== 'storage').map((h) => h.name));
  spec.hosts.forEach((h, i) => {
    if (h.role !== 'storage' && !labHostNames.has(h.name))
      add(
        `hosts[${i}].name`,
        `host "${h.name}" has no machine in lab.hosts; add { name: ${h.name}, address: <ip in ${lab.lan.cidr}> } there`,
      );
  });
  lab.hosts.forEach((m, i) => {
    if (!specHostNames.has(m.name))
      add(
        `lab.hosts[${i}].name`,
        spec.hosts.some((h) => h.name === m.name)
          ? `lab host "${m.name}" is a storage host in hosts (role: storage); move it to lab.storage or make it role: compute`
          : `lab host "${m.name}" is not in hosts; add it to hosts or list it under lab.peers`,
      );
  });

  // The lab's management namespace (controller -> relay -> agents) takes the LAN's highest usable address.
  const mgmt = lan ? lan.broadcast - 1 : -1;
  const mgmtNote = `${formatIpv4(Math.max(mgmt, 0))} is the lab's management address (the highest usable of ${lab.lan.cidr})`;
  const mgmtTaken = (what: string) => `${what}: ${mgmtNote}; pick another`;
  const gateway = parseIpv4(lab.lan.gateway);
  if (gateway !== undefined) {
    const err = addressProblem(gateway, lan, lab.lan.cidr);
    if (err) add('lab.lan.gateway', err);
    else if (gateway === mgmt) add('lab.lan.gateway', mgmtTaken('taken'));
  }
  let dhcp: IpRange | undefined;
  if (lab.lan.dhcp) {
    dhcp = { start: parseIpv4(lab.lan.dhcp.start) ?? 0, end: parseIpv4(lab.lan.dhcp.end) ?? 0 };
    checkRange(dhcp, lan, lab.lan.cidr, gateway, 'lab.lan.dhcp', add);
    if (mgmt >= dhcp.start && mgmt <= dhcp.end) add('lab.lan.dhcp', `the range must end below ${mgmtNote}`);
  }

  const addresses = new Map<number, string>();
  const machines = [
    ...lab.hosts.map((m, i) => ({ m, path: `lab.hosts[${i}].address` })),
    ...lab.peers.map((m, i) => ({ m, path: `lab.peers[${i}].address` })),
    ...lab.storage.map((m, i) => ({ m, path: `lab.storage[${i}].address` })),
    ...lab.etcd.map((m, i) => ({ m, path: `lab.etcd[${i}].address` })),
    ...lab.controllers.map((m, i) => ({ m, path: `lab.controllers[${i}].address` })),
  ];
  for (const { m, path } of machines) {
    const ip = parseIpv4(m.address);
    if (ip === undefined) continue;
    const err = addressProblem(ip, lan, lab.lan.cidr);
    if (err) add(path, err);
    else if (ip === gateway)
      add(path, `${m.address} is the lab LAN gateway (lab.lan.gateway); pick another address`);
    else if (ip === mgmt) add(path, mgmtTaken('taken'));
    else if (dhcp && ip >= dhcp.start && ip <= dhcp.end)
      add(
        path,
        `${m.address} collides with the lab DHCP range ${formatRange(dhcp)}; pick an address outside it`,
      );
    const first = addresses.get(ip);
    if (first !== undefined) add(path, `duplicate address ${m.address} (already used at ${first})`);
    else addresses.set(ip, path);
  }

  checkLabCluster(spec, add);

  if (upstream) {
    const addr = parseIpv4(lab.upstream.address);
    if (addr !== undefined) {
      const err = addressProblem(addr, upstream, lab.upstream.cidr);
      if (err) add('lab.upstream.address', err);
    }
    if (cidrsOverlap(lan, upstream))
      add(
        'lab.upstream.cidr',
        `${lab.upstream.cidr} overlaps the lab LAN ${lab.lan.cidr}; use a separate network`,
      );
  }
  return { lan, gateway, dhcp, addresses, upstream };
}

/** etcd member counts a lab accepts: odd, so that a majority (quorum) survives the loss of (n-1)/2 members. */
const ETCD_MEMBER_COUNTS = [1, 3, 5];

/**
 * The lab's etcd members and cluster controllers: names unique across every lab machine, a member count with a
 * quorum, controllers only in a cluster on etcd, and a cluster lab with an etcd to talk to. (Addresses are checked
 * with every other machine's in `checkLab`; the cluster section outside the lab in ./cluster.ts.)
 */
function checkLabCluster(spec: Spec, add: Add): void {
  const lab = spec.lab;
  if (!lab) return;
  const others = new Map<string, string>();
  for (const [kind, list] of [
    ['hosts', lab.hosts],
    ['peers', lab.peers],
    ['storage', lab.storage],
  ] as const)
    list.forEach((m, i) => {
      if (!others.has(m.name)) others.set(m.name, `lab.${kind}[${i}].name`);
    });
  for (const [kind, list] of [
    ['etcd', lab.etcd],
    ['controllers', lab.controllers],
  ] as const)
    list.forEach((m, i) => {
      const path = `lab.${kind}[${i}].name`;
      const first = others.get(m.name);
      if (first !== undefined)
        add(
          path,
          `duplicate lab machine name "${m.name}" (already used at ${first}); every lab machine (hosts, peers, storage, etcd members, controllers) has its own namespace vl-${lab.name}-<name>`,
        );
      else others.set(m.name, path);
      if ((RESERVED_ETCD_USERS as readonly string[]).includes(m.name))
        add(
          path,
          `"${m.name}" is an etcd user of vmlink (a certificate's CN is its etcd user); name the machine otherwise`,
        );
    });
  const n = lab.etcd.length;
  if (n > 0 && !ETCD_MEMBER_COUNTS.includes(n))
    add(
      'lab.etcd',
      `has ${n} members; use 1, 3 or 5: etcd needs a majority to write, so ${n} members survive no more failures than ${n - 1} (3 survive one, 5 survive two)`,
    );
  const store = spec.cluster?.store;
  if (lab.controllers.length > 0) {
    if (store !== 'etcd')
      add(
        'lab.controllers',
        `cluster controllers share their state through etcd: add cluster: { store: etcd } to the spec${spec.cluster ? ` (it says store: ${store})` : ''}`,
      );
    if (n === 0)
      add(
        'lab.controllers',
        "cluster controllers need the lab's etcd: list its members in lab.etcd (1, 3 or 5)",
      );
  }
  if (store === 'etcd' && n === 0 && !spec.cluster?.endpoints)
    add(
      'lab.etcd',
      'a cluster on etcd in a lab needs etcd members: list them in lab.etcd (1, 3 or 5), or name an etcd outside the lab in cluster.endpoints',
    );
}
