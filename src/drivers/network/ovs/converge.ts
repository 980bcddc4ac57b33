// One OVS network's realisation, converged one network at a time: its bridge (shared by the VLANs of one trunk),
// trunk port or VXLAN tunnel ports (with the userspace datapath's underlay), gateway port and dnsmasq, undone on
// failure; and its teardown. The driver runs these under its serial queue.
import { type IpCommand, ipCmd } from '../../../exec/ip.js';
import { type VsctlCommand, vsctlCmd } from '../../../exec/ovs.js';
import { ConflictError, NotFoundError } from '../../../shared/errors.js';
import { VXLAN_PORT } from '../../../shared/limits.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { Reverter } from '../../../shared/revert.js';
import { type DnsmasqManager, dnsmasqPaths } from '../linux/dnsmasq.js';
import type { OpContext } from '../types.js';
import type { OvsDaemons } from './daemon.js';
import { gatewayPortName, gatewayPortOf, legacyGatewayPortName, NET, ROLE, tunnelPortName } from './names.js';
import { type OvsNetworkState, vlansOn } from './state.js';
import { ensureUnderlay, releaseUnderlay, type UnderlayHost } from './underlay.js';

/** What converging a network uses of the driver. */
export interface OvsConvergeHost extends UnderlayHost {
  daemons: OvsDaemons;
  dnsmasq: DnsmasqManager;
  /** Rebuilds a bridge's OpenFlow table from its ports and `states`. */
  syncFlows(bridge: string, states: OvsNetworkState[]): Promise<void>;
  /** Loads the host input policy of every persisted network. */
  loadHostInput(): Promise<void>;
}

