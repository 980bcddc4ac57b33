import { describe, expect, it } from 'vitest';
import type { BackupOpenOptions } from '../types.js';
import { type BackupDisk, backupDisks, type ViewRecord } from './backup-disks.js';
import { type LiveBackupDeps, openLive, scanLeftovers, teardownLive, teardownParts } from './backup-live.js';
import { vmPaths } from './cmdline.js';
import { QmpCommandError } from './qmp.js';

// A fake QEMU 7.2 block layer: named nodes with dirty bitmaps, fleecing jobs, NBD exports and server, fd sets. It
// answers (and refuses) like QEMU does for the commands a backup sends, so the golden sequences below are the ones
// real QEMU accepted by hand (status-capture.md) and the end state of each path can be asserted.

// biome-ignore lint/suspicious/noExplicitAny: a fake monitor's arguments, as loose as QMP's
type Args = Record<string, any>;

interface FakeBitmap {
  recording: boolean;
  persistent: boolean;
  busy: boolean;
  inconsistent?: boolean;
}
interface FakeNode {
  size: number;
  bitmaps: Map<string, FakeBitmap>;
}

class FakeQemu {
  readonly log: Array<{ execute: string; arguments?: unknown; error?: string }> = [];
  readonly nodes = new Map<string, FakeNode>();
  readonly jobs = new Set<string>();
  readonly exports = new Map<string, { node: string; bitmaps: string[] }>();
  readonly fdsets = new Set<number>();
  server = false;
  failOn?: string;

  constructor(disks: Array<{ node: string; size: number; bitmaps?: Record<string, FakeBitmap> }>) {
    for (const d of disks)
      this.nodes.set(d.node, { size: d.size, bitmaps: new Map(Object.entries(d.bitmaps ?? {})) });
  }

