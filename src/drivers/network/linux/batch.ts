// Batched realisation on one host: many new networks, or many VM ports, from one observation of the host and a
// handful of commands (one `ip -batch`, one `bridge -batch`, one sysctl, dnsmasq started side by side) instead of
// several commands per object. Only what does not exist yet in any form takes this path, so a batch never has to
// converge a half-built object; and it is all or nothing: on any failure it removes what it made and throws, and
// the driver then goes the one-by-one way, which names the failing object and keeps the ones before it.

import { randomInt } from 'node:crypto';
import type { Bridge } from '../../../exec/bridge.js';
import { assertIfName, type Ip, type IpCommand, ipCmd } from '../../../exec/ip.js';
import type { IpAddr, IpLink } from '../../../exec/ip-parse.js';
import type { Runner } from '../../../exec/runner.js';
import { ConflictError, NotFoundError } from '../../../shared/errors.js';
import { DNSMASQ_START_CONCURRENCY } from '../../../shared/limits.js';
import { log } from '../../../shared/log.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { allSettledOrThrow, settleLimited } from '../../../shared/queue.js';
import type { ItemResult, NetworkItem, OpContext, PortConfig } from '../types.js';
import { type DnsmasqManager, dnsmasqPaths } from './dnsmasq.js';
import { enableIpForwarding, ipForwarding } from './forwarding.js';
import { fdbSync, memberDevice, VLAN_ALIAS_PREFIX, VXLAN_ALIAS_PREFIX } from './overlay.js';
import { underlayOf, vxlanCreate } from './overlay-devices.js';
import { isRouted } from './ruleset.js';
import { ALIAS_PREFIX, type LinuxNetworkStateStore, type NetworkState } from './state.js';
import { assertNetworkName } from './validate.js';

/** What the batch paths use of the driver. */
export interface BatchHost {
  runner: Runner;
  netns: string | undefined;
  ip: Ip;
  br: Bridge;
  dnsmasq: DnsmasqManager;
  states: LinuxNetworkStateStore;
}

/** The host as observed once for a batch. */
export interface HostSnapshot {
  states: NetworkState[];
  links: Map<string, IpLink>;
  addrs: IpAddr[];
}

/** Observes what a batch of network changes depends on: persisted networks, every link, every address. */
export async function observeHost(host: BatchHost): Promise<HostSnapshot> {
  const [states, links, addrs] = await Promise.all([
    host.states.readAll(),
    host.ip.link.list(),
    host.ip.addr.list(),
  ]);
  return { states, links: new Map(links.map((l) => [l.name, l])), addrs };
}

/** A network the batch path will create, with the underlay its VXLAN device sends through. */
export interface NewNetwork extends NetworkItem {
  vtep?: string;
}

/**
 * Whether `item` is a network the batch path may create: nat, isolated or vxlan, with no state, no device of its
 * bridge's or member's name on the host, and no name another network (or an earlier item, `taken`) uses. Anything
 * else (an update, a repair, a bridge or vlan network, a clash) goes the one-by-one way, which converges or explains.
 */
export function newNetwork(
  item: NetworkItem,
  snap: HostSnapshot,
  taken: Set<string>,
): NewNetwork | undefined {
  const { cfg } = item;
  if (cfg.mode !== 'nat' && cfg.mode !== 'isolated' && cfg.mode !== 'vxlan') return undefined;
  if (snap.states.some((s) => s.config.name === cfg.name)) return undefined;
  const devices = [cfg.bridge, ...(cfg.mode === 'vxlan' ? [cfg.vxlan!.device] : [])];
  if (devices.some((d) => snap.links.has(d) || taken.has(d))) return undefined;
  if (
    snap.states.some(
      (s) => devices.includes(s.config.bridge) || devices.includes(memberDevice(s.config)?.name ?? ''),
    )
  )
    return undefined;
  let vtep: string | undefined;
  if (cfg.mode === 'vxlan') {
    try {
      vtep = underlayOf(cfg, snap.links, snap.addrs);
    } catch {
      return undefined;
    }
  }
  for (const d of devices) taken.add(d);
  return vtep ? { ...item, vtep } : item;
}

