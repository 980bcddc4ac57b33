// Field-by-field differences between a realised config and the desired one, each with how it is applied.

import type { DeviceRequest } from '../shared/devices.js';
import type { DiskConfig, NetworkConfig, NicConfig, VmConfig } from '../shared/model.js';
import type { DiskSource } from '../shared/storage.js';
import { canonicalJson } from './hash.js';
import { resourceChanges } from './resolve-resources.js';

/**
 * How a changed field reaches the running object: `hot-plug`/`hot-unplug` through QMP while the VM runs,
 * `re-plug` (unplugged and plugged again), `restart` by stopping and starting the VM, `VM stopped` when it is
 * changed while the VM is stopped, `in place` on a network (its devices are kept) or on a VM's port (its filters on
 * the host, the VM keeps running), `recreate` when a network's devices are rebuilt (attached VMs lose their link
 * for a moment).
 */
export type ApplyHow =
  | 'hot-plug'
  | 'hot-unplug'
  | 're-plug'
  | 'restart'
  | 'in place'
  | 'recreate'
  | 'VM stopped';

/** One changed field: `memoryMiB 256 -> 320`, `nics +natnet`, with how it is applied. */
export interface FieldChange {
  field: string;
  text: string;
  how: ApplyHow;
}

const same = (a: unknown, b: unknown) => canonicalJson(a) === canonicalJson(b);

const nicLabel = (n: NicConfig) => (n.trunk ? `trunk ${n.trunk.networks.join('+')}` : n.network);

function imageLabel(image: VmConfig['image']): string {
  return image.kind === 'qcow2' ? `qcow2 ${image.path}` : image.kind;
}

// Fields of a NIC, named as they are in the spec where they come from it.
const NIC_FIELDS = ['network', 'backend', 'bridge', 'vlan', 'trunk', 'mac', 'mtu', 'staticIp'] as const;
// Fields only the host side of the port applies (its filters): changed on the running VM's port, the VM kept as is.
const PORT_FIELDS = ['securityGroups', 'portSecurity', 'allowedAddresses', 'reservedIp'] as const;

function show(v: unknown): string {
  if (v === undefined) return 'none';
  if (typeof v === 'object' && v !== null && 'address' in v) {
    const s = v as NonNullable<NicConfig['staticIp']>;
    return `${s.address}/${s.prefixLength}${s.gateway ? ` via ${s.gateway}` : ''}`;
  }
  if (typeof v === 'object' && v !== null && 'vlans' in v) return (v as { vlans: number[] }).vlans.join(',');
  if (Array.isArray(v)) return v.length ? v.join(',') : 'none';
  return String(v);
}

/**
 * What differs between the NICs of `from` and `to`. NICs are matched by tap device (one per NIC slot): a NIC only in
 * `to` is plugged, one only in `from` unplugged, one in both with other settings unplugged and plugged again.
 */
export function nicChanges(from: readonly NicConfig[], to: readonly NicConfig[]): FieldChange[] {
  const out: FieldChange[] = [];
  const old = new Map(from.map((n) => [n.tap, n]));
  const kept = new Set(to.map((n) => n.tap));
  for (const n of from)
    if (!kept.has(n.tap)) out.push({ field: 'nics', text: `nics -${nicLabel(n)}`, how: 'hot-unplug' });
  for (const n of to) {
    const o = old.get(n.tap);
    if (!o) {
      out.push({ field: 'nics', text: `nics +${nicLabel(n)}`, how: 'hot-plug' });
      continue;
    }
    const diffs = NIC_FIELDS.filter((f) => !same(o[f], n[f])).map(
      (f) => `${f} ${show(o[f])} -> ${show(n[f])}`,
    );
    if (diffs.length)
      out.push({ field: 'nics', text: `nics ${nicLabel(n)} ${diffs.join(', ')}`, how: 're-plug' });
    // A re-plug ensures the port anew, filters included; alone, they are applied to the port in place.
    const showPort = (f: (typeof PORT_FIELDS)[number], v: unknown) =>
      f === 'portSecurity' ? (v === false ? 'off' : 'on') : show(v);
    const port = PORT_FIELDS.filter((f) => !same(o[f], n[f])).map(
      (f) => `${f} ${showPort(f, o[f])} -> ${showPort(f, n[f])}`,
    );
    if (port.length)
      out.push({ field: 'nics', text: `nics ${nicLabel(n)} ${port.join(', ')}`, how: 'in place' });
  }
  return out;
}

