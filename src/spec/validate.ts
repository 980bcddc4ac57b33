// Semantic validation: everything the schema cannot see on its own (names across lists, references,
// address plans, port forwards, the lab). Pure; returns every issue instead of stopping at the first.
import type { SpecIssue } from '../shared/errors.js';
import {
  type Cidr,
  cidrContains,
  cidrsOverlap,
  defaultDhcpRange,
  derivedMac,
  firstHost,
  formatCidr,
  formatIpv4,
  formatRange,
  hasHostBits,
  type IpRange,
  parseCidr,
  parseIpv4,
} from './net.js';
import type { HostSpec, MultiHostNetworkSpec, NetworkSpec, Spec } from './schema.js';
import {
  DEFAULT_SEGMENT,
  hostAddress,
  hostSegments,
  isMultiHost,
  labLanMtu,
  networkHosts,
  segmentMtu,
  underlayMtu,
  VXLAN_OVERHEAD,
} from './topology.js';

/** Address plan of a nat or isolated network after defaults: what NIC addresses are checked against. */
export interface SubnetPlan {
  cidr: Cidr;
  gateway: number;
  dhcp: IpRange;
}

/**
 * The effective subnet of a nat/isolated network, or of a vxlan/vlan network with a cidr and a gateway (defaults
 * applied); undefined for bridge networks, multi-host networks without a gateway, or malformed input.
 */
export function subnetPlan(net: NetworkSpec): SubnetPlan | undefined {
  if (net.mode === 'bridge') return undefined;
  if (net.cidr === undefined) return undefined;
  const cidr = parseCidr(net.cidr);
  if (!cidr) return undefined;
  const gwText = isMultiHost(net) ? net.gateway?.address : net.gateway;
  if (isMultiHost(net) && net.gateway === undefined) return undefined;
  const gateway = gwText === undefined ? firstHost(cidr) : parseIpv4(gwText);
  if (gateway === undefined) return undefined;
  const dhcp = net.dhcp
    ? { start: parseIpv4(net.dhcp.start) ?? 0, end: parseIpv4(net.dhcp.end) ?? 0 }
    : defaultDhcpRange(cidr, gateway);
  return { cidr, gateway, dhcp };
}

/** Returns every semantic problem of a schema-valid spec (empty when the spec is sound). */
export function validateSpec(spec: Spec): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const add = (path: string, message: string) => issues.push({ path, message });

  checkDuplicates(spec, add);

  const hostIdx = new Map(spec.hosts.map((h, i) => [h.name, i] as const));
  const netIdx = new Map<string, number>();
  spec.networks.forEach((n, i) => {
    if (!netIdx.has(n.name)) netIdx.set(n.name, i);
  });
  const vmIdx = new Map<string, number>();
  spec.vms.forEach((v, i) => {
    if (!vmIdx.has(v.name)) vmIdx.set(v.name, i);
  });
  const hostList = spec.hosts.map((h) => h.name).join(', ');

  // References to hosts.
  spec.networks.forEach((n, i) => {
    if (!isMultiHost(n)) {
      if (!hostIdx.has(n.host)) add(`networks[${i}].host`, `unknown host "${n.host}" (hosts: ${hostList})`);
      return;
    }
    const seen = new Map<string, number>();
    (n.hosts ?? []).forEach((h, k) => {
      const path = `networks[${i}].hosts[${k}]`;
      if (!hostIdx.has(h)) add(path, `unknown host "${h}" (hosts: ${hostList})`);
      const first = seen.get(h);
      if (first !== undefined)
        add(
          path,
          `host "${h}" is listed twice (already at networks[${i}].hosts[${first}]); list each host once`,
        );
      else seen.set(h, k);
    });
  });
  spec.vms.forEach((v, i) => {
    if (!hostIdx.has(v.host)) add(`vms[${i}].host`, `unknown host "${v.host}" (hosts: ${hostList})`);
  });

  const lab = checkLab(spec, add);
  checkSite(spec, add);
  checkHosts(spec, hostIdx, add);
  checkMultiHost(spec, hostIdx, add);
  const plans = checkSubnets(spec, lab, add);
  checkBridges(spec, add);
  checkNics(spec, netIdx, vmIdx, plans, lab, add);
  checkForwards(spec, vmIdx, add);
  return issues;
}

