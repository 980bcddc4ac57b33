// Commit-confirm on the agent: a change that may cut the management path is applied, answered, and reverted by
// the agent itself unless the controller confirms it in time (like Junos `commit confirmed`). Pending changes are
// persisted, so an agent restarted mid-window still rolls back when the window ends. It fails closed: the timer is
// armed before the record is written, a record the disk refuses is kept in memory (and the failure reported in the
// change's state), and no failed write, during a rollback or at start, throws out of a timer or stops the agent.
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ConflictError, NotFoundError } from '../shared/errors.js';
import { CONFIRM_RECORD_KEEP_MS } from '../shared/limits.js';
import { log } from '../shared/log.js';
import type { NetworkConfig } from '../shared/model.js';
import { readJsonFileSync, writeJsonFileSync } from '../shared/state-file.js';
import type { TuningValues } from '../shared/tuning.js';
import { type ConfirmState, NetworkConfigSchema } from './wire.js';
import { TuningValuesSchema } from './wire-tuning.js';

/** How to take a confirmable change back: JSON-serialisable, so it survives an agent restart. */
export type Undo =
  /** Re-ensure the network as it was, or delete it when it did not exist. */
  | { kind: 'network'; name: string; previous?: { config: NetworkConfig; configHash: string } }
  /** Put the uplink back as the driver's snapshot describes it. */
  | { kind: 'uplink'; device: string; snapshot: unknown }
  /** Set the host's TCP tuning back to the values the change replaced. */
  | { kind: 'tuning'; previous: TuningValues };

/** One commit-confirmed change as persisted. */
interface Entry {
  id: string;
  state: ConfirmState['state'];
  detail: string;
  /** What was changed, for messages ("network lan", "uplink eth0"). */
  what: string;
  timeoutMs: number;
  /** Epoch ms after which the change is reverted. */
  deadline: number;
  undo: Undo;
  /** Epoch ms of the last state change. */
  updated: number;
}

const UndoSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('network'),
      name: z.string(),
      previous: z.object({ config: NetworkConfigSchema, configHash: z.string() }).strict().optional(),
    })
    .strict(),
  z.object({ kind: z.literal('uplink'), device: z.string(), snapshot: z.unknown() }).strict(),
  z.object({ kind: z.literal('tuning'), previous: TuningValuesSchema }).strict(),
]);

const EntrySchema = z
  .object({
    id: z.string(),
    state: z.enum(['pending', 'confirmed', 'rolled-back', 'rollback-failed']),
    detail: z.string(),
    what: z.string(),
    timeoutMs: z.number().int().min(0),
    deadline: z.number(),
    undo: UndoSchema,
    updated: z.number(),
  })
  .strict() satisfies z.ZodType<Entry>;

/** Options of a `ConfirmManager`. */
export interface ConfirmOptions {
  /** Directory of the pending/finished records (`<stateDir>/confirms`). */
  dir: string;
  /** Carries out an undo (the agent serialises it with its other changes). */
  revert: (undo: Undo) => Promise<void>;
  /** Finished records older than this are forgotten at start (default one day). */
  keepMs?: number;
}

const ID = /^[0-9a-f-]{36}$/;

/** The agent's commit-confirm state machine: pending -> confirmed | rolled-back | rollback-failed. */
export class ConfirmManager {
  private readonly entries = new Map<string, Entry>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly reverting = new Set<string>();
  private readonly settled = new Map<string, Promise<void>>();
  /** Why a change's record is not on disk (write failed): reported in its state until a write succeeds. */
  private readonly unsaved = new Map<string, string>();

  constructor(private readonly opts: ConfirmOptions) {}

  /** Loads persisted records and re-arms pending ones with their remaining time (expired ones roll back now). */
  resume(): void {
    const keepMs = this.opts.keepMs ?? CONFIRM_RECORD_KEEP_MS;
    let files: string[];
    try {
      mkdirSync(this.opts.dir, { recursive: true, mode: 0o700 });
      files = readdirSync(this.opts.dir);
    } catch (err) {
      log.error({ dir: this.opts.dir, err: (err as Error).message }, 'commit-confirm records unreadable');
      return;
    }
    for (const f of files) {
      if (!f.endsWith('.json') || !ID.test(f.slice(0, -5))) continue;
      let e: Entry | undefined;
      try {
        e = readJsonFileSync(join(this.opts.dir, f), EntrySchema);
      } catch (err) {
        log.error({ file: f, err: (err as Error).message }, 'commit-confirm record unreadable; skipped');
        continue;
      }
      if (!e) continue;
      if (e.state !== 'pending' && Date.now() - e.updated > keepMs) {
        this.remove(e.id);
        continue;
      }
      this.entries.set(e.id, e);
      if (e.state === 'pending') {
        log.info({ id: e.id, what: e.what, leftMs: e.deadline - Date.now() }, 'commit-confirm re-armed');
        this.schedule(e);
      }
    }
  }

  /** The id of the change waiting for its confirmation, if any (only one at a time). */
  pending(): string | undefined {
    for (const e of this.entries.values()) if (e.state === 'pending') return e.id;
    return undefined;
  }

