// Where the alert engine keeps its state in the store (so a restarted or newly active controller continues): one key
// per alert instance under `alerts/instances/<rule>/<hash of its labels>`, one per silence under
// `alerts/silences/<id>`. Records are parsed on the way back in: an old or damaged one is skipped, never trusted.
import { createHash } from 'node:crypto';
import { log } from '../../shared/log.js';
import type { Store } from '../store/types.js';
import { type AlertInstance, AlertInstanceSchema, type Silence, SilenceSchema } from '../wire-observe.js';

/** An instance as stored: the wire shape, without `silencedBy` (computed from the live silences). */
export type AlertRecord = Omit<AlertInstance, 'silencedBy'>;
const AlertRecordSchema = AlertInstanceSchema.omit({ silencedBy: true });

const INSTANCES = 'alerts/instances/';
const SILENCES = 'alerts/silences/';

/** The labels in a canonical text (sorted keys): an instance's identity within its rule. */
export function canonicalLabels(labels: Readonly<Record<string, string>>): string {
  return JSON.stringify(
    Object.keys(labels)
      .sort()
      .map((k) => [k, labels[k]]),
  );
}

/** The store key of the instance of `rule` with `labels`. */
export function instanceKey(rule: string, labels: Readonly<Record<string, string>>): string {
  const hash = createHash('sha256').update(canonicalLabels(labels)).digest('hex').slice(0, 24);
  return `${INSTANCES}${rule}/${hash}`;
}

/** Reads and writes the engine's records. */
export class AlertRecords {
  constructor(private readonly store: Store) {}

  /** Every stored instance, by key (damaged records are skipped with a warning). */
  async instances(): Promise<Map<string, AlertRecord>> {
    const out = new Map<string, AlertRecord>();
    for (const { key, value } of await this.store.list<unknown>(INSTANCES)) {
      const r = AlertRecordSchema.safeParse(value);
      if (r.success) out.set(key, r.data);
      else log.warn({ key, err: r.error.message }, 'alert record skipped: it does not parse');
    }
    return out;
  }

  putInstance(key: string, r: AlertRecord): Promise<void> {
    return this.store.put(key, r);
  }

  deleteInstance(key: string): Promise<void> {
    return this.store.delete(key);
  }

  /** Every stored silence (expired ones too: the caller prunes). */
  async silences(): Promise<Silence[]> {
    const out: Silence[] = [];
    for (const { key, value } of await this.store.list<unknown>(SILENCES)) {
      const r = SilenceSchema.safeParse(value);
      if (r.success) out.push(r.data);
      else log.warn({ key, err: r.error.message }, 'silence skipped: it does not parse');
    }
    return out;
  }

  putSilence(s: Silence): Promise<void> {
    return this.store.put(`${SILENCES}${s.id}`, s);
  }

  async hasSilence(id: string): Promise<boolean> {
    return (await this.store.get(`${SILENCES}${id}`)) !== undefined;
  }

  deleteSilence(id: string): Promise<void> {
    return this.store.delete(`${SILENCES}${id}`);
  }
}

/** Whether silence `s` covers the instance of `rule` with `labels` at `now` (every silence label must be equal). */
export function silenceCovers(
  s: Silence,
  rule: string,
  labels: Readonly<Record<string, string>>,
  now: number,
): boolean {
  return (
    s.rule === rule &&
    Date.parse(s.until) > now &&
    Object.entries(s.labels).every(([k, v]) => labels[k] === v)
  );
}
