// One linux network's realisation, converged one network at a time: its bridge, gateway address, member device
// (vxlan, vlan), uplink (bridge mode) and dnsmasq, undone on failure; and its removal. The driver runs these under
// its serial queue; the bulk forms (batch.ts) fall back to them.
import { readFile } from 'node:fs/promises';
import { type IpCommand, ipCmd } from '../../../exec/ip.js';
import type { IpLink } from '../../../exec/ip-parse.js';
import { ConflictError, NotFoundError } from '../../../shared/errors.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { Reverter } from '../../../shared/revert.js';
import type { OpContext } from '../types.js';
import type { BatchHost } from './batch.js';
import { dnsmasqPaths } from './dnsmasq.js';
import { enableIpForwarding, ipForwarding } from './forwarding.js';
import { enslaveUplink, releaseUplink } from './move.js';
import { memberDevice, VLAN_ALIAS_PREFIX, VXLAN_ALIAS_PREFIX } from './overlay.js';
import { deleteMember, ensureVlan, ensureVxlan, underlayFor } from './overlay-devices.js';
import { isRouted } from './ruleset.js';
import { ALIAS_PREFIX, type NetworkState } from './state.js';

/** What converging a network uses of the driver: what the batch paths use, and the table's reload. */
export interface ConvergeHost extends BatchHost {
  /** Brings the host's nftables table in line with the state files. */
  loadRules(): Promise<void>;
}

/** Takes network `name` down and forgets it; the caller reloads the nftables table. */
export async function removeNetwork(host: ConvergeHost, name: string, ctx?: OpContext): Promise<void> {
  ctx?.signal?.throwIfAborted();
  const state = await host.states.read(name);
  if (state) {
    ctx?.progress?.(`removing network ${name}`);
    await teardown(host, state);
  } else {
    // No state: still remove devices this driver labelled for the network (members first).
    const labels = [VXLAN_ALIAS_PREFIX + name, VLAN_ALIAS_PREFIX + name, ALIAS_PREFIX + name];
    const links = await host.ip.link.list();
    for (const label of labels) {
      for (const l of links.filter((x) => x.alias === label)) await host.ip.link.del(l.name);
    }
  }
  await host.states.remove(name);
}

/** Creates network `cfg` or converges it from any partial state; undoes this call's changes on failure. */
export async function convergeNetwork(
  host: ConvergeHost,
  cfg: NetworkConfig,
  configHash: string,
  ctx?: OpContext,
): Promise<void> {
  ctx?.signal?.throwIfAborted();
  const states = await host.states.readAll();
  const others = states.filter((s) => s.config.name !== cfg.name);
  const clash = others.find((s) => s.config.bridge === cfg.bridge);
  if (clash)
    throw new ConflictError(
      `bridge ${cfg.bridge} already belongs to network ${clash.config.name}`,
      `networks.${cfg.name}.bridge`,
    );
  const uplinkClash =
    cfg.mode === 'bridge' && others.find((s) => s.config.mode === 'bridge' && s.config.uplink === cfg.uplink);
  if (uplinkClash)
    throw new ConflictError(
      `uplink ${cfg.uplink} already belongs to network ${uplinkClash.config.name}`,
      `networks.${cfg.name}.uplink`,
    );
  const member = memberDevice(cfg);
  const memberClash = member && others.find((s) => memberDevice(s.config)?.name === member.name);
  if (member && memberClash)
    throw new ConflictError(
      `${member.kind} device ${member.name} already belongs to network ${memberClash.config.name}`,
      `networks.${cfg.name}.${member.kind}`,
    );
  const prev = states.find((s) => s.config.name === cfg.name);
  // A different bridge, mode or uplink cannot be converged in place: take the old realisation down first.
  if (
    prev &&
    (prev.config.bridge !== cfg.bridge || prev.config.mode !== cfg.mode || prev.config.uplink !== cfg.uplink)
  ) {
    ctx?.progress?.(`network ${cfg.name}: replacing ${prev.config.mode} on ${prev.config.bridge}`);
    if (prev.config.bridge !== cfg.bridge || prev.config.mode === 'bridge' || cfg.mode === 'bridge')
      await teardown(host, prev);
  }
  // A member device (vxlan, vlan) the new config no longer uses goes.
  const prevMember = prev && memberDevice(prev.config);
  if (prevMember && prevMember.name !== member?.name) await deleteMember(host.ip, prev.config);

  const r = new Reverter();
  try {
    const links = new Map((await host.ip.link.list()).map((l) => [l.name, l]));
    if (cfg.mode === 'bridge' && !links.has(cfg.uplink!)) throw new NotFoundError('uplink', cfg.uplink!);
    const vtep = cfg.mode === 'vxlan' ? await underlayFor(host.ip, cfg, links) : undefined;
    if (cfg.mode === 'vlan' && !links.has(cfg.vlan!.trunk)) throw new NotFoundError('trunk', cfg.vlan!.trunk);
    const created = await ensureBridge(host, cfg, links.get(cfg.bridge), r);
    let moved: NetworkState['moved'];
    let readdressed = false;
    const paths = dnsmasqPaths(host.states.networkDir(cfg.name));
    if (cfg.mode === 'bridge') {
      moved = await enslaveUplink(host.ip, cfg, links, r, prev?.moved);
    } else {
      if (cfg.mode === 'vxlan') await ensureVxlan(host.ip, host.br, cfg, links, vtep!, r, ctx);
      if (cfg.mode === 'vlan') await ensureVlan(host.ip, cfg, links, r);
      readdressed = await ensureGateway(host, cfg, r);
      if (isRouted(cfg) && !(await ipForwarding(host.runner, host.netns))) {
        await enableIpForwarding(host.runner, host.netns);
      }
    }
    ctx?.signal?.throwIfAborted();

    // The ruleset is built from persisted state: on failure restore the old state, then reload.
    r.add(() => host.loadRules());
    await host.states.write({ version: 1, config: cfg, configHash, ...(moved ? { moved } : {}) });
    r.add(async () => {
      if (prev) await host.states.write(prev);
      else await host.states.remove(cfg.name);
    });

    if (cfg.mode === 'bridge' || !cfg.subnet) await host.dnsmasq.stop(paths);
    else {
      const prevConf = await readFile(paths.conf, 'utf8').catch(() => undefined);
      // dnsmasq binds the bridge's addresses once: a re-created bridge or new address needs a restart.
      const did = await host.dnsmasq.ensure(cfg, paths, created || readdressed);
      if (did !== 'unchanged') {
        ctx?.progress?.(`network ${cfg.name}: dnsmasq ${did}`);
        r.add(async () => {
          await host.dnsmasq.stop(paths);
          if (prev && prevConf !== undefined && prev.config.mode !== 'bridge' && prev.config.subnet)
            await host.dnsmasq.ensure(prev.config, paths);
        });
      }
    }
    await host.loadRules();
    r.success();
  } finally {
    await r.fail();
  }
}

