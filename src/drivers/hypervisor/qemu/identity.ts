// One uid/gid per VM: allocated from a range, skipping ids /etc/passwd and /etc/group use, recorded atomically in
// the agent's state (`<stateDir>/vm-ids.json`) and freed when the VM is deleted. One escaped QEMU then owns only
// its own VM's files. Several agents on one machine (the lab's hosts) share its uids: each id is also claimed
// machine-wide (a file created O_EXCL in a root-only directory), so no two agents hand out the same one.
import { constants } from 'node:fs';
import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { InvalidRequestError, UnavailableError } from '../../../shared/errors.js';
import { SerialQueue } from '../../../shared/queue.js';
import { readFileCapped, readJsonFile, writeJsonFile } from '../../../shared/state-file.js';

/** Where the agent with state dir `stateDir` records its VMs' ids. */
export const vmIdsFile = (stateDir: string): string => `${stateDir}/vm-ids.json`;

/** A range of numeric ids: `first` to `first + count - 1`. */
export interface IdRange {
  first: number;
  count: number;
}

/**
 * Default range of VM ids: 0x70000000 and up, which systemd leaves unused (below it sit container ranges,
 * above 2^31 tools that take ids as signed 32-bit numbers).
 */
export const DEFAULT_VM_ID_RANGE: IdRange = { first: 0x7000_0000, count: 65_536 };

/** The ids one VM's QEMU runs with: its own uid and gid (equal), and supplementary groups such as `kvm`. */
export interface VmIdentity {
  uid: number;
  gid: number;
  groups: number[];
}

const MAX_ID = 0x7fff_ffff;

/** Throws `InvalidRequestError` unless the range is within 1..2^31-1 and holds at least one id. */
export function checkIdRange(r: IdRange): void {
  if (!Number.isInteger(r.first) || !Number.isInteger(r.count) || r.first < 1000 || r.count < 1) {
    throw new InvalidRequestError(
      `VM id range ${r.first}+${r.count} must start at 1000 or above and hold ids`,
    );
  }
  if (r.first + r.count - 1 > MAX_ID) {
    throw new InvalidRequestError(`VM id range ${r.first}+${r.count} ends above ${MAX_ID}`);
  }
}

/** Numeric ids (third field) named in /etc/passwd or /etc/group text. */
export function idsInUse(...texts: string[]): Set<number> {
  const out = new Set<number>();
  for (const text of texts) {
    for (const line of text.split('\n')) {
      const f = line.split(':');
      if (f.length >= 3 && /^\d{1,10}$/.test(f[2]!)) out.add(Number(f[2]));
      // A passwd line (7 fields) also names its primary group.
      if (f.length >= 7 && /^\d{1,10}$/.test(f[3]!)) out.add(Number(f[3]));
    }
  }
  return out;
}

/** The lowest id of `range` that is neither taken by a VM nor used by the system; undefined when none is left. */
export function pickFreeId(
  range: IdRange,
  taken: ReadonlySet<number>,
  system: ReadonlySet<number>,
): number | undefined {
  for (let id = range.first; id < range.first + range.count; id++) {
    if (!taken.has(id) && !system.has(id)) return id;
  }
  return undefined;
}

const IdsFileSchema = z.object({ vms: z.record(z.string(), z.number().int().min(1).max(MAX_ID)) }).strict();

/** Default machine-wide directory of id claims (one file per id in use by any agent on this machine). */
export const DEFAULT_VM_ID_CLAIMS_DIR = '/var/lib/vmlink/vm-ids';

/** Options of `VmIds`. */
export interface VmIdsOptions {
  /** `<stateDir>/vm-ids.json`. */
  file: string;
  /** Machine-wide claims (default `DEFAULT_VM_ID_CLAIMS_DIR`). */
  claimsDir?: string;
  range?: IdRange;
  /** Files whose ids are never handed out (default /etc/passwd and /etc/group). */
  systemFiles?: string[];
}

/** The VM id allocations of one agent; every change is written atomically before it is used. */
export class VmIds {
  private readonly queue = new SerialQueue();
  /** Allocations waiting for the next group (see `allocate`). */
  private readonly pending = new Map<
    string,
    { promise: Promise<number>; resolve: (id: number) => void; reject: (e: unknown) => void }
  >();
  private readonly range: IdRange;

  constructor(private readonly opts: VmIdsOptions) {
    this.range = opts.range ?? DEFAULT_VM_ID_RANGE;
    checkIdRange(this.range);
  }

  /** The range ids are allocated from. */
  get idRange(): IdRange {
    return { ...this.range };
  }

  /** VM name -> id, as recorded. */
  async all(): Promise<Record<string, number>> {
    return (await readJsonFile(this.opts.file, IdsFileSchema))?.vms ?? {};
  }

  /** The id recorded for `name`, if any. */
  async get(name: string): Promise<number | undefined> {
    return (await this.all())[name];
  }

