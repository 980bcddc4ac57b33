// What the linux backend persists under its agent's state directory: one `network.json` per network
// (`<stateDir>/network-linux/<name>/`) and the uplink's last applied config (`<stateDir>/uplink.json`).
// Every write goes through a temporary file and a rename, so a reader never sees half a file.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { IpRoute } from '../../../exec/ip-parse.js';
import type { NetworkConfig, UplinkConfig } from '../../../shared/model.js';
import { readJsonFile, writeFileAtomic } from '../../../shared/state-file.js';
import { NetworkStateFiles } from '../state-layout.js';

/** Bridges this driver creates carry the alias `vmlink:net:<network>` so it can find them again. */
export const ALIAS_PREFIX = 'vmlink:net:';

/** The linux backend's directory under the agent state directory: one directory per network. */
export const LINUX_NETWORKS_DIR = 'network-linux';

/** What the driver persists per network: the applied config, its hash, and what bridge mode moved. */
export interface NetworkState {
  version: 1;
  config: NetworkConfig;
  configHash: string;
  /** Bridge mode: the uplink's IPv4 addresses and routes moved onto the bridge. */
  moved?: { addrs: string[]; routes: IpRoute[] };
}

/** What the driver persists about the uplink: the config last applied through `configureUplink`, and its hash. */
export interface UplinkState {
  version: 1;
  config: UplinkConfig;
  configHash: string;
}

// The envelope is checked here; the config inside was checked by the spec and the wire schema before it was
// applied and written, so only what the readers rely on is checked again. Another version reads as absent.
const networkStateFile = z
  .object({
    version: z.number(),
    config: z.object({ name: z.string() }).passthrough(),
    configHash: z.string(),
    moved: z.object({ addrs: z.array(z.string()), routes: z.array(z.object({}).passthrough()) }).optional(),
  })
  .passthrough();
const uplinkStateFile = z
  .object({
    version: z.number(),
    config: z.object({ device: z.string() }).passthrough(),
    configHash: z.string(),
  })
  .passthrough();

/** The linux backend's state files under one agent state directory. */
export class LinuxNetworkStateStore extends NetworkStateFiles<NetworkState> {
  constructor(private readonly stateDir: string) {
    super(join(stateDir, LINUX_NETWORKS_DIR), 'network.json', async (path, name) => {
      const s = await readJsonFile(path, networkStateFile);
      return s?.version === 1 && s.config.name === name ? (s as unknown as NetworkState) : undefined;
    });
  }

  /** The uplink config last applied; undefined when none was. */
  async readUplink(): Promise<UplinkState | undefined> {
    const s = await readJsonFile(this.uplinkFile(), uplinkStateFile);
    return s?.version === 1 && s.config.device ? (s as unknown as UplinkState) : undefined;
  }

  /** Persists the uplink config just applied. */
  async writeUplink(s: UplinkState): Promise<void> {
    await mkdir(this.stateDir, { recursive: true, mode: 0o755 });
    await writeFileAtomic(this.uplinkFile(), `${JSON.stringify(s, null, 2)}\n`, { mode: 0o644 });
  }

  private uplinkFile(): string {
    return join(this.stateDir, 'uplink.json');
  }
}
