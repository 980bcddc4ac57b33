// The cluster and HA policies: what a spec with `cluster:` and `vms[].ha` must hold before the scheduler or the HA
// manager may move a VM (see docs/ha.md). The lab's own etcd members and controllers are checked in ./lab.ts.
import { RESERVED_ETCD_USERS } from '../../shared/cluster.js';
import type { Spec, VmSpec } from '../schema.js';
import { vmVolumeUses } from '../storage.js';
import { isMultiHost, networkHosts, nicNetworks } from '../topology.js';
import type { Add } from './common.js';

/** Whether HA manages the VM (restarts or moves it): `ha.state` started or stopped. */
const haManaged = (vm: VmSpec): boolean => vm.ha?.state === 'started' || vm.ha?.state === 'stopped';

/** Every check of `cluster:` and `vms[].ha`. */
export function checkCluster(spec: Spec, hostIdx: Map<string, number>, add: Add) {
  const compute = spec.hosts.filter((h) => h.role !== 'storage').map((h) => h.name);
  const computeSet = new Set(compute);
  const cluster = spec.cluster;
  const etcd = cluster?.store === 'etcd';

  if (cluster) {
    spec.hosts.forEach((h, i) => {
      if ((RESERVED_ETCD_USERS as readonly string[]).includes(h.name))
        add(
          `hosts[${i}].name`,
          `"${h.name}" is an etcd user of the cluster (${RESERVED_ETCD_USERS.join(', ')} are reserved): each host's agent is the etcd user named after it; rename the host`,
        );
    });
    if (etcd && !cluster.endpoints && !spec.lab)
      add(
        'cluster.endpoints',
        'cluster.store etcd needs etcd: list its client URLs in cluster.endpoints (https://addr:2379), or run the spec in a lab with lab.etcd members',
      );
    if (!etcd && cluster.endpoints)
      add(
        'cluster.endpoints',
        'endpoints are etcd client URLs: they need cluster.store: etcd (remove them or set it)',
      );
  }

  // Per VM: where it may run (ha.hosts, else every compute host), and what the spec asks of HA.
  const allowedOf = new Map<string, string[]>();
  spec.vms.forEach((vm, i) => {
    const base = `vms[${i}]`;
    if (vm.specHost === undefined && !cluster)
      add(
        `${base}.host`,
        `VM "${vm.name}" names no host: give it a host (hosts: ${compute.join(', ') || 'none'}), or add cluster: so the scheduler places it`,
      );
    if (haManaged(vm) && !etcd)
      add(
        `${base}.ha.state`,
        `ha.state ${vm.ha!.state} needs cluster: { store: etcd } (fencing needs etcd leases)${cluster ? `; cluster.store is ${cluster.store}` : ''}; set ha.state: disabled or add the cluster`,
      );
    const hosts = vm.ha?.hosts;
    if (hosts) {
      const seen = new Map<string, number>();
      hosts.forEach((h, k) => {
        const path = `${base}.ha.hosts[${k}]`;
        const first = seen.get(h);
        if (first !== undefined)
          add(
            path,
            `host "${h}" is listed twice (already at ${base}.ha.hosts[${first}]); list each host once`,
          );
        seen.set(h, k);
        const idx = hostIdx.get(h);
        if (idx === undefined)
          add(path, `unknown host "${h}" (compute hosts: ${compute.join(', ') || 'none'})`);
        else if (!computeSet.has(h))
          add(
            path,
            `"${h}" is a storage host (hosts[${idx}] has role: storage): it runs no VMs; list compute hosts`,
          );
      });
      if (vm.specHost !== undefined && computeSet.has(vm.specHost) && !hosts.includes(vm.specHost))
        add(
          `${base}.host`,
          `host "${vm.specHost}" is not in ha.hosts (${hosts.join(', ')}): add it there or put the VM on one of them`,
        );
    }
    allowedOf.set(vm.name, hosts ? hosts.filter((h) => computeSet.has(h)) : compute);
  });

  checkGroups(spec, allowedOf, add);
  if (cluster) {
    const reach = new Reach(spec);
    spec.vms.forEach((vm, i) => {
      checkMovable(spec, reach, vm, i, allowedOf.get(vm.name) ?? compute, etcd, add);
    });
  }
}

