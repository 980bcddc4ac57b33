// The linux backend's security groups (driver side): applies the scripts of security-groups.ts, persists what it
// applied (sg-state.ts), and loads every persisted group again at agent start.
import { readFile } from 'node:fs/promises';
import type { Nft } from '../../../exec/nft.js';
import type { Runner } from '../../../exec/runner.js';
import { UnsupportedError } from '../../../shared/errors.js';
import { log } from '../../../shared/log.js';
import type { SecurityGroupConfig } from '../../../shared/security-groups.js';
import { SecurityGroupStore } from '../security-group-store.js';
import type { AppliedSecurityGroup, OpContext } from '../types.js';
import { deleteGroupScript, emptyGroupScript, ensureGroupScript } from './security-groups.js';

/** The linux backend's directory of applied security groups, under the agent state directory. */
export const LINUX_SECURITY_GROUPS_DIR = 'security-groups-linux';

const BRIDGE_NF = 'net.bridge.bridge-nf-call-iptables';

/** Security groups of one linux network driver (its namespace, its state directory). */
export class LinuxSecurityGroups {
  private readonly store: SecurityGroupStore;
  private bridgeNf: Promise<boolean> | undefined;

  constructor(
    private readonly runner: Runner,
    private readonly nft: Nft,
    private readonly netns: string | undefined,
    stateDir: string,
  ) {
    this.store = new SecurityGroupStore(stateDir, LINUX_SECURITY_GROUPS_DIR);
  }

  /**
   * Applies the group in one transaction touching only its own chains and set (the set by its difference from what
   * was applied before; in full when that does not apply, e.g. after a reboot emptied the table), then persists it.
   */
  async ensure(g: SecurityGroupConfig, configHash: string, ctx?: OpContext): Promise<void> {
    ctx?.signal?.throwIfAborted();
    await this.requireBridgeNetfilter();
    const prev = await this.store.read(g.name);
    const script = ensureGroupScript(g, prev?.config);
    try {
      await this.nft.load(script);
    } catch (e) {
      if (!prev) throw e;
      log.warn(
        { group: g.name, err: (e as Error).message },
        'security group delta did not apply; loading it whole',
      );
      await this.nft.load(ensureGroupScript(g));
    }
    await this.store.write({ config: g, configHash });
  }

  /**
   * Removes the group's chains and set; while something still refers to them (a port, another group's rule) they
   * are emptied instead, which allows nothing. Missing is fine.
   */
  async delete(name: string, ctx?: OpContext): Promise<void> {
    ctx?.signal?.throwIfAborted();
    try {
      await this.nft.load(deleteGroupScript(name));
    } catch (e) {
      log.warn(
        { group: name, err: (e as Error).message },
        'security group still referred to; emptied, not deleted',
      );
      await this.nft.load(emptyGroupScript(name));
    }
    await this.store.remove(name);
  }

  /** The groups applied here, with their hashes. */
  list(): Promise<AppliedSecurityGroup[]> {
    return this.store.readAll();
  }

  /** At agent start: loads every persisted group again (whole), before the ports of running VMs are re-ensured. */
  async restore(): Promise<void> {
    const groups = await this.store.readAll().catch((e: unknown) => {
      // An agent must start; its ports stay default-deny inbound until the groups are ensured again.
      log.warn({ err: (e as Error).message }, 'security groups not restored at start');
      return [];
    });
    for (const g of groups) {
      try {
        await this.nft.load(ensureGroupScript(g.config));
      } catch (e) {
        // Its ports stay default-deny inbound (their chains jump to an empty group) until the next ensure.
        log.warn({ group: g.config.name, err: (e as Error).message }, 'security group not restored at start');
      }
    }
  }

  /** Stateful groups read conntrack through br_netfilter: without bridge-nf-call-iptables=1 they cannot work. */
  private async requireBridgeNetfilter(): Promise<void> {
    this.bridgeNf ??= this.readBridgeNf().catch(() => false);
    if (!(await this.bridgeNf)) {
      this.bridgeNf = undefined;
      throw new UnsupportedError(
        `security groups need br_netfilter with ${BRIDGE_NF}=1 on this host (modprobe br_netfilter; sysctl -w ${BRIDGE_NF}=1)`,
        'securityGroups',
      );
    }
  }

  private async readBridgeNf(): Promise<boolean> {
    if (this.netns === undefined)
      return (await readFile(`/proc/sys/net/bridge/${BRIDGE_NF.split('.')[2]}`, 'utf8')).trim() === '1';
    const r = await this.runner.run(['sysctl', '-n', BRIDGE_NF], { netns: this.netns, allowFailure: true });
    return r.code === 0 && r.stdout.trim() === '1';
  }
}
