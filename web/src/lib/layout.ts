// Where the topology view draws its nodes: networks in a row at the top, hosts as boxes below holding their VMs in
// a grid, and the links between them (coloured by lib/matrix.ts). Pure: unit-tested in layout.test.ts.
import { type CellStatus, hostLinkKey, vmLinkKey } from './matrix.js';
import type { HostView, NetworkItem, VmItem } from './types.js';

export interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface TopologyLayout {
  width: number;
  height: number;
  networks: Array<{ name: string; mode: string; x: number; y: number; r: number }>;
  hosts: Array<{ name: string; state: string; box: Box }>;
  vms: Array<{ name: string; host: string; state: string; box: Box }>;
  links: Array<{
    key: string;
    kind: 'host' | 'vm';
    from: string;
    network: string;
    x1: number;
    y1: number;
    x2: number;
    y2: number;
    status: CellStatus;
  }>;
}

const NET_Y = 50;
const NET_R = 22;
const HOST_Y = 180;
const VM_W = 120;
const VM_H = 34;
const GAP = 12;
const HOST_PAD = 28;

/** Lays out a site in a drawing `width` wide (height follows from the VMs per host). */
export function layoutTopology(
  input: {
    hosts: readonly HostView[];
    networks: readonly NetworkItem[];
    vms: readonly VmItem[];
    links: ReadonlyMap<string, CellStatus>;
  },
  width = 1200,
): TopologyLayout {
  // Hosts named by VMs or networks but missing from the status still get a box.
  const hostNames = [
    ...new Set([
      ...input.hosts.map((h) => h.name),
      ...input.vms.map((v) => v.host),
      ...input.networks.flatMap((n) => n.hosts),
    ]),
  ];
  const stateOf = new Map(input.hosts.map((h) => [h.name, h.state]));
  const nets = [...input.networks].sort((a, b) => a.name.localeCompare(b.name));
  const netStep = width / Math.max(1, nets.length);
  const networks = nets.map((n, i) => ({
    name: n.name,
    mode: n.mode,
    x: netStep * (i + 0.5),
    y: NET_Y,
    r: NET_R,
  }));
  const netPos = new Map(networks.map((n) => [n.name, n]));

  const hostW = Math.max(
    VM_W + 2 * GAP,
    (width - GAP * (hostNames.length + 1)) / Math.max(1, hostNames.length),
  );
  const perRow = Math.max(1, Math.floor((hostW - GAP) / (VM_W + GAP)));
  const vmsOf = (h: string) =>
    input.vms.filter((v) => v.host === h).sort((a, b) => a.name.localeCompare(b.name));
  const rows = Math.max(1, ...hostNames.map((h) => Math.ceil(vmsOf(h).length / perRow)));
  const hostH = HOST_PAD + rows * (VM_H + GAP) + GAP;

  const hosts: TopologyLayout['hosts'] = [];
  const vms: TopologyLayout['vms'] = [];
  const links: TopologyLayout['links'] = [];
  hostNames.forEach((h, i) => {
    const box = { x: GAP + i * (hostW + GAP), y: HOST_Y, w: hostW, h: hostH };
    hosts.push({ name: h, state: stateOf.get(h) ?? 'unknown', box });
    vmsOf(h).forEach((v, j) => {
      const vb = {
        x: box.x + GAP + (j % perRow) * (VM_W + GAP),
        y: box.y + HOST_PAD + Math.floor(j / perRow) * (VM_H + GAP),
        w: VM_W,
        h: VM_H,
      };
      vms.push({ name: v.name, host: h, state: v.state, box: vb });
      for (const net of new Set(v.nics.map((n) => n.network))) {
        const np = netPos.get(net);
        if (!np) continue;
        const key = vmLinkKey(v.name, net);
        links.push({
          key,
          kind: 'vm',
          from: v.name,
          network: net,
          x1: vb.x + vb.w / 2,
          y1: vb.y,
          x2: np.x,
          y2: np.y + np.r,
          status: input.links.get(key) ?? 'none',
        });
      }
    });
  });
  for (const n of nets) {
    const np = netPos.get(n.name)!;
    for (const h of n.hosts) {
      const hb = hosts.find((x) => x.name === h);
      if (!hb) continue;
      const key = hostLinkKey(h, n.name);
      links.push({
        key,
        kind: 'host',
        from: h,
        network: n.name,
        x1: hb.box.x + hb.box.w / 2,
        y1: hb.box.y,
        x2: np.x,
        y2: np.y + np.r,
        status: input.links.get(key) ?? 'none',
      });
    }
  }
  return { width, height: HOST_Y + hostH + GAP, networks, hosts, vms, links };
}