/** Creates or checks the bridge; true when it was created. */
async function ensureBridge(
  host: ConvergeHost,
  cfg: NetworkConfig,
  link: IpLink | undefined,
  r: Reverter,
): Promise<boolean> {
  const alias = ALIAS_PREFIX + cfg.name;
  if (!link) {
    r.add(() => host.ip.exec(ipCmd.linkDel(cfg.bridge), { allowFailure: true }));
    // `ip link add` ignores `alias`: label the bridge in the same batch that creates it.
    await host.ip.batch([
      ipCmd.linkAdd({ name: cfg.bridge, kind: 'bridge' }),
      ipCmd.linkSet(cfg.bridge, { mtu: cfg.mtu, alias, up: true }),
    ]);
    // Answer ARP only for addresses on this bridge: two overlays may share a CIDR, and the host must not claim
    // one overlay's gateway address on the other's bridge (arp_ignore=0 would).
    await host.runner.run(['sysctl', '-q', '-w', `net.ipv4.conf.${cfg.bridge}.arp_ignore=1`], {
      netns: host.netns,
    });
    return true;
  }
  if (link.kind !== 'bridge')
    throw new ConflictError(`device ${cfg.bridge} exists and is not a bridge`, `networks.${cfg.name}.bridge`);
  if (link.alias !== alias) {
    const owner = link.alias?.startsWith(ALIAS_PREFIX)
      ? `network ${link.alias.slice(ALIAS_PREFIX.length)}`
      : 'something other than vmlink';
    throw new ConflictError(
      `bridge ${cfg.bridge} exists and belongs to ${owner}`,
      `networks.${cfg.name}.bridge`,
    );
  }
  if (link.mtu !== cfg.mtu || !link.up) await host.ip.link.set(cfg.bridge, { mtu: cfg.mtu, up: true });
  return false;
}

/** Puts exactly the gateway address on the bridge (none without a subnet); true when addresses changed. */
async function ensureGateway(host: ConvergeHost, cfg: NetworkConfig, r: Reverter): Promise<boolean> {
  const s = cfg.subnet;
  const want = s ? `${s.gateway}/${s.prefixLength}` : undefined;
  const have = (await host.ip.addr.list({ dev: cfg.bridge, family: 'inet' })).filter(
    (a) => a.scope === 'global',
  );
  const cmds: IpCommand[] = have
    .filter((a) => `${a.local}/${a.prefixLen}` !== want)
    .map((a) => ipCmd.addrDel(cfg.bridge, `${a.local}/${a.prefixLen}`));
  if (want && !have.some((a) => `${a.local}/${a.prefixLen}` === want)) {
    cmds.push(ipCmd.addrAdd(cfg.bridge, want));
    r.add(() => host.ip.exec(ipCmd.addrDel(cfg.bridge, want), { allowFailure: true }));
  }
  await host.ip.batch(cmds);
  return cmds.length > 0;
}

/** Takes a network's realisation down (dnsmasq, uplink, member device, bridge); keeps its state files. */
async function teardown(host: ConvergeHost, state: NetworkState): Promise<void> {
  const c = state.config;
  await host.dnsmasq.stop(dnsmasqPaths(host.states.networkDir(c.name)));
  if (c.mode === 'bridge' && c.uplink) await releaseUplink(host.ip, c.bridge, c.uplink);
  await deleteMember(host.ip, c);
  const br = await host.ip.link.get(c.bridge);
  if (br && br.kind === 'bridge' && (br.alias === undefined || br.alias === ALIAS_PREFIX + c.name)) {
    await host.ip.link.del(c.bridge);
  }
}
