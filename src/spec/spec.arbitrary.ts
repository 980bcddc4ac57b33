// fast-check generator of valid raw spec documents, shared by the spec and plan property tests.
import fc from 'fast-check';
import { formatIpv4, parseCidr } from './net.js';

/** A raw spec document (what YAML parses to), before the schema applies defaults. */
// biome-ignore lint/suspicious/noExplicitAny: raw documents are mutated freely by the property tests.
export type RawSpec = any;

/** A valid spec name. */
export const nameArb = fc.stringMatching(/^[a-z][a-z0-9-]{0,12}$/);

const netArb = fc.record({
  mode: fc.constantFrom('nat', 'isolated', 'bridge'),
  host: fc.nat(),
  mtu: fc.option(fc.integer({ min: 576, max: 9000 }), { nil: undefined }),
  prefix: fc.integer({ min: 16, max: 28 }),
  explicitGw: fc.boolean(),
  explicitDhcp: fc.boolean(),
});

const vmArb = fc.record({
  host: fc.nat(),
  nics: fc.array(fc.record({ net: fc.nat(), fixed: fc.boolean(), mac: fc.boolean() }), {
    minLength: 1,
    maxLength: 3,
  }),
  cpus: fc.option(fc.integer({ min: 1, max: 64 }), { nil: undefined }),
  memoryMiB: fc.option(fc.integer({ min: 64, max: 4096 }), { nil: undefined }),
  state: fc.option(fc.constantFrom('running', 'stopped'), { nil: undefined }),
  disks: fc.integer({ min: 0, max: 2 }),
  qcow2: fc.boolean(),
  /** A disk in a pool: 0 none, 1 the dir pool, 2 the iscsi pool, 3 the nfs pool (where the spec has them). */
  poolDisk: fc.nat({ max: 3 }),
  /** Boots a linked clone of the nfs template (where the spec has one). */
  bootClone: fc.boolean(),
});

/** Storage of a random spec: a dir pool on the first host, a storage host with iscsi and nfs pools. */
const storageArb = fc.record({
  dir: fc.boolean(),
  storageHost: fc.boolean(),
  /** Attach the iscsi pool's named volume to the first VM that has a pool disk there. */
  named: fc.boolean(),
});

const multiArb = fc.record({
  mode: fc.constantFrom('vxlan', 'vlan'),
  /** Bit mask of member hosts (0: leave hosts out, i.e. every host). */
  hostMask: fc.nat({ max: 7 }),
  backend: fc.constantFrom('linux', 'ovs', undefined),
  mtu: fc.option(fc.integer({ min: 576, max: 8950 }), { nil: undefined }),
  env: fc.constantFrom('production', 'test', undefined),
  trunkSegment: fc.boolean(),
  cidr: fc.boolean(),
  gateway: fc.option(fc.record({ pick: fc.nat(), nat: fc.boolean() }), { nil: undefined }),
});

/**
 * Random valid specs: unique names, disjoint subnets, addresses outside DHCP ranges, sound forwards, optional lab;
 * optionally multi-host networks (vxlan, vlan with environments and segments, trunk NICs, jumbo underlays).
 */
