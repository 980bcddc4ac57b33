// The member devices of multi-host networks on the host: the VXLAN device (nolearning, one static
// all-zeros FDB entry per remote VTEP) or the 802.1Q device on the trunk NIC, each enslaved to the
// network's bridge and labelled with an alias naming its network. The pure parts live in overlay.ts.
import { isIP } from 'node:net';
import type { Bridge, FdbEntry } from '../../../exec/bridge.js';
import type { Ip, IpCommand } from '../../../exec/ip.js';
import { ipCmd } from '../../../exec/ip.js';
import type { IpAddr, IpLink } from '../../../exec/ip-parse.js';
import { ConflictError, InvalidRequestError, NotFoundError } from '../../../shared/errors.js';
import type { NetworkConfig } from '../../../shared/model.js';
import type { Reverter } from '../../../shared/revert.js';
import type { OpContext } from '../types.js';
import {
  fdbProblems,
  fdbSync,
  floodRemotes,
  memberDevice,
  VLAN_ALIAS_PREFIX,
  VXLAN_ALIAS_PREFIX,
  VXLAN_OVERHEAD_V4,
  VXLAN_OVERHEAD_V6,
  vlanDeviceName,
  vtepDevice,
  vxlanDrift,
} from './overlay.js';

/** The device the VXLAN device must send through; refuses an overlay mtu it cannot carry (before any change). */
export async function underlayFor(ip: Ip, cfg: NetworkConfig, links: Map<string, IpLink>): Promise<string> {
  return underlayOf(cfg, links, await ip.addr.list());
}

/** `underlayFor` from an observation already made (the host's links and addresses). */
export function underlayOf(
  cfg: NetworkConfig,
  links: ReadonlyMap<string, IpLink>,
  addrs: readonly IpAddr[],
): string {
  const v = cfg.vxlan!;
  const at = `networks.${cfg.name}`;
  const dev = vtepDevice(v, links, addrs);
  const lower = links.get(dev);
  if (!lower) throw new NotFoundError('underlay', dev);
  const overhead = isIP(v.local) === 6 ? VXLAN_OVERHEAD_V6 : VXLAN_OVERHEAD_V4;
  if (cfg.mtu + overhead > lower.mtu)
    throw new InvalidRequestError(
      `${at}.mtu: ${cfg.mtu} + ${overhead} bytes of VXLAN headers exceeds the underlay ${dev}'s mtu ${lower.mtu}`,
      `${at}.mtu`,
    );
  return dev;
}

/** The `ip -batch` lines that create a network's VXLAN device on underlay `dev` and enslave it, labelled. */
export function vxlanCreate(cfg: NetworkConfig, dev: string): IpCommand[] {
  const v = cfg.vxlan!;
  return [
    ipCmd.linkAdd({
      name: v.device,
      kind: 'vxlan',
      mtu: cfg.mtu,
      vni: v.vni,
      dstport: v.port,
      local: v.local,
      link: dev,
      learning: false,
    }),
    ipCmd.linkSet(v.device, { master: cfg.bridge, alias: VXLAN_ALIAS_PREFIX + cfg.name, up: true }),
  ];
}

/**
 * vxlan: the VXLAN device (nolearning, `dev` = the device carrying the VTEP address) enslaved to the
 * bridge, re-created when its VNI, local address, port or underlay differ; then its FDB synced.
 */
export async function ensureVxlan(
  ip: Ip,
  br: Bridge,
  cfg: NetworkConfig,
  links: Map<string, IpLink>,
  dev: string,
  r: Reverter,
  ctx?: OpContext,
): Promise<void> {
  const v = cfg.vxlan!;
  const at = `networks.${cfg.name}`;
  const alias = VXLAN_ALIAS_PREFIX + cfg.name;
  const link = links.get(v.device);
  if (link) {
    if (link.kind !== 'vxlan')
      throw new ConflictError(`device ${v.device} exists and is not a vxlan device`, `${at}.vxlan.device`);
    if (link.alias !== undefined && link.alias !== alias)
      throw new ConflictError(
        `vxlan device ${v.device} exists and belongs to ${link.alias.startsWith(VXLAN_ALIAS_PREFIX) ? `network ${link.alias.slice(VXLAN_ALIAS_PREFIX.length)}` : 'something other than vmlink'}`,
        `${at}.vxlan.device`,
      );
  }
  const drift = link ? vxlanDrift(link, v, dev) : [];
  const cmds: IpCommand[] = [];
  if (!link || drift.length) {
    if (link) {
      ctx?.progress?.(`network ${cfg.name}: re-creating ${v.device} (${drift.join('; ')})`);
      cmds.push(ipCmd.linkDel(v.device));
    }
    cmds.push(...vxlanCreate(cfg, dev));
    r.add(() => ip.exec(ipCmd.linkDel(v.device), { allowFailure: true }));
  } else if (link.master !== cfg.bridge || link.mtu !== cfg.mtu || !link.up || link.alias !== alias) {
    cmds.push(ipCmd.linkSet(v.device, { master: cfg.bridge, mtu: cfg.mtu, alias, up: true }));
  }
  await ip.batch(cmds);

  const have = floodRemotes(await br.fdb(v.device));
  const sync = fdbSync(v.device, v.remotes, have);
  if (sync.cmds.length) {
    ctx?.progress?.(
      `network ${cfg.name}: FDB of ${v.device}${sync.add.length ? ` +${sync.add.join(',')}` : ''}${sync.del.length ? ` -${sync.del.join(',')}` : ''}`,
    );
    r.add(() => br.batch(fdbSync(v.device, have, v.remotes).cmds).catch(() => undefined));
    await br.batch(sync.cmds);
  }
}

