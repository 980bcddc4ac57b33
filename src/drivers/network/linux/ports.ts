// VM ports of the linux backend: persistent taps (vnet_hdr) attached to a network's bridge, with VLAN
// access/trunk membership where the bridge filters VLANs.

import type { Bridge } from '../../../exec/bridge.js';
import { assertIfName, type Ip, ipCmd } from '../../../exec/ip.js';
import { ConflictError, NotFoundError } from '../../../shared/errors.js';
import type { HostCapabilities } from '../../../shared/model.js';
import { Reverter } from '../../../shared/revert.js';
import type { OpContext, PortConfig } from '../types.js';
import { requireVlanFiltering } from './capabilities.js';
import { parsePortVlans, portVlanCommands, wantedPortVlans } from './overlay.js';
import type { LinuxNetworkStateStore } from './state.js';

/** What port operations need from the driver. */
export interface PortHost {
  ip: Ip;
  br: Bridge;
  states: LinuxNetworkStateStore;
  capabilities(): Promise<HostCapabilities['network']>;
}

/**
 * Creates the persistent tap (vnet_hdr) if missing, attaches it to the bridge, sets mtu, brings it up.
 * A VLAN access/trunk port needs a vlan_filtering bridge (refused where the kernel lacks it), except an
 * access port on this backend's own vlan network bridge, whose 802.1Q device tags for it.
 */
export async function ensurePort(host: PortHost, port: PortConfig, ctx?: OpContext): Promise<void> {
  const { ip, br: bridge } = host;
  assertIfName(port.tap, 'tap');
  assertIfName(port.bridge, 'bridge');
  ctx?.signal?.throwIfAborted();
  const filtering = await needsVlanFiltering(host, port);
  const br = await ip.link.get(port.bridge);
  if (br?.kind !== 'bridge') throw new NotFoundError('bridge', port.bridge);
  const r = new Reverter();
  try {
    const tap = await ip.link.get(port.tap);
    if (tap && tap.kind !== 'tun')
      throw new ConflictError(`device ${port.tap} exists and is not a tap`, port.tap);
    if (filtering && !br.vlanFiltering) await ip.exec(ipCmd.bridgeVlanFiltering(port.bridge, true));
    const attach = ipCmd.linkSet(port.tap, { master: port.bridge, mtu: port.mtu, up: true });
    if (!tap) {
      // Create and attach in one batch: one command per port instead of three.
      r.add(() => ip.tuntap.del(port.tap));
      await ip.batch([ipCmd.tuntapAdd({ name: port.tap, mode: 'tap', vnetHdr: true }), attach]);
    } else if (tap.master !== port.bridge || tap.mtu !== port.mtu || !tap.up) {
      await ip.batch([attach]);
    }
    if (filtering) {
      const have = parsePortVlans(
        (await bridge.exec(['vlan', 'show', 'dev', port.tap], { json: true })).stdout,
        port.tap,
      );
      await bridge.batch(portVlanCommands(port.tap, have, wantedPortVlans(port)));
    }
    r.success();
  } finally {
    await r.fail();
  }
}

/** Deletes the tap; a missing one is not an error, a non-tap device of that name is a conflict. */
export async function deletePort(ip: Ip, tap: string, ctx?: OpContext): Promise<void> {
  assertIfName(tap, 'tap');
  ctx?.signal?.throwIfAborted();
  const link = await ip.link.get(tap);
  if (!link) return;
  if (link.kind !== 'tun') throw new ConflictError(`device ${tap} is not a tap; not deleting it`, tap);
  await ip.tuntap.del(tap, link.tunType === 'tun' ? 'tun' : 'tap');
}

/** Whether the tap exists and is a port of `bridge`. */
export async function portAttached(ip: Ip, tap: string, bridge: string): Promise<boolean> {
  assertIfName(tap, 'tap');
  const link = await ip.link.get(tap);
  return link?.kind === 'tun' && link.master === bridge;
}

/** Every tap on the host with the bridge it is attached to (one command, for reports over many ports). */
export async function portMasters(ip: Ip): Promise<Map<string, string | undefined>> {
  const links = await ip.link.list();
  return new Map(links.filter((l) => l.kind === 'tun').map((l) => [l.name, l.master]));
}

/** Whether the port needs VLAN filtering on its bridge; refuses where the kernel lacks it. */
async function needsVlanFiltering(host: PortHost, port: PortConfig): Promise<boolean> {
  const trunks = port.trunks ?? [];
  if (port.vlan === undefined && trunks.length === 0) return false;
  const net = (await host.states.readAll()).find((s) => s.config.bridge === port.bridge)?.config;
  if (net?.mode === 'vlan' && trunks.length === 0 && port.vlan === net.vlan?.id) return false;
  requireVlanFiltering(port, await host.capabilities());
  return true;
}
