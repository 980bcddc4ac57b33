// The host's one nftables table (`inet vmlink`), built from every network with a subnet on this host
// (nat, isolated, and a vxlan/vlan network's gateway host): pure, deterministic text so it can be
// golden-tested and loaded atomically with `nft -f -`.
//
// With br_netfilter loaded (bridge-nf-call-iptables=1, the default once the module is in), frames
// switched inside a bridge pass the inet forward hook with iifname = oifname = the bridge: each
// network's first forward rule accepts them, so VM-to-VM (and overlay) traffic is never dropped.
import { assertIfName } from '../../../exec/ip.js';
import { ConflictError, InvalidRequestError } from '../../../shared/errors.js';
import type { NetworkConfig } from '../../../shared/model.js';

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

/** Whether a network needs rules in the table: nat, isolated, and vxlan/vlan with a subnet on this host. */
export function needsRules(cfg: NetworkConfig): boolean {
  if (cfg.mode === 'nat' || cfg.mode === 'isolated') return true;
  return (cfg.mode === 'vxlan' || cfg.mode === 'vlan') && cfg.subnet !== undefined;
}

/** Whether the network's subnet is routed and masqueraded out of the host (mode nat, or `nat` on a gateway host). */
export function isRouted(cfg: NetworkConfig): boolean {
  return cfg.mode === 'nat' || (cfg.nat === true && cfg.subnet !== undefined && cfg.mode !== 'bridge');
}

/**
 * Builds the full `table inet vmlink { ... }` block for these networks, or undefined when none needs
 * rules (then the table is deleted). Networks are ordered by name; a host port forwarded twice is a conflict.
 */
export function buildRuleset(networks: readonly NetworkConfig[]): string | undefined {
  const nets = networks.filter(needsRules).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (nets.length === 0) return undefined;

  const pre: string[] = [];
  const out: string[] = [];
  const post: string[] = [];
  const fwdLocal: string[] = [];
  const fwdIsolated: string[] = [];
  const fwdDrop: string[] = [];
  const fwdAccept: string[] = [];
  const usedPorts = new Map<string, string>();

  for (const n of nets) {
    const br = ifname(n.bridge, `networks.${n.name}.bridge`);
    const tag = `comment "net:${n.name}"`;
    if (!/^[A-Za-z0-9_.-]+$/.test(n.name))
      throw new InvalidRequestError(`invalid network name ${JSON.stringify(n.name)}`);
    fwdLocal.push(`iifname ${br} oifname ${br} accept ${tag}`);
    if (!isRouted(n)) {
      // isolated, or a vxlan/vlan gateway without nat: address + DHCP, nothing routed off the network.
      fwdIsolated.push(`iifname ${br} drop ${tag}`, `oifname ${br} drop ${tag}`);
      continue;
    }
    if (!n.subnet)
      throw new InvalidRequestError(`network ${n.name}: nat needs a subnet`, `networks.${n.name}.subnet`);
    const net = cidr4(n.subnet.cidr, `networks.${n.name}.subnet.cidr`);
    // Not tied to the uplink's name: a bridge network may have enslaved it, and egress then leaves by that bridge.
    post.push(`ip saddr ${net} ip daddr != ${net} oifname != ${br} masquerade ${tag}`);
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
      pre.push(`iifname != ${br} fib daddr type local ${m} ${to} comment "net:${n.name} vm:${f.vm}"`);
      out.push(`fib daddr type local ip daddr != 127.0.0.0/8 ${m} ${to} comment "net:${n.name} vm:${f.vm}"`);
    }
    fwdDrop.push(
      `oifname ${br} ct state established,related accept ${tag}`,
      `oifname ${br} ct status dnat accept ${tag}`,
      `oifname ${br} drop ${tag}`,
    );
    fwdAccept.push(`iifname ${br} accept ${tag}`);
  }

  const chain = (name: string, head: string, rules: string[]) =>
    [`\tchain ${name} {`, `\t\t${head}`, ...rules.map((r) => `\t\t${r}`), '\t}'].join('\n');
  return `${[
    `table ${TABLE_FAMILY} ${TABLE_NAME} {`,
    chain('prerouting', 'type nat hook prerouting priority dstnat; policy accept;', pre),
    chain('output', 'type nat hook output priority -100; policy accept;', out),
    chain('postrouting', 'type nat hook postrouting priority srcnat; policy accept;', post),
    chain('forward', 'type filter hook forward priority filter; policy accept;', [
      ...fwdLocal,
      // Isolation first: no other network's accept (a DNAT'd forward, say) may open a path off an isolated one.
      ...fwdIsolated,
      ...fwdDrop,
      ...fwdAccept,
    ]),
    '}',
  ].join('\n')}\n`;
}
