// `vmlink pool list`, `vmlink volume ...`, `vmlink image import` and `vmlink vm snapshot|snapshots|rollback|
// snapshot-delete`: storage through the controller API (tables for people, --json for scripts).
import type { Command } from 'commander';
import {
  PoolListSchema,
  type PoolView,
  SnapshotListSchema,
  VmSnapshotChangeSchema,
  type VolumeChange,
  VolumeChangeSchema,
  VolumeListSchema,
  type VolumeView,
} from '../controller/wire-storage.js';
import { VmlinkError } from '../shared/errors.js';
import { DISK_SIZE_MIB_MAX } from '../shared/limits.js';
import type { ObservedSnapshot } from '../shared/storage.js';
import { runTask } from './client.js';
import { type Api, emit, out, progress } from './io.js';
import { table } from './render.js';

/** `POOL/NAME` as the commands take a volume. */
export function parseVolumeRef(ref: string): { pool: string; name: string } {
  const m = /^([a-z][a-z0-9-]{0,62})\/([a-z][a-z0-9-]{0,62})$/.exec(ref);
  if (!m) throw new VmlinkError('invalid', `a volume is POOL/NAME (lower-case names), got "${ref}"`);
  return { pool: m[1]!, name: m[2]! };
}

/** A size as MiB: `512` (MiB), `512M`, `20G`, `1T`. */
export function parseSizeMiB(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([MGT]i?B?)?$/i.exec(text.trim());
  const unit = (m?.[2] ?? 'M')[0]!.toUpperCase();
  const mib = m
    ? Math.ceil(Number(m[1]) * ({ M: 1, G: 1024, T: 1024 * 1024 } as Record<string, number>)[unit]!)
    : NaN;
  if (!Number.isInteger(mib) || mib < 1 || mib > DISK_SIZE_MIB_MAX)
    throw new VmlinkError(
      'invalid',
      `a size is a number with M, G or T (512M, 20G), at most ${DISK_SIZE_MIB_MAX} MiB; got "${text}"`,
    );
  return mib;
}

/** MiB for people: `512 MiB`, `20.0 GiB`. */
export function formatMiB(mib: number | undefined): string | undefined {
  if (mib === undefined) return undefined;
  if (mib >= 1024 * 1024) return `${(mib / 1024 / 1024).toFixed(1)} TiB`;
  if (mib >= 1024) return `${(mib / 1024).toFixed(1)} GiB`;
  return `${Math.round(mib)} MiB`;
}

/** `vmlink pool list`. */
export function renderPools(pools: PoolView[]): string {
  if (!pools.length) return 'no pools (declare them under pools: in the spec and apply)';
  return table(
    ['POOL', 'TYPE', 'HOST', 'STATE', 'VOLUMES', 'CAPACITY', 'USED', 'FREE', 'FEATURES', 'PROBLEMS'],
    pools.map((p) => [
      p.name,
      p.type,
      p.host,
      p.inSpec ? p.state : `${p.state} (not in spec)`,
      p.volumes,
      formatMiB(p.capacityMiB),
      formatMiB(p.usedMiB),
      formatMiB(p.freeMiB),
      Object.entries(p.features)
        .filter(([, on]) => on)
        .map(([f]) => f)
        .join(',') || undefined,
      [...p.problems, ...(p.error ? [p.error] : [])].join('; ') || undefined,
    ]),
  );
}

/** `vmlink volume list`. */
export function renderVolumes(volumes: VolumeView[]): string {
  if (!volumes.length) return 'no volumes';
  return table(
    ['POOL', 'VOLUME', 'HOST', 'FORMAT', 'SIZE', 'ALLOCATED', 'SNAPSHOTS', 'USED BY', 'NOTES'],
    volumes.map((v) => [
      v.pool,
      v.name,
      v.host,
      v.format,
      formatMiB(v.sizeMiB),
      formatMiB(v.allocatedMiB),
      v.snapshots,
      v.usedBy.map((u) => `${u.vm}:${u.disk}${u.running ? '' : ' (stopped)'}`).join(', ') || undefined,
      [
        ...(v.encrypted ? ['encrypted'] : []),
        ...(v.backingVolume ? [`clone of ${v.backingVolume}`] : []),
        ...(v.declaredAt ? [`spec ${v.declaredAt}`] : []),
      ].join(', ') || undefined,
    ]),
  );
}

/** Snapshots of a volume or VM. */
export function renderSnapshots(snapshots: ObservedSnapshot[]): string {
  if (!snapshots.length) return 'no snapshots';
  return table(
    ['SNAPSHOT', 'CREATED', 'MEMORY'],
    snapshots.map((s) => [
      s.name,
      s.createdAt,
      s.vmStateBytes === undefined ? 'no' : formatMiB(s.vmStateBytes / 1048576),
    ]),
  );
}

const changed = (what: string) => (r: VolumeChange) =>
  [
    `${what} ${r.pool}/${r.name}${r.via ? ` (online, through running VM ${r.via})` : ''}`,
    ...(r.note ? [`note: ${r.note}`] : []),
  ].join('\n');

