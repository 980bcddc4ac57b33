// Host tuning on the agent (docs/observability.md, "Host tuning"): what the host's network namespace can set and
// has now (its capability report), and `hosts[].tuning` applied commit-confirmed like the uplink. Only the
// per-namespace TCP keys of TUNING_SYSCTLS are ever written: never a machine-wide one.
import { readlink } from 'node:fs/promises';
import type { OpContext } from '../drivers/network/types.js';
import { modprobe } from '../exec/modprobe.js';
import type { Runner } from '../exec/runner.js';
import { Sysctl } from '../exec/sysctl.js';
import { UnsupportedError } from '../shared/errors.js';
import { log } from '../shared/log.js';
import { Reverter } from '../shared/revert.js';
import {
  describeTuning,
  TUNING_FIELDS,
  type TuningCapabilities,
  type TuningField,
  type TuningValues,
} from '../shared/tuning.js';
import { tuningRefusal } from '../spec/admission-tuning.js';
import { type HostTuningSpec, TUNING_SYSCTLS } from '../spec/schema-observe.js';
import type { ConfirmManager } from './confirm.js';
import { CONGESTION_NAME, TUNING_LIST_MAX } from './wire-tuning.js';

const AVAILABLE = 'net.ipv4.tcp_available_congestion_control';
const ALLOWED = 'net.ipv4.tcp_allowed_congestion_control';

/** Congestion controls Linux ships as modules (net/ipv4/tcp_*.c): the names the report asks `modprobe -n` about. */
export const KNOWN_CONGESTION = [
  'bbr',
  'bic',
  'cdg',
  'cubic',
  'dctcp',
  'highspeed',
  'htcp',
  'hybla',
  'illinois',
  'lp',
  'nv',
  'scalable',
  'vegas',
  'veno',
  'westwood',
  'yeah',
] as const;

/** Options of a `HostTuner`. */
export interface HostTunerOptions {
  host: string;
  runner: Runner;
  /** Namespace the sysctls live in; undefined = the agent's own (a lab agent runs inside its host's). */
  netns?: string;
  /** Whether that namespace is the machine's root one (default: the agent's namespace is that of pid 1). */
  rootNamespace?: () => Promise<boolean>;
}

/** A tuning action as the agent's wire carries it. */
export interface TuningAction {
  tuning: HostTuningSpec;
  confirm?: { id: string; timeoutMs: number } | undefined;
}

/** Reads and sets the host's TCP tuning through sysctl and modprobe (the exec layer). */
export class HostTuner {
  private readonly sysctl: Sysctl;
  private loadable: Promise<string[]> | undefined;

  constructor(private readonly opts: HostTunerOptions) {
    this.sysctl = new Sysctl(opts.runner, opts.netns);
  }

  /** What the namespace can set and has now, read in one `sysctl` call (the loadable modules once per agent). */
  async observe(): Promise<TuningCapabilities> {
    const keys = [...TUNING_FIELDS.map((f) => TUNING_SYSCTLS[f]), AVAILABLE, ALLOWED];
    const [values, root] = await Promise.all([this.sysctl.getMany(keys), this.rootNamespace()]);
    const available = names(values.get(AVAILABLE));
    const allowed = names(values.get(ALLOWED));
    const current: TuningValues = {};
    const present: TuningField[] = [];
    for (const f of TUNING_FIELDS) {
      const raw = values.get(TUNING_SYSCTLS[f]);
      const v = raw === undefined ? undefined : parseValue(f, raw);
      if (v === undefined) continue;
      present.push(f);
      Object.assign(current, { [f]: v });
    }
    // Outside the root namespace the kernel refuses (EPERM) a default the machine does not allow there.
    const settable = root
      ? [...new Set([...available, ...(await this.loadableModules(available))])]
      : available.filter((n) => allowed.includes(n));
    return {
      congestion: settable.sort(),
      congestionAvailable: available,
      congestionAllowed: allowed,
      rootNamespace: root,
      keys: present,
      current,
    };
  }

  /**
   * Refuses `want` (UnsupportedError naming the host and why) unless this namespace can set all of it; in the root
   * namespace a congestion control not loaded yet is loaded first (`modprobe tcp_NAME`). Changes no setting.
   */
  async check(want: HostTuningSpec): Promise<TuningCapabilities> {
    let caps = await this.observe();
    const cc = want.congestion;
    // Elsewhere a module loaded now could not be set (the machine does not allow it there): nothing is loaded.
    if (cc !== undefined && caps.rootNamespace && !caps.congestionAvailable.includes(cc)) {
      await modprobe(this.opts.runner, `tcp_${cc}`, this.netnsOpt());
      caps = await this.observe();
    }
    const refusal = tuningRefusal(want, caps);
    if (refusal)
      throw new UnsupportedError(
        `host ${this.opts.host} cannot apply its tuning: ${refusal.why}`,
        `host/${this.opts.host}`,
      );
    return caps;
  }

