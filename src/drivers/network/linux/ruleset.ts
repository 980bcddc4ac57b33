// The host's one nftables table (`inet vmlink`), built from every network with a subnet on this host
// (nat, isolated, and a vxlan/vlan network's gateway host): pure, deterministic text so it can be
// golden-tested and loaded atomically with `nft -f -`.
//
// Its shape lets one network change without touching the others' rules: the base chains never change; they look a
// packet's bridge up in sets (isolated, routed) and maps (bridge -> its masquerade chain; protocol . port -> the
// chain of the network forwarding that port), and each network owns its chains. So a change is a delta (set
// elements, its own chains) in one transaction, and the counters of everything else keep counting (`rulesetDelta`).
// Isolation still comes first for every network: the forward chain drops traffic of isolated bridges before it
// accepts any routed one's.
//
// The input hook holds the guest filters: the VXLAN underlay filter (underlay-filter.ts) and the host input policy
// (host-input.ts); every vmlink network takes part, so every network needs the table.
//
// With br_netfilter loaded (bridge-nf-call-iptables=1, the default once the module is in), frames
// switched inside a bridge pass the inet forward hook with iifname = oifname = the bridge: each
// network's first forward rule accepts them, so VM-to-VM (and overlay) traffic is never dropped.
import { assertIfName } from '../../../exec/ip.js';
import { ConflictError, InvalidRequestError } from '../../../shared/errors.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { clearMaskHex, markHex, SG_BRIDGED_MARK, SG_EST_MARK } from './bridge-table.js';
import { GUEST_INPUT_JUMPS, GUEST_INPUT_RULES, hostInputRules, isGuestBridge } from './host-input.js';
import { UNDERLAY_RULES, VXLAN_SETS, vtepElements } from './underlay-filter.js';

/** nftables family of vmlink's table. */
export const TABLE_FAMILY = 'inet' as const;
/** Name of vmlink's table. */
export const TABLE_NAME = 'vmlink';

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function ipv4(v: string, what: string): string {
  if (!IPV4.test(v))
    throw new InvalidRequestError(`${what}: ${JSON.stringify(v)} is not an IPv4 address`, what);
  return v;
}

function cidr4(v: string, what: string): string {
  const [ip, len, ...rest] = v.split('/');
  if (rest.length || ip === undefined || len === undefined || !/^\d{1,2}$/.test(len) || Number(len) > 32) {
    throw new InvalidRequestError(`${what}: ${JSON.stringify(v)} is not an IPv4 CIDR`, what);
  }
  ipv4(ip, what);
  return v;
}

function port(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 1 || v > 65535)
    throw new InvalidRequestError(`${what}: port ${v} out of range 1-65535`, what);
  return v;
}

function ifname(v: string, what: string): string {
  assertIfName(v, what);
  return `"${v}"`;
}

/**
 * Whether a network needs rules in the table: every one does (the host input policy covers every bridge VMs sit on,
 * the underlay filter every overlay); nat, isolated and a vxlan/vlan gateway also have routing rules.
 */
export function needsRules(_cfg: NetworkConfig): boolean {
  return true;
}

/** Whether the network has an address on this host and so takes part in forwarding (nat, isolated, a gateway). */
function hasSubnetHere(cfg: NetworkConfig): boolean {
  if (cfg.mode === 'nat' || cfg.mode === 'isolated') return true;
  return (cfg.mode === 'vxlan' || cfg.mode === 'vlan') && cfg.subnet !== undefined;
}

/** Whether the network's subnet is routed and masqueraded out of the host (mode nat, or `nat` on a gateway host). */
export function isRouted(cfg: NetworkConfig): boolean {
  return cfg.mode === 'nat' || (cfg.nat === true && cfg.subnet !== undefined && cfg.mode !== 'bridge');
}

/** One network's part of the table: its bridge's class, the ports it forwards and its own chains. */
export interface NetworkRules {
  bridge: string;
  /**
   * `isolated`: nothing routed on or off the bridge; `routed`: masqueraded out, reachable through its forwards;
   * `switched`: no address here (a bridge network, an overlay's member host): only the guest filters apply.
   */
  kind: 'isolated' | 'routed' | 'switched';
  /** Only VMs sit on the bridge: all its traffic to the host is VM traffic (every mode but bridge). */
  guest: boolean;
  /** The overlay's VNI (vxlan only). */
  vni?: string;
  /** `vni . remote` of the overlay's member VTEPs (vxlan only). */
  vteps: string[];
  /** `proto . port` keys of its forwards, each leading to its `dnat-` (prerouting) and `out-` (output) chains. */
  ports: string[];
  /** Its own chains (name -> rules). */
  chains: Record<string, string[]>;
  /** Conntrack zone of the frames its bridge switches (security groups' state; see `bridgeZones`). */
  zone: number;
}