/**
 * What differs between a VM's realised config and the desired one (its power state aside). NIC changes are
 * `hot-plug`/`hot-unplug`/`re-plug`; everything else needs a `restart` (see `vmChangesAsApplied`).
 */
export function vmFieldChanges(from: VmConfig, to: VmConfig): FieldChange[] {
  const out: FieldChange[] = [];
  if (from.cpus !== to.cpus)
    out.push({ field: 'cpus', text: `cpus ${from.cpus} -> ${to.cpus}`, how: 'restart' });
  if (from.memoryMiB !== to.memoryMiB)
    out.push({ field: 'memoryMiB', text: `memoryMiB ${from.memoryMiB} -> ${to.memoryMiB}`, how: 'restart' });
  if (!same(from.image, to.image))
    out.push({
      field: 'image',
      text: `image ${imageLabel(from.image)} -> ${imageLabel(to.image)}`,
      how: 'restart',
    });
  out.push(...resourceChanges(from, to));
  if (from.confidential !== to.confidential)
    out.push({
      field: 'confidential',
      text: `confidential ${from.confidential ?? 'none'} -> ${to.confidential ?? 'none'}`,
      how: 'restart',
    });
  const oldDisks = new Map(from.disks.map((d) => [d.name, d]));
  const newDisks = new Set(to.disks.map((d) => d.name));
  for (const d of from.disks)
    if (!newDisks.has(d.name))
      out.push({ field: 'disks', text: `disks -${d.name}`, how: hotPluggable(d) ? 'hot-unplug' : 'restart' });
  for (const d of to.disks) {
    const o = oldDisks.get(d.name);
    if (!o)
      out.push({ field: 'disks', text: `disks +${d.name}`, how: hotPluggable(d) ? 'hot-plug' : 'restart' });
    else if (!same(o.source, d.source) || o.media !== d.media || o.readOnly !== d.readOnly)
      out.push({
        field: 'disks',
        text: `disks ${d.name} ${diskLabel(o)} -> ${diskLabel(d)}`,
        how: 'restart',
      });
    else if (o.sizeMiB !== d.sizeMiB)
      // A pool volume grows by its own volume.resize step (online where the pool can); a VM-dir disk on restart.
      out.push({
        field: 'disks',
        text: `disks ${d.name} ${o.sizeMiB} -> ${d.sizeMiB} MiB`,
        how: d.source ? 'in place' : 'restart',
      });
    // The host refuses this one (a disk keeps the encryption it was made with); the plan says what was asked.
    if (o && o.encryption?.secret !== d.encryption?.secret)
      out.push({
        field: 'disks',
        text: `disks ${d.name} secret ${o.encryption?.secret ?? 'none'} -> ${d.encryption?.secret ?? 'none'}`,
        how: 'restart',
      });
  }
  if (!same(from.rootSource, to.rootSource))
    out.push({
      field: 'rootSource',
      text: `root volume ${sourceLabel(from.rootSource)} -> ${sourceLabel(to.rootSource)}`,
      how: 'restart',
    });
  if (!same(from.devices ?? [], to.devices ?? []))
    out.push({
      field: 'devices',
      text: `devices ${deviceList(from.devices)} -> ${deviceList(to.devices)}`,
      how: 'restart',
    });
  // Disk order decides device order in the guest: a reorder alone is a change too. Hot-plugged disks take the
  // next free slot, so a plug or unplug alone is no reorder.
  if (
    out.every((c) => c.field !== 'disks') &&
    !same(
      from.disks.map((d) => d.name),
      to.disks.map((d) => d.name),
    )
  )
    out.push({ field: 'disks', text: 'disks reordered', how: 'restart' });
  out.push(...nicChanges(from.nics, to.nics));
  // A NIC set that differs only in order (same taps, same settings) still changes slots.
  if (
    out.every((c) => c.field !== 'nics') &&
    !same(
      from.nics.map((n) => n.tap),
      to.nics.map((n) => n.tap),
    )
  )
    out.push({ field: 'nics', text: 'nics reordered', how: 'restart' });
  return out;
}