  /** Sets the fields of `want` in TUNING_FIELDS order; those already set are put back if a later one fails. */
  async apply(want: HostTuningSpec, before: TuningValues, ctx: OpContext = {}): Promise<void> {
    const r = new Reverter();
    try {
      for (const f of TUNING_FIELDS) {
        const v = want[f];
        if (v === undefined || v === before[f]) continue;
        ctx.progress?.(`${this.opts.host}: ${TUNING_SYSCTLS[f]} = ${v}`);
        await this.sysctl.set(TUNING_SYSCTLS[f], v);
        const was = before[f];
        if (was !== undefined) r.add(() => this.sysctl.set(TUNING_SYSCTLS[f], was));
      }
      r.success();
    } finally {
      await r.fail();
    }
  }

  /** Puts back the values a change replaced (a commit-confirm rollback); every field is tried. */
  async restore(previous: TuningValues): Promise<void> {
    const failed: string[] = [];
    for (const f of TUNING_FIELDS) {
      const v = previous[f];
      if (v === undefined) continue;
      await this.sysctl.set(TUNING_SYSCTLS[f], v).catch((e: unknown) => {
        failed.push(`${TUNING_SYSCTLS[f]}=${v}: ${(e as Error).message.split('\n')[0]}`);
      });
    }
    if (failed.length) throw new Error(`could not restore ${failed.join('; ')}`);
  }

  private netnsOpt(): { netns?: string } {
    return this.opts.netns ? { netns: this.opts.netns } : {};
  }

  private rootNamespace(): Promise<boolean> {
    if (this.opts.rootNamespace) return this.opts.rootNamespace();
    // A named namespace is never the root one; otherwise compare ours with pid 1's (unreadable: assume not).
    if (this.opts.netns) return Promise.resolve(false);
    return Promise.all([readlink('/proc/self/ns/net'), readlink('/proc/1/ns/net')]).then(
      ([self, init]) => self === init,
      () => false,
    );
  }

  /** Known congestion controls not loaded that modprobe could load (asked once, dry run: nothing is loaded). */
  private loadableModules(available: readonly string[]): Promise<string[]> {
    const ask = async (n: string) =>
      (await modprobe(this.opts.runner, `tcp_${n}`, { dryRun: true, ...this.netnsOpt() })) ? [n] : [];
    const loadable =
      this.loadable ??
      Promise.all(KNOWN_CONGESTION.filter((n) => !available.includes(n)).map(ask)).then((l) => l.flat());
    this.loadable = loadable;
    return loadable;
  }
}

/** The host's tuning for its report; undefined (logged) when it has no tuner or it cannot be read. */
export function observeTuning(tuner: HostTuner | undefined): Promise<TuningCapabilities | undefined> {
  return (tuner?.observe() ?? Promise.resolve(undefined)).catch((e: unknown) => {
    log.warn({ err: (e as Error).message }, 'could not read the host tuning');
    return undefined;
  });
}

/** The agent's tuner, or an error saying this agent has none. */
export function requireTuner(deps: { host: string; tuning?: HostTuner | undefined }): HostTuner {
  if (deps.tuning) return deps.tuning;
  throw new UnsupportedError(
    `host ${deps.host} cannot tune its TCP parameters (no tuner in this agent); remove hosts[].tuning for it`,
    `host/${deps.host}`,
  );
}

/**
 * Carries out `tuning.configure` on `tuner`: checked before anything changes; with `confirm`, the values it replaces
 * are recorded and put back by `confirms` unless the controller confirms in time (as `uplink.configure`).
 */
export async function configureTuning(
  tuner: HostTuner,
  confirms: ConfirmManager,
  action: TuningAction,
  ctx: OpContext,
): Promise<void> {
  if (action.confirm) confirms.assertNonePending();
  const caps = await tuner.check(action.tuning);
  const previous: TuningValues = {};
  for (const f of TUNING_FIELDS)
    if (action.tuning[f] !== undefined && caps.current[f] !== undefined)
      Object.assign(previous, { [f]: caps.current[f] });
  await tuner.apply(action.tuning, caps.current, ctx);
  if (action.confirm)
    confirms.arm(
      action.confirm.id,
      action.confirm.timeoutMs,
      `tuning (${describeTuning(action.tuning).join(', ')})`,
      { kind: 'tuning', previous },
    );
}

/** Names of a whitespace-separated list (congestion controls), bounded and checked. */
function names(raw: string | undefined): string[] {
  if (!raw) return [];
  return [...new Set(raw.split(/\s+/).filter((n) => CONGESTION_NAME.test(n)))].slice(0, TUNING_LIST_MAX);
}

/** A field's value as the kernel prints it; undefined when it is not what the field holds. */
function parseValue(f: TuningField, raw: string): string | number | undefined {
  if (f === 'congestion') return CONGESTION_NAME.test(raw) ? raw : undefined;
  return /^\d{1,9}$/.test(raw) ? Number(raw) : undefined;
}
