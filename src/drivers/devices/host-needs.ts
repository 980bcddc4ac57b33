// What the host itself runs on, for the inventory's `hostUse`: the block devices holding its root and boot file
// systems (from /proc/self/mountinfo) and its NICs (the uplink it was started with, the default route's).
import { realpath } from 'node:fs/promises';
import { basename } from 'node:path';
import { readFileCapped } from '../../shared/state-file.js';
import type { HostNeed } from './sysfs.js';

/** Mount points whose devices the host cannot give away. */
export const HOST_MOUNTS = ['/', '/boot', '/boot/efi', '/usr', '/var'] as const;
const MOUNTINFO_MAX_BYTES = 1 << 20;

/**
 * The block devices under `HOST_MOUNTS`, from mountinfo text (proc(5): `id parent major:minor root mountpoint opts
 * ... - fstype source superopts`). A file system with a real device (major > 0) is named by `major:minor`; one
 * without (btrfs, overlay: major 0) by its source when that is a /dev path, resolved with `resolveDev`.
 */
export async function blockNeedsFromMountinfo(
  text: string,
  resolveDev: (path: string) => Promise<string | undefined> = resolveDevPath,
): Promise<HostNeed[]> {
  const out: HostNeed[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const mount = f[4];
    const dev = f[2];
    if (!mount || !dev || !(HOST_MOUNTS as readonly string[]).includes(mount)) continue;
    const dash = f.indexOf('-', 6);
    const source = dash > 0 ? f[dash + 2] : undefined;
    const label = source?.startsWith('/dev/') ? basename(source) : dev;
    const role = mount === '/' ? 'root' : mount.startsWith('/boot') ? 'boot' : 'system';
    const why = `${role} disk ${label} (${mount})`;
    if (/^[1-9]\d*:\d+$/.test(dev)) {
      out.push({ kind: 'block', name: dev, why });
      continue;
    }
    const name = source?.startsWith('/dev/') ? await resolveDev(source) : undefined;
    if (name) out.push({ kind: 'block', name, why });
  }
  return out;
}

/** `/dev/mapper/vg-root` -> `dm-0`, `/dev/sda2` -> `sda2`. */
async function resolveDevPath(path: string): Promise<string | undefined> {
  try {
    return basename(await realpath(path));
  } catch {
    return undefined;
  }
}

/** NICs of the default routes in /proc/net/route text (`Iface Destination Gateway ...`, hex, destination 0). */
export function defaultRouteNics(text: string): string[] {
  const out = new Set<string>();
  for (const line of text.split('\n').slice(1)) {
    const [iface, dest, , , , , , mask] = line.trim().split(/\s+/);
    if (iface && dest === '00000000' && mask === '00000000') out.add(iface);
  }
  return [...out];
}

/** This host's needs: its disks by mountinfo, its uplink (`vmlink agent --uplink`), its default route's NICs. */
export async function readHostNeeds(uplink: string | undefined, procRoot = '/proc'): Promise<HostNeed[]> {
  const [mountinfo, routes] = await Promise.all([
    readFileCapped(`${procRoot}/self/mountinfo`, { maxBytes: MOUNTINFO_MAX_BYTES }).catch(() => undefined),
    readFileCapped(`${procRoot}/net/route`, { maxBytes: MOUNTINFO_MAX_BYTES }).catch(() => undefined),
  ]);
  const needs = await blockNeedsFromMountinfo(mountinfo ?? '');
  if (uplink) needs.push({ kind: 'net', name: uplink, why: `uplink ${uplink}` });
  for (const nic of defaultRouteNics(routes ?? ''))
    if (nic !== uplink) needs.push({ kind: 'net', name: nic, why: `management NIC ${nic} (default route)` });
  return needs;
}