/** The `ip -batch` lines that build a new network's bridge, member device and gateway address. */
export function networkCommands(n: NewNetwork): IpCommand[] {
  const { cfg } = n;
  const cmds: IpCommand[] = [
    ipCmd.linkAdd({ name: cfg.bridge, kind: 'bridge' }),
    // `ip link add` ignores `alias`: the label comes with the first `link set`.
    ipCmd.linkSet(cfg.bridge, { mtu: cfg.mtu, alias: ALIAS_PREFIX + cfg.name, up: true }),
  ];
  if (cfg.mode === 'vxlan') cmds.push(...vxlanCreate(cfg, n.vtep!));
  if (cfg.subnet) cmds.push(ipCmd.addrAdd(cfg.bridge, `${cfg.subnet.gateway}/${cfg.subnet.prefixLength}`));
  return cmds;
}

/**
 * Creates every network of `nets` (each from `newNetwork`): devices and addresses in one `ip -batch`, the VXLAN
 * flood entries in one `bridge -batch`, `arp_ignore` in one sysctl, state files, then the dnsmasq instances side by
 * side, and last `loadRules` (the host's nftables table, rebuilt from the state files). On failure everything made
 * here is removed and the table reloaded without it, then it throws.
 */
export async function createNetworks(
  host: BatchHost,
  nets: readonly NewNetwork[],
  loadRules: () => Promise<void>,
  ctx?: OpContext,
): Promise<void> {
  try {
    ctx?.signal?.throwIfAborted();
    await host.ip.batch(nets.flatMap(networkCommands));
    // With the devices there, what is left does not depend on each other: side by side, then dnsmasq and the rules.
    await allSettledOrThrow([
      host.br.batch(
        nets.flatMap((n) =>
          n.cfg.mode === 'vxlan' ? fdbSync(n.cfg.vxlan!.device, n.cfg.vxlan!.remotes, []).cmds : [],
        ),
      ),
      // Answer ARP only for addresses on the bridge itself (see LinuxNetworkDriver.ensureBridge).
      host.runner.run(
        ['sysctl', '-q', '-w', ...nets.map((n) => `net.ipv4.conf.${n.cfg.bridge}.arp_ignore=1`)],
        { netns: host.netns },
      ),
      (async () => {
        if (nets.some((n) => isRouted(n.cfg)) && !(await ipForwarding(host.runner, host.netns)))
          await enableIpForwarding(host.runner, host.netns);
      })(),
      ...nets.map((n) => host.states.write({ version: 1, config: n.cfg, configHash: n.configHash })),
    ]);
    const served = nets.filter((n) => n.cfg.subnet);
    await allSettledOrThrow([
      settleLimited(served, DNSMASQ_START_CONCURRENCY, (n) =>
        host.dnsmasq.ensure(n.cfg, dnsmasqPaths(host.states.networkDir(n.cfg.name)), true),
      ).then((started) => {
        const failed = started.find((r) => r.status === 'rejected');
        if (failed) throw failed.reason;
      }),
      loadRules(),
    ]);
  } catch (e) {
    await removeNetworks(
      host,
      nets.map((n) => n.cfg),
    );
    await loadRules().catch(() => undefined);
    throw e;
  }
}

/** Takes back what `createNetworks` made of these networks (all of them new): dnsmasq, state, devices. */
async function removeNetworks(host: BatchHost, cfgs: readonly NetworkConfig[]): Promise<void> {
  await settleLimited(cfgs, DNSMASQ_START_CONCURRENCY, async (cfg) => {
    await host.dnsmasq.stop(dnsmasqPaths(host.states.networkDir(cfg.name))).catch(() => undefined);
    await host.states.remove(cfg.name).catch(() => undefined);
  });
  for (const cfg of cfgs) {
    const member = memberDevice(cfg);
    if (member) await host.ip.exec(ipCmd.linkDel(member.name), { allowFailure: true });
    await host.ip.exec(ipCmd.linkDel(cfg.bridge), { allowFailure: true });
  }
}

/**
 * Takes down networks that no bridge-mode uplink hangs on (`states`, all persisted here): their dnsmasq instances
 * side by side, then their member devices and bridges (those labelled for them, or unlabelled) together (`deleteLinks`),
 * then their state files. The caller reloads the nftables table. Throws when a step fails; what is gone stays gone,
 * and deleting again finishes the job.
 */