  async execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
    const entry: { execute: string; arguments?: unknown; error?: string } = {
      execute: command,
      ...(args ? { arguments: args } : {}),
    };
    this.log.push(entry);
    try {
      if (this.failOn === command) throw new Error('injected failure');
      return this.run(command, (args ?? {}) as Args) as T;
    } catch (e) {
      entry.error = (e as Error).message;
      throw new QmpCommandError(command, 'GenericError', (e as Error).message);
    }
  }

  private node(name: string): FakeNode {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`Cannot find device='' nor node-name='${name}'`);
    return n;
  }

  private bitmap(node: string, name: string): FakeBitmap {
    const b = this.node(node).bitmaps.get(name);
    if (!b) throw new Error(`Dirty bitmap '${name}' not found`);
    return b;
  }

  private action(type: string, a: Args, undo: Array<() => void>): void {
    switch (type) {
      case 'block-dirty-bitmap-add': {
        const n = this.node(a.node);
        if (n.bitmaps.has(a.name)) throw new Error(`Bitmap already exists: ${a.name}`);
        n.bitmaps.set(a.name, { recording: true, persistent: a.persistent, busy: false });
        undo.push(() => n.bitmaps.delete(a.name));
        return;
      }
      case 'block-dirty-bitmap-disable':
      case 'block-dirty-bitmap-enable': {
        const b = this.bitmap(a.node, a.name);
        if (b.busy || b.inconsistent) throw new Error(`Bitmap '${a.name}' is currently in use`);
        const was = b.recording;
        b.recording = type === 'block-dirty-bitmap-enable';
        undo.push(() => {
          b.recording = was;
        });
        return;
      }
      case 'block-dirty-bitmap-remove': {
        const n = this.node(a.node);
        const b = this.bitmap(a.node, a.name);
        if (b.busy) throw new Error(`Bitmap '${a.name}' is currently in use`);
        n.bitmaps.delete(a.name);
        undo.push(() => n.bitmaps.set(a.name, b));
        return;
      }
      case 'block-dirty-bitmap-merge': {
        const t = this.bitmap(a.node, a.target);
        for (const s of a.bitmaps as string[]) this.bitmap(a.node, s);
        if (t.busy || t.inconsistent) throw new Error(`Bitmap '${a.target}' is currently in use`);
        return;
      }
      case 'blockdev-backup': {
        this.node(a.device);
        const target = this.node(a.target);
        if (this.jobs.has(a['job-id'])) throw new Error(`Job ID '${a['job-id']}' already in use`);
        if (!target) throw new Error('no target');
        this.jobs.add(a['job-id']);
        undo.push(() => this.jobs.delete(a['job-id']));
        return;
      }
      default:
        throw new Error(`transaction action ${type} not supported`);
    }
  }

  private run(command: string, a: Args): unknown {
    switch (command) {
      case 'query-named-block-nodes':
        return [...this.nodes].map(([name, n]) => ({
          'node-name': name,
          drv: 'qcow2',
          image: { 'virtual-size': n.size },
          'dirty-bitmaps': [...n.bitmaps].map(([bn, b]) => ({
            name: bn,
            granularity: 65536,
            count: 0,
            ...b,
          })),
        }));
      case 'query-block-exports':
        return [...this.exports.keys()].map((id) => ({ id, type: 'nbd', 'shutting-down': false }));
      case 'query-block-jobs':
        return [...this.jobs].map((device) => ({ device, type: 'backup', status: 'running' }));
      case 'query-fdsets':
        return [...this.fdsets].map((id) => ({ 'fdset-id': id, fds: [] }));
      case 'transaction': {
        const undo: Array<() => void> = [];
        try {
          for (const x of a.actions as Array<{ type: string; data: Args }>) this.action(x.type, x.data, undo);
        } catch (e) {
          for (const u of undo.reverse()) u();
          throw e;
        }
        return {};
      }
      case 'blockdev-add': {
        if (this.nodes.has(a['node-name']))
          throw new Error(`Duplicate nodes with node-name='${a['node-name']}'`);
        if (a.backing) this.node(a.backing);
        if (a.driver === 'qcow2') this.node(a.file);
        this.nodes.set(a['node-name'], { size: 0, bitmaps: new Map() });
        return {};
      }
      case 'blockdev-del': {
        const name = a['node-name'] as string;
        this.node(name);
        if ([...this.exports.values()].some((e) => e.node === name))
          throw new Error(`Node '${name}' is busy`);
        if (this.jobs.has(name.replace('vmlink-fleece-', 'vmlink-backup-')))
          throw new Error(`Node '${name}' is busy: block device is in use by block job: backup`);
        this.nodes.delete(name);
        return {};
      }
      case 'nbd-server-start':
        if (this.server) throw new Error('NBD server already running');
        this.server = true;
        return {};
      case 'nbd-server-stop':
        if (!this.server) throw new Error('NBD server not running');
        this.server = false;
        return {};
      case 'block-export-add': {
        if (!this.server) throw new Error('NBD server not running');
        this.node(a['node-name']);
        const bitmaps = (a.bitmaps ?? []) as string[];
        for (const b of bitmaps) {
          const found = [...this.nodes.values()].map((n) => n.bitmaps.get(b)).find(Boolean);
          if (!found) throw new Error(`Bitmap '${b}' is not found`);
          found.busy = true;
        }
        this.exports.set(a.id, { node: a['node-name'], bitmaps });
        return {};
      }
      case 'block-export-del': {
        const e = this.exports.get(a.id);
        if (!e) throw new Error(`Export '${a.id}' is not found`);
        for (const b of e.bitmaps)
          for (const n of this.nodes.values()) {
            const bm = n.bitmaps.get(b);
            if (bm) bm.busy = false;
          }
        this.exports.delete(a.id);
        return {};
      }
      case 'block-job-cancel':
        if (!this.jobs.delete(a.device)) throw new Error(`Block job '${a.device}' not found`);
        return {};
      case 'remove-fd':
        if (!this.fdsets.delete(a['fdset-id']))
          throw new Error(`File descriptor named 'fdset-id:${a['fdset-id']}' not found`);
        return {};
      default:
        throw new Error(`The command ${command} has not been found`);
    }
  }
}

const MiB = 1024 * 1024;
const paths = vmPaths('/var/lib/vmlink', 'web1');
const DISKS: BackupDisk[] = backupDisks(
  {
    name: 'web1',
    cpus: 1,
    memoryMiB: 256,
    image: { kind: 'qcow2', path: '/images/base.qcow2' },
    disks: [
      { name: 'data', sizeMiB: 64 },
      {
        name: 'iso',
        media: 'cdrom',
        source: { kind: 'file', pool: 'isos', path: '/isos/x.iso', format: 'raw' },
      },
      {
        name: 'lun',
        source: { kind: 'iscsi', pool: 'san', portal: '10.0.0.5:3260', iqn: 'iqn.2026-01.x:t', lun: 1 },
      },
    ],
    nics: [],
    state: 'running',
  } as never,
  paths,
  [0, 1, 2],
);

