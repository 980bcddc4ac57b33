// Verify's storage paths, from the resolved spec alone (pure): which portals each compute host must reach, which
// pool volumes each running VM's QEMU must have open, and which the guest must read and write. The run-time side
// (probes through agents, QEMU's open disks, the guest I/O) is ../controller/storage-checks.ts.
import type { VmConfig } from '../shared/model.js';
import { type DiskSource, ISCSI_PORT, NFS_PORT, RPCBIND_PORT } from '../shared/storage.js';

/** Most storage checks one verify runs; the rest are counted as left out. */
export const STORAGE_CHECKS_MAX = 256;

/** A service port on the way to a pool: an iSCSI portal, an NFS server, or the portmapper NFSv3 asks first. */
export type PortalService = 'iscsi' | 'nfs' | 'portmapper';

/** One storage check. */
export type StorageCheck =
  /** The compute host connects to a pool's service port (TCP), as QEMU's initiator or NFS client will. */
  | {
      check: 'portal';
      host: string;
      /** The pools reached through it (the first one names the cell). */
      pools: string[];
      address: string;
      port: number;
      service: PortalService;
    }
  /** The VM's QEMU has the volume open (query-block, through the agent). */
  | { check: 'open'; host: string; vm: string; disk: string; source: DiskSource }
  /** The guest finds the disk by its serial, reads its last 4 KiB and (unless read-only) writes them back. */
  | {
      check: 'io';
      host: string;
      vm: string;
      disk: string;
      source: DiskSource;
      serial: string;
      write: boolean;
    };

/** The plan of a verify's storage checks. */
export interface StorageCheckPlan {
  checks: StorageCheck[];
  /** What is not checked, and why (operator-facing). */
  notes: string[];
}

/** The serial QEMU gives a VM disk (`/sys/block/<dev>/serial` in the guest): its name, cut to 20 characters. */
export function diskSerial(disk: string): string {
  return disk.slice(0, 20);
}

/** The service ports a host needs to open a volume (none for a file in a local dir pool). */
export function portalsOf(
  source: DiskSource,
): Array<{ address: string; port: number; service: PortalService }> {
  if (source.kind === 'iscsi') {
    const [address, port] = splitPortal(source.portal);
    return [{ address, port, service: 'iscsi' }];
  }
  if (source.kind === 'nfs')
    return [
      { address: source.server, port: RPCBIND_PORT, service: 'portmapper' },
      { address: source.server, port: NFS_PORT, service: 'nfs' },
    ];
  return [];
}

/** `address:port` of an iSCSI portal (port 3260 when absent). */
export function splitPortal(portal: string): [string, number] {
  const i = portal.lastIndexOf(':');
  if (i < 0) return [portal, ISCSI_PORT];
  return [portal.slice(0, i), Number(portal.slice(i + 1)) || ISCSI_PORT];
}

/** How an operator reads a volume's place: `pool/volume`. */
export const volumeLabel = (s: DiskSource): string => `${s.pool}/${s.volume}`;

/**
 * Whether what QEMU reports open is this source. A dir pool's file is opened by root and handed over as a
 * descriptor, so QEMU may name a descriptor set rather than the path: the disk being open is the proof there. An
 * iSCSI LUN must name its target (IQN), an NFS file its file name.
 */
export function openMatches(source: DiskSource, target: string): boolean {
  if (source.kind === 'iscsi') return target.includes(source.iqn);
  if (source.kind === 'nfs') return target.includes(source.file);
  return true;
}

/**
 * The storage checks of the resolved spec: per compute host, one TCP connect per distinct service port its running
 * VMs' pool disks need; per running VM, each pool disk open in QEMU and read (and written back) in the guest.
 * `guestIo(vm)`: whether the VM's guest can run the I/O script (the test guest; another image may lack dd).
 */
export function storageChecksOf(
  vmsByHost: Readonly<Record<string, { vms: readonly VmConfig[] }>>,
  guestIo: (vm: string) => boolean,
): StorageCheckPlan {
  const plan: StorageCheckPlan = { checks: [], notes: [] };
  let leftOut = 0;
  const push = (c: StorageCheck) => {
    if (plan.checks.length >= STORAGE_CHECKS_MAX) leftOut++;
    else plan.checks.push(c);
  };
  for (const [host, desired] of Object.entries(vmsByHost)) {
    const portals = new Map<string, Extract<StorageCheck, { check: 'portal' }>>();
    for (const vm of desired.vms) {
      if (vm.state !== 'running') continue;
      const disks = [
        ...(vm.rootSource ? [{ name: 'root', source: vm.rootSource, readOnly: false, cdrom: false }] : []),
        ...vm.disks.flatMap((d) =>
          d.source
            ? [{ name: d.name, source: d.source, readOnly: d.readOnly === true, cdrom: d.media === 'cdrom' }]
            : [],
        ),
      ];
      for (const d of disks) {
        for (const p of portalsOf(d.source)) {
          const key = `${p.address}:${p.port}`;
          const known = portals.get(key);
          if (known) {
            if (!known.pools.includes(d.source.pool)) known.pools.push(d.source.pool);
            continue;
          }
          const c = { check: 'portal' as const, host, pools: [d.source.pool], ...p };
          portals.set(key, c);
          push(c);
        }
        push({ check: 'open', host, vm: vm.name, disk: d.name, source: d.source });
        if (d.cdrom) {
          plan.notes.push(`${vm.name}/${d.name}: a CD-ROM, not read or written in the guest`);
          continue;
        }
        if (!guestIo(vm.name)) {
          plan.notes.push(
            `${vm.name}/${d.name}: not read or written in the guest (only the test guest runs the check)`,
          );
          continue;
        }
        push({
          check: 'io',
          host,
          vm: vm.name,
          disk: d.name,
          source: d.source,
          serial: diskSerial(d.name),
          write: !d.readOnly,
        });
      }
    }
  }
  if (leftOut)
    plan.notes.push(`${leftOut} storage check(s) left out (at most ${STORAGE_CHECKS_MAX} per verify)`);
  return plan;
}