  /**
   * The id of `name`: the recorded one, else the lowest one that is free here, not used by the system and not
   * claimed by another agent on this machine; claimed and recorded before it is returned. Calls that arrive while
   * one is being recorded are served together (one read, one write: a batch creating 100 VMs syncs once, not 100
   * times).
   */
  allocate(name: string): Promise<number> {
    const waiting = this.pending.get(name);
    if (waiting) return waiting.promise;
    let settle!: { resolve: (id: number) => void; reject: (e: unknown) => void };
    const promise = new Promise<number>((resolve, reject) => {
      settle = { resolve, reject };
    });
    this.pending.set(name, { promise, ...settle });
    if (this.pending.size === 1) void this.queue.run(() => this.allocatePending());
    return promise;
  }

  // Allocates for every name waiting now: each gets its id, or its own error (the range is full), or the error
  // that stopped the whole group (the record could not be written).
  private async allocatePending(): Promise<void> {
    const group = [...this.pending.entries()];
    this.pending.clear();
    const done = new Map<string, number>();
    const failed = new Map<string, Error>();
    try {
      const vms = await this.all();
      const taken = new Set(Object.values(vms));
      const system = await this.systemIds();
      const claimed: number[] = [];
      for (const [name] of group) {
        if (vms[name] !== undefined) {
          done.set(name, vms[name]);
          continue;
        }
        for (;;) {
          const id = pickFreeId(this.range, taken, system);
          if (id === undefined) {
            failed.set(
              name,
              new UnavailableError(
                `no free VM id left in ${this.range.first}..${this.range.first + this.range.count - 1} (${taken.size} taken on this machine): widen the range`,
              ),
            );
            break;
          }
          taken.add(id); // ours now, or another agent's
          if (!(await this.claim(id, name))) continue;
          claimed.push(id);
          done.set(name, id);
          vms[name] = id;
          break;
        }
      }
      if (claimed.length > 0) {
        try {
          await mkdir(dirname(this.opts.file), { recursive: true, mode: 0o711 });
          await writeJsonFile(this.opts.file, { vms });
        } catch (e) {
          for (const c of claimed) await unlink(this.claimPath(c)).catch(() => {});
          throw e;
        }
      }
      for (const [name, p] of group) {
        const id = done.get(name);
        if (id === undefined) p.reject(failed.get(name));
        else p.resolve(id);
      }
    } catch (e) {
      for (const [, p] of group) p.reject(e);
    }
  }

  /** Forgets the id of `name` (its VM is deleted) and drops this agent's claim on it. */
  free(name: string): Promise<void> {
    return this.queue.run(async () => {
      const vms = await this.all();
      const id = vms[name];
      if (id === undefined) return;
      const { [name]: _gone, ...rest } = vms;
      await writeJsonFile(this.opts.file, { vms: rest });
      // Only a claim this agent made for this VM is dropped (never another agent's).
      const owner = await readFile(this.claimPath(id), 'utf8').catch(() => undefined);
      if (owner === this.claimText(name)) await unlink(this.claimPath(id)).catch(() => {});
    });
  }

  private claimPath(id: number): string {
    return `${this.opts.claimsDir ?? DEFAULT_VM_ID_CLAIMS_DIR}/${id}`;
  }

  private claimText(name: string): string {
    return `${this.opts.file}\t${name}\n`;
  }

  // Claims `id` machine-wide: false when another agent (or an earlier VM of this one) holds it.
  private async claim(id: number, name: string): Promise<boolean> {
    await mkdir(this.opts.claimsDir ?? DEFAULT_VM_ID_CLAIMS_DIR, { recursive: true, mode: 0o700 });
    try {
      const fh = await open(
        this.claimPath(id),
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      );
      try {
        await fh.writeFile(this.claimText(name));
      } finally {
        await fh.close();
      }
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      if (!(await this.staleClaim(id))) return false;
      await unlink(this.claimPath(id)).catch(() => {});
      return this.claim(id, name);
    }
  }

  // A claim whose agent no longer records the id (its state dir is gone, or the VM was deleted without freeing it):
  // nothing uses the id any more.
  private async staleClaim(id: number): Promise<boolean> {
    const text = await readFile(this.claimPath(id), 'utf8').catch(() => undefined);
    const m = text === undefined ? null : /^(\/[^\t\n]+)\t([^\t\n]+)\n$/.exec(text);
    if (!m) return false; // unreadable or foreign: leave it alone
    const vms = await readJsonFile(m[1]!, IdsFileSchema).catch(() => ({ vms: { [m[2]!]: id } }));
    return vms?.vms[m[2]!] !== id;
  }

  /** Ids /etc/passwd and /etc/group use now. */
  async systemIds(): Promise<Set<number>> {
    const texts = await Promise.all(
      (this.opts.systemFiles ?? ['/etc/passwd', '/etc/group']).map(
        async (f) => (await readFileCapped(f, { maxBytes: 16 << 20 })) ?? '',
      ),
    );
    return idsInUse(...texts);
  }
}
