// What the OVS backend persists: `<stateDir>/network-ovs/<name>/ovs.json` per network and
// `<ovs dir>/underlay-<nic>.json` per underlay NIC it moved.
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { IpRoute } from '../../../exec/ip-parse.js';
import type { NetworkConfig } from '../../../shared/model.js';
import { readJsonFile, writeFileAtomic } from '../../../shared/state-file.js';
import { NetworkStateFiles } from '../state-layout.js';

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
export class OvsStateStore extends NetworkStateFiles<OvsNetworkState> {
  constructor(
    stateDir: string,
    private readonly ovsDir: string,
  ) {
    super(join(stateDir, OVS_NETWORKS_DIR), 'ovs.json', async (path, name) => {
      const s = await readJsonFile(path, networkStateFile);
      return s?.version === 1 && s.driver === 'ovs' && s.config.name === name
        ? (s as unknown as OvsNetworkState)
        : undefined;
    });
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
