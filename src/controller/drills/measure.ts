// What every drill runner shares: waiting for the cluster to notice a failure, for a VM to run elsewhere and for its
// guest to answer (all measured from outside, against the sampler's samples and the controllers' API), the repair
// checks, the invariants and the report.
import {
  type DrillInvariantSchema,
  type DrillKind,
  type DrillReport,
  DrillReportSchema,
  type DrillVmSchema,
} from '../../shared/cluster.js';
import { pollUntil, sleep } from '../../shared/time.js';
import type { VmSpec } from '../../spec/schema.js';
import type { Sample, SamplerSummary } from './sampler.js';
import type { DrillEnv } from './types.js';

type DrillInvariant = import('zod').infer<typeof DrillInvariantSchema>;
type DrillVm = import('zod').infer<typeof DrillVmSchema>;

/** Looks at the storage hosts' iSCSI sessions come this many cluster polls apart (each asks every agent for its report). */
const TARGET_LOOK_POLLS = 20;

/** Seconds between two instants (ms), to 0.01 s. */
export const secondsBetween = (from: number, to: number): number => Math.round((to - from) / 10) / 100;

/** The hosts where `vm` runs in a sample. */
export const hostsOf = (s: Sample | undefined, vm: string): string[] =>
  (s?.procs ?? []).filter((p) => p.vm === vm).map((p) => p.host);

/** VMs HA keeps running: `ha.state: started` and desired running. */
export const haStartedVms = (vms: readonly VmSpec[]): VmSpec[] =>
  vms.filter((v) => v.ha?.state === 'started' && v.state === 'running');

