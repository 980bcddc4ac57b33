// What the OVS backend persists: `<stateDir>/network-ovs/<name>/ovs.json` per network and `<ovs dir>/underlay-<nic>.json` per underlay NIC it moved.
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { IpRoute } from '../../../exec/ip.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { readJsonFile, writeFileAtomic } from '../../../shared/state-file.js';
import { NETWORK_NAME } from '../state-layout.js';

/** The OVS backend's directory under the agent state directory: one directory per network. */
export const OVS_NETWORKS_DIR = 'network-ovs';

/** What the driver persists per network. */
export interface OvsNetworkState {
  version: 1;
  driver: 'ovs';
  config: NetworkConfig;
  configHash: string;
}

/** The underlay moved onto an OVS bridge for the userspace datapath's VXLAN (one per underlay NIC). */
export interface UnderlayState {
  nic: string;
  bridge: string;
  /** IPv4 addresses and routes that were on the NIC. */
  addrs: string[];
  routes: IpRoute[];
}

// The envelope is checked here (the config inside passed the spec and wire schemas before it was written);
// another version or backend reads as absent.
const networkStateFile = z
  .object({
    version: z.number(),
    driver: z.string(),
    config: z.object({ name: z.string() }).passthrough(),
    configHash: z.string(),
  })
  .passthrough();
const underlayStateFile = z.object({
  nic: z.string(),
  bridge: z.string(),
  addrs: z.array(z.string()),
  routes: z.array(z.object({}).passthrough()),
});

/** The OVS backend's state files: networks under `<stateDir>/network-ovs/`, underlays under `ovsDir`. */
export class OvsStateStore {
  /** The directory of every network's directory. */
  readonly root: string;

  constructor(
    stateDir: string,
    private readonly ovsDir: string,
  ) {
    this.root = join(stateDir, OVS_NETWORKS_DIR);
  }

  /** The directory of one network's files (its state, its dnsmasq files). */
  networkDir(name: string): string {
    return join(this.root, name);
  }

  /** The persisted state of network `name`; undefined when absent or not the OVS backend's. */
  async read(name: string): Promise<OvsNetworkState | undefined> {
    const s = await readJsonFile(join(this.networkDir(name), 'ovs.json'), networkStateFile);
    return s?.version === 1 && s.driver === 'ovs' && s.config.name === name
      ? (s as unknown as OvsNetworkState)
      : undefined;
  }

  /** Every persisted OVS network's state, sorted by name. */
  async readAll(): Promise<OvsNetworkState[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const states = await Promise.all(names.filter((n) => NETWORK_NAME.test(n)).map((n) => this.read(n)));
    return states
      .filter((s): s is OvsNetworkState => s !== undefined)
      .sort((a, b) => (a.config.name < b.config.name ? -1 : 1));
  }

  /** Persists one network's state. */
  async write(s: OvsNetworkState): Promise<void> {
    const dir = this.networkDir(s.config.name);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await writeFileAtomic(join(dir, 'ovs.json'), `${JSON.stringify(s, null, 2)}\n`, { mode: 0o644 });
  }

  /** Removes one network's directory; missing is fine. */
  async remove(name: string): Promise<void> {
    await rm(this.networkDir(name), { recursive: true, force: true });
  }

  /** Every underlay NIC this backend moved onto an OVS bridge. */
  async readUnderlays(): Promise<UnderlayState[]> {
    let names: string[];
    try {
      names = await readdir(this.ovsDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: UnderlayState[] = [];
    for (const n of names.filter((x) => /^underlay-.+\.json$/.test(x))) {
      const u = await readJsonFile(join(this.ovsDir, n), underlayStateFile);
      if (u) out.push(u as unknown as UnderlayState);
    }
    return out;
  }

  /** Persists what was moved for one underlay NIC. */
  async writeUnderlay(u: UnderlayState): Promise<void> {
    await mkdir(this.ovsDir, { recursive: true, mode: 0o750 });
    await writeFileAtomic(join(this.ovsDir, `underlay-${u.nic}.json`), `${JSON.stringify(u, null, 2)}\n`, {
      mode: 0o644,
    });
  }

  /** Forgets one underlay NIC (after its addresses went back). */
  async removeUnderlay(nic: string): Promise<void> {
    await rm(join(this.ovsDir, `underlay-${nic}.json`), { force: true });
  }
}

/** VLANs of every vlan network on `bridge`, sorted (the trunk NIC carries exactly these). */
export function vlansOn(bridge: string, states: OvsNetworkState[]): number[] {
  return [
    ...new Set(
      states.filter((s) => s.config.bridge === bridge && s.config.vlan).map((s) => s.config.vlan!.id),
    ),
  ].sort((a, b) => a - b);
}
