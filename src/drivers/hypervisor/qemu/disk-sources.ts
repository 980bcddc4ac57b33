// The QMP commands that open one disk of a VM and plug it in: secret objects, the protocol node of its source (a
// file, an iSCSI LUN, a file on an NFS export), its format node, its device. A pure function of the disk (golden-
// tested); disk-attach.ts runs them at a paused start and for hot-plug.
import type { DiskConfig } from '../../../shared/model.js';
import type { DiskSource } from '../../../shared/storage.js';
import { type DiskIds, SCSI_CONTROLLER } from './disk-slots.js';

/** One QMP command. */
export interface QmpCommand {
  execute: string;
  arguments: Record<string, unknown>;
}

/** Where a disk's bytes come from, as its host opens them. */
export type DiskOrigin =
  /** A file QEMU opens itself by path (the VM's own directory, which its jail shows). */
  | { kind: 'path'; path: string; format: 'qcow2' | 'raw' }
  /** A pool volume. */
  | { kind: 'source'; source: DiskSource };

/** What attaching one disk needs. */
export interface DiskAttachInput {
  disk: Pick<DiskConfig, 'name' | 'encryption' | 'media' | 'readOnly'>;
  origin: DiskOrigin;
  ids: DiskIds;
  /** SCSI id of a CD-ROM on the virtio-scsi controller (its slot). */
  scsiId?: number;
  /** Boot order position (the root disk of a VM booting from a volume). */
  bootindex?: number;
  /** The disk's LUKS key (base64), required when `disk.encryption`. */
  keyBase64?: string;
  /** The iSCSI CHAP password (base64), required when the source has `chap`. */
  chapBase64?: string;
}

/** The commands of one attach, in order. */
export interface DiskAttachCommands {
  /** Secret objects (LUKS key, CHAP password): sent on the agent's monitor only, never on an argv. */
  secrets: QmpCommand[];
  /**
   * The protocol node. `passFile`: root opens that file and adds it to fd set `ids.fdset` first; the node then
   * opens `/dev/fdset/N` (the jailed QEMU could not open the pool's file itself).
   */
  protocol: QmpCommand;
  passFile?: { path: string; readOnly: boolean };
  /** Format node, device, then the secret objects deleted again (each is read once, when its node opens). */
  rest: QmpCommand[];
}

/** The path QEMU opens fd set `id` by. */
export const fdsetFile = (id: number): string => `/dev/fdset/${id}`;

/** Whether the disk is opened read-only (a CD-ROM always is). */
export function isReadOnly(d: Pick<DiskConfig, 'media' | 'readOnly'>): boolean {
  return d.media === 'cdrom' || d.readOnly === true;
}

/** The guest-visible serial of a disk: its name (virtio-blk keeps 20 bytes). */
export function diskSerial(name: string): string {
  return name.slice(0, 20);
}

/** The image format of an origin: ISOs are raw, iSCSI LUNs are raw. */
function formatOf(o: DiskOrigin): 'qcow2' | 'raw' {
  if (o.kind === 'path') return o.format;
  const s = o.source;
  if (s.kind === 'iscsi') return 'raw';
  return s.format === 'qcow2' ? 'qcow2' : 'raw';
}

/** The protocol node of `origin` (blockdev-add arguments), and the file root must pass for it, if any. */
export function protocolNode(
  origin: DiskOrigin,
  ids: DiskIds,
  readOnly: boolean,
): { node: Record<string, unknown>; passFile?: { path: string; readOnly: boolean } } {
  const ro = readOnly ? { 'read-only': true } : {};
  if (origin.kind === 'path')
    return { node: { driver: 'file', 'node-name': ids.file, filename: origin.path, ...ro } };
  const s = origin.source;
  if (s.kind === 'file')
    return {
      node: { driver: 'file', 'node-name': ids.file, filename: fdsetFile(ids.fdset), ...ro },
      passFile: { path: s.path, readOnly },
    };
  return { node: networkProtocolNode(s, ids, readOnly) };
}

/**
 * The protocol node of a pool volume QEMU reaches over the network itself (libiscsi, libnfs); a CHAP password is
 * the secret object `ids.chap`. A running VM's QEMU and a stopped VM's storage daemon open them alike.
 */
export function networkProtocolNode(
  s: Extract<DiskSource, { kind: 'iscsi' | 'nfs' }>,
  ids: Pick<DiskIds, 'file' | 'chap'>,
  readOnly: boolean,
): Record<string, unknown> {
  const ro = readOnly ? { 'read-only': true } : {};
  if (s.kind === 'iscsi')
    return {
      driver: 'iscsi',
      'node-name': ids.file,
      transport: 'tcp',
      portal: s.portal,
      target: s.iqn,
      lun: s.lun,
      ...(s.chap ? { user: s.chap.user, 'password-secret': ids.chap } : {}),
      ...ro,
    };
  return {
    driver: 'nfs',
    'node-name': ids.file,
    server: { type: 'inet', host: s.server },
    path: `${s.export.replace(/\/+$/, '')}/${s.file}`,
    ...ro,
  };
}

