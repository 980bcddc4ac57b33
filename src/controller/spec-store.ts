// The applied spec in the store, parsed once: apply, views and every heartbeat read it through this cache.
import { parseSpecText, placeAndValidate } from '../spec/load.js';
import { type OwnerHint, type Placement, placementFromOwners } from '../spec/placement.js';
import type { Spec, UnplacedSpec } from '../spec/schema.js';
import type { ValidationMemo } from '../spec/validate/index.js';
import type { Store } from './store/types.js';

/** The spec last applied, as the store keeps it. */
export interface StoredSpec {
  text: string;
  source: string;
  appliedAt: string;
}

/** A stored spec with its parsed form. */
export type ParsedStoredSpec = StoredSpec & { spec: Spec };

const SPEC_KEY = 'spec/current';
// The last spec whose apply completed: a failed apply must not make the next one forget hosts it was dropping.
const LAST_GOOD_KEY = 'spec/last-good';
// Texts in flight at once: the current, the last good, and the one being applied or planned, each unplaced and placed
// by owner records.
const PARSE_CACHE_SIZE = 8;

/**
 * Parses spec texts, remembering the last few: a text is parsed, schema-checked and validated once, not on every read.
 * A new placement of a known text (an owner record moved: an HA restart, a migration) only places it and runs the
 * checks that read placement again (`placeAndValidate` with the text's memo): at 1,000 hosts x 20 VMs a whole parse
 * and validation is tens of seconds, and every restart needs the placed spec.
 */
export class SpecParser {
  private readonly texts = new Map<string, TextEntry>();
  private readonly specs = new Map<string, Spec>();
  /** The text last asked for, with its key: see `entry`. */
  private last: { text: string; source: string; key: string } | undefined;
  private nextId = 0;
  /** Texts parsed (not served from the cache), for tests and benches. */
  parsedTexts = 0;

  /**
   * The validated spec of `text` (see `loadSpec`), placed by `placement` where it names a VM; the same object for the
   * same text, source and placement.
   */
  parse(text: string, source: string, placement?: Placement): Spec {
    return this.placedBy(this.entry(text, source), placement, placement && placementKey(placement));
  }

  /**
   * `text` placed by owner records (see `placementFromOwners`) when it declares a cluster: where each VM runs now;
   * without a cluster, or without records, as `parse` places it.
   */
  placed(text: string, source: string, owners: Readonly<Record<string, OwnerHint>> | undefined): Spec {
    const t = this.entry(text, source);
    const spec = this.placedBy(t);
    if (!spec.cluster || !owners) return spec;
    const placement = placementFromOwners(t.parsed, owners);
    // placementFromOwners lists VMs in the text's order, so equal placements of one text give equal keys unsorted
    // (sorting 20,000 names was most of a read's key at 1,000 hosts x 20 VMs); only owner-placed VMs are named: the
    // others are where the text puts them.
    let key = '';
    for (const vm in placement) {
      const p = placement[vm]!;
      if (p.source === 'owner') key += `${vm}=${p.host},`;
    }
    return key ? this.placedBy(t, placement, `owners:${key}`) : spec;
  }

  /**
   * The parsed text. The same text is read again on every read of the applied spec (each `status`, each heartbeat
   * round): it is compared with the last one asked for (one pass over its bytes) and, when equal, found by the key
   * made for that one, whose hash V8 keeps, not by a fresh key of megabytes hashed again (at 1,000 hosts x 20 VMs a
   * read hashed ~3 MB keys three times).
   */
  private entry(text: string, source: string): TextEntry {
    const last = this.last;
    const key = last && last.source === source && last.text === text ? last.key : textKeyOf(text, source);
    this.last = { text, source, key };
    let t = lru(this.texts, key);
    if (!t) {
      t = { id: this.nextId++, source, parsed: parseSpecText(text, source), memo: { steps: new Map() } };
      this.parsedTexts++;
      remember(this.texts, key, t);
    }
    return t;
  }

