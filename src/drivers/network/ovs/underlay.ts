// The underlay of vxlan networks on the userspace datapath: OVS carries VXLAN between namespaces only
// when the underlay NIC is a port of an OVS bridge and the VTEP address sits on that bridge's internal
// port (measured on Debian 12's OVS: with the address on the plain NIC, tunnelled packets are lost). So the
// first vxlan network moves the NIC's IPv4 addresses and routes onto `vlu-<nic>` (same MAC as the NIC) and
// the last one gives them back.
import type { Ip, IpCommand } from '../../../exec/ip.js';
import { ipCmd } from '../../../exec/ip.js';
import { routeSpecOf } from '../../../exec/ip-parse.js';
import { type Ovs, vsctlCmd } from '../../../exec/ovs.js';
import { ConflictError, NotFoundError } from '../../../shared/errors.js';
import type { Reverter } from '../../../shared/revert.js';
import { moveCommands } from '../linux/move.js';
import { movableRoutes } from '../linux/uplink.js';
import { ROLE, underlayBridgeOf } from './names.js';
import type { OvsStateStore, UnderlayState } from './state.js';

/** What moving an underlay needs from the driver. */
export interface UnderlayHost {
  ip: Ip;
  ovs: Ovs;
  states: OvsStateStore;
}

/** Makes the underlay NIC a port of its OVS bridge and moves its IPv4 addresses and routes there. */
export async function ensureUnderlay(host: UnderlayHost, nic: string, r: Reverter): Promise<void> {
  const bridges = await host.ovs.bridges();
  // An underlay bridge made under its legacy name keeps carrying the VTEP address.
  const bridge = underlayBridgeOf(bridges, nic);
  const link = await host.ip.link.get(nic);
  if (!link) throw new NotFoundError('underlay NIC', nic);
  if (link.master)
    throw new ConflictError(
      `underlay NIC ${nic} is a port of ${link.master}; the ovs backend needs it free for its VXLAN underlay`,
      nic,
    );
  const known = (await host.states.readUnderlays()).find((u) => u.nic === nic);
  const addrs = (await host.ip.addr.list({ dev: nic, family: 'inet' })).filter((a) => a.scope === 'global');
  const routes = addrs.length ? movableRoutes(await host.ip.route.list({ dev: nic })) : [];
  const exists = bridges.some((b) => b.name === bridge);
  await host.ovs.vsctl([
    ...vsctlCmd.addBr(bridge, {
      datapathType: 'netdev',
      externalIds: { [ROLE]: 'underlay' },
      // Same MAC as the NIC: neighbours' ARP caches stay right.
      otherConfig: link.address ? { hwaddr: link.address } : {},
    }),
    ...vsctlCmd.addPort(bridge, nic, { externalIds: { [ROLE]: 'underlay-nic' } }),
  ]);
  if (!exists) r.add(() => releaseUnderlay(host, nic));
  const state: UnderlayState = {
    nic,
    bridge,
    addrs: [...new Set([...(known?.addrs ?? []), ...addrs.map((a) => `${a.local}/${a.prefixLen}`)])],
    routes: [...(known?.routes ?? []), ...routes],
  };
  await host.states.writeUnderlay(state);
  // After a vswitchd restart the internal port is a new device: put back what it had.
  const onBridge = (await host.ip.addr.list({ dev: bridge, family: 'inet' })).map(
    (a) => `${a.local}/${a.prefixLen}`,
  );
  const missing = state.addrs.filter(
    (a) => !addrs.some((x) => `${x.local}/${x.prefixLen}` === a) && !onBridge.includes(a),
  );
  const cmds: IpCommand[] = [
    ipCmd.linkSet(bridge, { mtu: link.mtu, up: true }),
    ...moveCommands(
      nic,
      bridge,
      addrs.map((a) => `${a.local}/${a.prefixLen}`),
      routes,
    ),
    ...missing.map((a) => ipCmd.addrAdd(bridge, a)),
  ];
  if (missing.length) cmds.push(...state.routes.map((rt) => ipCmd.routeReplace(routeSpecOf(rt, bridge))));
  await host.ip.batch(cmds);
}

/** Gives the underlay bridge's addresses and routes back to the NIC and deletes the bridge. */
export async function releaseUnderlay(host: UnderlayHost, nic: string): Promise<void> {
  const bridge = underlayBridgeOf(await host.ovs.bridges(), nic);
  const [br, ul] = await Promise.all([host.ip.link.get(bridge), host.ip.link.get(nic)]);
  if (br && ul) {
    const addrs = (await host.ip.addr.list({ dev: bridge, family: 'inet' })).filter(
      (a) => a.scope === 'global',
    );
    const routes = addrs.length ? movableRoutes(await host.ip.route.list({ dev: bridge })) : [];
    await host.ip.batch(
      moveCommands(
        bridge,
        nic,
        addrs.map((a) => `${a.local}/${a.prefixLen}`),
        routes,
      ),
    );
  }
  await host.ovs.vsctl(vsctlCmd.delBr(bridge));
  await host.states.removeUnderlay(nic);
}