  /** Refuses a new confirmable change while another one waits: its rollback would undo the new one's base. */
  assertNonePending(): void {
    const id = this.pending();
    if (id)
      throw new ConflictError(
        `commit-confirmed change ${id} (${this.entries.get(id)!.what}) is still pending; confirm it (POST /v1/confirm/${id}) or wait for its rollback`,
        `confirm/${id}`,
      );
  }

  /**
   * Starts an applied change's window and records it; call after the change succeeded, before answering. The timer
   * runs even when the record cannot be written (the state then says so): the change never stays unguarded.
   */
  arm(id: string, timeoutMs: number, what: string, undo: Undo): ConfirmState {
    if (this.entries.has(id))
      throw new ConflictError(`commit-confirm id ${id} was already used`, `confirm/${id}`);
    const now = Date.now();
    const e: Entry = {
      id,
      state: 'pending',
      detail: `${what} changed; rolls back in ${Math.round(timeoutMs / 1000)} s unless confirmed`,
      what,
      timeoutMs,
      deadline: now + timeoutMs,
      undo,
      updated: now,
    };
    this.entries.set(id, e);
    this.schedule(e);
    this.persist(e);
    return this.view(e);
  }

  /** Keeps the change: 404 when unknown, 409 when it is already (being) rolled back; idempotent. */
  confirm(id: string): ConfirmState {
    const e = this.entry(id);
    if (e.state === 'confirmed') return this.view(e);
    if (e.state !== 'pending' || this.reverting.has(id))
      throw new ConflictError(
        `commit-confirmed change ${id} (${e.what}) cannot be confirmed: ${this.reverting.has(id) ? 'its window ended and it is being rolled back' : e.detail}`,
        `confirm/${id}`,
      );
    clearTimeout(this.timers.get(id));
    this.timers.delete(id);
    this.update(e, 'confirmed', `${e.what} confirmed`);
    return this.view(e);
  }

  /** The state of one change; 404 when unknown. */
  get(id: string): ConfirmState {
    const e = this.entry(id);
    if (this.reverting.has(id)) return { ...this.view(e), detail: `${e.what}: window ended, rolling back` };
    return this.view(e);
  }

  /** Resolves when the rollback started for `id` (if any) has finished; for tests and shutdown. */
  async settle(id: string): Promise<void> {
    await this.settled.get(id);
  }

  /** Stops every timer (the records stay, so the next start re-arms them). */
  close(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  private entry(id: string): Entry {
    const e = this.entries.get(id);
    if (!e) throw new NotFoundError('commit-confirm', id);
    return e;
  }

  private schedule(e: Entry): void {
    const t = setTimeout(() => this.expire(e), Math.max(0, e.deadline - Date.now()));
    this.timers.set(e.id, t);
  }

  private expire(e: Entry): void {
    this.timers.delete(e.id);
    if (e.state !== 'pending') return;
    this.reverting.add(e.id);
    log.warn({ id: e.id, what: e.what }, 'commit-confirm window ended without confirmation: rolling back');
    // Through a promise even if `revert` throws at once: nothing may throw out of this timer.
    const done = Promise.resolve()
      .then(() => this.opts.revert(e.undo))
      .then(
        () =>
          this.update(
            e,
            'rolled-back',
            `${e.what} rolled back: not confirmed within ${Math.round(e.timeoutMs / 1000)} s`,
          ),
        (err: unknown) => {
          log.error({ id: e.id, err }, 'commit-confirm rollback failed');
          this.update(
            e,
            'rollback-failed',
            `${e.what} was not confirmed within ${Math.round(e.timeoutMs / 1000)} s and rolling it back failed: ${(err as Error).message}`,
          );
        },
      )
      .catch((err: unknown) => log.error({ id: e.id, err }, 'commit-confirm rollback bookkeeping failed'))
      .finally(() => this.reverting.delete(e.id));
    this.settled.set(e.id, done);
  }

  private update(e: Entry, state: Entry['state'], detail: string): void {
    e.state = state;
    e.detail = detail;
    e.updated = Date.now();
    // A finished change whose record cannot be rewritten loses its record instead (removing needs no space): a
    // stale `pending` record would roll the change back (again) at the next start.
    if (!this.persist(e) && state !== 'pending') this.remove(e.id);
  }

  /** Writes `e`'s record; false (logged, and reported in its state) when the disk refuses it. */
  private persist(e: Entry): boolean {
    try {
      mkdirSync(this.opts.dir, { recursive: true, mode: 0o700 });
      writeJsonFileSync(join(this.opts.dir, `${e.id}.json`), e);
      this.unsaved.delete(e.id);
      return true;
    } catch (err) {
      const why = (err as Error).message;
      log.error({ id: e.id, what: e.what, err: why }, 'commit-confirm record not written; kept in memory');
      this.unsaved.set(e.id, why);
      return false;
    }
  }

  private remove(id: string): void {
    try {
      rmSync(join(this.opts.dir, `${id}.json`), { force: true });
    } catch (err) {
      log.error({ id, err: (err as Error).message }, 'commit-confirm record not removed');
    }
  }

  private view(e: Entry): ConfirmState {
    const why = this.unsaved.get(e.id);
    const note =
      why === undefined
        ? ''
        : e.state === 'pending'
          ? ` (its record could not be written: ${why}; the rollback is armed in memory only, so it is lost if the agent restarts before then)`
          : ` (its record could not be written: ${why})`;
    return { id: e.id, state: e.state, detail: `${e.detail}${note}` };
  }
}