/** A pool volume as a disk (not a CD-ROM: its IDE/SCSI drive is not hot-pluggable): QMP plugs it while the VM runs. */
function hotPluggable(d: DiskConfig): boolean {
  return d.source !== undefined && d.media !== 'cdrom';
}

function sourceLabel(s: DiskSource | undefined): string {
  if (!s) return 'none';
  if (s.kind === 'iscsi') return `${s.pool}/${s.volume} (iscsi ${s.portal})`;
  if (s.kind === 'nfs') return `${s.pool}/${s.volume} (nfs ${s.server})`;
  return `${s.pool}/${s.volume}`;
}

function diskLabel(d: DiskConfig): string {
  const src = d.source ? sourceLabel(d.source) : "VM's directory";
  return `${src}${d.media === 'cdrom' ? ' cdrom' : ''}${d.readOnly ? ' read-only' : ''}`;
}

function deviceList(list: readonly DeviceRequest[] | undefined): string {
  return list?.length ? list.map((d) => ('pci' in d ? `pci ${d.pci}` : `usb ${d.usb}`)).join(', ') : 'none';
}

const LIVE: ReadonlySet<ApplyHow> = new Set(['hot-plug', 'hot-unplug', 're-plug', 'in place']);

/** Whether every change can be applied to the running VM without a restart. */
export function allLive(changes: readonly FieldChange[]): boolean {
  return changes.length > 0 && changes.every((c) => LIVE.has(c.how));
}

/** The changes as they will be applied: live ones stay live only when all are; a stopped VM takes them as they come. */
export function vmChangesAsApplied(changes: readonly FieldChange[], running: boolean): FieldChange[] {
  if (!running) return changes.map((c) => ({ ...c, how: 'VM stopped' }));
  if (allLive(changes)) return [...changes];
  return changes.map((c) => ({ ...c, how: 'restart' }));
}

// Network fields whose change rebuilds the network's devices; the others are changed in place.
const NETWORK_RECREATE = new Set([
  'mode',
  'backend',
  'bridge',
  'vxlan.vni',
  'vxlan.device',
  'vlan.id',
  'vlan.trunk',
]);

function flatten(prefix: string, v: unknown, out: Map<string, unknown>): void {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(prefix ? `${prefix}.${k}` : k, x, out);
  } else if (v !== undefined) out.set(prefix, v);
}

function showItem(x: unknown): string {
  if (x === null || typeof x !== 'object') return String(x);
  const o = x as Record<string, unknown>;
  if ('hostPort' in o) return `${o.protocol} ${o.hostPort} -> ${o.targetIp}:${o.targetPort}`;
  if ('mac' in o && 'ip' in o) return `${o.mac} = ${o.ip}`;
  return canonicalJson(x);
}

function showNet(v: unknown): string {
  if (v === undefined) return 'none';
  if (Array.isArray(v)) return `[${v.map(showItem).join(', ')}]`;
  return String(v);
}

/** What differs between a network's realised config and the desired one, field by field (nested as `subnet.cidr`). */
export function networkFieldChanges(from: NetworkConfig, to: NetworkConfig): FieldChange[] {
  const a = new Map<string, unknown>();
  const b = new Map<string, unknown>();
  flatten('', from, a);
  flatten('', to, b);
  const fields = [...new Set([...a.keys(), ...b.keys()])].sort();
  const out: FieldChange[] = [];
  for (const f of fields) {
    const x = a.get(f);
    const y = b.get(f);
    if (same(x, y)) continue;
    const text = `${f} ${showNet(x)} -> ${showNet(y)}`;
    out.push({ field: f, text, how: NETWORK_RECREATE.has(f) ? 'recreate' : 'in place' });
  }
  return out;
}

/** `memoryMiB 256 -> 320 (restart)`: one change as a plan line shows it. */
export function formatChange(c: FieldChange): string {
  return `${c.text} (${c.how})`;
}