/** vlan: the 802.1Q device `TRUNK.ID` on the trunk NIC, enslaved to the bridge. */
export async function ensureVlan(
  ip: Ip,
  cfg: NetworkConfig,
  links: Map<string, IpLink>,
  r: Reverter,
): Promise<void> {
  const v = cfg.vlan!;
  const at = `networks.${cfg.name}`;
  const name = vlanDeviceName(v.trunk, v.id);
  const alias = VLAN_ALIAS_PREFIX + cfg.name;
  const trunk = links.get(v.trunk);
  if (!trunk) throw new NotFoundError('trunk', v.trunk);
  const link = links.get(name);
  if (link && link.kind !== 'vlan')
    throw new ConflictError(`device ${name} exists and is not a vlan device`, `${at}.vlan`);
  if (link?.alias !== undefined && link.alias !== alias)
    throw new ConflictError(`vlan device ${name} exists and belongs to ${link.alias}`, `${at}.vlan`);
  const cmds: IpCommand[] = [];
  if (!trunk.up) cmds.push(ipCmd.linkSet(v.trunk, { up: true }));
  if (!link || link.vlanId !== v.id || link.link !== v.trunk) {
    if (link) cmds.push(ipCmd.linkDel(name));
    cmds.push(
      ipCmd.linkAdd({ name, kind: 'vlan', link: v.trunk, vlanId: v.id, mtu: cfg.mtu }),
      ipCmd.linkSet(name, { master: cfg.bridge, alias, up: true }),
    );
    r.add(() => ip.exec(ipCmd.linkDel(name), { allowFailure: true }));
  } else if (link.master !== cfg.bridge || link.mtu !== cfg.mtu || !link.up || link.alias !== alias) {
    cmds.push(ipCmd.linkSet(name, { master: cfg.bridge, mtu: cfg.mtu, alias, up: true }));
  }
  await ip.batch(cmds);
}

/** Deletes the network's vxlan/vlan device when it is one this driver made (or unlabelled). */
export async function deleteMember(ip: Ip, c: NetworkConfig): Promise<void> {
  const m = memberDevice(c);
  if (!m) return;
  const link = await ip.link.get(m.name);
  const alias = (m.kind === 'vxlan' ? VXLAN_ALIAS_PREFIX : VLAN_ALIAS_PREFIX) + c.name;
  if (link && link.kind === m.kind && (link.alias === undefined || link.alias === alias))
    await ip.link.del(m.name);
}

/** Live problems of a vxlan network's VXLAN device and its FDB (`fdb`: every device's entries, see `fdbByDevice`). */
export function vxlanProblems(
  c: NetworkConfig,
  links: Map<string, IpLink>,
  addrs: readonly IpAddr[],
  fdb: ReadonlyMap<string, FdbEntry[]>,
): string[] {
  const v = c.vxlan!;
  const link = links.get(v.device);
  if (!link) return [`vxlan device ${v.device} missing`];
  if (link.kind !== 'vxlan') return [`${v.device} is not a vxlan device`];
  const problems = vxlanDrift(link, v, vtepDevice(v, links, addrs));
  if (link.master !== c.bridge) problems.push(`vxlan ${v.device} not enslaved to ${c.bridge}`);
  if (!link.up) problems.push(`vxlan ${v.device} is down`);
  if (link.mtu !== c.mtu) problems.push(`vxlan ${v.device} mtu is ${link.mtu}, want ${c.mtu}`);
  problems.push(...fdbProblems(v.device, v.remotes, floodRemotes(fdb.get(v.device) ?? [])));
  return problems;
}

/** Live problems of a vlan network's 802.1Q device. */
export function vlanProblems(c: NetworkConfig, links: Map<string, IpLink>): string[] {
  const v = c.vlan!;
  const name = vlanDeviceName(v.trunk, v.id);
  if (!links.has(v.trunk)) return [`trunk ${v.trunk} missing`];
  const link = links.get(name);
  if (!link) return [`vlan device ${name} missing`];
  if (link.kind !== 'vlan') return [`${name} is not a vlan device`];
  const problems: string[] = [];
  if (link.vlanId !== v.id) problems.push(`vlan ${name} has id ${link.vlanId}, want ${v.id}`);
  if (link.link !== v.trunk) problems.push(`vlan ${name} is on ${link.link ?? 'unknown'}, want ${v.trunk}`);
  if (link.master !== c.bridge) problems.push(`vlan ${name} not enslaved to ${c.bridge}`);
  if (!link.up) problems.push(`vlan ${name} is down`);
  if (link.mtu !== c.mtu) problems.push(`vlan ${name} mtu is ${link.mtu}, want ${c.mtu}`);
  return problems;
}