/** The format node over `ids.file`: qcow2 (LUKS inside when keyed), luks over a raw volume, or raw. */
export function formatNode(origin: DiskOrigin, ids: DiskIds, encrypted: boolean, readOnly: boolean) {
  const ro = readOnly ? { 'read-only': true } : {};
  const format = formatOf(origin);
  if (format === 'qcow2')
    return {
      driver: 'qcow2',
      'node-name': ids.node,
      file: ids.file,
      ...(encrypted ? { encrypt: { format: 'luks', 'key-secret': ids.secret } } : {}),
      ...ro,
    };
  return encrypted
    ? { driver: 'luks', 'node-name': ids.node, file: ids.file, 'key-secret': ids.secret, ...ro }
    : { driver: 'raw', 'node-name': ids.node, file: ids.file, ...ro };
}

/** The device of a disk: virtio-blk in its own root port, or a CD-ROM (scsi-cd) on the virtio-scsi controller. */
export function diskDevice(input: Pick<DiskAttachInput, 'disk' | 'ids' | 'scsiId' | 'bootindex'>) {
  const { disk, ids } = input;
  const boot = input.bootindex === undefined ? {} : { bootindex: input.bootindex };
  if (disk.media === 'cdrom')
    return {
      driver: 'scsi-cd',
      id: ids.node,
      drive: ids.node,
      bus: `${SCSI_CONTROLLER}.0`,
      'scsi-id': input.scsiId ?? 0,
      lun: 0,
      ...boot,
    };
  return {
    driver: 'virtio-blk-pci',
    id: ids.node,
    drive: ids.node,
    bus: ids.port,
    serial: diskSerial(disk.name),
    ...boot,
  };
}

/**
 * Every command that opens and plugs in one disk. Secrets travel as secret objects (`format: base64`) and are
 * deleted once the nodes that read them are open: QEMU 7.2 answers `qom-get` of a secret's `data`.
 */
export function diskAttachCommands(input: DiskAttachInput): DiskAttachCommands {
  const { disk, origin, ids } = input;
  const readOnly = isReadOnly(disk);
  const secrets: QmpCommand[] = [];
  const secretIds: string[] = [];
  if (disk.encryption) {
    if (input.keyBase64 === undefined) throw new Error(`disk ${disk.name}: its LUKS key is missing`);
    secrets.push(secretObject(ids.secret, input.keyBase64));
    secretIds.push(ids.secret);
  }
  if (origin.kind === 'source' && origin.source.kind === 'iscsi' && origin.source.chap) {
    if (input.chapBase64 === undefined) throw new Error(`disk ${disk.name}: its CHAP password is missing`);
    secrets.push(secretObject(ids.chap, input.chapBase64));
    secretIds.push(ids.chap);
  }
  const { node, passFile } = protocolNode(origin, ids, readOnly);
  return {
    secrets,
    protocol: { execute: 'blockdev-add', arguments: node },
    ...(passFile ? { passFile } : {}),
    rest: [
      {
        execute: 'blockdev-add',
        arguments: formatNode(origin, ids, disk.encryption !== undefined, readOnly),
      },
      { execute: 'device_add', arguments: diskDevice(input) },
      ...secretIds.map((id) => ({ execute: 'object-del', arguments: { id } })),
    ],
  };
}

function secretObject(id: string, base64: string): QmpCommand {
  return { execute: 'object-add', arguments: { 'qom-type': 'secret', id, data: base64, format: 'base64' } };
}

/**
 * Commands that undo a (possibly partial) attach once the device is gone: the nodes, any secret left, the fd set.
 * Each may fail because that part was never made; callers ignore those failures.
 */
export function diskCleanupCommands(ids: DiskIds): QmpCommand[] {
  return [
    { execute: 'blockdev-del', arguments: { 'node-name': ids.node } },
    { execute: 'blockdev-del', arguments: { 'node-name': ids.file } },
    { execute: 'object-del', arguments: { id: ids.secret } },
    { execute: 'object-del', arguments: { id: ids.chap } },
    { execute: 'remove-fd', arguments: { 'fdset-id': ids.fdset } },
  ];
}

/** What a disk-attach failure may say: QEMU's message, with anything that looks like a URL's credentials cut. */
export function redactUrlCredentials(text: string): string {
  return text.replace(/([a-z]+:\/\/)[^/@\s]*@/gi, '$1');
}