  /** The text placed by `placement` (none: as the text says), cached under `key` (`placement`'s own). */
  private placedBy(t: TextEntry, placement?: Placement, key?: string): Spec {
    const k = `${t.id}\0${key ?? ''}`;
    const hit = lru(this.specs, k);
    if (hit) return hit;
    const spec = placeAndValidate(t.parsed, t.source, placement, t.memo);
    remember(this.specs, k, spec);
    return spec;
  }
}

/** A parsed text: its parse, the memo of its validation, and a small id its placements are cached under. */
interface TextEntry {
  id: number;
  source: string;
  parsed: UnplacedSpec;
  memo: ValidationMemo;
}

const textKeyOf = (text: string, source: string): string => `${source}\0${text}`;

/** `map`'s entry for `key`, made the most recently used. */
function lru<T>(map: Map<string, T>, key: string): T | undefined {
  const hit = map.get(key);
  if (hit !== undefined) {
    map.delete(key);
    map.set(key, hit);
  }
  return hit;
}

/** Adds an entry, forgetting the least recently used beyond PARSE_CACHE_SIZE. */
function remember<T>(map: Map<string, T>, key: string, value: T): void {
  map.set(key, value);
  for (const k of map.keys()) {
    if (map.size <= PARSE_CACHE_SIZE) break;
    map.delete(k);
  }
}

function placementKey(p: Placement): string {
  return Object.keys(p)
    .sort()
    .map((vm) => `${vm}=${p[vm]!.host}/${p[vm]!.source}`)
    .join(',');
}

/** Where the controller keeps the applied spec: the current one and the last one whose apply completed. */
export class SpecStore {
  constructor(
    private readonly store: Store,
    readonly parser: SpecParser = new SpecParser(),
    /** Owner records (a cluster's placement): `current()` places the spec by them. */
    private readonly owners?: () => Promise<Record<string, OwnerHint>>,
  ) {}

  /**
   * The spec last applied (or being applied), parsed and placed: in a cluster each VM on the host its owner record
   * names (HA restarts and maintenance move VMs without a new spec); undefined before the first apply.
   */
  async current(): Promise<ParsedStoredSpec | undefined> {
    const s = await this.store.get<StoredSpec>(SPEC_KEY);
    return s ? { ...s, spec: await this.place(s.text, s.source) } : undefined;
  }

  /**
   * The spec applied before, for hosts that a new spec drops: the last one whose apply completed (so hosts a failed
   * apply was dropping are still dropped next time), else the last one attempted.
   */
  async previous(): Promise<Spec | undefined> {
    try {
      const good = await this.read(LAST_GOOD_KEY);
      if (good) return good.spec;
    } catch {
      // A spec that no longer validates (older vmlink): fall back to the current one.
    }
    return (await this.current().catch(() => undefined))?.spec;
  }

  /** `text` placed as `current()` would place it (owner records in a cluster). */
  async place(text: string, source: string): Promise<Spec> {
    const owners = this.owners && this.parser.parse(text, source).cluster ? await this.owners() : undefined;
    return this.parser.placed(text, source, owners);
  }

  /** Records `text` as the spec being applied (before its first step runs). */
  async recordAttempt(text: string, source: string): Promise<void> {
    await this.store.put(SPEC_KEY, {
      text,
      source,
      appliedAt: new Date().toISOString(),
    } satisfies StoredSpec);
  }

  /** Records `text` as the last spec whose apply completed. */
  async recordSuccess(text: string, source: string): Promise<void> {
    await this.store.put(LAST_GOOD_KEY, {
      text,
      source,
      appliedAt: new Date().toISOString(),
    } satisfies StoredSpec);
  }

  /** Forgets the applied spec (after destroy or lab down). */
  async clear(): Promise<void> {
    await this.store.delete(SPEC_KEY);
    await this.store.delete(LAST_GOOD_KEY);
  }

  private async read(key: string): Promise<ParsedStoredSpec | undefined> {
    const s = await this.store.get<StoredSpec>(key);
    return s ? { ...s, spec: this.parser.parse(s.text, s.source) } : undefined;
  }
}
