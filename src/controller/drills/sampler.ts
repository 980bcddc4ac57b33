// The drills' outside observer: every DRILL_SAMPLE_MS it lists the QEMU process of every VM of every lab host (from
// /proc, never asking vmlink) and checks, sample by sample, that no VM runs twice and that no disk has two writers.
// A QEMU is tied to its host and VM by its uid (each VM runs under its own, recorded by its host's agent in a
// root-owned file); its command line (which QEMU itself could rewrite) is only a cross-check.
import { labVmOwners, labVmProcesses, type VmOwner } from '../../lab/faults.js';
import { isRunning, processOpenFiles } from '../../shared/process.js';
import { sleep } from '../../shared/time.js';
import type { LabSpec, Spec } from '../../spec/schema.js';

/** Most examples of one kind of violation a sampler keeps (the count goes on). */
const EXAMPLES_MAX = 20;
/** Most samples a sampler keeps (a drill that runs longer keeps checking, but forgets its oldest samples). */
export const SAMPLES_KEPT = 20_000;
/** Most descriptors of one QEMU looked at per sample. */
const FDS_MAX = 512;

/** One VM's QEMU in a sample. */
export interface SampledProcess {
  host: string;
  vm: string;
  pid: number;
  startTime: number;
  /** The guest its command line names, when it names one. */
  argvGuest?: string;
  /** What it holds open for writing: `file:<dev>:<ino> <path>` for files, `volume:<pool>/<volume>` for network volumes. */
  writes: string[];
}

/** Every lab VM's QEMU at one instant (the end of one scan). */
export interface Sample {
  /** ms since the epoch, when the scan ended. */
  at: number;
  procs: SampledProcess[];
}

/** Takes one sample's processes. */
export type SampleSource = () => Promise<SampledProcess[]>;

/** A violation seen in one sample. */
export interface Violation {
  at: number;
  what: string;
  /** Whether it is certain: both processes were still running once the scan ended. */
  confirmed: boolean;
}

/** What the sampler saw, for the report. */
export interface SamplerSummary {
  everyMs: number;
  count: number;
  /** Longest time between two consecutive samples (a double run shorter than this could go unseen). */
  maxGapMs: number;
  /** Samples that failed (a /proc read refused); their instants are unobserved. */
  failed: number;
  vmTwice: { count: number; examples: Violation[] };
  diskTwoWriters: { count: number; examples: Violation[] };
  /** QEMU processes whose command line names another guest than their uid's VM. */
  argvMismatch: { count: number; examples: string[] };
  /** Distinct files held open for writing and network volumes seen held by a QEMU. */
  writablesSeen: number;
}

/** Checks one sample: VMs with two processes, and write targets with two holders. */
export function checkSample(s: Sample): { vmTwice: string[]; diskTwoWriters: string[] } {
  const byVm = new Map<string, SampledProcess[]>();
  const byDisk = new Map<string, SampledProcess[]>();
  for (const p of s.procs) {
    byVm.set(p.vm, [...(byVm.get(p.vm) ?? []), p]);
    for (const w of new Set(p.writes)) byDisk.set(w, [...(byDisk.get(w) ?? []), p]);
  }
  const where = (ps: SampledProcess[]) => ps.map((p) => `${p.vm} on ${p.host} (pid ${p.pid})`).join(' and ');
  return {
    vmTwice: [...byVm].filter(([, ps]) => ps.length > 1).map(([vm, ps]) => `${vm} ran twice: ${where(ps)}`),
    diskTwoWriters: [...byDisk]
      .filter(([, ps]) => ps.length > 1)
      .map(([disk, ps]) => `${disk.replace(/^file:\d+:\d+ /, '')} written by ${where(ps)}`),
  };
}

/** Samples lab VMs' QEMU processes in the background and checks each sample. */
export class Sampler {
  private readonly kept: Sample[] = [];
  private running = false;
  private loop: Promise<void> | undefined;
  private count = 0;
  private failed = 0;
  private maxGapMs = 0;
  private lastAt: number | undefined;
  private readonly vmTwice = { count: 0, examples: [] as Violation[] };
  private readonly diskTwoWriters = { count: 0, examples: [] as Violation[] };
  private readonly argvMismatch = { count: 0, examples: [] as string[] };
  private readonly disks = new Set<string>();
  private readonly waiters = new Set<(s: Sample) => void>();

  constructor(
    private readonly source: SampleSource,
    readonly everyMs: number,
    private readonly stillRunning: (p: SampledProcess) => Promise<boolean> = (p) =>
      isRunning({ pid: p.pid, startTime: p.startTime }),
  ) {}

  /** Starts sampling (no-op while it runs). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Stops sampling; resolves once the last scan has ended. */
  async stop(): Promise<SamplerSummary> {
    this.running = false;
    await this.loop;
    return this.summary();
  }

  /** The newest sample. */
  latest(): Sample | undefined {
    return this.kept.at(-1);
  }

  /** Samples taken at or after `after` (ms since the epoch), oldest first. */
  since(after: number): Sample[] {
    return this.kept.filter((s) => s.at >= after);
  }

