// One uid/gid per VM: allocated from a range, skipping ids /etc/passwd and /etc/group use, recorded atomically in
// the agent's state (`<stateDir>/vm-ids.json`) and freed when the VM is deleted. One escaped QEMU then owns only
// its own VM's files.
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { InvalidRequestError, UnavailableError } from '../../../shared/errors.js';
import { SerialQueue } from '../../../shared/queue.js';
import { readFileCapped, readJsonFile, writeJsonFile } from '../../../shared/state-file.js';

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

/** Options of `VmIds`. */
export interface VmIdsOptions {
  /** `<stateDir>/vm-ids.json`. */
  file: string;
  range?: IdRange;
  /** Files whose ids are never handed out (default /etc/passwd and /etc/group). */
  systemFiles?: string[];
}

/** The VM id allocations of one agent; every change is written atomically before it is used. */
export class VmIds {
  private readonly queue = new SerialQueue();
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

  /** The id of `name`: the recorded one, else the lowest free one, recorded before it is returned. */
  allocate(name: string): Promise<number> {
    return this.queue.run(async () => {
      const vms = await this.all();
      const have = vms[name];
      if (have !== undefined) return have;
      const id = pickFreeId(this.range, new Set(Object.values(vms)), await this.systemIds());
      if (id === undefined) {
        throw new UnavailableError(
          `no free VM id left in ${this.range.first}..${this.range.first + this.range.count - 1} (${Object.keys(vms).length} VMs): widen the range`,
        );
      }
      await mkdir(dirname(this.opts.file), { recursive: true, mode: 0o711 });
      await writeJsonFile(this.opts.file, { vms: { ...vms, [name]: id } });
      return id;
    });
  }

  /** Forgets the id of `name` (its VM is deleted). */
  free(name: string): Promise<void> {
    return this.queue.run(async () => {
      const vms = await this.all();
      if (!(name in vms)) return;
      const { [name]: _gone, ...rest } = vms;
      await writeJsonFile(this.opts.file, { vms: rest });
    });
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
