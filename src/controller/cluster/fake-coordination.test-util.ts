// A Coordination for unit tests of the controller's active/standby logic: the test decides who wins the election
// (`elect`, `lose`) and what etcd would say. The real one (etcd-coordination.ts) is tested against a real etcd in
// test/integration/.
import type {
  Campaign,
  CampaignEvents,
  ControllerInfo,
  Coordination,
  EtcdMemberView,
  LiveHost,
} from './types.js';

/** A hand-driven election. */
export class FakeCoordination implements Coordination {
  active: ControllerInfo | undefined;
  members_: EtcdMemberView[] = [];
  hosts: LiveHost[] = [];
  /** When set, every etcd read fails with it (etcd down). */
  failure: Error | undefined;
  candidates: Array<{ self: ControllerInfo; events: CampaignEvents; resigned: boolean }> = [];
  closed = false;

  campaign(self: ControllerInfo, events: CampaignEvents): Campaign {
    const c = { self, events, resigned: false };
    this.candidates.push(c);
    return {
      resign: async () => {
        c.resigned = true;
        if (this.active?.id === self.id) this.active = undefined;
      },
    };
  }

  /** Makes the candidate `id` the active one (and tells it). */
  elect(id: string): void {
    const c = this.candidates.find((x) => x.self.id === id && !x.resigned);
    if (!c) throw new Error(`no candidate ${id}`);
    this.active = c.self;
    c.events.elected();
  }

  /** Tells the active candidate it lost (its election lease ended); etcd names no one until the next `elect`. */
  lose(reason = 'election lease ended'): void {
    const c = this.candidates.find((x) => x.self.id === this.active?.id);
    this.active = undefined;
    c?.events.lost(reason);
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  async liveHosts(): Promise<LiveHost[]> {
    this.check();
    return this.hosts;
  }
  watchHosts(onChange: (hosts: LiveHost[]) => void): () => void {
    onChange(this.hosts);
    return () => {};
  }
  async activeController(): Promise<ControllerInfo | undefined> {
    this.check();
    return this.active;
  }
  async members(): Promise<EtcdMemberView[]> {
    this.check();
    return this.members_;
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}
