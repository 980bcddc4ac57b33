// Typed wrapper over iproute2's `bridge` tool: forwarding database entries (the VXLAN overlays' flood lists and
// learned MACs) and bridge VLANs; argv builders, the `-json` parser and `bridge -batch -`. Every command goes through
// the one Runner.
import { InvalidRequestError } from '../shared/errors.js';
import { isVlanId, VLAN_ID_MAX, VLAN_ID_MIN } from '../shared/limits.js';
import { assertIfName, assertToken, renderBatch } from './ip.js';
import { parseArray, str } from './ip-parse.js';
import type { Runner, RunResult } from './runner.js';

/** One `bridge` command (iproute2's bridge tool) as argv without the leading `bridge` (a line of `bridge -batch`). */
export type BridgeCommand = readonly string[];

/** A forwarding database entry as parsed from `bridge -json fdb show`. */
export interface FdbEntry {
  mac: string;
  /** The device the entry is on (`ifname`). */
  dev?: string;
  /** Remote VTEP of a vxlan entry. */
  dst?: string;
  /** Bridge the entry belongs to (entries of the bridge itself, not of the device). */
  master?: string;
  flags: string[];
  state?: string;
}

/** The all-zeros MAC of VXLAN head-end replication entries (flood/unknown-unicast to every listed VTEP). */
export const FLOOD_MAC = '00:00:00:00:00:00';

const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

/** Argv builders (without the leading `bridge`) for the bridge tool commands vmlink uses. */
export const bridgeCmd = {
  /** `fdb append MAC dev DEV dst IP` (static; several entries per MAC allowed: head-end replication). */
  fdbAppend(dev: string, dst: string, mac: string = FLOOD_MAC): BridgeCommand {
    return fdbArgs('append', dev, dst, mac);
  },
  /**
   * `fdb replace MAC dev PORT master dynamic`: the bridge forwards MAC to PORT now, as if it had just learned it
   * there (it ages and is re-learned like any learned entry; it goes with the port).
   */
  fdbClaim(port: string, mac: string): BridgeCommand {
    assertIfName(port);
    if (!MAC.test(mac)) throw new InvalidRequestError(`invalid MAC address ${JSON.stringify(mac)}`);
    return ['fdb', 'replace', mac.toLowerCase(), 'dev', port, 'master', 'dynamic'];
  },
  /** `fdb del MAC dev DEV dst IP`. */
  fdbDel(dev: string, dst: string, mac: string = FLOOD_MAC): BridgeCommand {
    return fdbArgs('del', dev, dst, mac);
  },
  /** `vlan add dev DEV vid ID [pvid] [untagged]` (a port of a vlan_filtering bridge). */
  vlanAdd(dev: string, vid: number, opts: { pvid?: boolean; untagged?: boolean } = {}): BridgeCommand {
    assertIfName(dev);
    assertVid(vid);
    const a = ['vlan', 'add', 'dev', dev, 'vid', String(vid)];
    if (opts.pvid) a.push('pvid');
    if (opts.untagged) a.push('untagged');
    return a;
  },
  /** `vlan del dev DEV vid ID`. */
  vlanDel(dev: string, vid: number): BridgeCommand {
    assertIfName(dev);
    assertVid(vid);
    return ['vlan', 'del', 'dev', dev, 'vid', String(vid)];
  },
};

function fdbArgs(op: 'append' | 'del', dev: string, dst: string, mac: string): BridgeCommand {
  assertIfName(dev);
  if (!MAC.test(mac)) throw new InvalidRequestError(`invalid MAC address ${JSON.stringify(mac)}`);
  assertToken(dst);
  if (!/^[0-9A-Fa-f.:]+$/.test(dst))
    throw new InvalidRequestError(`invalid VTEP address ${JSON.stringify(dst)}`);
  return ['fdb', op, mac, 'dev', dev, 'dst', dst];
}

function assertVid(vid: number): void {
  if (!isVlanId(vid))
    throw new InvalidRequestError(`vlan id must be ${VLAN_ID_MIN}-${VLAN_ID_MAX}, got ${vid}`);
}

/** Parses `bridge -json fdb show [dev DEV]`. */
export function parseFdb(text: string): FdbEntry[] {
  return parseArray(text).map((o) => {
    const e: FdbEntry = {
      mac: String(o.mac ?? ''),
      flags: Array.isArray(o.flags) ? (o.flags as string[]) : [],
    };
    const dev = str(o.ifname);
    if (dev) e.dev = dev;
    const dst = str(o.dst);
    if (dst) e.dst = dst;
    const master = str(o.master);
    if (master) e.master = master;
    const state = str(o.state);
    if (state) e.state = state;
    return e;
  });
}

/** iproute2's `bridge` tool bound to one runner and (optionally) one network namespace. */
export class Bridge {
  constructor(
    private readonly runner: Runner,
    /** Namespace every command runs in; undefined = the caller's own. */
    readonly netns?: string,
  ) {}

  /** Runs one command (`bridge ARGS`). */
  exec(cmd: BridgeCommand, opts: { allowFailure?: boolean; json?: boolean } = {}): Promise<RunResult> {
    const argv = ['bridge', ...(opts.json ? ['-json'] : []), ...cmd];
    return this.runner.run(argv, { netns: this.netns, allowFailure: opts.allowFailure });
  }

  /** Runs commands with one `bridge -batch -` (stops at the first failing line); no-op when empty. */
  async batch(cmds: readonly BridgeCommand[]): Promise<void> {
    if (cmds.length === 0) return;
    await this.runner.run(['bridge', '-batch', '-'], { netns: this.netns, input: renderBatch(cmds) });
  }

  /** Forwarding database entries of one device. */
  async fdb(dev: string): Promise<FdbEntry[]> {
    assertIfName(dev);
    return parseFdb((await this.exec(['fdb', 'show', 'dev', dev], { json: true })).stdout);
  }

  /** Every device's entries in one command, by device (for reports over many overlays). */
  async fdbByDevice(): Promise<Map<string, FdbEntry[]>> {
    const byDev = new Map<string, FdbEntry[]>();
    for (const e of parseFdb((await this.exec(['fdb', 'show'], { json: true })).stdout)) {
      if (e.dev === undefined) continue;
      byDev.set(e.dev, [...(byDev.get(e.dev) ?? []), e]);
    }
    return byDev;
  }
}