  /**
   * The first sample taken at or after `after` for which `pick` returns something, with that value; undefined when
   * none came within `timeoutMs` (counted from now).
   */
  async waitFor<T>(
    pick: (s: Sample) => T | undefined,
    opts: { after: number; timeoutMs: number; signal?: AbortSignal },
  ): Promise<{ sample: Sample; value: T } | undefined> {
    for (const s of this.since(opts.after)) {
      const value = pick(s);
      if (value !== undefined) return { sample: s, value };
    }
    return new Promise((resolve, reject) => {
      const done = (r: { sample: Sample; value: T } | undefined) => {
        clearTimeout(timer);
        this.waiters.delete(onSample);
        opts.signal?.removeEventListener('abort', onAbort);
        resolve(r);
      };
      const onSample = (s: Sample) => {
        if (s.at < opts.after) return;
        const value = pick(s);
        if (value !== undefined) done({ sample: s, value });
      };
      const onAbort = () => {
        done(undefined);
        reject(opts.signal?.reason);
      };
      const timer = setTimeout(() => done(undefined), opts.timeoutMs);
      this.waiters.add(onSample);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** What the sampler saw so far. */
  summary(): SamplerSummary {
    return {
      everyMs: this.everyMs,
      count: this.count,
      maxGapMs: this.maxGapMs,
      failed: this.failed,
      vmTwice: structuredClone(this.vmTwice),
      diskTwoWriters: structuredClone(this.diskTwoWriters),
      argvMismatch: structuredClone(this.argvMismatch),
      writablesSeen: this.disks.size,
    };
  }

  /** Takes one sample now and checks it (the loop calls this; tests may too). */
  async sampleOnce(): Promise<Sample | undefined> {
    let procs: SampledProcess[];
    try {
      procs = await this.source();
    } catch {
      this.failed++;
      return undefined;
    }
    const s: Sample = { at: Date.now(), procs };
    await this.ingest(s);
    return s;
  }

  private async run(): Promise<void> {
    while (this.running) {
      const started = Date.now();
      await this.sampleOnce();
      const left = started + this.everyMs - Date.now();
      if (left > 0 && this.running) await sleep(left);
    }
  }

  private async ingest(s: Sample): Promise<void> {
    if (this.lastAt !== undefined) this.maxGapMs = Math.max(this.maxGapMs, s.at - this.lastAt);
    this.lastAt = s.at;
    this.count++;
    this.kept.push(s);
    if (this.kept.length > SAMPLES_KEPT) this.kept.shift();
    for (const p of s.procs) {
      for (const w of p.writes) this.disks.add(w);
      if (p.argvGuest !== undefined && p.argvGuest !== p.vm) {
        this.argvMismatch.count++;
        if (this.argvMismatch.examples.length < EXAMPLES_MAX)
          this.argvMismatch.examples.push(
            `pid ${p.pid} runs as ${p.vm}'s uid on ${p.host} but names guest ${p.argvGuest}`,
          );
      }
    }
    const found = checkSample(s);
    if (found.vmTwice.length || found.diskTwoWriters.length) {
      // Processes are read one after another: two copies are certain only if both still run after the scan.
      const alive = await Promise.all(s.procs.map((p) => this.stillRunning(p)));
      const confirmed = alive.every(Boolean);
      record(this.vmTwice, found.vmTwice, s.at, confirmed);
      record(this.diskTwoWriters, found.diskTwoWriters, s.at, confirmed);
    }
    for (const w of [...this.waiters]) w(s);
  }
}

function record(
  into: { count: number; examples: Violation[] },
  whats: string[],
  at: number,
  confirmed: boolean,
) {
  for (const what of whats) {
    into.count++;
    if (into.examples.length < EXAMPLES_MAX) into.examples.push({ at, what, confirmed });
  }
}

/** Pools whose volumes QEMU reaches over the network (no file of theirs is open on the VM's host). */
const NETWORK_POOLS = new Set(['iscsi', 'nfs']);

/**
 * The real source: every lab host's VM ids, then /proc. Each QEMU's writes are the regular files it holds open for
 * writing (device and inode, so one file under two paths is one disk) and the network volumes (iSCSI, NFS) its VM's
 * spec attaches, which QEMU reaches over sockets: those are attributed from the spec, so two live QEMU of one VM
 * count as two writers of each.
 */
export function labSampleSource(spec: Spec, lab: LabSpec): SampleSource {
  const poolType = new Map(spec.pools.map((p) => [p.name, p.type as string]));
  const networkVolumes = new Map(
    spec.vms.map((vm) => [
      vm.name,
      vm.disks
        .filter((d) => d.pool && NETWORK_POOLS.has(poolType.get(d.pool) ?? '') && !d.readOnly)
        .map((d) => `volume:${d.pool}/${d.volume ?? `${vm.name}-${d.name}`}`),
    ]),
  );
  let owners: Map<number, VmOwner> = new Map();
  return async () => {
    // The id files change when a VM is created or deleted: read every time (three small files).
    owners = await labVmOwners(lab);
    const procs = await labVmProcesses(owners);
    return Promise.all(
      procs.map(async (p): Promise<SampledProcess> => {
        const files = (await processOpenFiles(p.id.pid, FDS_MAX)).filter((f) => f.write);
        return {
          host: p.host,
          vm: p.vm,
          pid: p.id.pid,
          startTime: p.id.startTime,
          ...(p.argvGuest === undefined ? {} : { argvGuest: p.argvGuest }),
          writes: [
            ...files.map((f) => `file:${f.dev}:${f.ino} ${f.path}`),
            ...(networkVolumes.get(p.vm) ?? []),
          ],
        };
      }),
    );
  };
}
