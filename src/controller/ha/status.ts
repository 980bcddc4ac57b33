// HA's state as users see it (`GET /v1/ha`, `vmlink ha status`) and maintenance on and off.
import {
  type MaintenanceRecord,
  maintenanceKey,
  type UserStopRecord,
  userStopKey,
} from '../../shared/cluster.js';
import { InvalidRequestError, NotFoundError } from '../../shared/errors.js';
import type { Coordination } from '../cluster/types.js';
import type { OwnershipStore } from '../ownership.js';
import type { SpecStore } from '../spec-store.js';
import type { Store } from '../store/types.js';
import type { HaView, MaintenanceAnswer } from '../wire-ha.js';

/** Events read to find the newest HA decisions. */
const EVENTS_SCANNED = 1_000;

/** Reads HA's state and switches maintenance. */
export class HaControl {
  constructor(
    private readonly store: Store,
    private readonly specs: SpecStore,
    private readonly ownership: OwnershipStore,
    private readonly coordination: Coordination | undefined,
  ) {}

  /** The cluster's VMs (owner, token, policy), compute hosts (lease, maintenance) and the last `decisions` HA events. */
  async view(decisions: number): Promise<HaView> {
    const spec = (await this.specs.current())?.spec;
    const owners = new Map((await this.ownership.list()).map((o) => [o.vm, o]));
    const stops = new Map(
      (await this.store.list<UserStopRecord>(userStopKey(''))).map((r) => [r.value.vm, r.value]),
    );
    const maint = new Map(
      (await this.store.list<MaintenanceRecord>(maintenanceKey(''))).map((r) => [r.value.host, r.value]),
    );
    const live = this.coordination ? await this.coordination.liveHosts() : undefined;
    const now = Date.now();
    const events = (await this.store.events(EVENTS_SCANNED)).filter((e) => e.kind.startsWith('ha.'));
    return {
      cluster: spec?.cluster !== undefined,
      vms: (spec?.vms ?? []).map((v) => {
        const o = owners.get(v.name);
        const stop = stops.get(v.name);
        return {
          name: v.name,
          ...(o
            ? {
                owner: {
                  host: o.host,
                  token: o.token,
                  reason: o.reason,
                  since: o.since,
                  ...(o.from ? { from: o.from } : {}),
                },
              }
            : {}),
          policy: v.ha?.state ?? 'disabled',
          priority: v.ha?.priority ?? 0,
          ...(v.ha?.group ? { group: v.ha.group } : {}),
          desiredState: stop ? 'stopped' : v.state,
          ...(stop ? { userStopped: { by: stop.by, at: stop.at } } : {}),
        };
      }),
      hosts: (spec?.hosts ?? [])
        .filter((h) => h.role !== 'storage')
        .map((h) => {
          const l = live?.find((x) => x.host === h.name);
          const m = maint.get(h.name);
          return {
            name: h.name,
            ...(live ? { live: l !== undefined } : {}),
            ...(l ? { leaseAgeMs: Math.max(0, now - l.seenAt) } : {}),
            ...(m ? { maintenance: { since: m.since, by: m.by } } : {}),
          };
        }),
      decisions: decisions ? events.slice(-decisions) : [],
    };
  }

  /**
   * Puts `host` in maintenance (HA moves its VMs elsewhere and places nothing there) or takes it out; says which
   * VMs move and which stay.
   */
  async maintenance(host: string, on: boolean, by: string): Promise<MaintenanceAnswer> {
    const spec = (await this.specs.current())?.spec;
    const h = spec?.hosts.find((x) => x.name === host);
    if (!spec || !h) throw new NotFoundError('host', host);
    if (!spec.cluster)
      throw new InvalidRequestError(
        `maintenance is for clusters: the applied spec has no cluster: section, so nothing would move off ${host}`,
      );
    if (h.role === 'storage')
      throw new InvalidRequestError(`host ${host} is a storage host: it runs no VMs to move`);
    if (on)
      await this.store.put(maintenanceKey(host), {
        host,
        since: new Date().toISOString(),
        by,
      } satisfies MaintenanceRecord);
    else await this.store.delete(maintenanceKey(host));
    const owned = (await this.ownership.list()).filter((o) => o.host === host).map((o) => o.vm);
    const policy = new Map(spec.vms.map((v) => [v.name, v.ha?.state ?? 'disabled']));
    const moves = on ? owned.filter((vm) => policy.get(vm) !== 'disabled') : [];
    const stays = owned.filter((vm) => !moves.includes(vm));
    await this.store.appendEvent(
      'ha.maintenance',
      `host ${host} ${on ? 'on' : 'off'} by ${by}${on ? `: moving ${moves.join(', ') || 'nothing'}` : ''}`,
    );
    return { host, on, moves, stays };
  }
}