/** The first line the guest I/O script prints on success: `vmlink-disk-io ok DEV SECTORS MD5 read|write`. */
const IO_OK = /^vmlink-disk-io ok ([a-z0-9]{1,16}) (\d{1,15}) ([0-9a-f]{32}) (read|write)$/m;

/**
 * A POSIX `sh` script for the guest (busybox): finds the disk whose `/sys/block/<dev>/serial` is `$1`, reads its
 * last 4 KiB with direct I/O, writes the same bytes back with direct I/O when `$2` is `write` (a real write that
 * changes nothing) and reads them again to compare. Run as `sh -c SCRIPT vmlink-disk-io SERIAL MODE`: the serial
 * is an argument, never part of the script.
 */
export const DISK_IO_SCRIPT = `want="$1"; mode="$2"; d=
for f in /sys/block/*/serial; do
  [ -r "$f" ] || continue
  if [ "$(cat "$f")" = "$want" ]; then d=\${f%/serial}; d=\${d##*/}; break; fi
done
[ -n "$d" ] || { echo "no disk with serial $want in /sys/block (seen: $(cat /sys/block/*/serial 2>/dev/null | tr '\\n' ' '))"; exit 3; }
sectors=$(cat "/sys/block/$d/size")
last=$((sectors / 8 - 1))
[ "$last" -ge 0 ] || { echo "/dev/$d is smaller than 4 KiB"; exit 4; }
t=$(mktemp) && u=$(mktemp) || exit 5
trap 'rm -f "$t" "$u"' EXIT
e=$(dd if="/dev/$d" of="$t" bs=4096 skip=$last count=1 iflag=direct 2>&1) || { echo "read of /dev/$d failed: $e"; exit 6; }
a=$(md5sum <"$t"); a=\${a%% *}
if [ "$mode" = write ]; then
  e=$(dd if="$t" of="/dev/$d" bs=4096 seek=$last count=1 oflag=direct conv=notrunc,fsync 2>&1) || { echo "write to /dev/$d failed: $e"; exit 7; }
  e=$(dd if="/dev/$d" of="$u" bs=4096 skip=$last count=1 iflag=direct 2>&1) || { echo "read-back of /dev/$d failed: $e"; exit 8; }
  b=$(md5sum <"$u"); b=\${b%% *}
  [ "$a" = "$b" ] || { echo "read-back of /dev/$d differs ($a, then $b)"; exit 9; }
fi
echo "vmlink-disk-io ok $d $sectors $a $mode"
`;

/** argv that runs the disk I/O check of `serial` in a guest. */
export function diskIoArgv(serial: string, write: boolean): string[] {
  return ['sh', '-c', DISK_IO_SCRIPT, 'vmlink-disk-io', serial, write ? 'write' : 'read'];
}

/** The outcome of a guest's disk I/O check, from its exit code and output (untrusted: bounded, first line). */
export function parseDiskIo(
  exitCode: number,
  stdout: string,
  stderr: string,
): { ok: boolean; detail: string; unmeasured?: boolean } {
  const text = stdout.slice(0, 4096);
  const m = IO_OK.exec(text);
  if (exitCode === 0 && m)
    return {
      ok: true,
      detail: `/dev/${m[1]} (${Math.round(Number(m[2]) / 2048)} MiB): last 4 KiB ${m[4] === 'write' ? 'read, written back and read again' : 'read'}`,
    };
  const why = (text.trim() || stderr.slice(0, 4096).trim() || `exit ${exitCode}`)
    .split('\n')[0]!
    .slice(0, 200);
  // 126/127: no shell or no dd in the guest: the check did not run, which proves nothing about the disk.
  if (exitCode === 126 || exitCode === 127)
    return { ok: false, detail: `not measured: ${why}`, unmeasured: true };
  return { ok: false, detail: why };
}