/** Creates network `cfg` or converges it (`restarted`: vswitchd came back empty); undoes this call's changes on failure. */
export async function convergeOvsNetwork(
  host: OvsConvergeHost,
  cfg: NetworkConfig,
  configHash: string,
  ctx?: OpContext,
  restarted = false,
): Promise<void> {
  ctx?.signal?.throwIfAborted();
  const states = await host.states.readAll();
  const others = states.filter((s) => s.config.name !== cfg.name);
  for (const o of others) {
    if (o.config.bridge !== cfg.bridge) continue;
    if (cfg.mode !== 'vlan' || o.config.mode !== 'vlan')
      throw new ConflictError(
        `bridge ${cfg.bridge} already belongs to network ${o.config.name}`,
        `networks.${cfg.name}.bridge`,
      );
    if (o.config.vlan!.trunk !== cfg.vlan!.trunk)
      throw new ConflictError(
        `bridge ${cfg.bridge} already belongs to trunk ${o.config.vlan!.trunk} (network ${o.config.name})`,
        `networks.${cfg.name}.bridge`,
      );
    if (o.config.vlan!.id === cfg.vlan!.id)
      throw new ConflictError(
        `VLAN ${cfg.vlan!.id} on ${cfg.vlan!.trunk} already belongs to network ${o.config.name}`,
        `networks.${cfg.name}.vlan`,
      );
  }
  if (cfg.mode === 'vlan') {
    const trunkClash = others.find(
      (o) =>
        o.config.mode === 'vlan' &&
        o.config.vlan!.trunk === cfg.vlan!.trunk &&
        o.config.bridge !== cfg.bridge,
    );
    if (trunkClash)
      throw new ConflictError(
        `trunk ${cfg.vlan!.trunk} already carries bridge ${trunkClash.config.bridge} (network ${trunkClash.config.name})`,
        `networks.${cfg.name}.vlan.trunk`,
      );
  }
  const prev = states.find((s) => s.config.name === cfg.name);
  if (
    prev &&
    (prev.config.bridge !== cfg.bridge ||
      prev.config.mode !== cfg.mode ||
      prev.config.vlan?.trunk !== cfg.vlan?.trunk ||
      prev.config.vxlan?.underlay !== cfg.vxlan?.underlay)
  ) {
    ctx?.progress?.(`network ${cfg.name}: replacing ${prev.config.mode} on ${prev.config.bridge}`);
    await teardownOvsNetwork(host, prev, others);
  }

  const dp = await host.daemons.datapathType();
  const r = new Reverter();
  try {
    const [bridges, ports, links] = await Promise.all([
      host.ovs.bridges(),
      host.ovs.ports(),
      host.ip.link.list(),
    ]);
    const bridgeExists = bridges.some((b) => b.name === cfg.bridge);
    // A kernel device of that name that is not our OVS bridge (e.g. a linux bridge): refuse.
    if (!bridgeExists && links.some((l) => l.name === cfg.bridge))
      throw new ConflictError(
        `device ${cfg.bridge} exists and is not an OVS bridge of vmlink`,
        `networks.${cfg.name}.bridge`,
      );
    const cmds: VsctlCommand[] = [
      ...vsctlCmd.addBr(cfg.bridge, {
        datapathType: dp,
        externalIds: { [ROLE]: cfg.mode },
        // Unknown ports and the LOCAL port switch nothing: the flow table (default drop) decides.
        otherConfig: {},
      }),
    ];
    if (!bridgeExists) r.add(() => host.ovs.vsctl(vsctlCmd.delBr(cfg.bridge), { allowFailure: true }));

    if (cfg.mode === 'vlan') {
      const v = cfg.vlan!;
      const nic = links.find((l) => l.name === v.trunk);
      if (!nic) throw new NotFoundError('trunk NIC', v.trunk);
      if (nic.master)
        throw new ConflictError(
          `trunk NIC ${v.trunk} is a port of ${nic.master}`,
          `networks.${cfg.name}.vlan.trunk`,
        );
      const onOther = ports.find((p) => p.name === v.trunk && p.bridge && p.bridge !== cfg.bridge);
      if (onOther)
        throw new ConflictError(
          `trunk NIC ${v.trunk} is a port of OVS bridge ${onOther.bridge}`,
          `networks.${cfg.name}.vlan.trunk`,
        );
      const vlans = vlansOn(cfg.bridge, [...others, { version: 1, driver: 'ovs', config: cfg, configHash }]);
      cmds.push(
        ...vsctlCmd.addPort(cfg.bridge, v.trunk, {
          vlanMode: 'trunk',
          trunks: vlans,
          externalIds: { [ROLE]: 'trunk' },
        }),
      );
      if (!nic.up) await host.ip.link.set(v.trunk, { up: true });
    } else {
      const x = cfg.vxlan!;
      if (dp === 'netdev') await ensureUnderlay(host, x.underlay, r);
      const want = new Map(x.remotes.map((rm) => [tunnelPortName(x.device, rm), rm]));
      for (const p of ports)
        if (p.bridge === cfg.bridge && p.externalIds[ROLE] === 'tunnel' && !want.has(p.name))
          cmds.push(...vsctlCmd.delPort(p.name, cfg.bridge));
      for (const [name, remote] of want) {
        const options: Record<string, string> = {
          remote_ip: remote,
          key: String(x.vni),
          local_ip: x.local,
        };
        if (x.port !== VXLAN_PORT) options.dst_port = String(x.port);
        const have = ports.find((p) => p.name === name);
        if (have?.bridge && have.bridge !== cfg.bridge) cmds.push(...vsctlCmd.delPort(name));
        // Options replace as a whole: drop stale keys (dst_port) first.
        if (have?.bridge === cfg.bridge) {
          const stale = Object.keys(have.options).filter((k) => !(k in options));
          cmds.push(...vsctlCmd.removeKeys('Interface', name, 'options', stale));
        }
        cmds.push(
          ...vsctlCmd.addPort(cfg.bridge, name, {
            type: 'vxlan',
            options,
            protected: true,
            externalIds: { [ROLE]: 'tunnel', [NET]: cfg.name },
          }),
        );
      }
    }
    await host.ovs.vsctl(cmds);
    // The bridge's own internal port (a kernel device) carries nothing but is kept at the network MTU.
    await host.ip.link.set(cfg.bridge, { mtu: cfg.mtu }).catch(() => undefined);
    ctx?.signal?.throwIfAborted();

    const paths = dnsmasqPaths(host.states.networkDir(cfg.name));
    // A gateway port made under its legacy name keeps serving (dnsmasq listens on it).
    const gw = gatewayPortOf(ports, cfg.name);
    let readdressed = false;
    if (cfg.subnet) readdressed = await ensureGateway(host, cfg, gw, r);
    else await removeGateway(host, cfg.name);

    r.add(async () => {
      if (prev) await host.states.write(prev);
      else await host.states.remove(cfg.name);
    });
    await host.states.write({ version: 1, driver: 'ovs', config: cfg, configHash });
    if (cfg.subnet) {
      const dcfg: NetworkConfig = { ...cfg, bridge: gw };
      const did = await host.dnsmasq.ensure(dcfg, paths, readdressed || restarted);
      if (did !== 'unchanged') {
        ctx?.progress?.(`network ${cfg.name}: dnsmasq ${did}`);
        r.add(() => host.dnsmasq.stop(paths));
      }
    }
    await host.syncFlows(cfg.bridge, await host.states.readAll());
    await host.loadHostInput();
    r.success();
  } finally {
    await r.fail();
  }
}

