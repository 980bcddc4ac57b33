// Plugging and unplugging NICs of a running VM so that it matches a new config: the slot changes over QMP (taps
// arrive as descriptors), the static address told to the test guest first, a fresh seed for cloud images, and
// the stored command line brought along so a restart or an adopting agent sees the same devices.
import { chmod, chown, rename } from 'node:fs/promises';
import type { Runner } from '../../../exec/runner.js';
import { GUEST_STATIC_IP_TIMEOUT_MS } from '../../../shared/limits.js';
import { log } from '../../../shared/log.js';
import type { VmConfig } from '../../../shared/model.js';
import type { OpContext } from '../../network/types.js';
import type { GuestExecResult } from '../types.js';
import { buildSeedFiles, writeSeedIso } from './cloudinit.js';
import { assignNicSlots, type VmPaths } from './cmdline.js';
import { applySlotChanges, nicSlotChanges } from './hotplug.js';
import type { VmIdentity } from './identity.js';
import type { FdChannel } from './pass-fd.js';
import type { QmpClient } from './qmp.js';
import type { StoredVm } from './vm-store.js';

/** What plugging needs of the driver for one running VM. */
export interface NicPlugDeps {
  runner: Runner;
  paths: VmPaths;
  qmp: QmpClient;
  fdChannel: FdChannel;
  identity: () => Promise<VmIdentity>;
  guestExec: (argv: string[], opts: { timeoutMs?: number; input?: string }) => Promise<GuestExecResult>;
  writeStored: (stored: StoredVm) => Promise<void>;
  /** The command line of `cfg` on this host, as the driver builds it (confidential VMs need the host's parts). */
  argvOf: (
    cfg: VmConfig,
    accel: 'kvm' | 'tcg',
    nicSlots: readonly number[],
    diskSlots?: readonly number[],
  ) => Promise<string[]>;
  unplugTimeoutMs: number;
}

/** Brings running VM `vm` (as stored) to `cfg`, which differs from it in NICs only; records `configHash`. */
export async function plugNics(
  d: NicPlugDeps,
  vm: StoredVm,
  cfg: VmConfig,
  configHash: string,
  ctx?: OpContext,
): Promise<void> {
  const p = d.paths;
  const oldSlots = vm.nicSlots ?? vm.config.nics.map((_, i) => i);
  const nicSlots = assignNicSlots(cfg.nics, { nics: vm.config.nics, slots: oldSlots });
  const changes = nicSlotChanges(vm.config.nics, oldSlots, cfg.nics, nicSlots);
  await applySlotChanges(changes, {
    ...d.fdChannel,
    qmp: d.qmp,
    unplugTimeoutMs: d.unplugTimeoutMs,
    subject: `vm/${cfg.name}`,
    ...(ctx?.progress ? { progress: ctx.progress } : {}),
    beforePlug: async (nic) => {
      if (cfg.image.kind === 'test-guest' && nic.staticIp) await announceStaticIp(d, cfg.name, nic);
    },
  });
  // A cloud image reads its NICs from the seed at its next boot: write a new seed beside the one QEMU has open
  // (a new inode, so the running guest's disk does not change under it).
  if (cfg.image.kind === 'qcow2') {
    const id = await d.identity();
    const next = `${p.seedIso}.next`;
    await writeSeedIso(d.runner, buildSeedFiles(cfg), p.seedDir, next);
    await chown(next, id.uid, id.gid);
    await chmod(next, 0o600);
    await rename(next, p.seedIso);
  }
  const argv = await d.argvOf(cfg, vm.accel, nicSlots, vm.diskSlots);
  await d.writeStored({ ...vm, config: cfg, configHash, argv, nicSlots });
}

/**
 * Tells the test guest the static address of a NIC it is about to see (its kernel command line cannot): the
 * guest's hot-plug loop reads /run/vmlink/nic/MAC. Without a guest agent the NIC falls back to DHCP.
 */
async function announceStaticIp(d: NicPlugDeps, name: string, nic: VmConfig['nics'][number]): Promise<void> {
  const ip = nic.staticIp!;
  const line = `${ip.address}/${ip.prefixLength}${ip.gateway ? `,${ip.gateway}` : ''}\n`;
  try {
    const r = await d.guestExec(
      ['/bin/sh', '-c', 'mkdir -p /run/vmlink/nic && cat >"/run/vmlink/nic/$1"', 'sh', nic.mac],
      { input: line, timeoutMs: GUEST_STATIC_IP_TIMEOUT_MS },
    );
    if (r.exitCode !== 0) throw new Error(r.stderr.trim() || `exit ${r.exitCode}`);
  } catch (e) {
    log.warn(
      { vm: name, mac: nic.mac, err: (e as Error).message },
      'could not tell the guest its static address',
    );
  }
}