const path = (pool: string, name: string) =>
  `/v1/volumes/${encodeURIComponent(pool)}/${encodeURIComponent(name)}`;

/** `vmlink pool ...` and `vmlink volume ...`. */
export function addVolumeCommands(program: Command, api: Api): void {
  program
    .command('pool')
    .description('storage pools (declared under pools: in the spec)')
    .command('list')
    .description('pools: type, host, state, volumes, capacity and what each can do')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api().get('/v1/pools', PoolListSchema);
      emit(!!o.json, r, () => renderPools(r));
    });

  const volume = program
    .command('volume')
    .description(
      'volumes in pools: a volume is named POOL/NAME (volumes the spec declares are kept by apply)',
    );
  volume
    .command('list')
    .description('volumes of every pool: size, allocation, snapshots and the VMs that use them')
    .option('--pool <pool>', 'only this pool')
    .option('--json', 'machine-readable output')
    .action(async (o: { pool?: string; json?: boolean }) => {
      const q = o.pool ? `?pool=${encodeURIComponent(o.pool)}` : '';
      const r = await api().get(`/v1/volumes${q}`, VolumeListSchema);
      emit(!!o.json, r, () => renderVolumes(r));
    });
  volume
    .command('create')
    .description('create an empty volume (thin qcow2 in dir and nfs pools, a raw LUN in iscsi pools)')
    .argument('<pool/name>', 'the pool and the new volume')
    .requiredOption('--size <size>', 'its size: 512M, 20G, 1T')
    .option(
      '--encryption-secret <secret>',
      'LUKS-encrypt it with this controller-kept secret (vmlink secret set)',
    )
    .option('--json', 'machine-readable output')
    .action(async (ref: string, o: { size: string; encryptionSecret?: string; json?: boolean }) => {
      const { pool, name } = parseVolumeRef(ref);
      const body = {
        pool,
        name,
        sizeMiB: parseSizeMiB(o.size),
        ...(o.encryptionSecret ? { encryption: { secret: o.encryptionSecret } } : {}),
      };
      const r = await api().post('/v1/volumes', body, VolumeChangeSchema);
      emit(!!o.json, r, () => changed('created')(r));
    });
  volume
    .command('resize')
    .description(
      'grow a volume (never shrinks); online through the running VM that has it open, where the pool can',
    )
    .argument('<pool/name>', 'the volume')
    .argument('<size>', 'its new size: 40G')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, size: string, o: { json?: boolean }) => {
      const { pool, name } = parseVolumeRef(ref);
      const r = await api().post(
        `${path(pool, name)}/resize`,
        { sizeMiB: parseSizeMiB(size) },
        VolumeChangeSchema,
      );
      emit(!!o.json, r, () => changed('grew')(r));
    });
  volume
    .command('clone')
    .description(
      'a new volume of the same pool from this one: a full copy, or --linked (a qcow2 overlay on it)',
    )
    .argument('<pool/name>', 'the source volume')
    .argument('<new-name>', 'the new volume')
    .option('--linked', 'a linked clone (the source cannot be deleted while it lives)')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, target: string, o: { linked?: boolean; json?: boolean }) => {
      const { pool, name } = parseVolumeRef(ref);
      const r = await runTask(
        api(),
        `${path(pool, name)}/clone`,
        { name: target, linked: !!o.linked },
        VolumeChangeSchema,
        progress(!!o.json),
      );
      emit(!!o.json, r, () => changed('created')(r));
    });
  volume
    .command('delete')
    .description('delete a volume (refused while a VM uses it, and for a volume the spec declares)')
    .argument('<pool/name>', 'the volume')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, o: { json?: boolean }) => {
      const { pool, name } = parseVolumeRef(ref);
      const r = await api().delete(path(pool, name), VolumeChangeSchema);
      emit(!!o.json, r, () => changed('deleted')(r));
    });
  volume
    .command('snapshot')
    .description('snapshot a volume no running VM has open (a running VM: vmlink vm snapshot)')
    .argument('<pool/name>', 'the volume')
    .argument('<snapshot>', 'the snapshot name')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, snap: string, o: { json?: boolean }) => {
      const { pool, name } = parseVolumeRef(ref);
      const r = await api().post(`${path(pool, name)}/snapshots`, { name: snap }, VolumeChangeSchema);
      emit(!!o.json, r, () => `snapshot ${snap} of ${r.pool}/${r.name} created`);
    });
  volume
    .command('snapshots')
    .description("a volume's snapshots")
    .argument('<pool/name>', 'the volume')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, o: { json?: boolean }) => {
      const { pool, name } = parseVolumeRef(ref);
      const r = await api().get(`${path(pool, name)}/snapshots`, SnapshotListSchema);
      emit(!!o.json, r, () => renderSnapshots(r.snapshots));
    });
  volume
    .command('rollback')
    .description('roll a volume back to a snapshot: what was written after it is gone')
    .argument('<pool/name>', 'the volume')
    .argument('<snapshot>', 'the snapshot')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, snap: string, o: { json?: boolean }) => {
      const { pool, name } = parseVolumeRef(ref);
      const r = await api().post(
        `${path(pool, name)}/snapshots/${encodeURIComponent(snap)}/rollback`,
        {},
        VolumeChangeSchema,
      );
      emit(!!o.json, r, () => `${r.pool}/${r.name} rolled back to ${snap}`);
    });
  volume
    .command('snapshot-delete')
    .description('delete a snapshot of a volume')
    .argument('<pool/name>', 'the volume')
    .argument('<snapshot>', 'the snapshot')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, snap: string, o: { json?: boolean }) => {
      const { pool, name } = parseVolumeRef(ref);
      const r = await api().delete(
        `${path(pool, name)}/snapshots/${encodeURIComponent(snap)}`,
        VolumeChangeSchema,
      );
      emit(!!o.json, r, () => `snapshot ${snap} of ${r.pool}/${r.name} deleted`);
    });

  program
    .command('image')
    .description('images in pools')
    .command('import')
    .description(
      "import FILE (qcow2, raw or ISO; a path on the pool's host, below its image or pool directories) or copy a volume, as a new volume",
    )
    .argument('[file]', "the image file on the pool's host (e.g. /var/lib/vmlink/images/debian.qcow2)")
    .option('--from-volume <pool/volume>', 'copy this volume instead (same pool)')
    .requiredOption('--pool <pool>', 'the pool to import into')
    .requiredOption('--name <name>', 'the new volume')
    .option('--json', 'machine-readable output')
    .action(
      async (
        file: string | undefined,
        o: { fromVolume?: string; pool: string; name: string; json?: boolean },
      ) => {
        if ((file === undefined) === (o.fromVolume === undefined))
          throw new VmlinkError('invalid', 'give either FILE or --from-volume POOL/VOLUME (one of them)');
        const from = o.fromVolume ? parseVolumeRef(o.fromVolume) : undefined;
        const body = {
          pool: o.pool,
          name: o.name,
          ...(file ? { sourcePath: file } : {}),
          ...(from ? { fromVolume: { pool: from.pool, volume: from.name } } : {}),
        };
        const r = await runTask(api(), '/v1/images/import', body, VolumeChangeSchema, progress(!!o.json));
        emit(!!o.json, r, () => changed('imported')(r));
      },
    );
}