/** Gateway host: an internal port (tag=VLAN on a vlan bridge) with exactly the gateway address; true when re-addressed. */
async function ensureGateway(
  host: OvsConvergeHost,
  cfg: NetworkConfig,
  gw: string,
  r: Reverter,
): Promise<boolean> {
  const s = cfg.subnet!;
  const existed = (await host.ovs.ports()).some((p) => p.name === gw && p.bridge === cfg.bridge);
  await host.ovs.vsctl([
    ...(existed ? [] : vsctlCmd.delPort(gw)),
    ...vsctlCmd.addPort(cfg.bridge, gw, {
      type: 'internal',
      ...(cfg.mode === 'vlan' ? { tag: cfg.vlan!.id, vlanMode: 'access' as const } : {}),
      externalIds: { [ROLE]: 'gateway', [NET]: cfg.name },
    }),
  ]);
  if (!existed) r.add(() => host.ovs.vsctl(vsctlCmd.delPort(gw), { allowFailure: true }));
  const want = `${s.gateway}/${s.prefixLength}`;
  const have = (await host.ip.addr.list({ dev: gw, family: 'inet' })).filter((a) => a.scope === 'global');
  const cmds: IpCommand[] = [
    ipCmd.linkSet(gw, { mtu: cfg.mtu, up: true }),
    ...have
      .filter((a) => `${a.local}/${a.prefixLen}` !== want)
      .map((a) => ipCmd.addrDel(gw, `${a.local}/${a.prefixLen}`)),
  ];
  const add = !have.some((a) => `${a.local}/${a.prefixLen}` === want);
  if (add) cmds.push(ipCmd.addrAdd(gw, want));
  await host.ip.batch(cmds);
  return add || cmds.length > 1;
}

async function removeGateway(host: OvsConvergeHost, network: string): Promise<void> {
  await host.dnsmasq.stop(dnsmasqPaths(host.states.networkDir(network)));
  await host.ovs.vsctl([
    ...vsctlCmd.delPort(gatewayPortName(network)),
    ...vsctlCmd.delPort(legacyGatewayPortName(network)),
  ]);
}

/** Takes a network's realisation down; `others` are the networks that stay. */
export async function teardownOvsNetwork(
  host: OvsConvergeHost,
  state: OvsNetworkState,
  others: OvsNetworkState[],
): Promise<void> {
  const c = state.config;
  await removeGateway(host, c.name);
  const sharers = others.filter((o) => o.config.bridge === c.bridge);
  if (sharers.length) {
    // A shared vlan bridge stays; its trunk carries one VLAN less.
    await host.ovs.vsctl(vsctlCmd.setPort(c.vlan!.trunk, { trunks: vlansOn(c.bridge, others) }));
    await host.syncFlows(c.bridge, others);
  } else await host.ovs.vsctl(vsctlCmd.delBr(c.bridge));
  if (
    c.mode === 'vxlan' &&
    !others.some((o) => o.config.mode === 'vxlan' && o.config.vxlan!.underlay === c.vxlan!.underlay)
  )
    if ((await host.states.readUnderlays()).some((u) => u.nic === c.vxlan!.underlay))
      await releaseUnderlay(host, c.vxlan!.underlay);
}
