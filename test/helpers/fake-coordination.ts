// A Coordination for controller unit tests: host leases set by the test (the real one is etcd-coordination.ts,
// exercised against etcd in integration tests). Elections are not simulated.

import type {
  Campaign,
  ControllerInfo,
  Coordination,
  EtcdMemberView,
  LiveHost,
} from '../../src/controller/cluster/types.js';
import type { HostLeaseValue } from '../../src/shared/cluster.js';
import { UnsupportedError } from '../../src/shared/errors.js';

/** Live hosts as the test says; `watchHosts` callers hear every change. */
export class FakeCoordination implements Coordination {
  private live: LiveHost[] = [];
  private readonly watchers = new Set<(hosts: LiveHost[]) => void>();

  /** Sets the live hosts; a host newly live is seen `ageMs` ago (default: old enough to be a restart target). */
  setLive(hosts: string[], ageMs = 60_000): void {
    const now = Date.now();
    this.live = hosts.map(
      (host) =>
        this.live.find((l) => l.host === host) ?? {
          host,
          value: {
            host,
            leaseId: '1',
            since: new Date(now - ageMs).toISOString(),
            heartbeatSeconds: 5,
          } satisfies HostLeaseValue,
          seenAt: now - ageMs,
        },
    );
    for (const w of this.watchers) w([...this.live]);
  }

  async liveHosts(): Promise<LiveHost[]> {
    return [...this.live];
  }

  watchHosts(onChange: (hosts: LiveHost[]) => void): () => void {
    this.watchers.add(onChange);
    onChange([...this.live]);
    return () => this.watchers.delete(onChange);
  }

  campaign(_self: ControllerInfo): Campaign {
    throw new UnsupportedError('the fake coordination runs no election');
  }

  async activeController(): Promise<ControllerInfo | undefined> {
    return undefined;
  }

  async members(): Promise<EtcdMemberView[]> {
    return [];
  }

  async close(): Promise<void> {
    this.watchers.clear();
  }
}