export const validSpecArb: fc.Arbitrary<RawSpec> = fc
  .record({
    names: fc.uniqueArray(nameArb, { minLength: 24, maxLength: 24 }),
    multi: fc.array(multiArb, { maxLength: 4 }),
    jumbo: fc.boolean(),
    hostNetwork: fc.boolean(),
    trunkNics: fc.boolean(),
    nHosts: fc.integer({ min: 1, max: 3 }),
    nets: fc.array(netArb, { minLength: 1, maxLength: 5 }),
    vms: fc.array(vmArb, { maxLength: 6 }),
    forwards: fc.array(
      fc.record({ net: fc.nat(), vm: fc.nat(), proto: fc.constantFrom('tcp', 'udp', undefined) }),
      { maxLength: 4 },
    ),
    lab: fc.boolean(),
    nPeers: fc.integer({ min: 0, max: 2 }),
    storage: storageArb,
  })
  .map(
    ({ names, nHosts, nets, vms, forwards, lab, nPeers, multi, jumbo, hostNetwork, trunkNics, storage }) => {
      const hosts: RawSpec[] = names
        .slice(0, nHosts)
        .map((name, i) => (i === 1 ? { name, uplink: 'eth1' } : { name }));
      const bridged = new Set<string>();
      const networks: RawSpec[] = [];
      const fixedPool = new Map<string, { next: number; last: number; base: number }>();
      nets.forEach((n, i) => {
        const name = names[3 + i]!;
        const host = hosts[n.host % nHosts]!.name;
        const mode = n.mode === 'bridge' && bridged.has(host) ? 'isolated' : n.mode;
        const net: RawSpec = { name, host, mode };
        if (n.mtu !== undefined) net.mtu = n.mtu;
        if (mode === 'bridge') {
          bridged.add(host);
        } else {
          const cidr = parseCidr(`10.${i}.0.0/${n.prefix}`)!;
          net.cidr = `10.${i}.0.0/${n.prefix}`;
          if (n.explicitGw) net.gateway = formatIpv4(cidr.broadcast - 1);
          if (n.explicitDhcp)
            net.dhcp = {
              start: formatIpv4(cidr.network + cidr.size / 2),
              end: formatIpv4(cidr.network + cidr.size / 2 + cidr.size / 4),
            };
          fixedPool.set(name, { next: 2, last: Math.min(99, cidr.size / 2 - 1), base: cidr.network });
          if (mode === 'nat') net.forwards = [];
        }
        networks.push(net);
      });
      // Multi-host networks. Underlay: 9000 everywhere with `jumbo`, else 1500.
      const underlay = jumbo ? 9000 : 1500;
      const members = new Map<string, string[]>();
      multi.forEach((m, j) => {
        const name = names[20 + j]!;
        let mask = m.hostMask & ((1 << nHosts) - 1);
        const hostNames = hosts.map((h) => h.name);
        const inNet = mask === 0 ? hostNames : hostNames.filter((_, i) => mask & (1 << i));
        if (inNet.length === 0) mask = 0;
        const net: RawSpec = { name, mode: m.mode };
        if (mask !== 0) net.hosts = inNet;
        members.set(name, mask === 0 ? hostNames : inNet);
        if (m.backend) net.backend = m.backend;
        if (m.mode === 'vxlan') {
          net.vni = 5000 + j;
          if (m.mtu !== undefined) net.mtu = Math.min(m.mtu, underlay - 50);
        } else {
          const base = m.env === 'production' ? 100 : m.env === 'test' ? 200 : 1000;
          net.vlan = base + j;
          if (m.env) net.environment = m.env;
          if (m.trunkSegment) net.segment = 'trunk';
          else if (m.backend === 'ovs') net.backend = 'linux'; // an OVS trunk on the uplink would fight bridge networks
          if (m.mtu !== undefined) net.mtu = Math.min(m.mtu, m.trunkSegment ? 1500 : underlay);
        }
        const cidr = m.gateway ? `10.${100 + j}.0.0/24` : '10.200.0.0/24'; // overlays may overlap each other
        if (m.cidr || m.gateway) {
          net.cidr = cidr;
          fixedPool.set(name, { next: 2, last: 99, base: parseCidr(cidr)!.network });
        }
        if (m.gateway) {
          const pool = members.get(name)!;
          net.gateway = { host: pool[m.gateway.pick % pool.length], nat: m.gateway.nat };
        }
        networks.push(net);
      });
      if (multi.length > 0) {
        hosts.forEach((h, i) => {
          h.segments = { trunk: 'eth5' };
          if (!lab) h.address = `192.168.1.${10 + i}`;
          if (jumbo || hostNetwork) {
            h.network = { addresses: [`192.168.1.${10 + i}/24`], gateway: '192.168.1.1' };
            if (jumbo) h.network.mtu = 9000;
          }
        });
      }
      const netHosts = (n: RawSpec): string[] => (n.host ? [n.host] : members.get(n.name)!);

      const storageState = { ...storage, namedTaken: false };
      let bridgeNext = 30;
      const outVms: RawSpec[] = [];
      const hostsWithNets = hosts.filter((h) => networks.some((n) => netHosts(n).includes(h.name)));
      vms.forEach((v, vi) => {
        const host = hostsWithNets[v.host % hostsWithNets.length]!.name;
        const local = networks.filter((n) => netHosts(n).includes(host));
        const trunk = networks.filter(
          (n) =>
            n.mode === 'vlan' && n.backend === 'ovs' && n.segment === 'trunk' && netHosts(n).includes(host),
        );
        const vm: RawSpec = {
          name: names[9 + vi]!,
          host,
          nics: v.nics.map((nic, ni) => {
            if (trunkNics && ni === 2 && trunk.length > 0) return { trunk: trunk.map((n) => n.name) };
            const net = local[nic.net % local.length]!;
            const out: RawSpec = { network: net.name };
            if (nic.mac)
              out.mac = `52:54:01:00:${vi.toString(16).padStart(2, '0')}:${ni.toString(16).padStart(2, '0')}`;
            if (nic.fixed) {
              if (net.mode === 'bridge') {
                if (bridgeNext < 190) out.ip = `192.168.1.${bridgeNext++}`;
              } else {
                const pool = fixedPool.get(net.name);
                if (pool && pool.next <= pool.last) out.ip = formatIpv4(pool.base + pool.next++);
              }
            }
            return out;
          }),
        };
        if (v.cpus !== undefined) vm.cpus = v.cpus;
        if (v.memoryMiB !== undefined) vm.memoryMiB = v.memoryMiB;
        if (v.state !== undefined) vm.state = v.state;
        if (v.disks > 0)
          vm.disks = Array.from({ length: v.disks }, (_, k) => ({ name: `d${k}`, sizeMiB: 10 + k }));
        if (v.qcow2) vm.image = { kind: 'qcow2', path: '/var/lib/images/debian.qcow2' };
        addPoolDisk(vm, v, hosts[0]!.name, storageState);
        outVms.push(vm);
      });
      const ports = new Map<string, number>();
      for (const f of forwards) {
        const nats = networks.filter((n) => n.mode === 'nat');
        if (nats.length === 0) break;
        const net = nats[f.net % nats.length]!;
        const targets = outVms.filter((vm) =>
          vm.nics.some((nic: RawSpec) => nic.network === net.name && nic.ip),
        );
        if (targets.length === 0) continue;
        const port = (ports.get(net.host) ?? 1000) + 1;
        ports.set(net.host, port);
        const fwd: RawSpec = { hostPort: port, vm: targets[f.vm % targets.length]!.name, vmPort: 80 };
        if (f.proto) fwd.protocol = f.proto;
        net.forwards.push(fwd);
      }
      const spec: RawSpec = {
        version: 1,
        hosts,
        networks,
        vms: outVms,
        ...storageSection(hosts, storage, lab),
      };
      if (multi.length > 0)
        spec.site = {
          environments: [
            { name: 'production', vlans: [{ from: 100, to: 199 }] },
            {
              name: 'test',
              vlans: [
                { from: 200, to: 249 },
                { from: 250, to: 299 },
              ],
            },
          ],
        };
      if (lab) {
        spec.lab = {
          name: 'fuzz',
          lan: {
            cidr: '192.168.1.0/24',
            gateway: '192.168.1.1',
            dhcp: { start: '192.168.1.200', end: '192.168.1.250' },
          },
          upstream: { cidr: '203.0.113.0/24', address: '203.0.113.1' },
          hosts: hosts
            .filter((h) => h.role !== 'storage')
            .map((h, i) => ({ name: h.name, address: `192.168.1.${10 + i}` })),
          peers: names.slice(17, 17 + nPeers).map((name, i) => ({ name, address: `192.168.1.${20 + i}` })),
        };
        if (storage.storageHost) spec.lab.storage = [{ name: STORAGE_HOST, address: STORAGE_ADDRESS }];
        if (jumbo && multi.length > 0) spec.lab.lan.mtu = 9000;
        if (multi.length > 0) spec.lab.segments = [{ name: 'trunk' }];
      }
      return spec;
    },
  );