/** Whether an event names `subject` as a whole word (a host or VM name). */
export function eventNames(message: string, subject: string): boolean {
  const esc = subject.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(^|[^\\w.-])${esc}($|[^\\w.-])`).test(message);
}

/** One drill in progress: its clock, notes and checks. */
export class DrillRun {
  readonly startedAt = new Date().toISOString();
  readonly notes: string[] = [];
  readonly invariants: DrillInvariant[] = [];
  readonly vms: DrillVm[] = [];
  restored = false;

  constructor(
    readonly env: DrillEnv,
    readonly kind: DrillKind,
    readonly target: string,
  ) {}

  /** A progress line. */
  say(line: string): void {
    this.env.progress(line);
  }

  /** A note for the report (and a progress line). */
  note(line: string): void {
    this.notes.push(line);
    this.say(line);
  }

  /** Target-side looks at iSCSI sessions (spec with iscsi pools only): how many, and what two writers were seen. */
  private readonly targets = {
    looks: 0,
    failed: 0,
    seen: [] as string[],
    running: false,
    loop: undefined as Promise<void> | undefined,
  };

  /** Looks at the storage hosts' iSCSI sessions every few seconds until the sampler's invariants are taken. */
  private watchTargets(): void {
    const { cluster, spec } = this.env;
    if (!cluster.iscsiTwoWriters || !spec.pools.some((p) => p.type === 'iscsi')) return;
    this.targets.running = true;
    this.targets.loop = (async () => {
      while (this.targets.running) {
        try {
          const two = await cluster.iscsiTwoWriters!();
          this.targets.looks++;
          for (const w of two)
            if (this.targets.seen.length < 10)
              this.targets.seen.push(`${w.pool}/${w.volume} has sessions from ${w.addresses.join(' and ')}`);
        } catch {
          this.targets.failed++;
        }
        await sleep(this.env.timing.pollMs * TARGET_LOOK_POLLS).catch(() => {});
      }
    })();
  }

  /** Starts the sampler and returns its first sample (the VMs' placement before the failure). */
  async firstSample(): Promise<Sample> {
    this.watchTargets();
    const { sampler } = this.env;
    const s = await sampler.sampleOnce();
    sampler.start();
    if (s) return s;
    const next = await sampler.waitFor((x) => x, { after: 0, timeoutMs: this.env.timing.recoveryMs });
    if (!next) throw new Error('the sampler could not list the lab hosts’ QEMU processes');
    return next.sample;
  }

  /** Hosts holding a lease, retried until a controller answers (undefined when none did in time). */
  async liveHosts(timeoutMs = this.env.timing.recoveryMs): Promise<string[] | undefined> {
    return pollUntil(() => this.env.cluster.liveHosts().catch(() => undefined), {
      timeoutMs,
      intervalMs: this.env.timing.pollMs,
      ...(this.env.signal ? { signal: this.env.signal } : {}),
    });
  }

  /** Throws unless every host of the spec holds its lease (a drill starts from a healthy cluster). */
  async requireHealthy(): Promise<void> {
    const live = await this.liveHosts();
    if (!live) throw new Error('no cluster controller answers: is the lab up and the spec applied?');
    const missing = this.env.spec.hosts
      .filter((h) => h.role !== 'storage' && !live.includes(h.name))
      .map((h) => h.name);
    if (missing.length)
      throw new Error(
        `the cluster is not healthy before the drill: ${missing.join(', ')} hold(s) no lease; wait or repair first`,
      );
  }

  /**
   * When the cluster saw `host` fail: the time of the first `ha.host-failed` event naming it after `t0`, else the
   * first poll that found its lease gone (polled every `pollMs` until `timeoutMs`). Undefined: not seen.
   */
  async detectHostFailure(host: string, t0: number): Promise<{ at: number; how: string } | undefined> {
    const { timing } = this.env;
    const gone = await pollUntil(
      async () => {
        const live = await this.env.cluster.liveHosts().catch(() => undefined);
        if (live && !live.includes(host)) return Date.now();
        return (await this.eventAfter('ha.host-failed', host, t0)) ?? undefined;
      },
      { timeoutMs: timing.recoveryMs, intervalMs: timing.pollMs },
    );
    if (gone === undefined) return undefined;
    // The HA manager's event carries the instant it decided; a poll only bounds it.
    const ev = await pollUntil(() => this.eventAfter('ha.host-failed', host, t0), {
      timeoutMs: Math.min(5_000, timing.recoveryMs),
      intervalMs: timing.pollMs,
    });
    return ev !== undefined
      ? { at: ev, how: 'ha.host-failed event' }
      : { at: gone, how: 'lease key gone (poll; no ha.host-failed event seen)' };
  }

  /** The time (ms) of the first event of `kind` naming `subject` at or after `t0`, if any. */
  async eventAfter(kind: string, subject: string, t0: number): Promise<number | undefined> {
    const evs = await this.env.cluster.events(200).catch(() => []);
    const times = evs
      .filter((e) => e.kind === kind && eventNames(e.message, subject))
      .map((e) => Date.parse(e.time))
      .filter((t) => Number.isFinite(t) && t >= t0);
    return times.length ? Math.min(...times) : undefined;
  }

  /** The first sample after `t0` with `vm` running on a host other than `from`: where and when. */
  async waitRestarted(
    vm: string,
    from: string,
    t0: number,
  ): Promise<{ host: string; at: number } | undefined> {
    const r = await this.env.sampler.waitFor(
      (s) => s.procs.find((p) => p.vm === vm && p.host !== from)?.host,
      { after: t0, timeoutMs: this.env.timing.recoveryMs, ...this.signalOpt() },
    );
    return r && { host: r.value, at: r.sample.at };
  }

  /** The first sample after `t0` without `vm` running on `host`: when its QEMU there was gone. */
  async waitGone(vm: string, host: string, t0: number): Promise<number | undefined> {
    const r = await this.env.sampler.waitFor(
      (s) => (s.procs.some((p) => p.vm === vm && p.host === host) ? undefined : true),
      { after: t0, timeoutMs: this.env.timing.recoveryMs, ...this.signalOpt() },
    );
    return r?.sample.at;
  }

  /** When `vm`'s guest agent first answered, trying until the recovery deadline counted from `t0`. */
  async waitGuest(vm: string, t0: number): Promise<number | undefined> {
    const deadline = t0 + this.env.timing.recoveryMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      const ok = await this.env.cluster
        .guestAnswers(vm, Math.min(5_000, Math.max(500, left)))
        .catch(() => false);
      if (ok) return Date.now();
      await sleep(Math.min(this.env.timing.pollMs * 2, Math.max(0, deadline - Date.now())), this.env.signal);
    }
  }

  /**
   * Measures each VM that ran on `from` (HA `started` ones are expected elsewhere): restart, then guest answer.
   * The VMs are followed concurrently, as the HA manager restarts them.
   */
  async followRestarts(victims: readonly string[], from: string, t0: number, opts: { fence?: boolean } = {}) {
    const started = new Set(haStartedVms(this.env.spec.vms).map((v) => v.name));
    await Promise.all(
      victims.map(async (vm) => {
        const row: DrillVm & { stoppedS?: number } = { vm, from };
        this.vms.push(row);
        if (opts.fence) {
          const gone = await this.waitGone(vm, from, t0);
          if (gone !== undefined) {
            row.stoppedS = secondsBetween(t0, gone);
            this.say(
              `${vm}: its QEMU on ${from} stopped after ${row.stoppedS} s (the isolated host fenced it)`,
            );
          } else
            this.note(`${vm}: its QEMU on ${from} was still running at the deadline (no self-fence seen)`);
        }
        if (!started.has(vm)) {
          this.note(`${vm} has no \`ha: { state: started }\`: HA leaves it down with its host`);
          return;
        }
        const r = await this.waitRestarted(vm, from, t0);
        if (!r) {
          this.note(`${vm} did not run on another host within ${this.env.timing.recoveryMs / 1000} s`);
          return;
        }
        row.to = r.host;
        row.restartedS = secondsBetween(t0, r.at);
        this.say(`${vm}: QEMU running on ${r.host} after ${row.restartedS} s`);
        const g = await this.waitGuest(vm, t0);
        if (g !== undefined) {
          row.guestAnswersS = secondsBetween(t0, g);
          this.say(`${vm}: guest agent answers after ${row.guestAnswersS} s`);
        } else this.note(`${vm}: its guest agent did not answer within the recovery time`);
      }),
    );
  }

  /** Waits until `host` holds a lease again; records whether it did. */
  async waitLeaseBack(host: string): Promise<boolean> {
    const back = await pollUntil(
      async () =>
        (await this.env.cluster.liveHosts().catch(() => undefined))?.includes(host) ? true : undefined,
      { timeoutMs: this.env.timing.restoreMs, intervalMs: this.env.timing.pollMs },
    );
    if (!back) this.note(`${host} did not hold a lease again within ${this.env.timing.restoreMs / 1000} s`);
    return back === true;
  }

  /** `converged`: the plan of the spec comes out empty (polled until the restore deadline). */
  async checkConverged(what = 'a plan of the spec is empty'): Promise<void> {
    let last: { steps: number; text: string } | undefined;
    let error: string | undefined;
    const ok = await pollUntil(
      async () => {
        try {
          last = await this.env.cluster.plan();
          error = undefined;
          return last.steps === 0;
        } catch (e) {
          error = errorMessage(e);
          return false;
        }
      },
      { timeoutMs: this.env.timing.restoreMs, intervalMs: Math.max(this.env.timing.pollMs, 1_000) },
    );
    this.invariants.push({
      name: 'converged',
      ok: ok === true,
      detail: ok
        ? what
        : error
          ? `the plan failed: ${error}`
          : `${last?.steps ?? '?'} step(s) left: ${firstLines(last?.text ?? '', 6)}`,
    });
  }

  /** The sampler's invariants, and `none-lost` against its last sample. */
  async samplerInvariants(): Promise<SamplerSummary> {
    const { sampler, spec } = this.env;
    // One more sample after everything settled: `none-lost` looks at the end state.
    await sampler.sampleOnce();
    const sum = await sampler.stop();
    this.targets.running = false;
    await this.targets.loop;
    const t = this.targets;
    const targetSide =
      t.looks || t.failed
        ? `; iSCSI targets' sessions looked at ${t.looks} time(s)${t.failed ? ` (${t.failed} look(s) failed)` : ''}${t.seen.length ? `: ${t.seen.join('; ')}` : ', never open from two addresses'}`
        : '';
    const unobserved = sum.failed ? `; ${sum.failed} sample(s) failed` : '';
    const gap = `every ${sum.everyMs} ms, ${sum.count} samples, longest gap ${sum.maxGapMs} ms${unobserved}`;
    this.invariants.push({
      name: 'no-vm-twice',
      ok: sum.vmTwice.count === 0,
      detail:
        sum.vmTwice.count === 0
          ? `never two QEMU processes of one VM in one sample (${gap})`
          : `${sum.vmTwice.count} time(s): ${sum.vmTwice.examples
              .slice(0, 3)
              .map((v) => `${v.what}${v.confirmed ? '' : ' (one exited during the scan)'}`)
              .join('; ')}`,
    });
    this.invariants.push({
      name: 'no-disk-two-writers',
      ok: sum.diskTwoWriters.count === 0 && t.seen.length === 0,
      detail:
        (sum.diskTwoWriters.count === 0
          ? `no file open for writing and no iSCSI/NFS volume of the spec held by two QEMU processes at once (${sum.writablesSeen} seen)`
          : `${sum.diskTwoWriters.count} time(s): ${sum.diskTwoWriters.examples
              .slice(0, 3)
              .map((v) => v.what)
              .join('; ')}`) + targetSide,
    });
    if (sum.argvMismatch.count)
      this.note(
        `QEMU command lines that name another guest than their uid's VM: ${sum.argvMismatch.examples.join('; ')}`,
      );
    const last = sampler.latest();
    const lost = haStartedVms(spec.vms)
      .map((v) => v.name)
      .filter((vm) => hostsOf(last, vm).length === 0);
    this.invariants.push({
      name: 'none-lost',
      ok: lost.length === 0,
      detail: lost.length
        ? `not running at the end: ${lost.join(', ')}`
        : `every HA-started VM runs at the end (${haStartedVms(spec.vms).length})`,
    });
    return sum;
  }

  /** The report, checked against its schema. */
  report(fields: { detectedS?: number; takeoverS?: number; summary: SamplerSummary }): DrillReport {
    return DrillReportSchema.parse({
      kind: this.kind,
      target: this.target,
      startedAt: this.startedAt,
      ...(fields.detectedS === undefined ? {} : { detectedS: fields.detectedS }),
      ...(fields.takeoverS === undefined ? {} : { takeoverS: fields.takeoverS }),
      vms: this.vms,
      invariants: this.invariants,
      samples: { everyMs: fields.summary.everyMs, count: fields.summary.count },
      restored: this.restored,
      notes: this.notes,
    });
  }

  /** Runs a repair step; a failure is a note (and the lab is not restored), never a lost report. */
  async repair(what: string, step: () => Promise<unknown>): Promise<boolean> {
    try {
      const ok = (await step()) !== false;
      if (!ok) this.note(`repair incomplete: ${what}`);
      return ok;
    } catch (e) {
      this.note(`repair failed: ${what}: ${errorMessage(e)}`);
      return false;
    }
  }

  private signalOpt(): { signal?: AbortSignal } {
    return this.env.signal ? { signal: this.env.signal } : {};
  }
}

/** An error's message for a note. */
const errorMessage = (e: unknown): string => (e instanceof Error ? e.message : String(e));

function firstLines(text: string, n: number): string {
  const lines = text.split('\n').filter((l) => l.trim());
  return lines.slice(0, n).join(' | ') + (lines.length > n ? ' | ...' : '');
}
