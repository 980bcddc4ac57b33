// Keeps the report cache (report-cache.ts) current: every host's report and guest addresses, asked in the background
// a bounded number at a time, once per heartbeat period; and the one way both reads and refreshes ask a host for
// its guests' addresses (one bulk call, else VM by VM for an agent that predates it).
import { log } from '../shared/log.js';
import { settleLimited } from '../shared/queue.js';
import type { Spec } from '../spec/schema.js';
import type { AgentFactory, AgentPort } from './hosts.js';
import { REPORT_TIMEOUT_MS } from './hosts.js';
import type { HostHealth } from './monitor.js';
import type { GuestAddresses, ReportCache } from './report-cache.js';

/** How long `vm list` waits for one guest agent (VM by VM, for agents without the bulk route). */
export const GUEST_ADDRESS_TIMEOUT_MS = 5_000;
/** Guest agents asked at once per host on the VM-by-VM path. */
const GUEST_FALLBACK_CONCURRENCY = 8;
/** Hosts the refresher asks at once. */
export const REPORT_REFRESH_CONCURRENCY = 32;
/** Rounds' periods an entry may be old before it is no longer served (a refresher that fell behind). */
const MAX_AGE_PERIODS = 6;
/**
 * Shortest period: a heartbeat of 1 s (the tests', a small cluster's) would otherwise have every agent gather its
 * report every second for reads nobody makes.
 */
export const REPORT_REFRESH_MIN_PERIOD_MS = 5_000;
/**
 * Guest addresses are asked every this many rounds (the first included), not every round: each ask holds every
 * running guest's agent channel for a moment (a `vm exec` waits behind it, up to its timeout while a guest boots), and
 * addresses seldom change; a read finds them younger than the cache's maximum age (MAX_AGE_PERIODS) all the same.
 */
export const GUEST_REFRESH_ROUNDS = 3;

/** Whether an address reaches beyond the guest's link: loopback and link-local ones say nothing to an operator. */
const reachableAddress = (a: string): boolean => !/^(127\.|169\.254\.|::1\/|fe80:)/i.test(a);

const addressMap = (ifs: Array<{ mac: string; addresses: string[] }>): Map<string, string[]> =>
  new Map(ifs.map((i) => [i.mac.toLowerCase(), i.addresses.filter(reachableAddress)]));

/**
 * The guest addresses of `running` VMs of one host, kept in `cache` under the generation current when asked:
 * one `GET /v1/guests/interfaces`, or (an older agent: 404) one request per VM, a few at a time.
 */
export async function hostGuests(
  agent: Pick<AgentPort, 'interfaces' | 'guestList'>,
  host: string,
  running: readonly string[],
  cache?: ReportCache,
): Promise<GuestAddresses> {
  const gen = cache?.generation(host);
  const out: GuestAddresses = new Map(running.map((vm) => [vm, undefined]));
  if (running.length === 0) {
    if (cache && gen !== undefined) cache.putGuests(host, out, gen);
    return out;
  }
  const bulk = agent.guestList ? await agent.guestList().catch(() => null) : undefined;
  if (bulk === null) return out; // the agent did not answer: nothing known, nothing kept
  if (bulk) {
    for (const v of bulk.vms) if (out.has(v.name) && v.interfaces) out.set(v.name, addressMap(v.interfaces));
  } else {
    const answers = await settleLimited(running, GUEST_FALLBACK_CONCURRENCY, (vm) =>
      withTimeout(agent.interfaces(vm), GUEST_ADDRESS_TIMEOUT_MS),
    );
    answers.forEach((a, i) => {
      if (a.status === 'fulfilled' && a.value) out.set(running[i]!, addressMap(a.value));
    });
  }
  if (cache && gen !== undefined) cache.putGuests(host, out, gen);
  return out;
}

/** `p`'s value, or undefined once `ms` passed. */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  p.catch(() => undefined);
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** What the refresher reads and asks. */
export interface RefresherDeps {
  cache: ReportCache;
  spec: () => Promise<Spec | undefined>;
  /** The controller's agent factory, with the cache's hook (a report fetched through it is kept). */
  agents: AgentFactory;
  /** The heartbeat monitor's view: hosts it found unreachable are left to it (reads ask them live). */
  health: () => Promise<Record<string, HostHealth>>;
  concurrency?: number;
}

/**
 * Refreshes every host of the applied spec once per period, `concurrency` hosts at a time (an active-only service:
 * while it runs, `status` and `vm list` are served from the cache; a standby controller, without it, asks live).
 */
export class ReportRefresher {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  /** How long the last round took (ms) and when it ended (epoch ms): for tests and the bench. */
  lastRound: { ms: number; hosts: number; endedAt: number } | undefined;

  constructor(private readonly deps: RefresherDeps) {}

  /** Starts refreshing every `periodMs` (first round at once); reads are served from the cache from now on. */
  start(heartbeatMs: number): void {
    const periodMs = Math.max(heartbeatMs, REPORT_REFRESH_MIN_PERIOD_MS);
    this.running = true;
    this.deps.cache.setMaxAge(Math.max(periodMs * MAX_AGE_PERIODS, 30_000));
    this.deps.cache.serving = true;
    const loop = async () => {
      await this.round().catch((e: unknown) =>
        log.warn({ err: (e as Error).message }, 'report refresh round failed'),
      );
      if (this.running) this.timer = setTimeout(() => void loop(), periodMs);
    };
    void loop();
  }

  /** Stops refreshing; reads ask the agents live again. */
  stop(): void {
    this.running = false;
    this.deps.cache.serving = false;
    clearTimeout(this.timer);
  }

  /** Rounds run so far (guest addresses on every GUEST_REFRESH_ROUNDS-th, the first included). */
  private rounds = 0;

  /** One round: each host's report, then, every GUEST_REFRESH_ROUNDS rounds, its running VMs' guest addresses. */
  async round(): Promise<void> {
    const started = Date.now();
    const withGuests = this.rounds++ % GUEST_REFRESH_ROUNDS === 0;
    const spec = await this.deps.spec();
    if (!spec) return;
    this.deps.cache.keepOnly(new Set(spec.hosts.map((h) => h.name)));
    const health = await this.deps.health();
    const hosts = spec.hosts.filter((h) => health[h.name]?.state !== 'unreachable').map((h) => h.name);
    await settleLimited(hosts, this.deps.concurrency ?? REPORT_REFRESH_CONCURRENCY, async (host) => {
      const agent = this.deps.agents(spec, host);
      const report = await agent.report(REPORT_TIMEOUT_MS);
      const running = report.vms.filter((v) => v.state === 'running').map((v) => v.name);
      if (withGuests) await hostGuests(agent, host, running, this.deps.cache);
    });
    this.lastRound = { ms: Date.now() - started, hosts: hosts.length, endedAt: Date.now() };
  }
}