// Storage names are fixed, so that two unrelated random specs share their pools and named volumes (a plan never
// deletes a pool that holds data, and a pair must converge).
/** The storage host of random specs: longer than any generated name (at most 13 characters), so never one of them. */
const STORAGE_HOST = 'storage-host-fixture';
const STORAGE_ADDRESS = '192.168.1.5';

type StorageChoice = { dir: boolean; storageHost: boolean; named: boolean };

/** Pools (and the storage host) of a random spec, with one template and one named volume. */
function storageSection(hosts: RawSpec[], st: StorageChoice, lab: boolean): RawSpec {
  const pools: RawSpec[] = [];
  const volumes: RawSpec[] = [];
  if (st.dir) pools.push({ name: 'pdir', type: 'dir', host: hosts[0].name, maxOvercommit: 50 });
  if (st.storageHost) {
    hosts.push({ name: STORAGE_HOST, role: 'storage', ...(lab ? {} : { address: STORAGE_ADDRESS }) });
    pools.push(
      { name: 'piscsi', type: 'iscsi', host: STORAGE_HOST, chap: { user: 'vmlink', secret: 'san-chap' } },
      { name: 'pnfs', type: 'nfs', host: STORAGE_HOST, clients: ['192.168.1.0/24'] },
    );
    volumes.push(
      { name: 'tmpl', pool: 'pnfs', sizeMiB: 64 },
      { name: 'shared', pool: 'piscsi', sizeMiB: 32 },
    );
  }
  return pools.length ? { pools, volumes } : {};
}