/** Deps around a fake QEMU that log files, fd passing, freezing and the record in the same sequence. */
function deps(q: FakeQemu, opts: { guest?: 'ok' | 'timeout' | 'none' } = {}) {
  const seq = q.log as Array<{ execute: string; arguments?: unknown; error?: string }>;
  const state: { record?: ViewRecord; files: Set<string>; frozen: boolean } = {
    files: new Set(),
    frozen: false,
  };
  const d: LiveBackupDeps = {
    vm: 'web1',
    qmp: q,
    paths,
    createOverlay: async (path, bytes) => {
      seq.push({ execute: '<agent: create overlay>', arguments: { path, bytes } });
      state.files.add(path);
    },
    passFile: async (path, fdset, commands) => {
      seq.push({ execute: '<agent: pass file>', arguments: { path, fdset } });
      q.fdsets.add(fdset);
      for (const c of commands) await q.execute(c.execute, c.arguments);
    },
    removeFile: async (path) => {
      if (state.files.delete(path)) seq.push({ execute: '<agent: remove file>', arguments: { path } });
    },
    ...(opts.guest === 'none'
      ? {}
      : {
          guest: {
            freeze: async () => {
              seq.push({ execute: '<guest-fsfreeze-freeze>' });
              if (opts.guest === 'timeout') throw new Error('guest agent: guest-fsfreeze-freeze timed out');
              state.frozen = true;
            },
            thaw: async () => {
              seq.push({ execute: '<guest-fsfreeze-thaw>' });
              state.frozen = false;
            },
          },
        }),
    record: {
      write: async (r) => {
        state.record = structuredClone(r);
      },
      remove: async () => {
        delete state.record;
      },
    },
    now: () => new Date('2026-12-01T12:00:00Z'),
    waitMs: 1000,
    pollMs: 1,
  };
  return { d, state };
}

const BASE = 'vmlink-nightly-20261130T120000Z';
const NEXT = 'vmlink-nightly-20261201T120000Z';
const opts = (o: Partial<BackupOpenOptions> = {}): BackupOpenOptions => ({
  bitmaps: { base: BASE, next: NEXT },
  freeze: true,
  full: false,
  ...o,
});
const bm = (recording = true): FakeBitmap => ({ recording, persistent: true, busy: false });

function qemuWithBase(): FakeQemu {
  return new FakeQemu([
    { node: 'root', size: 10 * 1024 * MiB, bitmaps: { [BASE]: bm() } },
    { node: 'disk0', size: 64 * MiB, bitmaps: { [BASE]: bm() } },
    { node: 'disk2', size: 1024 * MiB, bitmaps: {} },
  ]);
}

/** The sequence without the queries (kept in the golden files too, but these are the decisions). */
const mutations = (q: FakeQemu) => q.log.filter((x) => !x.execute.startsWith('query-'));