type Add = (path: string, message: string) => void;

function dupes<T>(items: T[], key: (t: T) => string, path: (i: number) => string, what: string, add: Add) {
  const seen = new Map<string, number>();
  items.forEach((item, i) => {
    const k = key(item);
    const first = seen.get(k);
    if (first === undefined) seen.set(k, i);
    else add(path(i), `duplicate ${what} "${k}" (already used at ${path(first)}); names must be unique`);
  });
}

function checkDuplicates(spec: Spec, add: Add) {
  dupes(
    spec.hosts,
    (h) => h.name,
    (i) => `hosts[${i}].name`,
    'host name',
    add,
  );
  dupes(
    spec.networks,
    (n) => n.name,
    (i) => `networks[${i}].name`,
    'network name',
    add,
  );
  dupes(
    spec.vms,
    (v) => v.name,
    (i) => `vms[${i}].name`,
    'VM name',
    add,
  );
  spec.vms.forEach((v, vi) => {
    dupes(
      v.disks,
      (d) => d.name,
      (i) => `vms[${vi}].disks[${i}].name`,
      `disk name in VM "${v.name}"`,
      add,
    );
  });
  dupes(
    spec.site?.environments ?? [],
    (e) => e.name,
    (i) => `site.environments[${i}].name`,
    'environment name',
    add,
  );
  if (spec.lab) {
    dupes(
      spec.lab.segments,
      (s) => s.name,
      (i) => `lab.segments[${i}].name`,
      'lab segment name',
      add,
    );
    const lab = spec.lab;
    const machines = [
      ...lab.hosts.map((m, i) => ({ name: m.name, path: `lab.hosts[${i}].name` })),
      ...lab.peers.map((m, i) => ({ name: m.name, path: `lab.peers[${i}].name` })),
    ];
    const seen = new Map<string, string>();
    for (const m of machines) {
      const first = seen.get(m.name);
      if (first === undefined) seen.set(m.name, m.path);
      else
        add(
          m.path,
          `duplicate lab machine name "${m.name}" (already used at ${first}); hosts and peers share one namespace`,
        );
    }
  }
}

interface LabPlan {
  lan: Cidr;
  gateway: number | undefined;
  dhcp: IpRange | undefined;
  /** Machine addresses -> path of the machine that has it. */
  addresses: Map<number, string>;
  upstream: Cidr | undefined;
}

