// The cluster as a drill sees it: the lab's cluster controllers reached over their unix sockets, each asked
// `GET /v1/cluster` (standbys answer it too). Reads and changes go to the one that answers as active; a killed one
// simply stops answering, and the next look finds the new active controller.
import { HttpClient } from '../../shared/http/client.js';
import { sleep } from '../../shared/time.js';
import { twoWriterVolumes } from '../storage-fence.js';
import {
  EventsSchema,
  GuestExecResultSchema,
  PlanResultSchema,
  StatusSchema,
  TaskAcceptedSchema,
  TaskViewSchema,
} from '../wire.js';
import { type ClusterView, ClusterViewSchema } from '../wire-cluster.js';
import type { ActiveController, ApplyRun, ClusterEvent, ClusterPort } from './types.js';

/** One request to a cluster controller (a dead one fails fast: its socket refuses). */
const REQUEST_TIMEOUT_MS = 3_000;
/** Between two looks at a running apply task. */
const TASK_POLL_MS = 200;
/** Looks at a task that fail in a row before it counts as lost with its controller. */
const TASK_LOST_AFTER = 5;

/** The lab's cluster through its controllers' sockets; `spec`/`source` are what plan and apply send. */
export class SocketCluster implements ClusterPort {
  private readonly clients: HttpClient[];

  constructor(
    sockets: readonly string[],
    private readonly spec: { text: string; source: string },
  ) {
    this.clients = sockets.map(
      (s) =>
        new HttpClient(`unix://${s}`, {
          name: `cluster controller ${s}`,
          protocol: 'api',
          timeoutMs: REQUEST_TIMEOUT_MS,
        }),
    );
  }

  /** Every controller's view (undefined where one does not answer). */
  private views(): Promise<Array<ClusterView | undefined>> {
    return Promise.all(
      this.clients.map((c) => c.get('/v1/cluster', ClusterViewSchema).catch(() => undefined)),
    );
  }

  /** The client of the controller that answers as active, with its view. */
  private async activeOne(): Promise<{ client: HttpClient; view: ClusterView } | undefined> {
    const views = await this.views();
    const i = views.findIndex((v) => v?.self.role === 'active');
    return i < 0 ? undefined : { client: this.clients[i]!, view: views[i]! };
  }

  private async activeClient(): Promise<HttpClient> {
    const a = await this.activeOne();
    if (!a) throw new Error('no cluster controller answers as active');
    return a.client;
  }

  async active(): Promise<ActiveController | undefined> {
    const a = await this.activeOne();
    return a && { name: a.view.self.name, pid: a.view.self.pid };
  }

  async liveHosts(): Promise<string[] | undefined> {
    // The active controller watches the leases; a standby's view is the fallback while there is none.
    const views = (await this.views()).filter((v): v is ClusterView => v !== undefined);
    const v = views.find((x) => x.self.role === 'active') ?? views[0];
    return v?.hosts.map((h) => h.host);
  }

  async members(): Promise<Array<{ name: string; healthy: boolean }> | undefined> {
    const views = (await this.views()).filter((v): v is ClusterView => v !== undefined);
    const v = views.find((x) => x.self.role === 'active') ?? views[0];
    return v?.members.map((m) => ({ name: m.name, healthy: m.healthy }));
  }

  async events(limit: number): Promise<ClusterEvent[]> {
    return (await this.activeClient()).get(`/v1/events?limit=${limit}`, EventsSchema);
  }

  async guestAnswers(vm: string, timeoutMs: number): Promise<boolean> {
    const client = await this.activeClient();
    const r = await client.post(
      `/v1/vms/${encodeURIComponent(vm)}/exec`,
      { argv: ['true'], timeoutMs: Math.max(100, Math.round(timeoutMs)) },
      GuestExecResultSchema,
      timeoutMs + REQUEST_TIMEOUT_MS,
    );
    return r.exitCode === 0;
  }

  async plan(): Promise<{ steps: number; text: string }> {
    const r = await (await this.activeClient()).post(
      '/v1/plan',
      { spec: this.spec.text, source: this.spec.source },
      PlanResultSchema,
      30_000,
    );
    return { steps: r.plan.steps.length, text: r.text };
  }

  async iscsiTwoWriters(): Promise<Array<{ pool: string; volume: string; addresses: string[] }>> {
    const status = await (await this.activeClient()).get('/v1/status', StatusSchema, 30_000);
    const reports = status.hosts.flatMap((h) => (h.report ? [h.report] : []));
    return twoWriterVolumes(reports).map((w) => ({ pool: w.pool, volume: w.volume, addresses: w.addresses }));
  }

  async startApply(): Promise<ApplyRun> {
    const client = await this.activeClient();
    const { taskId } = await client.post(
      '/v1/apply',
      { spec: this.spec.text, source: this.spec.source },
      TaskAcceptedSchema,
    );
    let markStarted: () => void = () => {};
    const started = new Promise<void>((r) => {
      markStarted = r;
    });
    const done = (async (): Promise<'succeeded' | 'failed' | 'cancelled' | 'lost'> => {
      let misses = 0;
      for (;;) {
        const t = await client.get(`/v1/tasks/${taskId}`, TaskViewSchema).catch(() => undefined);
        if (!t) {
          if (++misses >= TASK_LOST_AFTER) return 'lost';
        } else {
          misses = 0;
          if (t.progress.length) markStarted();
          if (t.state !== 'running') return t.state;
        }
        await sleep(TASK_POLL_MS);
      }
    })().finally(() => markStarted());
    return { started, done };
  }
}