describe('running VM backup view (golden QMP sequences against a fake QEMU 7.2)', () => {
  it('picks root and writable disks: no CD-ROM, the iSCSI LUN raw (bitmaps not persistent)', () => {
    expect(DISKS.map((x) => [x.name, x.node, x.index, x.qcow2])).toEqual([
      ['root', 'root', 0, true],
      ['data', 'disk0', 1, true],
      ['lun', 'disk2', 2, false],
    ]);
  });

  it('opens: overlays, one frozen transaction, exports with the base bitmap where usable; commit keeps next', async () => {
    const q = qemuWithBase();
    const { d, state } = deps(q);
    const v = await openLive(d, DISKS, opts());
    expect(v.consistency).toBe('frozen');
    expect(v.at.toISOString()).toBe('2026-12-01T12:00:00.000Z');
    expect(v.disks).toEqual([
      {
        name: 'root',
        sizeBytes: 10 * 1024 * MiB,
        socket: `${paths.runDir}/backup-nbd.sock`,
        exportName: 'root',
        changed: { context: `qemu:dirty-bitmap:${BASE}` },
      },
      {
        name: 'data',
        sizeBytes: 64 * MiB,
        socket: `${paths.runDir}/backup-nbd.sock`,
        exportName: 'data',
        changed: { context: `qemu:dirty-bitmap:${BASE}` },
      },
      {
        name: 'lun',
        sizeBytes: 1024 * MiB,
        socket: `${paths.runDir}/backup-nbd.sock`,
        exportName: 'lun',
        changed: { fullReason: 'not-persistent' },
      },
    ]);
    expect(state.record?.disks.map((x) => x.base)).toEqual(['usable', 'usable', 'absent']);
    expect(state.frozen).toBe(false);
    expect(q.nodes.get('root')?.bitmaps.get(BASE)).toMatchObject({ recording: false, busy: true });
    expect(q.nodes.get('disk2')?.bitmaps.get(NEXT)).toMatchObject({ recording: true, persistent: false });
    const opened = q.log.length;
    await teardownLive(d, v.record, 'commit');
    await expect(JSON.stringify(mutations(q), null, 1)).toMatchFileSnapshot(
      './__golden__/backup-open-commit.json',
    );
    // Commit: no export, job, fleece node, fd set, overlay or record left; next counts, base is gone.
    expect(q.exports.size + q.jobs.size + q.fdsets.size + state.files.size).toBe(0);
    expect(q.server).toBe(false);
    expect([...q.nodes.keys()]).toEqual(['root', 'disk0', 'disk2']);
    for (const n of ['root', 'disk0', 'disk2']) expect([...q.nodes.get(n)!.bitmaps.keys()]).toEqual([NEXT]);
    expect(state.record).toBeUndefined();
    expect(q.log.length).toBeGreaterThan(opened);
  });

  it('abort folds next back into the base and re-enables it; without a base next just goes', async () => {
    const q = qemuWithBase();
    const { d, state } = deps(q);
    const v = await openLive(d, DISKS, opts());
    const before = q.log.length;
    await teardownLive(d, v.record, 'abort');
    await expect(JSON.stringify(mutations(q).slice(-8), null, 1)).toMatchFileSnapshot(
      './__golden__/backup-abort-tail.json',
    );
    expect(q.log.length).toBeGreaterThan(before);
    expect(q.nodes.get('root')!.bitmaps.get(BASE)).toMatchObject({ recording: true, busy: false });
    expect([...q.nodes.get('root')!.bitmaps.keys()]).toEqual([BASE]);
    expect([...q.nodes.get('disk2')!.bitmaps.keys()]).toEqual([]);
    const tx = q.log.filter((x) => x.execute === 'transaction').at(-1)!.arguments as {
      actions: Array<{ type: string; data: Record<string, unknown> }>;
    };
    expect(tx.actions.map((a) => `${a.type} ${a.data.node}`)).toEqual([
      'block-dirty-bitmap-merge root',
      'block-dirty-bitmap-enable root',
      'block-dirty-bitmap-remove root',
      'block-dirty-bitmap-merge disk0',
      'block-dirty-bitmap-enable disk0',
      'block-dirty-bitmap-remove disk0',
      'block-dirty-bitmap-remove disk2',
    ]);
    expect(state.record).toBeUndefined();
  });

  it('a guest agent that does not freeze: crash-consistent with the reason, thawed anyway', async () => {
    const q = qemuWithBase();
    const { d } = deps(q, { guest: 'timeout' });
    const v = await openLive(d, DISKS, opts());
    expect(v.consistency).toBe('crash-consistent');
    expect(v.consistencyNote).toMatch(/did not freeze the filesystems: .*timed out/);
    const names = q.log.map((x) => x.execute);
    expect(names.indexOf('<guest-fsfreeze-freeze>')).toBeLessThan(names.indexOf('transaction'));
    expect(names.indexOf('<guest-fsfreeze-thaw>')).toBeGreaterThan(names.indexOf('transaction'));
    await teardownLive(d, v.record, 'commit');
  });

  it('first backup and --full: every disk reads whole with its reason; the base is not touched when forced', async () => {
    const q = qemuWithBase();
    const { d } = deps(q, { guest: 'none' });
    const first = await openLive(d, DISKS, opts({ bitmaps: { next: NEXT }, freeze: false }));
    expect(first.disks.map((x) => x.changed)).toEqual([
      { fullReason: 'first' },
      { fullReason: 'first' },
      { fullReason: 'first' },
    ]);
    expect(first.consistencyNote).toBe('freezing was not asked for');
    await teardownLive(d, first.record, 'commit');
    const q2 = qemuWithBase();
    const { d: d2 } = deps(q2, { guest: 'none' });
    const forced = await openLive(d2, DISKS, opts({ full: true }));
    expect(forced.disks.map((x) => x.changed)).toEqual([
      { fullReason: 'forced' },
      { fullReason: 'forced' },
      { fullReason: 'forced' },
    ]);
    expect(forced.consistencyNote).toBe('the VM has no guest agent to freeze its filesystems');
    const exp = q2.log.filter((x) => x.execute === 'block-export-add');
    expect(exp.every((x) => !('bitmaps' in (x.arguments as object)))).toBe(true);
    await teardownLive(d2, forced.record, 'commit');
    expect([...q2.nodes.get('root')!.bitmaps.keys()]).toEqual([NEXT]);
  });

  it('an inconsistent base reads whole (bitmap-inconsistent) and is removed at commit', async () => {
    const q = new FakeQemu([
      { node: 'root', size: MiB, bitmaps: { [BASE]: { ...bm(), inconsistent: true } } },
      { node: 'disk0', size: MiB },
      { node: 'disk2', size: MiB },
    ]);
    const { d } = deps(q);
    const v = await openLive(d, DISKS, opts());
    expect(v.disks.map((x) => x.changed)).toEqual([
      { fullReason: 'bitmap-inconsistent' },
      { fullReason: 'no-bitmap' },
      { fullReason: 'not-persistent' },
    ]);
    await teardownLive(d, v.record, 'commit');
    expect([...q.nodes.get('root')!.bitmaps.keys()]).toEqual([NEXT]);
  });

  it('a failure after the cut tears everything down and keeps the base counting', async () => {
    const q = qemuWithBase();
    q.failOn = 'block-export-add';
    const { d, state } = deps(q);
    await expect(openLive(d, DISKS, opts())).rejects.toThrow(/injected failure/);
    expect(q.exports.size + q.jobs.size + q.fdsets.size + state.files.size).toBe(0);
    expect(q.server).toBe(false);
    expect([...q.nodes.keys()]).toEqual(['root', 'disk0', 'disk2']);
    expect(q.nodes.get('root')!.bitmaps.get(BASE)).toMatchObject({ recording: true, busy: false });
    expect(q.nodes.get('root')!.bitmaps.has(NEXT)).toBe(false);
    expect(state.record).toBeUndefined();
    expect(state.frozen).toBe(false);
  });

  it('refuses a bitmap name vmlink would not make, an existing next, and an encrypted disk', async () => {
    const { d } = deps(qemuWithBase());
    await expect(openLive(d, DISKS, opts({ bitmaps: { next: 'evil"name' } }))).rejects.toThrow(
      /is not vmlink's/,
    );
    const q = qemuWithBase();
    q.nodes.get('disk0')!.bitmaps.set(NEXT, bm());
    await expect(openLive(deps(q).d, DISKS, opts())).rejects.toThrow(/disk data already has a bitmap/);
    await expect(
      openLive(deps(qemuWithBase()).d, [{ ...DISKS[1]!, encrypted: true }], opts()),
    ).rejects.toThrow(/disk data is encrypted/);
  });

  it('cleanup after an agent died mid-view: by the record (folds next) or by names (drops the stale base)', async () => {
    const q = qemuWithBase();
    const { d, state } = deps(q);
    await openLive(d, DISKS, opts());
    // The agent dies here: only the record and QEMU's state remain.
    const record = state.record!;
    await teardownLive(d, record, 'abort');
    expect(q.nodes.get('disk0')!.bitmaps.get(BASE)).toMatchObject({ recording: true });
    expect(await scanLeftovers(d, DISKS)).toEqual({ parts: [], staleBitmaps: [] });

    const q2 = qemuWithBase();
    const { d: d2 } = deps(q2);
    await openLive(d2, DISKS, opts());
    const left = await scanLeftovers(d2, DISKS);
    expect(left.parts.map((p) => p.node)).toEqual([
      'vmlink-fleece-root',
      'vmlink-fleece-disk0',
      'vmlink-fleece-disk2',
    ]);
    expect(left.staleBitmaps).toEqual([
      { node: 'root', name: BASE },
      { node: 'disk0', name: BASE },
    ]);
    await teardownParts(d2, left.parts);
    expect(q2.exports.size + q2.jobs.size + q2.fdsets.size).toBe(0);
    expect([...q2.nodes.keys()]).toEqual(['root', 'disk0', 'disk2']);
    // Idempotent: a second pass finds nothing and changes nothing.
    const n = mutations(q2).length;
    await teardownParts(d2, (await scanLeftovers(d2, DISKS)).parts);
    expect(mutations(q2).length).toBe(n);
  });
});
