// What a cluster agent does to its VMs when ownership is in doubt (docs/ha.md, "Self-fencing"): stop a VM that
// started as the lease ended, stop every VM when the watchdog fires, stop VMs owned elsewhere at start.
import type { HypervisorDriver } from '../../drivers/hypervisor/types.js';
import type { LeaseStatus } from '../../shared/cluster.js';
import { FencedError } from '../../shared/errors.js';
import { log } from '../../shared/log.js';
import type { ClusterMembership } from './types.js';

/** A host's VMs under its cluster membership (none: a host outside a cluster, where nothing is ever fenced). */
export class VmFencing {
  constructor(
    private readonly host: string,
    private readonly hypervisor: HypervisorDriver,
    private readonly cluster: ClusterMembership | undefined,
  ) {}

  /**
   * After a VM started or took new disks: if the lease was lost meanwhile (a fence may have listed the running VMs
   * before this one ran), stop it now and refuse.
   */
  async assertStillHeld(name: string): Promise<void> {
    const cluster = this.cluster;
    if (!cluster) return;
    const s = cluster.status();
    if (s.mode === 'held') return;
    await this.killVm(name).catch((e) =>
      log.error(
        { vm: name, err: (e as Error).message },
        'cluster: could not stop a VM started as the lease ended',
      ),
    );
    throw new FencedError(
      `VM ${name} was stopped again on host ${this.host}: the host lost its cluster lease while it started (lease ${s.mode})`,
      `vm/${name}`,
    );
  }

  /**
   * The cluster watchdog's action: stops every running VM of this host at once (QMP quit, then SIGKILL; no guest
   * shutdown), all together and outside the action queue (a long action must not delay it). Resolves the names of
   * the VMs stopped; a VM that could not be stopped is logged and left out.
   */
  async fenceVms(reason: string): Promise<string[]> {
    const started = Date.now();
    const vms = (await this.hypervisor.list())
      .filter((v) => v.state === 'running' || v.state === 'paused')
      .map((v) => v.name);
    log.error({ host: this.host, reason, vms }, 'FENCING: stopping every VM of this host');
    const results = await Promise.all(
      vms.map(async (name) => {
        try {
          await this.killVm(name);
          return name;
        } catch (e) {
          log.error({ vm: name, err: (e as Error).message }, 'FENCING: could not stop VM');
          return undefined;
        }
      }),
    );
    const stopped = results.filter((n): n is string => n !== undefined);
    log.error({ host: this.host, stopped, ms: Date.now() - started }, 'FENCED: VMs stopped');
    return stopped;
  }

  /**
   * At start in a cluster: stops at once the running VMs whose owner record names another host (this agent was away
   * past its lease, and the HA manager started them elsewhere). Resolves their names.
   */
  async stopVmsOwnedElsewhere(): Promise<string[]> {
    const cluster = this.cluster;
    if (!cluster) return [];
    const running = (await this.hypervisor.list())
      .filter((v) => v.state === 'running' || v.state === 'paused')
      .map((v) => v.name);
    const foreign = running.length ? await cluster.ownedElsewhere(running) : [];
    for (const name of foreign) {
      log.error(
        { vm: name, host: this.host },
        'FENCING: VM runs here but its owner record names another host',
      );
      await this.killVm(name).catch((e) =>
        log.error({ vm: name, err: (e as Error).message }, 'FENCING: could not stop VM'),
      );
    }
    return foreign;
  }

  private killVm(name: string): Promise<unknown> {
    const h = this.hypervisor;
    return h.kill ? h.kill(name) : h.stop(name, { force: true });
  }

  /**
   * This host's cluster lease as it sees it (`off` without a cluster); with `verifyMs`, after a renewal bounded by
   * it (what peers ask for: see ClusterMembership.verifiedStatus).
   */
  async leaseStatus(verifyMs?: number): Promise<LeaseStatus> {
    const c = this.cluster;
    if (c && verifyMs !== undefined) return c.verifiedStatus(verifyMs);
    return (
      c?.status() ?? {
        host: this.host,
        mode: 'off',
        etcd: 'unreachable',
        fencedVms: [],
      }
    );
  }
}