function checkLab(spec: Spec, add: Add): LabPlan | undefined {
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

  // Spec hosts and lab hosts must match one to one: each lab host runs that host's agent.
  const labHostNames = new Set(lab.hosts.map((h) => h.name));
  const specHostNames = new Set(spec.hosts.map((h) => h.name));
  spec.hosts.forEach((h, i) => {
    if (!labHostNames.has(h.name))
      add(
        `hosts[${i}].name`,
        `host "${h.name}" has no machine in lab.hosts; add { name: ${h.name}, address: <ip in ${lab.lan.cidr}> } there`,
      );
  });
  lab.hosts.forEach((m, i) => {
    if (!specHostNames.has(m.name))
      add(
        `lab.hosts[${i}].name`,
        `lab host "${m.name}" is not in hosts; add it to hosts or list it under lab.peers`,
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

function hostBitsMessage(text: string, c: Cidr): string {
  return `${text} has host bits set; write the network address, ${formatCidr(c)}`;
}

/** Why `ip` cannot be a host address in `c`, or undefined when it can. */
function addressProblem(ip: number, c: Cidr, cidrText: string): string | undefined {
  const s = formatIpv4(ip);
  if (!cidrContains(c, ip)) return `${s} is outside ${cidrText}`;
  if (ip === c.network) return `${s} is the network address of ${cidrText}; pick a host address`;
  if (ip === c.broadcast) return `${s} is the broadcast address of ${cidrText}; pick a host address`;
  return undefined;
}

function checkRange(
  r: IpRange,
  c: Cidr,
  cidrText: string,
  gateway: number | undefined,
  path: string,
  add: Add,
) {
  const s = addressProblem(r.start, c, cidrText);
  const e = addressProblem(r.end, c, cidrText);
  if (s) add(`${path}.start`, `DHCP range start ${s}`);
  if (e) add(`${path}.end`, `DHCP range end ${e}`);
  if (r.start > r.end)
    add(
      path,
      `DHCP range ${formatIpv4(r.start)}-${formatIpv4(r.end)} is inverted; start must not be above end`,
    );
  else if (gateway !== undefined && gateway >= r.start && gateway <= r.end)
    add(
      path,
      `DHCP range ${formatRange(r)} contains the gateway ${formatIpv4(gateway)}; move the range or the gateway`,
    );
}

function checkSubnets(spec: Spec, lab: LabPlan | undefined, add: Add): Map<string, SubnetPlan> {
  const plans = new Map<string, SubnetPlan>();
  const placed: { host: string; cidr: Cidr; text: string; path: string; name: string }[] = [];
  const uplinkNets = new Map<string, { cidr: Cidr; text: string; path: string }[]>();
  spec.hosts.forEach((h, hi) => {
    const list = (h.network?.addresses ?? []).flatMap((a, k) => {
      const c = parseCidr(a);
      return c ? [{ cidr: c, text: a, path: `hosts[${hi}].network.addresses[${k}]` }] : [];
    });
    if (!uplinkNets.has(h.name)) uplinkNets.set(h.name, list);
  });
  spec.networks.forEach((n, i) => {
    if (n.mode === 'bridge' || n.cidr === undefined) return;
    const cidr = parseCidr(n.cidr);
    if (!cidr) return;
    if (hasHostBits(n.cidr)) add(`networks[${i}].cidr`, hostBitsMessage(n.cidr, cidr));
    // Where the subnet is routed: its host, or a multi-host network's gateway host. Overlays without a gateway
    // are routed nowhere, so they may overlap anything.
    const multi = isMultiHost(n);
    const host = multi ? n.gateway?.host : n.host;
    if (host !== undefined) {
      for (const p of placed) {
        if (p.host === host && cidrsOverlap(p.cidr, cidr))
          add(
            `networks[${i}].cidr`,
            multi
              ? `${n.cidr} overlaps network "${p.name}" (${p.text}, ${p.path}) on host "${host}", where gateway.host routes this network; subnets routed on one host must be disjoint: pick another cidr or gateway host`
              : `${n.cidr} overlaps network "${p.name}" (${p.text}, ${p.path}) on host "${host}"; networks on one host need disjoint subnets`,
          );
      }
      placed.push({ host, cidr, text: n.cidr, path: `networks[${i}]`, name: n.name });
      if (lab?.lan && cidrsOverlap(lab.lan, cidr))
        add(
          `networks[${i}].cidr`,
          `${n.cidr} overlaps the lab LAN ${spec.lab?.lan.cidr}; pick a private subnet outside it`,
        );
      if (lab?.upstream && cidrsOverlap(lab.upstream, cidr))
        add(
          `networks[${i}].cidr`,
          `${n.cidr} overlaps the lab upstream network ${spec.lab?.upstream.cidr}; pick another subnet`,
        );
      for (const u of uplinkNets.get(host) ?? [])
        if (cidrsOverlap(u.cidr, cidr))
          add(
            `networks[${i}].cidr`,
            `${n.cidr} overlaps host "${host}"'s uplink address ${u.text} (${u.path}); pick a subnet outside it`,
          );
    }
    if (multi && n.gateway === undefined) return;

    let gateway = firstHost(cidr);
    const gwText = multi ? n.gateway?.address : n.gateway;
    const gwPath = multi ? `networks[${i}].gateway.address` : `networks[${i}].gateway`;
    if (gwText !== undefined) {
      const gw = parseIpv4(gwText);
      if (gw === undefined) return;
      const err = addressProblem(gw, cidr, n.cidr);
      if (err) {
        add(gwPath, `gateway ${err}`);
        return;
      }
      gateway = gw;
    }
    if (n.dhcp) {
      const r = { start: parseIpv4(n.dhcp.start) ?? 0, end: parseIpv4(n.dhcp.end) ?? 0 };
      checkRange(r, cidr, n.cidr, gateway, `networks[${i}].dhcp`, add);
    }
    const plan = subnetPlan(n);
    if (plan && !plans.has(n.name)) plans.set(n.name, plan);
  });
  return plans;
}

function checkSite(spec: Spec, add: Add) {
  const ranges: { env: string; from: number; to: number; path: string }[] = [];
  (spec.site?.environments ?? []).forEach((e, i) => {
    e.vlans.forEach((r, k) => {
      const path = `site.environments[${i}].vlans[${k}]`;
      if (r.from > r.to) {
        add(path, `from ${r.from} is above to ${r.to}; write the lower VLAN id in from`);
        return;
      }
      for (const o of ranges)
        if (o.env !== e.name && r.from <= o.to && o.from <= r.to)
          add(
            path,
            `${r.from}-${r.to} overlaps environment ${o.env}'s VLANs ${o.from}-${o.to} (${o.path}); environments need disjoint VLAN ranges`,
          );
      ranges.push({ env: e.name, from: r.from, to: r.to, path });
    });
  });
}

function checkHosts(spec: Spec, hostIdx: Map<string, number>, add: Add) {
  const lanMtu = labLanMtu(spec);
  const addresses = new Map<string, string>();
  spec.hosts.forEach((h, i) => {
    if (hostIdx.get(h.name) !== i) return;
    const base = `hosts[${i}]`;
    const labIdx = spec.lab?.hosts.findIndex((m) => m.name === h.name) ?? -1;
    const labAddr = labIdx >= 0 ? spec.lab?.hosts[labIdx]?.address : undefined;
    if (h.address !== undefined && labAddr !== undefined && h.address !== labAddr)
      add(
        `${base}.address`,
        `${h.address} differs from the lab machine's address ${labAddr} (lab.hosts[${labIdx}].address); leave address out in a lab (it defaults to the lab address) or make them equal`,
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

/** Checks vxlan and vlan networks: backends, VNIs, VLAN ids and environments, segments, MTUs, underlay addresses. */
function checkMultiHost(spec: Spec, hostIdx: Map<string, number>, add: Add) {
  const envs = new Map((spec.site?.environments ?? []).map((e) => [e.name, e] as const));
  const envList = [...envs.keys()].join(', ');
  const vnis = new Map<number, string>();
  const vlans = new Map<string, string>();
  const needAddress = new Map<string, string>();
  const hostOf = (name: string): { h: HostSpec; i: number } | undefined => {
    const i = hostIdx.get(name);
    return i === undefined ? undefined : { h: spec.hosts[i]!, i };
  };
  spec.networks.forEach((n, i) => {
    const base = `networks[${i}]`;
    if (!isMultiHost(n)) {
      if (n.backend !== 'linux')
        add(
          `${base}.backend`,
          `backend ${n.backend} is not supported on ${n.mode} networks yet; use backend: linux (or leave it out): ovs serves vxlan and vlan networks`,
        );
      return;
    }
    const members = [...new Set(networkHosts(spec, n))].flatMap((name) => {
      const h = hostOf(name);
      return h ? [h] : [];
    });
    if (n.gateway) {
      const g = n.gateway.host;
      if (!hostIdx.has(g))
        add(
          `${base}.gateway.host`,
          `unknown host "${g}" (hosts: ${spec.hosts.map((h) => h.name).join(', ')})`,
        );
      else if (!members.some((m) => m.h.name === g))
        add(
          `${base}.gateway.host`,
          `host "${g}" is not among the network's hosts (${members.map((m) => m.h.name).join(', ')}); pick one of them or add "${g}" to ${base}.hosts`,
        );
      if (n.cidr === undefined)
        add(
          `${base}.gateway`,
          `a gateway needs the network's subnet: add cidr (such as 10.20.0.0/24) or remove gateway`,
        );
    }
    if (n.dhcp && !n.gateway)
      add(
        `${base}.dhcp`,
        `DHCP is served by the gateway host: add gateway: { host: <one of the network's hosts> } or remove dhcp`,
      );
    if (n.mode === 'vxlan') {
      const first = vnis.get(n.vni);
      if (first !== undefined)
        add(
          `${base}.vni`,
          `VNI ${n.vni} is already used by vxlan network ${first}; every vxlan network needs its own VNI`,
        );
      else vnis.set(n.vni, `"${n.name}" (${base})`);
      checkVxlanMtu(spec, n, base, members, add);
      for (const m of members)
        if (hostAddress(spec, m.h) === undefined && !needAddress.has(m.h.name)) {
          needAddress.set(m.h.name, n.name);
          add(
            `hosts[${m.i}].address`,
            `host "${m.h.name}" carries vxlan network "${n.name}" (${base}) and needs an underlay address for its VXLAN endpoint: set hosts[${m.i}].address`,
          );
        }
      return;
    }
    // vlan
    const key = `${n.segment}\0${n.vlan}`;
    const first = vlans.get(key);
    if (first !== undefined)
      add(
        `${base}.vlan`,
        `VLAN ${n.vlan} is already used on segment ${n.segment} by network ${first}; pick another VLAN id or segment`,
      );
    else vlans.set(key, `"${n.name}" (${base})`);
    if (n.environment !== undefined) {
      const env = envs.get(n.environment);
      if (!env)
        add(
          `${base}.environment`,
          envs.size === 0
            ? `unknown environment "${n.environment}": no site.environments are defined; add { name: ${n.environment}, vlans: [{ from: ..., to: ... }] } there or remove environment`
            : `unknown environment "${n.environment}" (site.environments: ${envList})`,
        );
      else if (!env.vlans.some((r) => n.vlan >= r.from && n.vlan <= r.to))
        add(
          `${base}.vlan`,
          `${n.vlan} is outside environment ${env.name}'s VLANs ${env.vlans.map((r) => `${r.from}-${r.to}`).join(', ')}; pick a VLAN id inside them or another environment`,
        );
    }
    for (const m of members) {
      const segs = hostSegments(spec, m.h);
      if (segs[n.segment] === undefined) {
        add(
          `${base}.segment`,
          `segment "${n.segment}" does not exist on host "${m.h.name}" (its segments: ${Object.keys(segs).join(', ')}); add it to hosts[${m.i}].segments (such as ${n.segment}: eth1)${spec.lab ? ' or to lab.segments' : ''}`,
        );
        continue;
      }
      const segMtu = segmentMtu(spec, m.h, n.segment);
      if (segMtu !== undefined && n.mtu > segMtu) {
        const onUplink = segs[n.segment] === m.h.uplink;
        const li = spec.lab?.segments.findIndex((s) => s.name === n.segment) ?? -1;
        const raise = onUplink
          ? `set hosts[${m.i}].network.mtu: ${n.mtu}${spec.lab && labLanMtu(spec) < n.mtu ? ` (and lab.lan.mtu: ${n.mtu})` : ''}`
          : `set lab.segments[${li}].mtu: ${n.mtu}`;
        add(
          `${base}.mtu`,
          `${n.mtu} exceeds the MTU ${segMtu} of segment ${n.segment} on host "${m.h.name}" (${segs[n.segment]}): lower it to ${segMtu}, or ${raise}`,
        );
      }
    }
  });
}

function checkVxlanMtu(
  spec: Spec,
  n: MultiHostNetworkSpec,
  base: string,
  members: { h: HostSpec; i: number }[],
  add: Add,
) {
  const need = n.mtu + VXLAN_OVERHEAD;
  const minUnderlay = Math.min(...members.map((m) => underlayMtu(spec, m.h)));
  const lower = minUnderlay - VXLAN_OVERHEAD;
  const jumbo = Math.max(need, 9000);
  for (const m of members) {
    const u = underlayMtu(spec, m.h);
    if (need <= u) continue;
    const lab = spec.lab && labLanMtu(spec) < jumbo ? ` (the lab LAN needs lab.lan.mtu: ${jumbo} too)` : '';
    const lowerIt = lower >= 576 ? `lower it to ${lower}, or ` : '';
    add(
      `${base}.mtu`,
      `${n.mtu} + ${VXLAN_OVERHEAD} bytes of VXLAN overhead exceeds ${m.h.name}'s underlay MTU ${u}: ${lowerIt}set hosts[${m.i}].network.mtu: ${jumbo} for jumbo frames${lab}`,
    );
  }
}

function checkBridges(spec: Spec, add: Add) {
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

function checkNics(
  spec: Spec,
  netIdx: Map<string, number>,
  vmIdx: Map<string, number>,
  plans: Map<string, SubnetPlan>,
  lab: LabPlan | undefined,
  add: Add,
) {
  const knownHosts = new Set(spec.hosts.map((h) => h.name));
  const netList = spec.networks.map((n) => n.name).join(', ') || 'none defined';
  // Fixed addresses are unique per nat/isolated network; all bridge networks share the physical LAN.
  const ips = new Map<string, string>();
  const macs = new Map<string, string>();
  const reaches = (net: NetworkSpec, vmHost: string) => networkHosts(spec, net).includes(vmHost);
  spec.vms.forEach((vm, vi) => {
    vm.nics.forEach((nic, ni) => {
      const base = `vms[${vi}].nics[${ni}]`;
      // A duplicate VM name is reported once already; its derived MACs would only repeat that.
      const mac = nic.mac ?? (vmIdx.get(vm.name) === vi ? derivedMac(vm.name, ni) : undefined);
      const firstMac = mac === undefined ? undefined : macs.get(mac);
      if (mac === undefined) {
        // nothing to compare
      } else if (firstMac !== undefined)
        add(
          `${base}.mac`,
          `MAC ${mac} is already used by ${firstMac}; every NIC needs its own MAC (or leave mac out)`,
        );
      else macs.set(mac, base);

      if (nic.trunk !== undefined) {
        if (nic.network !== undefined)
          add(
            `${base}.trunk`,
            'give either network (an access port) or trunk (a list of vlan networks), not both',
          );
        checkTrunk(spec, vm.name, vm.host, base, nic.trunk, netIdx, netList, knownHosts, add);
        if (nic.ip !== undefined)
          add(
            `${base}.ip`,
            'a trunk port has no single address; remove ip and configure addresses in the guest on its VLAN interfaces',
          );
        return;
      }
      if (nic.network === undefined) {
        add(`${base}.network`, 'is required: give network, or trunk: [vlan networks] for a trunk port');
        return;
      }
      const idx = netIdx.get(nic.network);
      if (idx === undefined) {
        add(`${base}.network`, `unknown network "${nic.network}" (networks: ${netList})`);
        return;
      }
      const net = spec.networks[idx]!;
      // An unknown host is reported once on the VM or network already.
      if (isMultiHost(net)) {
        if (knownHosts.has(vm.host) && !reaches(net, vm.host))
          add(
            `${base}.network`,
            `network "${net.name}" does not reach host "${vm.host}" where VM "${vm.name}" runs (its hosts: ${networkHosts(spec, net).join(', ')}); add "${vm.host}" to networks[${idx}].hosts or move the VM`,
          );
      } else if (net.host !== vm.host && knownHosts.has(vm.host) && knownHosts.has(net.host)) {
        add(
          `${base}.network`,
          `network "${net.name}" is on host "${net.host}" but VM "${vm.name}" is on host "${vm.host}"; networks span one host, so put the VM on "${net.host}" or use a network of "${vm.host}"`,
        );
      }
      if (nic.ip === undefined) return;
      const ip = parseIpv4(nic.ip);
      if (ip === undefined) return;
      const path = `${base}.ip`;
      if (net.mode === 'bridge') {
        if (lab) {
          const lanText = spec.lab?.lan.cidr ?? '';
          const err = addressProblem(ip, lab.lan, lanText);
          if (err) add(path, `${err} (the lab LAN that bridge network "${net.name}" joins)`);
          else if (ip === lab.gateway) add(path, `${nic.ip} is the lab LAN gateway; pick another address`);
          else if (lab.addresses.has(ip))
            add(path, `${nic.ip} is already used by lab machine ${lab.addresses.get(ip)}`);
          else if (lab.dhcp && ip >= lab.dhcp.start && ip <= lab.dhcp.end)
            add(
              path,
              `${nic.ip} collides with the lab DHCP range ${formatRange(lab.dhcp)}; pick an address outside it`,
            );
        }
      } else {
        const plan = plans.get(net.name);
        const cidrText = net.cidr;
        if (plan && cidrText !== undefined) {
          const err = addressProblem(ip, plan.cidr, cidrText);
          if (err) add(path, `${err} (network "${net.name}")`);
          else if (ip === plan.gateway)
            add(path, `${nic.ip} is the gateway of network "${net.name}"; pick another address`);
          else if (ip >= plan.dhcp.start && ip <= plan.dhcp.end)
            add(
              path,
              `${nic.ip} collides with the DHCP range ${formatRange(plan.dhcp)} of network "${net.name}"; pick an address outside it`,
            );
        } else if (cidrText !== undefined) {
          const c = parseCidr(cidrText);
          const err = c && addressProblem(ip, c, cidrText);
          if (err) add(path, `${err} (network "${net.name}")`);
        }
      }
      const key = net.mode === 'bridge' ? `lan\0${ip}` : `${net.name}\0${ip}`;
      const first = ips.get(key);
      if (first !== undefined) add(path, `address ${nic.ip} is already used by ${first}`);
      else ips.set(key, path);
    });
  });
}

/** A trunk port: distinct, known vlan networks of one segment, backend ovs, all reaching the VM's host. */
function checkTrunk(
  spec: Spec,
  vmName: string,
  vmHost: string,
  base: string,
  trunk: string[],
  netIdx: Map<string, number>,
  netList: string,
  knownHosts: Set<string>,
  add: Add,
) {
  const seen = new Map<string, number>();
  let segment: { name: string; k: number; net: string } | undefined;
  trunk.forEach((member, k) => {
    const path = `${base}.trunk[${k}]`;
    const dup = seen.get(member);
    if (dup !== undefined) {
      add(path, `network "${member}" is listed twice (already at ${base}.trunk[${dup}]); list each once`);
      return;
    }
    seen.set(member, k);
    const idx = netIdx.get(member);
    if (idx === undefined) {
      add(path, `unknown network "${member}" (networks: ${netList})`);
      return;
    }
    const net = spec.networks[idx]!;
    if (net.mode !== 'vlan') {
      add(
        path,
        `network "${member}" is mode ${net.mode}; a trunk port carries vlan networks only (use an access NIC { network: ${member} } instead)`,
      );
      return;
    }
    if (net.backend !== 'ovs')
      add(
        path,
        `vlan network "${member}" uses backend ${net.backend}; trunk ports need backend: ovs on every member network (set networks[${idx}].backend: ovs)`,
      );
    if (segment === undefined) segment = { name: net.segment, k, net: member };
    else if (segment.name !== net.segment)
      add(
        path,
        `vlan network "${member}" is on segment ${net.segment} but "${segment.net}" (${base}.trunk[${segment.k}]) is on segment ${segment.name}; a trunk port carries one segment`,
      );
    if (knownHosts.has(vmHost) && !networkHosts(spec, net).includes(vmHost))
      add(
        path,
        `network "${member}" does not reach host "${vmHost}" where VM "${vmName}" runs; add "${vmHost}" to networks[${idx}].hosts or move the VM`,
      );
  });
}

function checkForwards(spec: Spec, vmIdx: Map<string, number>, add: Add) {
  const used = new Map<string, string>();
  spec.networks.forEach((n, i) => {
    if (n.mode !== 'nat') return;
    n.forwards.forEach((f, k) => {
      const base = `networks[${i}].forwards[${k}]`;
      const key = `${n.host}\0${f.protocol}\0${f.hostPort}`;
      const first = used.get(key);
      if (first !== undefined)
        add(
          `${base}.hostPort`,
          `${f.protocol} port ${f.hostPort} on host "${n.host}" is already forwarded by ${first}`,
        );
      else used.set(key, base);

      const vi = vmIdx.get(f.vm);
      if (vi === undefined) {
        add(`${base}.vm`, `unknown VM "${f.vm}"`);
        return;
      }
      const vm = spec.vms[vi]!;
      const nics = vm.nics.map((nic, ni) => ({ nic, ni })).filter(({ nic }) => nic.network === n.name);
      if (nics.length === 0) {
        add(`${base}.vm`, `VM "${f.vm}" has no NIC on network "${n.name}"; add one or forward to another VM`);
        return;
      }
      if (!nics.some(({ nic }) => nic.ip !== undefined)) {
        add(
          `${base}.vm`,
          `give vms[${vi}].nics[${nics[0]!.ni}] a fixed ip so the forward has a stable target`,
        );
      }
    });
  });
}

/** CPUs and memory of one host, as its agent reports them or the spec's `hosts[].capacity` sets them. */
export interface HostCapacity {
  cpus: number;
  memoryMiB: number;
}

/** Memory kept free on every host for the host itself and QEMU overhead. */
export const HOST_MEMORY_RESERVE_MIB = 256;

/**
 * Checks VMs against host capacity: `capacities` are what agents report, overridden by `hosts[].capacity`.
 * Hosts with neither are not checked.
 */
export function checkCapacity(spec: Spec, capacities: Record<string, HostCapacity>): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const specCap = new Map(spec.hosts.map((h) => [h.name, h.capacity] as const));
  const capOf = (host: string): HostCapacity | undefined => specCap.get(host) ?? capacities[host];
  const used = new Map<string, { total: number; names: string[]; reported: boolean }>();
  spec.vms.forEach((vm, i) => {
    const cap = capOf(vm.host);
    if (!cap) return;
    if (vm.cpus > cap.cpus)
      issues.push({
        path: `vms[${i}].cpus`,
        message: `VM "${vm.name}" asks for ${vm.cpus} CPUs but host "${vm.host}" has ${cap.cpus}; lower cpus or move the VM`,
      });
    const avail = cap.memoryMiB - HOST_MEMORY_RESERVE_MIB;
    const reserve = `${cap.memoryMiB} MiB less ${HOST_MEMORY_RESERVE_MIB} MiB reserved = ${avail} MiB`;
    if (vm.memoryMiB > avail) {
      issues.push({
        path: `vms[${i}].memoryMiB`,
        message: `VM "${vm.name}" needs ${vm.memoryMiB} MiB but host "${vm.host}" has ${reserve}`,
      });
      return;
    }
    if (vm.state !== 'running') return;
    const u = used.get(vm.host) ?? { total: 0, names: [], reported: false };
    used.set(vm.host, u);
    u.total += vm.memoryMiB;
    u.names.push(`${vm.name} ${vm.memoryMiB}`);
    if (u.total > avail && !u.reported) {
      u.reported = true;
      issues.push({
        path: `vms[${i}].memoryMiB`,
        message: `running VMs on host "${vm.host}" need ${u.total} MiB (${u.names.join(', ')} MiB) but the host has ${reserve}; stop a VM, lower memoryMiB or move it to another host`,
      });
    }
  });
  return issues;
}

/** What a host reports it can do, for `checkHostSupport`. */
export interface HostSupport {
  backends: readonly string[];
  /** Kernel network features (vlan, vxlan, bridgeVlanFiltering, ...). */
  network: Record<string, boolean>;
}

/**
 * Checks every network against the backends and kernel features its member hosts report, so that a network no
 * host can realise is refused before any change (this machine, say, has no 802.1Q devices: vlan needs ovs).
 */
export function checkHostSupport(spec: Spec, hosts: Record<string, HostSupport>): SpecIssue[] {
  const issues: SpecIssue[] = [];
  spec.networks.forEach((net, i) => {
    for (const h of networkHosts(spec, net)) {
      const sup = hosts[h];
      if (!sup) continue;
      if (!sup.backends.includes(net.backend)) {
        issues.push({
          path: `networks[${i}].backend`,
          message: `host "${h}" has no ${net.backend} backend (it offers ${sup.backends.join(', ') || 'none'}); ${
            net.backend === 'ovs'
              ? 'install openvswitch-switch there (npm run setup does)'
              : 'use another backend'
          }`,
        });
        continue;
      }
      if (net.backend !== 'linux') continue;
      if (net.mode === 'vlan' && sup.network.vlan === false)
        issues.push({
          path: `networks[${i}].backend`,
          message: `host "${h}"'s kernel has no 802.1Q VLAN devices, so the linux backend cannot build vlan network "${net.name}"; use backend: ovs (Open vSwitch's userspace datapath does VLANs here)`,
        });
      if (net.mode === 'vxlan' && sup.network.vxlan === false)
        issues.push({
          path: `networks[${i}].backend`,
          message: `host "${h}"'s kernel has no VXLAN support; use backend: ovs for vxlan network "${net.name}"`,
        });
    }
  });
  return issues;
}