/** Gives `vm` a pool disk (and a cloned boot volume) where the spec's storage allows it. */
function addPoolDisk(
  vm: RawSpec,
  v: { poolDisk: number; bootClone: boolean; qcow2: boolean },
  firstHost: string,
  st: StorageChoice & { namedTaken?: boolean },
): void {
  const pool = [undefined, st.dir && vm.host === firstHost ? 'pdir' : undefined, 'piscsi', 'pnfs'][
    v.poolDisk
  ];
  if (pool === 'pdir' || (pool !== undefined && st.storageHost)) {
    vm.disks ??= [];
    if (pool === 'piscsi' && st.named && !st.namedTaken) {
      st.namedTaken = true;
      vm.disks.push({ name: 'p0', pool, volume: 'shared' });
    } else vm.disks.push({ name: 'p0', pool, sizeMiB: 16 });
  }
  if (st.storageHost && v.bootClone && !v.qcow2)
    vm.image = { kind: 'volume', pool: 'pnfs', volume: 'tmpl', clone: true };
}

/** A change to one same-named object of a spec: 0 keeps it, the others change one field. */
const changeArb = fc.nat({ max: 4 });

/**
 * Derives a second valid spec from `a` by changing fields of its own VMs (memory, CPUs, power state, NICs) and host-local
 * networks (MTU, DHCP range), so a plan from `a` to it updates and stops same-named objects instead of replacing them.
 */
function deriveSpec(a: RawSpec, vmChanges: number[], netChanges: number[]): RawSpec {
  const b: RawSpec = structuredClone(a);
  b.vms.forEach((vm: RawSpec, i: number) => {
    switch (vmChanges[i % vmChanges.length]) {
      case 1:
        vm.memoryMiB = (vm.memoryMiB ?? 256) >= 4096 ? 128 : (vm.memoryMiB ?? 256) + 64;
        break;
      case 2:
        vm.cpus = (vm.cpus ?? 1) >= 64 ? 1 : (vm.cpus ?? 1) + 1;
        break;
      case 3:
        vm.state = vm.state === 'stopped' ? 'running' : 'stopped';
        break;
      case 4: {
        // One NIC more on a network of its own host (plugged into a running VM), or one fewer.
        const local = b.networks.find((n: RawSpec) => n.host === vm.host && n.mode !== 'bridge');
        if (vm.nics.length < 4 && local) vm.nics.push({ network: local.name });
        else if (vm.nics.length > 1 && !vm.nics.at(-1).ip && !vm.nics.at(-1).trunk) vm.nics.pop();
        break;
      }
    }
  });
  b.networks.forEach((net: RawSpec, i: number) => {
    if (!net.host) return; // multi-host networks: their MTU is bound by the underlay, leave them be
    switch (netChanges[i % netChanges.length]) {
      case 1:
      case 2:
        net.mtu = (net.mtu ?? 1500) === 1400 ? 1300 : 1400;
        break;
      case 3:
        if (net.dhcp) delete net.dhcp;
        else net.mtu = (net.mtu ?? 1500) === 1280 ? 1200 : 1280;
        break;
    }
  });
  return b;
}

/**
 * Pairs of valid specs for convergence properties: mostly a spec and one derived from it (same names, changed
 * fields), sometimes two unrelated specs (everything replaced).
 */
export const specPairArb: fc.Arbitrary<[RawSpec, RawSpec]> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .record({
        a: validSpecArb,
        vmChanges: fc.array(changeArb, { minLength: 1, maxLength: 6 }),
        netChanges: fc.array(changeArb, { minLength: 1, maxLength: 5 }),
      })
      .map(({ a, vmChanges, netChanges }): [RawSpec, RawSpec] => [a, deriveSpec(a, vmChanges, netChanges)]),
  },
  { weight: 1, arbitrary: fc.tuple(validSpecArb, validSpecArb) },
);