/**
 * The spec's networks and pools by name, and which hosts of a list each network misses, computed once per list: most
 * VMs share one list (every compute host), and comparing it with a network's hosts per VM was O(VMs x hosts^2) (a
 * minute at 1,000 hosts x 20 VMs).
 */
class Reach {
  readonly netIdx: Map<string, number>;
  readonly pools: Map<string, Spec['pools'][number]>;
  private readonly netHosts = new Map<number, Set<string>>();
  private readonly lists = new Map<readonly string[], { set: Set<string>; missed: Map<string, string[]> }>();

  constructor(private readonly spec: Spec) {
    this.netIdx = new Map(spec.networks.map((n, k) => [n.name, k] as const));
    this.pools = new Map(spec.pools.map((p) => [p.name, p] as const));
  }

  /** Whether network `n` (its index) reaches `host`. */
  reaches(n: number, host: string): boolean {
    let hosts = this.netHosts.get(n);
    if (!hosts) {
      hosts = new Set(networkHosts(this.spec, this.spec.networks[n]!));
      this.netHosts.set(n, hosts);
    }
    return hosts.has(host);
  }

  /** The distinct hosts of `list`. */
  set(list: readonly string[]): Set<string> {
    return this.entry(list).set;
  }

  /** The hosts of `list` that network `n` does not reach, in order; `distinct`: each once. */
  missing(list: readonly string[], n: number, distinct: boolean): string[] {
    const { missed } = this.entry(list);
    const key = `${n}/${distinct}`;
    let out = missed.get(key);
    if (!out) {
      out = list.filter((h) => !this.reaches(n, h));
      if (distinct) out = [...new Set(out)];
      missed.set(key, out);
    }
    return out;
  }

  private entry(list: readonly string[]) {
    let e = this.lists.get(list);
    if (!e) {
      e = { set: new Set(list), missed: new Map<string, string[]>() };
      this.lists.set(list, e);
    }
    return e;
  }
}

/**
 * Anti-affinity: VMs of one group must be able to run on distinct hosts (a matching of VMs to the hosts each may use:
 * its spec host when HA does not move it, else its ha.hosts or every compute host), and two VMs of a group are never
 * placed by the spec on one host.
 */
function checkGroups(spec: Spec, allowedOf: Map<string, string[]>, add: Add) {
  const groups = new Map<string, number[]>();
  spec.vms.forEach((vm, i) => {
    const g = vm.ha?.group;
    if (g) groups.set(g, [...(groups.get(g) ?? []), i]);
  });
  for (const [group, members] of groups) {
    const pinned = new Map<string, number>();
    for (const i of members) {
      const vm = spec.vms[i]!;
      if (vm.specHost === undefined) continue;
      const other = pinned.get(vm.specHost);
      if (other !== undefined)
        add(
          `vms[${i}].host`,
          `VM "${vm.name}" and VM "${spec.vms[other]!.name}" (vms[${other}]) are both in group "${group}" on host "${vm.specHost}": VMs of a group never share a host; put one elsewhere or leave its host to the scheduler`,
        );
      else pinned.set(vm.specHost, i);
    }
    const options = members.map((i) => {
      const vm = spec.vms[i]!;
      const movable = spec.cluster && (vm.specHost === undefined || haManaged(vm));
      return movable ? (allowedOf.get(vm.name) ?? []) : [vm.specHost ?? vm.host];
    });
    const unmatched = unmatchedMembers(options);
    if (!unmatched.length) continue;
    const names = members.map((i) => spec.vms[i]!.name);
    const hosts = [...new Set(options.flat())];
    const first = members[unmatched[0]!]!;
    add(
      `vms[${first}].ha.group`,
      `group "${group}" has ${members.length} VMs (${names.join(', ')}) that cannot all run on distinct hosts: between them they may use ${hosts.length} (${hosts.join(', ') || 'none'}); VMs of a group never share a host: allow more hosts (ha.hosts) or take a VM out of the group`,
    );
  }
}

/**
 * Indices of `options` left without a distinct host by a maximum matching (augmenting paths). More members than
 * hosts between them fail at once, so the search runs only with members <= hosts (work at most members^2 x hosts).
 */