/**
 * A conntrack zone per bridge, for the flows it switches: two bridges with overlapping subnets must not answer for
 * each other's flows (a security group accepts established replies). Derived from the bridge name (FNV-1a, 1-65535)
 * so a network keeps its zone while others come and go; a clash takes the next free zone, in bridge-name order.
 */
export function bridgeZones(bridges: readonly string[]): Map<string, number> {
  const zones = new Map<string, number>();
  const used = new Set<number>();
  for (const b of [...new Set(bridges)].sort()) {
    let h = 0x811c9dc5;
    for (const c of Buffer.from(b)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
    let z = (h % 65535) + 1;
    while (used.has(z)) z = (z % 65535) + 1;
    used.add(z);
    zones.set(b, z);
  }
  return zones;
}

/** What the table holds, by network name. */
export type RulesetModel = Record<string, NetworkRules>;

/**
 * The table's content for these networks, or undefined when there are none (then the table is deleted). A host
 * port forwarded twice is a conflict; names and addresses that could not be rendered safely are refused.
 */
export function rulesetModel(networks: readonly NetworkConfig[]): RulesetModel | undefined {
  const nets = networks.filter(needsRules).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (nets.length === 0) return undefined;
  const model: RulesetModel = {};
  const usedPorts = new Map<string, string>();
  const zones = bridgeZones(nets.map((n) => n.bridge));
  for (const n of nets) {
    const br = ifname(n.bridge, `networks.${n.name}.bridge`);
    if (!/^[A-Za-z0-9_.-]+$/.test(n.name))
      throw new InvalidRequestError(`invalid network name ${JSON.stringify(n.name)}`);
    const tag = `comment "net:${n.name}"`;
    const gateway =
      hasSubnetHere(n) && n.subnet ? ipv4(n.subnet.gateway, `networks.${n.name}.subnet.gateway`) : undefined;
    const input = hostInputRules(n, gateway);
    const { vni, vteps } = vtepElements(n, ipv4);
    // The guest filters' part, common to every kind.
    const guard = {
      guest: isGuestBridge(n),
      ...(vni === undefined ? {} : { vni }),
      vteps,
      zone: zones.get(n.bridge)!,
    };
    const inputChains = input.length ? { [`in-${n.bridge}`]: input } : {};
    if (!hasSubnetHere(n)) {
      model[n.name] = {
        bridge: n.bridge,
        kind: 'switched',
        ...guard,
        ports: [],
        chains: inputChains,
      };
      continue;
    }
    if (!isRouted(n)) {
      // isolated, or a vxlan/vlan gateway without nat: address + DHCP, nothing routed off the network.
      model[n.name] = {
        bridge: n.bridge,
        kind: 'isolated',
        ...guard,
        ports: [],
        chains: inputChains,
      };
      continue;
    }
    if (!n.subnet)
      throw new InvalidRequestError(`network ${n.name}: nat needs a subnet`, `networks.${n.name}.subnet`);
    const net = cidr4(n.subnet.cidr, `networks.${n.name}.subnet.cidr`);
    const pre: string[] = [];
    const out: string[] = [];
    const ports: string[] = [];
    for (const f of n.forwards) {
      const where = `networks.${n.name}.forwards`;
      const key = `${f.protocol}/${port(f.hostPort, where)}`;
      const prev = usedPorts.get(key);
      if (prev) throw new ConflictError(`host port ${key} is forwarded by both ${prev} and ${n.name}`, where);
      usedPorts.set(key, n.name);
      if (f.protocol !== 'tcp' && f.protocol !== 'udp')
        throw new InvalidRequestError(`${where}: protocol ${f.protocol}`, where);
      const to = `dnat ip to ${ipv4(f.targetIp, where)}:${port(f.targetPort, where)}`;
      const m = `${f.protocol} dport ${f.hostPort}`;
      const vm = `comment "net:${n.name} vm:${f.vm}"`;
      ports.push(`${f.protocol} . ${f.hostPort}`);
      pre.push(`iifname != ${br} ${m} counter ${to} ${vm}`);
      out.push(`ip daddr != 127.0.0.0/8 ${m} counter ${to} ${vm}`);
    }
    model[n.name] = {
      bridge: n.bridge,
      kind: 'routed',
      ...guard,
      ports,
      chains: {
        ...inputChains,
        // Not tied to the uplink's name: a bridge network may have enslaved it, and egress then leaves by that bridge.
        [`masq-${n.bridge}`]: [
          `ip saddr ${net} ip daddr != ${net} oifname != ${br} counter masquerade ${tag}`,
        ],
        ...(ports.length ? { [`dnat-${n.bridge}`]: pre, [`out-${n.bridge}`]: out } : {}),
      },
    };
  }
  return model;
}

/** The set and map elements a network adds to the table, as `[set or map, element]`. */
function elementsOf(r: NetworkRules): Array<[string, string]> {
  const br = `"${r.bridge}"`;
  const el: Array<[string, string]> = [];
  if (r.guest) el.push(['guest_bridges', br]);
  el.push(['bridge_zones', `${br} : ${r.zone}`]);
  if (r.chains[`in-${r.bridge}`]) el.push(['host_services', `${br} : jump in-${r.bridge}`]);
  if (r.vni !== undefined) el.push(['vxlan_vnis', r.vni]);
  for (const v of r.vteps) el.push(['vxlan_vteps', v]);
  if (r.kind === 'switched') return el;
  el.push(['same_bridge', `${br} . ${br}`]);
  if (r.kind === 'isolated') el.push(['isolated_bridges', br]);
  else {
    el.push(['routed_bridges', br], ['masq_by_bridge', `${br} : jump masq-${r.bridge}`]);
    for (const p of r.ports)
      el.push(
        ['dnat_ports', `${p} : jump dnat-${r.bridge}`],
        ['dnat_local_ports', `${p} : jump out-${r.bridge}`],
      );
  }
  return el;
}

// The sets and maps, and the base chains, which never change: every network's part is in elements and its chains.
const SETS: Array<[string, string]> = [
  ['set same_bridge', 'type ifname . ifname'],
  ['set isolated_bridges', 'type ifname'],
  ['set routed_bridges', 'type ifname'],
  ['map masq_by_bridge', 'type ifname : verdict'],
  ['map dnat_ports', 'type inet_proto . inet_service : verdict'],
  ['map dnat_local_ports', 'type inet_proto . inet_service : verdict'],
  ['set guest_bridges', 'type ifname'],
  ['map host_services', 'type ifname : verdict'],
  ...VXLAN_SETS,
  ['map bridge_zones', 'typeof iifname : ct zone'],
];
// Security groups' view of conntrack (security-groups.ts): switched frames get their bridge's zone before conntrack
// (raw), then established/related packets are marked for the bridge family's port chains, which have no `ct`.
const SG_STATE_RULES = [
  `meta mark set meta mark & ${clearMaskHex(SG_EST_MARK)}`,
  `ct state established,related meta mark set meta mark | ${markHex(SG_EST_MARK)}`,
];
const BASE_CHAINS: Array<[string, string, string[]]> = [
  // A regular chain (no hook): declared before the input hook that jumps to it.
  ['guest_input', '', GUEST_INPUT_RULES],
  [
    'input',
    'type filter hook input priority filter; policy accept;',
    [...UNDERLAY_RULES, ...GUEST_INPUT_JUMPS],
  ],
  [
    'sg_zone',
    'type filter hook prerouting priority raw; policy accept;',
    [
      `meta mark & ${markHex(SG_BRIDGED_MARK)} == ${markHex(SG_BRIDGED_MARK)} ct zone set iifname map @bridge_zones`,
    ],
  ],
  ['sg_state', 'type filter hook prerouting priority mangle; policy accept;', SG_STATE_RULES],
  ['sg_state_out', 'type filter hook output priority mangle; policy accept;', SG_STATE_RULES],
  [
    'prerouting',
    'type nat hook prerouting priority dstnat; policy accept;',
    ['fib daddr type local meta l4proto . th dport vmap @dnat_ports'],
  ],
  [
    'output',
    'type nat hook output priority -100; policy accept;',
    ['fib daddr type local meta l4proto . th dport vmap @dnat_local_ports'],
  ],
  [
    'postrouting',
    'type nat hook postrouting priority srcnat; policy accept;',
    ['iifname vmap @masq_by_bridge'],
  ],
  [
    'forward',
    'type filter hook forward priority filter; policy accept;',
    [
      // Frames switched inside one bridge (br_netfilter) and VM-to-VM traffic of a network.
      'iifname . oifname @same_bridge counter accept',
      // Isolation first: no other network's accept (a DNAT'd forward, say) may open a path off an isolated one.
      'iifname @isolated_bridges counter drop',
      'oifname @isolated_bridges counter drop',
      'oifname @routed_bridges ct state established,related counter accept',
      'oifname @routed_bridges ct status dnat counter accept',
      'oifname @routed_bridges counter drop',
      'iifname @routed_bridges counter accept',
    ],
  ],
];

/** The full `table inet vmlink { ... }` block for a model (loaded whole when the table is new or unknown). */
export function renderRuleset(model: RulesetModel): string {
  const nets = Object.values(model);
  const lines = [`table ${TABLE_FAMILY} ${TABLE_NAME} {`];
  for (const [decl, type] of SETS) {
    const name = decl.split(' ')[1]!;
    const els = nets.flatMap((r) =>
      elementsOf(r)
        .filter(([s]) => s === name)
        .map(([, e]) => e),
    );
    lines.push(
      `\t${decl} {`,
      `\t\t${type}`,
      ...(els.length ? [`\t\telements = { ${els.join(', ')} }`] : []),
      '\t}',
    );
  }
  // Network chains before the base chains that jump to them (through the maps above).
  for (const r of nets)
    for (const [chain, rules] of Object.entries(r.chains))
      lines.push(`\tchain ${chain} {`, ...rules.map((x) => `\t\t${x}`), '\t}');
  for (const [chain, head, rules] of BASE_CHAINS)
    lines.push(
      `\tchain ${chain} {`,
      ...(head ? [`\t\t${head}`] : []),
      ...rules.map((x) => `\t\t${x}`),
      '\t}',
    );
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

/**
 * Builds the full table for these networks, or undefined when there are none (then the table is deleted). Networks
 * are ordered by name; a host port forwarded twice is a conflict.
 */
export function buildRuleset(networks: readonly NetworkConfig[]): string | undefined {
  const model = rulesetModel(networks);
  return model && renderRuleset(model);
}

/**
 * The `nft -f` script that turns a table holding `from` into one holding `to`, touching only networks that changed
 * (one transaction; empty when nothing did): their set and map elements, and their own chains (flushed and refilled
 * when kept, so rules of networks that did not change keep their counters).
 */
export function rulesetDelta(from: RulesetModel, to: RulesetModel): string {
  const t = `${TABLE_FAMILY} ${TABLE_NAME}`;
  const drop: string[] = [];
  const add: string[] = [];
  const chainsGone: string[] = [];
  for (const name of new Set([...Object.keys(from), ...Object.keys(to)])) {
    const a = from[name];
    const b = to[name];
    if (a && b && JSON.stringify(a) === JSON.stringify(b)) continue;
    const before = new Set(a ? elementsOf(a).map(([s, e]) => `${s} { ${e} }`) : []);
    const after = new Set(b ? elementsOf(b).map(([s, e]) => `${s} { ${e} }`) : []);
    for (const e of before) if (!after.has(e)) drop.push(`delete element ${t} ${e}`);
    for (const [chain, rules] of Object.entries(b?.chains ?? {})) {
      add.push(a?.chains[chain] ? `flush chain ${t} ${chain}` : `add chain ${t} ${chain}`);
      for (const r of rules) add.push(`add rule ${t} ${chain} ${r}`);
    }
    for (const chain of Object.keys(a?.chains ?? {}))
      if (!b?.chains[chain]) chainsGone.push(`delete chain ${t} ${chain}`);
    for (const e of after) if (!before.has(e)) add.push(`add element ${t} ${e}`);
  }
  // Elements that jump to a chain go before the chain; new chains exist before elements jump to them.
  const script = [...drop, ...chainsGone, ...add];
  return script.length ? `${script.join('\n')}\n` : '';
}