export async function removeNetworksTogether(
  host: BatchHost,
  states: readonly NetworkState[],
  ctx?: OpContext,
): Promise<void> {
  ctx?.signal?.throwIfAborted();
  const stopped = await settleLimited(states, DNSMASQ_START_CONCURRENCY, (s) =>
    host.dnsmasq.stop(dnsmasqPaths(host.states.networkDir(s.config.name))),
  );
  const failed = stopped.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  const links = new Map((await host.ip.link.list()).map((l) => [l.name, l]));
  const gone: string[] = [];
  for (const { config: c } of states) {
    const member = memberDevice(c);
    const m = member && links.get(member.name);
    const memberAlias = (member?.kind === 'vxlan' ? VXLAN_ALIAS_PREFIX : VLAN_ALIAS_PREFIX) + c.name;
    if (m && m.kind === member.kind && (m.alias === undefined || m.alias === memberAlias)) gone.push(m.name);
    const br = links.get(c.bridge);
    if (br?.kind === 'bridge' && (br.alias === undefined || br.alias === ALIAS_PREFIX + c.name))
      gone.push(c.bridge);
  }
  await deleteLinks(host.ip, gone, links);
  await Promise.all(states.map((s) => host.states.remove(s.config.name)));
}

/**
 * Deletes devices in one request: each is put in a device group no device of the host is in (picked at random),
 * then the group is deleted, so the kernel unregisters them all with one RCU grace period instead of one each
 * (100 taps: ~40 ms instead of ~2 s).
 */
export async function deleteLinks(
  ip: Ip,
  names: readonly string[],
  links: ReadonlyMap<string, IpLink>,
): Promise<void> {
  if (names.length === 0) return;
  const used = new Set([...links.values()].map((l) => l.group));
  let group: number;
  do group = 0x100000 + randomInt(0x7fffffff - 0x100000);
  while (used.has(group));
  await ip.batch([...names.map((n) => ipCmd.linkSetGroup(n, group)), ipCmd.linkDelGroup(group)]);
}

/** Whether a port is a plain access port the batch can make (VLAN ports go one by one: they may need filtering). */
export const plainPort = (p: PortConfig): boolean => p.vlan === undefined && !p.trunks?.length;

/**
 * Creates or re-attaches plain ports in one `ip -batch` from one observation of the host's links. Refuses before
 * any change when a bridge is missing or a tap's name is taken by another kind of device; on a failed batch it
 * deletes the taps it created, then throws.
 */
export async function ensurePlainPorts(ip: Ip, ports: readonly PortConfig[], ctx?: OpContext): Promise<void> {
  ctx?.signal?.throwIfAborted();
  const links = new Map((await ip.link.list()).map((l) => [l.name, l]));
  const cmds: IpCommand[] = [];
  const created: string[] = [];
  for (const p of ports) {
    assertIfName(p.tap, 'tap');
    assertIfName(p.bridge, 'bridge');
    if (links.get(p.bridge)?.kind !== 'bridge') throw new NotFoundError('bridge', p.bridge);
    const tap = links.get(p.tap);
    if (tap && tap.kind !== 'tun') throw new ConflictError(`device ${p.tap} exists and is not a tap`, p.tap);
    const attach = ipCmd.linkSet(p.tap, { master: p.bridge, mtu: p.mtu, up: true });
    if (!tap) {
      cmds.push(ipCmd.tuntapAdd({ name: p.tap, mode: 'tap', vnetHdr: true }), attach);
      created.push(p.tap);
    } else if (tap.master !== p.bridge || tap.mtu !== p.mtu || !tap.up) cmds.push(attach);
  }
  try {
    await ip.batch(cmds);
  } catch (e) {
    for (const tap of created) await ip.exec(ipCmd.tuntapDel(tap, 'tap'), { allowFailure: true });
    throw e;
  }
}

/** Deletes taps together (see `deleteLinks`); missing ones are skipped, and a non-tap of such a name is refused first. */
export async function deleteTaps(ip: Ip, taps: readonly string[], ctx?: OpContext): Promise<void> {
  ctx?.signal?.throwIfAborted();
  const links = new Map((await ip.link.list()).map((l) => [l.name, l]));
  const gone: string[] = [];
  for (const tap of new Set(taps)) {
    assertIfName(tap, 'tap');
    const link = links.get(tap);
    if (!link) continue;
    if (link.kind !== 'tun') throw new ConflictError(`device ${tap} is not a tap; not deleting it`, tap);
    gone.push(tap);
  }
  await deleteLinks(ip, gone, links);
}

