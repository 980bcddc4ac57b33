// Networks' address plans: CIDRs, gateways, DHCP ranges, and overlaps between networks and the lab.
import {
  type Cidr,
  cidrsOverlap,
  defaultDhcpRange,
  firstHost,
  formatIpv4,
  formatRange,
  hasHostBits,
  type IpRange,
  parseCidr,
  parseIpv4,
} from '../net.js';
import type { NetworkSpec, Spec } from '../schema.js';
import { isMultiHost } from '../topology.js';
import { type Add, addressProblem, hostBitsMessage } from './common.js';
import type { LabPlan } from './lab.js';

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

/** A DHCP range: both ends usable host addresses of `c`, in order, not the gateway. */
export function checkRange(
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

/** Networks' CIDRs, gateways and DHCP ranges, overlaps between networks on a host and with the lab; returns each sound plan by network name. */
export function checkSubnets(spec: Spec, lab: LabPlan | undefined, add: Add): Map<string, SubnetPlan> {
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