function unmatchedMembers(options: readonly string[][]): number[] {
  const union = new Set(options.flat());
  if (options.length > union.size) return options.map((_, i) => i).slice(union.size);
  const holder = new Map<string, number>();
  const tryAssign = (i: number, seen: Set<string>): boolean => {
    for (const h of options[i]!) {
      if (seen.has(h)) continue;
      seen.add(h);
      const j = holder.get(h);
      if (j === undefined || tryAssign(j, seen)) {
        holder.set(h, i);
        return true;
      }
    }
    return false;
  };
  const out: number[] = [];
  options.forEach((_, i) => {
    if (!tryAssign(i, new Set())) out.push(i);
  });
  return out;
}

/**
 * A VM the scheduler places (no spec host) or HA may move (ha.state started/stopped with etcd) must not need a fixed
 * host: each network it uses must reach every host it may run on, its pool disks must not live in a dir pool of one
 * host, and it takes no passthrough devices.
 */
function checkMovable(
  spec: Spec,
  reach: Reach,
  vm: VmSpec,
  i: number,
  allowed: string[],
  etcd: boolean,
  add: Add,
) {
  const scheduled = vm.specHost === undefined;
  const byHa = etcd && haManaged(vm);
  if (!scheduled && !byHa) return;
  // Where it may run: `allowed`, or the spec's host then `allowed`, each once. Built only for the messages that list
  // it: the network check below works on `allowed`, whose answers `reach` keeps for every VM sharing the list.
  const home = vm.specHost!;
  const mayList = () => (scheduled ? allowed : [...new Set([home, ...allowed])]);
  const count = scheduled ? allowed.length : reach.set(allowed).size + (reach.set(allowed).has(home) ? 0 : 1);
  if (count <= 1) return;
  const who = scheduled ? 'the scheduler may place it on' : 'HA may restart or move it to';
  const fix = (host: string) =>
    scheduled ? `give it a host: ${host}` : `limit ha.hosts to [${host}], or set ha.state: disabled`;
  vm.nics.forEach((nic, k) => {
    for (const name of nicNetworks(nic)) {
      const n = reach.netIdx.get(name);
      if (n === undefined) continue;
      const net = spec.networks[n]!;
      const missing = scheduled
        ? reach.missing(allowed, n, false)
        : [
            ...(reach.reaches(n, home) ? [] : [home]),
            ...reach.missing(allowed, n, true).filter((h) => h !== home),
          ];
      if (!missing.length) continue;
      const path = `vms[${i}].nics[${k}].${nic.trunk ? 'trunk' : 'network'}`;
      if (!isMultiHost(net))
        add(
          path,
          `network "${net.name}" is a ${net.mode} network of host "${net.host}" only, but ${who} ${missing.join(', ')}: ${fix(net.host)}, or use a vxlan or vlan network`,
        );
      else
        add(
          path,
          `network "${net.name}" does not reach ${missing.join(', ')}, of the hosts ${scheduled ? 'the scheduler may place it on' : 'HA may restart it on'}: add ${missing.length > 1 ? 'them' : 'it'} to networks[${n}].hosts${scheduled ? ', or give the VM a host' : ', or limit ha.hosts'}`,
        );
    }
  });
  for (const use of vmVolumeUses(vm, i)) {
    const pool = reach.pools.get(use.pool);
    if (pool?.type !== 'dir') continue;
    if (use.kind === 'template' && vm.image.kind === 'volume' && vm.image.clone) continue; // reported with its clone
    const may = mayList();
    if (may.every((h) => h === pool.host)) continue;
    add(
      use.path,
      `volume "${use.volume}" is in dir pool "${pool.name}", whose files live on host "${pool.host}" only, but ${who} ${may.filter((h) => h !== pool.host).join(', ')}: ${fix(pool.host)}, or use a shared pool (iscsi, nfs)`,
    );
  }
  if (vm.devices.length)
    add(
      `vms[${i}].devices`,
      `passthrough devices belong to one host, but ${who} ${mayList().join(', ')}: ${scheduled ? 'give it a host' : 'limit ha.hosts to its host, or set ha.state: disabled'}`,
    );
}