/** What the bulk forms need of the driver: its host, its serial queue and its one-by-one paths. */
export interface BulkOps {
  host: BatchHost;
  serial<T>(fn: () => Promise<T>): Promise<T>;
  /** Refuses a config the driver cannot realise here (before any change). */
  validate(cfg: NetworkConfig): Promise<void>;
  /** One network the one-by-one way, which converges from any state or explains why not. */
  ensureOne(item: NetworkItem, ctx?: OpContext): Promise<void>;
  /** Takes one network down and forgets it (the table is reloaded by the caller). */
  removeOne(name: string, ctx?: OpContext): Promise<void>;
  /** Brings the host table in line with the state files. */
  loadRules(): Promise<void>;
}

/**
 * `ensureNetwork` for many networks: runs of new networks are created together (`createNetworks`), everything else
 * one by one, and a run that failed is redone one by one, which names the network at fault and keeps those before
 * it. Stops at the first failing network; an invalid one ends the batch where it stands.
 */
export async function ensureNetworksInBulk(
  ops: BulkOps,
  items: readonly NetworkItem[],
  ctx?: OpContext,
): Promise<ItemResult[]> {
  const results: ItemResult[] = [];
  let valid = items.length;
  let invalid: unknown;
  for (const [i, { cfg }] of items.entries()) {
    try {
      await ops.validate(cfg);
    } catch (e) {
      valid = i;
      invalid = e;
      break;
    }
  }
  const one = async (item: NetworkItem): Promise<boolean> => {
    try {
      await ops.ensureOne(item, ctx);
      results.push({ ok: true });
      return true;
    } catch (error) {
      results.push({ ok: false, error });
      return false;
    }
  };
  await ops.serial(async () => {
    let i = 0;
    while (i < valid) {
      const snap = await observeHost(ops.host);
      const taken = new Set<string>();
      const run: NewNetwork[] = [];
      while (i < valid) {
        const n = newNetwork(items[i]!, snap, taken);
        if (!n) break;
        run.push(n);
        i++;
      }
      if (run.length === 0) {
        if (!(await one(items[i++]!))) return;
        continue;
      }
      try {
        await createNetworks(ops.host, run, ops.loadRules, ctx);
        for (const _ of run) results.push({ ok: true });
      } catch (e) {
        log.warn(
          { networks: run.length, err: (e as Error).message },
          'network batch failed; applying one by one',
        );
        for (const item of run) if (!(await one(item))) return;
      }
    }
  });
  if (invalid !== undefined && results.length === valid) results.push({ ok: false, error: invalid });
  return results;
}

/**
 * `deleteNetwork` for many networks with one table load at the end: those that are not bridge mode go down together
 * (`removeNetworksTogether`), the rest (and all of them, if that fails) one by one, stopping at the first failure.
 */
export async function deleteNetworksInBulk(
  ops: BulkOps,
  names: readonly string[],
  ctx?: OpContext,
): Promise<ItemResult[]> {
  const results: ItemResult[] = [];
  const removed = new Set<string>();
  await ops.serial(async () => {
    try {
      for (const name of names) assertNetworkName(name);
      const states = (await ops.host.states.readAll()).filter((s) => names.includes(s.config.name));
      const together = states.filter((s) => s.config.mode !== 'bridge');
      if (together.length > 1) {
        try {
          await removeNetworksTogether(ops.host, together, ctx);
          for (const s of together) removed.add(s.config.name);
        } catch (e) {
          // One by one below finishes what is left and names the network at fault.
          log.warn({ networks: together.length, err: (e as Error).message }, 'network removal batch failed');
        }
      }
    } catch (error) {
      results.push({ ok: false, error });
      return;
    }
    try {
      for (const name of names) {
        try {
          if (!removed.has(name)) await ops.removeOne(name, ctx);
          results.push({ ok: true });
        } catch (error) {
          results.push({ ok: false, error });
          return;
        }
      }
    } finally {
      await ops.loadRules();
    }
  });
  return results;
}
