// What a simulated fleet is made of, as data: its spec (hosts on the simulator's sockets, VMs under HA on one
// overlay) and the HA engine's inputs for the same fleet (to time decide() at sizes a spec cannot carry).
import type { HaHostInput, HaInputs, HaMemory, HaVmInput } from '../controller/ha/types.js';
import { encodeEtcdValue } from '../controller/store/value-codec.js';

/** Capacity every simulated host declares (the agent would report this machine's, shared by all of them). */
export const SIM_HOST_CAPACITY = { cpus: 64, memoryMiB: 256 * 1024 } as const;
/** Each simulated VM: small, so that one failed host's VMs always find room. */
export const SIM_VM = { cpus: 1, memoryMiB: 512 } as const;

/** A simulated fleet's shape. */
export interface FleetShape {
  /** Host name -> agent address (`unix:///...sock`). */
  hosts: Array<{ name: string; address: string }>;
  vmsPerHost: number;
  heartbeatSeconds: number;
  /** etcd as the spec names it (`https://A:P`: what real agents reach; the simulator is handed its own URL). */
  etcd: string[];
}

/** The VM names of host index `h`: `v<host>-<i>`. */
export const vmName = (host: string, i: number): string => `v${host}-${i}`;

/**
 * The fleet's spec: every host with its simulator address and capacity, one vxlan overlay on all of them, and
 * `vmsPerHost` HA-protected VMs placed on each. Compact flow YAML.
 */
export function fleetSpecText(f: FleetShape): string {
  const hosts = f.hosts.map(
    (h, i) =>
      `  - {name: ${h.name}, agent: "${h.address}", address: 10.${100 + Math.floor(i / 62500)}.${Math.floor(i / 250) % 250}.${(i % 250) + 1}, capacity: {cpus: ${SIM_HOST_CAPACITY.cpus}, memoryMiB: ${SIM_HOST_CAPACITY.memoryMiB}}}`,
  );
  const vms: string[] = [];
  // MACs given, not derived: derived ones are a 24-bit hash of the VM's name, and among 10,000 NICs two collide
  // (the spec then refuses the pair), as the birthday bound says.
  const hex = (n: number) => n.toString(16).padStart(2, '0');
  for (const [hi, h] of f.hosts.entries())
    for (let i = 0; i < f.vmsPerHost; i++)
      vms.push(
        `  - {name: ${vmName(h.name, i)}, host: ${h.name}, memoryMiB: ${SIM_VM.memoryMiB}, nics: [{network: ov, mac: "52:54:01:${hex(hi >> 8)}:${hex(hi & 255)}:${hex(i)}"}], ha: {}}`,
      );
  return `version: 1
cluster: {store: etcd, heartbeatSeconds: ${f.heartbeatSeconds}, endpoints: [${f.etcd.map((e) => `"${e}"`).join(', ')}]}
hosts:
${hosts.join('\n')}
networks:
  - {name: ov, mode: vxlan, vni: 100, cidr: 10.20.0.0/16}
vms:
${vms.join('\n')}
`;
}

/**
 * The most VMs per host (at most `wanted`) whose spec the store keeps (its JSON within STORE_VALUE_MAX_BYTES and, as
 * etcd stores it compressed, within one etcd value).
 */
export function vmsPerHostThatFit(f: Omit<FleetShape, 'vmsPerHost'>, wanted: number): number {
  for (let n = wanted; n > 0; n--) {
    try {
      encodeEtcdValue({ text: fleetSpecText({ ...f, vmsPerHost: n }), source: 'fleet.yaml' }, 'spec/current');
      return n;
    } catch {
      // Too large: try fewer.
    }
  }
  return 0;
}

/**
 * The HA engine's inputs for `hosts` hosts with `vmsPerHost` HA VMs each, host `failed` without its lease, every
 * other host live for a minute; `groupSize`: VMs per anti-affinity group, members on distinct hosts (0: no groups).
 */
export function haFleetInputs(
  hosts: string[],
  vmsPerHost: number,
  failed: string,
  now: number,
  groupSize = 0,
): { memory: HaMemory; inputs: HaInputs } {
  const hostInputs: HaHostInput[] = hosts.map((name) => ({
    name,
    live: name !== failed,
    ...(name !== failed ? { leaseAgeMs: 60_000 } : {}),
    maintenance: false,
    capacity: { ...SIM_HOST_CAPACITY },
  }));
  const vms: HaVmInput[] = [];
  let n = 0;
  for (const h of hosts)
    for (let i = 0; i < vmsPerHost; i++, n++)
      vms.push({
        name: vmName(h, i),
        policy: {
          state: 'started',
          priority: 0,
          ...(groupSize ? { group: `g${n % Math.ceil((hosts.length * vmsPerHost) / groupSize)}` } : {}),
        },
        cpus: SIM_VM.cpus,
        memoryMiB: SIM_VM.memoryMiB,
        owner: { host: h, token: String(1000 + n) },
        userStopped: false,
      });
  const memory: HaMemory = {
    hosts: Object.fromEntries(
      hosts.map((h) => [h, { state: 'up' as const, since: now - 60_000, failures: [], seenAt: now - 1_000 }]),
    ),
  };
  return { memory, inputs: { now, hosts: hostInputs, vms, admissionHostFailures: 0 } };
}
