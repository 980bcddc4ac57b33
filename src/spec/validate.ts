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
import type { NetworkSpec, Spec } from './schema.js';

/** Address plan of a nat or isolated network after defaults: what NIC addresses are checked against. */
export interface SubnetPlan {
  cidr: Cidr;
  gateway: number;
  dhcp: IpRange;
}

/** The effective subnet of a nat/isolated network (defaults applied); undefined for bridge or malformed input. */
export function subnetPlan(net: NetworkSpec): SubnetPlan | undefined {
  if (net.mode === 'bridge') return undefined;
  const cidr = parseCidr(net.cidr);
  if (!cidr) return undefined;
  const gateway = net.gateway === undefined ? firstHost(cidr) : parseIpv4(net.gateway);
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
    if (!hostIdx.has(n.host)) add(`networks[${i}].host`, `unknown host "${n.host}" (hosts: ${hostList})`);
  });
  spec.vms.forEach((v, i) => {
    if (!hostIdx.has(v.host)) add(`vms[${i}].host`, `unknown host "${v.host}" (hosts: ${hostList})`);
  });

  const lab = checkLab(spec, add);
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
  if (spec.lab) {
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

  const gateway = parseIpv4(lab.lan.gateway);
  if (gateway !== undefined) {
    const err = addressProblem(gateway, lan, lab.lan.cidr);
    if (err) add('lab.lan.gateway', err);
  }
  let dhcp: IpRange | undefined;
  if (lab.lan.dhcp) {
    dhcp = { start: parseIpv4(lab.lan.dhcp.start) ?? 0, end: parseIpv4(lab.lan.dhcp.end) ?? 0 };
    checkRange(dhcp, lan, lab.lan.cidr, gateway, 'lab.lan.dhcp', add);
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
  spec.networks.forEach((n, i) => {
    if (n.mode === 'bridge') return;
    const cidr = parseCidr(n.cidr);
    if (!cidr) return;
    if (hasHostBits(n.cidr)) add(`networks[${i}].cidr`, hostBitsMessage(n.cidr, cidr));
    for (const p of placed) {
      if (p.host === n.host && cidrsOverlap(p.cidr, cidr))
        add(
          `networks[${i}].cidr`,
          `${n.cidr} overlaps network "${p.name}" (${p.text}, ${p.path}) on host "${n.host}"; networks on one host need disjoint subnets`,
        );
    }
    placed.push({ host: n.host, cidr, text: n.cidr, path: `networks[${i}]`, name: n.name });
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

    let gateway = firstHost(cidr);
    if (n.gateway !== undefined) {
      const gw = parseIpv4(n.gateway);
      if (gw === undefined) return;
      const err = addressProblem(gw, cidr, n.cidr);
      if (err) {
        add(`networks[${i}].gateway`, `gateway ${err}`);
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

      const idx = netIdx.get(nic.network);
      if (idx === undefined) {
        add(`${base}.network`, `unknown network "${nic.network}" (networks: ${netList})`);
        return;
      }
      const net = spec.networks[idx]!;
      // An unknown host is reported once on the VM or network already.
      if (net.host !== vm.host && knownHosts.has(vm.host) && knownHosts.has(net.host)) {
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
        if (plan) {
          const cidrText = net.cidr;
          const err = addressProblem(ip, plan.cidr, cidrText);
          if (err) add(path, `${err} (network "${net.name}")`);
          else if (ip === plan.gateway)
            add(path, `${nic.ip} is the gateway of network "${net.name}"; pick another address`);
          else if (ip >= plan.dhcp.start && ip <= plan.dhcp.end)
            add(
              path,
              `${nic.ip} collides with the DHCP range ${formatRange(plan.dhcp)} of network "${net.name}"; pick an address outside it`,
            );
        }
      }
      const key = net.mode === 'bridge' ? `lan\0${ip}` : `${net.name}\0${ip}`;
      const first = ips.get(key);
      if (first !== undefined) add(path, `address ${nic.ip} is already used by ${first}`);
      else ips.set(key, path);
    });
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
