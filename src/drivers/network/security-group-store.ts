// The security groups a network backend applied, one file per group (`<stateDir>/<backend's dir>/<name>.json`), so
// `listSecurityGroups` answers after an agent restart and the backend can load them again (a reboot empties the
// nftables table; a restarted vswitchd, the flow tables). Shared by every backend. Written atomically; a file of another version, or for another name, reads as absent; a corrupt one, or a
// link, is an error for an operator to look at.
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { SECURITY_GROUP_MEMBERS_MAX, type SecurityGroupConfig } from '../../shared/security-groups.js';
import {
  jsonRecordNames,
  readJsonFile,
  STATE_FILE_MAX_BYTES,
  writeFileAtomic,
} from '../../shared/state-file.js';
import type { AppliedSecurityGroup } from './types.js';

const NAME = /^[a-z][a-z0-9-]{0,30}$/;

// The config was checked by the wire schema and the script builder before it was applied and written; only the
// envelope and what the readers use is checked again (the builder checks everything when it is loaded again).
const stateFile = z
  .object({
    version: z.number(),
    configHash: z.string().max(256),
    config: z
      .object({
        name: z.string(),
        rules: z.array(z.object({}).passthrough()),
        memberMacs: z.array(z.string()).max(SECURITY_GROUP_MEMBERS_MAX),
      })
      .passthrough(),
  })
  .passthrough();

/** The persisted security groups of one backend in one agent state directory. */
export class SecurityGroupStore {
  readonly dir: string;

  /**
   * `dirName`: the backend's own directory under `stateDir` (each backend keeps what it applied). `check`: the
   * backend's own validation of a group read back (a backend whose rule text is built from the file without further
   * checks passes one; it throws, naming the field, on a group it could not express safely).
   */
  constructor(
    stateDir: string,
    dirName: string,
    private readonly check?: (config: SecurityGroupConfig) => SecurityGroupConfig,
  ) {
    this.dir = join(stateDir, dirName);
  }

  private file(name: string): string {
    return join(this.dir, `${name}.json`);
  }

  /** The group as last applied; undefined when absent or unreadable as this version. */
  async read(name: string): Promise<AppliedSecurityGroup | undefined> {
    if (!NAME.test(name)) return undefined;
    // 8192 MACs and 128 rules fit well within 2 MiB.
    const s = await readJsonFile(this.file(name), stateFile, { maxBytes: 2 * STATE_FILE_MAX_BYTES });
    if (s?.version !== 1 || s.config.name !== name) return undefined;
    const config = s.config as unknown as SecurityGroupConfig;
    return { config: this.check ? this.check(config) : config, configHash: s.configHash };
  }

  /** Every persisted group by name, as the rule builders take them. */
  async byName(): Promise<Map<string, SecurityGroupConfig>> {
    return new Map((await this.readAll()).map((g) => [g.config.name, g.config]));
  }

  /** Every persisted group, by name. */
  async readAll(): Promise<AppliedSecurityGroup[]> {
    const groups = await Promise.all((await jsonRecordNames(this.dir)).map((n) => this.read(n)));
    return groups
      .filter((g): g is AppliedSecurityGroup => g !== undefined)
      .sort((a, b) => (a.config.name < b.config.name ? -1 : 1));
  }

  /** Persists a group just applied. */
  async write(g: AppliedSecurityGroup): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o750 });
    await writeFileAtomic(this.file(g.config.name), `${JSON.stringify({ version: 1, ...g })}\n`, {
      mode: 0o640,
    });
  }

  /** Forgets a group; missing is fine. */
  async remove(name: string): Promise<void> {
    if (NAME.test(name)) await rm(this.file(name), { force: true });
  }
}