/** `vmlink vm snapshot|snapshots|rollback|snapshot-delete` (added to the `vm` command). */
export function addVmSnapshotCommands(program: Command, api: Api): void {
  const vm =
    program.commands.find((c) => c.name() === 'vm') ?? program.command('vm').description('virtual machines');
  const vmPath = (name: string) => `/v1/vms/${encodeURIComponent(name)}/snapshots`;
  vm.command('snapshot')
    .description("snapshot all of a VM's disks at one instant; --memory also saves its RAM and device state")
    .argument('<name>', 'the VM')
    .argument('<snapshot>', 'the snapshot name')
    .option('--memory', 'also save RAM and device state (a running VM; rollback resumes it where it was)')
    .option('--json', 'machine-readable output')
    .action(async (name: string, snap: string, o: { memory?: boolean; json?: boolean }) => {
      const r = await runTask(
        api(),
        vmPath(name),
        { name: snap, memory: !!o.memory },
        VmSnapshotChangeSchema,
        progress(!!o.json),
      );
      emit(
        !!o.json,
        r,
        () => `snapshot ${r.snapshot} of VM ${r.vm} created${o.memory ? ' (with memory)' : ''}`,
      );
    });
  vm.command('snapshots')
    .description("a VM's whole-VM snapshots")
    .argument('<name>', 'the VM')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const r = await api().get(vmPath(name), SnapshotListSchema);
      emit(!!o.json, r, () => renderSnapshots(r.snapshots));
    });
  vm.command('rollback')
    .description("restore all of a VM's disks (and its RAM, when the snapshot has it) to a snapshot")
    .argument('<name>', 'the VM')
    .argument('<snapshot>', 'the snapshot')
    .option('--json', 'machine-readable output')
    .action(async (name: string, snap: string, o: { json?: boolean }) => {
      const r = await runTask(
        api(),
        `${vmPath(name)}/${encodeURIComponent(snap)}/rollback`,
        {},
        VmSnapshotChangeSchema,
        progress(!!o.json),
      );
      emit(!!o.json, r, () => `VM ${r.vm} rolled back to ${r.snapshot}`);
    });
  vm.command('snapshot-delete')
    .description('delete a whole-VM snapshot')
    .argument('<name>', 'the VM')
    .argument('<snapshot>', 'the snapshot')
    .option('--json', 'machine-readable output')
    .action(async (name: string, snap: string, o: { json?: boolean }) => {
      const r = await api().delete(`${vmPath(name)}/${encodeURIComponent(snap)}`, VmSnapshotChangeSchema);
      if (o.json) out(JSON.stringify(r, null, 2));
      else out(`snapshot ${r.snapshot} of VM ${r.vm} deleted`);
    });
}
