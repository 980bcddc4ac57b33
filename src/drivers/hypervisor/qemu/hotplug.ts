// NIC hot-plug and unplug over QMP: which slots change, and the QMP exchange for each.
import { isDeepStrictEqual } from 'node:util';
import { TimeoutError } from '../../../shared/errors.js';
import type { NicConfig, VmConfig } from '../../../shared/model.js';
import { nicDeviceProps, nicSlot, type VmPaths } from './cmdline.js';
import { type FdChannel, passTap } from './pass-fd.js';
import type { QmpClient } from './qmp.js';

/** What to do with one NIC slot: unplug what is there, then plug `nic` (either may be absent). */
export interface SlotChange {
  slot: number;
  unplug: boolean;
  plug?: NicConfig;
}

/**
 * Slot changes that take a VM's NICs from `from` (in slots `fromSlots`) to `to` (in `toSlots`, see
 * `assignNicSlots`): a NIC is known by its tap; untouched slots are left out.
 */
export function nicSlotChanges(
  from: readonly NicConfig[],
  fromSlots: readonly number[],
  to: readonly NicConfig[],
  toSlots: readonly number[],
): SlotChange[] {
  const before = new Map<number, NicConfig>(from.map((n, i) => [fromSlots[i] ?? i, n]));
  const after = new Map<number, NicConfig>(to.map((n, i) => [toSlots[i] ?? i, n]));
  const out: SlotChange[] = [];
  for (const slot of [...new Set([...before.keys(), ...after.keys()])].sort((a, b) => a - b)) {
    const a = before.get(slot);
    const b = after.get(slot);
    if (a && b && sameNic(a, b)) continue;
    out.push({ slot, unplug: a !== undefined, ...(b ? { plug: b } : {}) });
  }
  return out;
}

// As stored in JSON: key order and undefined members do not count, nor the port's host-side filters (security
// groups, port security, the addresses its guard allows): the agent applies those to the tap while the guest's device
// stays plugged.
const plain = (n: NicConfig): unknown => {
  const { securityGroups: _g, portSecurity: _p, allowedAddresses: _a, reservedIp: _r, ...device } = n;
  return JSON.parse(JSON.stringify(device));
};
const sameNic = (a: NicConfig, b: NicConfig) => isDeepStrictEqual(plain(a), plain(b));

/** The `netdev_add` command the fd helper runs after `getfd`: a tap netdev on the passed descriptor. */
export function netdevAddCommand(slot: number): string {
  const s = nicSlot(slot);
  return JSON.stringify({
    execute: 'netdev_add',
    arguments: { type: 'tap', id: s.netdev, fd: s.fdname, vhost: false },
  });
}

/** Ids of the NIC devices QEMU has now (`nic0`, ...), from its peripheral container. */
export async function presentNicDevices(qmp: QmpClient): Promise<Set<string>> {
  const items = await qmp.execute<Array<{ name: string }>>('qom-list', { path: '/machine/peripheral' });
  return new Set(items.map((i) => i.name).filter((n) => /^nic\d+$/.test(n)));
}

/**
 * Unplugs the NIC of `slot`: `device_del`, then waits for DEVICE_DELETED (the guest must release it: ACPI or PCIe
 * hot-plug in its kernel), then removes the netdev. A slot with no device only loses its netdev, if any.
 */
export async function unplugNic(
  qmp: QmpClient,
  slot: number,
  present: boolean,
  timeoutMs: number,
  subject?: string,
): Promise<void> {
  const s = nicSlot(slot);
  if (present) {
    // Listen before asking: the event may come before device_del returns.
    const deleted = waitDeviceDeleted(qmp, s.device, timeoutMs, subject);
    deleted.catch(() => {});
    await qmp.execute('device_del', { id: s.device });
    await deleted;
  }
  await qmp.execute('netdev_del', { id: s.netdev }).catch(() => {
    // already gone (never added, or removed with an earlier attempt)
  });
}

/** Adds the device of a NIC whose netdev the fd helper created; removes the netdev again if QEMU refuses it. */
export async function addNicDevice(qmp: QmpClient, nic: NicConfig, slot: number): Promise<void> {
  try {
    await qmp.execute('device_add', nicDeviceProps(nic, slot));
  } catch (e) {
    await qmp.execute('netdev_del', { id: nicSlot(slot).netdev }).catch(() => {});
    throw e;
  }
}

function waitDeviceDeleted(
  qmp: QmpClient,
  device: string,
  timeoutMs: number,
  subject?: string,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(
        new TimeoutError(
          `NIC ${device} was not released by the guest within ${timeoutMs} ms (no DEVICE_DELETED): does its kernel handle PCIe hot-plug?`,
          subject,
        ),
      );
    }, timeoutMs);
    const off = qmp.onEvent((e) => {
      if (e.event === 'DEVICE_DELETED' && e.data?.device === device) {
        clearTimeout(timer);
        off();
        resolve();
      }
    });
  });
}

/** Whether a VM's command line has the fd monitor and root ports that NIC hot-plug needs. */
export function hasHotplugSlots(argv: readonly string[], p: VmPaths): boolean {
  return (
    argv.some((a) => a.startsWith(`unix:${p.qmpFdSocket},`)) &&
    argv.some((a) => a.includes(`id=${nicSlot(0).port},`))
  );
}

/** Whether `a` and `b` differ in their NICs at most (power state aside), as read back from JSON. */
export function onlyNicsDiffer(a: VmConfig, b: VmConfig): boolean {
  const { nics: _a, state: _b, ...x } = a;
  const { nics: _c, state: _d, ...y } = b;
  return isDeepStrictEqual(JSON.parse(JSON.stringify(x)), JSON.parse(JSON.stringify(y)));
}

/** What `applySlotChanges` needs from the driver: its QMP client and the VM's fd channel. */
export interface SlotChangeContext extends FdChannel {
  qmp: QmpClient;
  unplugTimeoutMs: number;
  subject: string;
  progress?: (msg: string) => void;
  /** Runs before a NIC is plugged (the test guest learns its static address this way). */
  beforePlug?: (nic: NicConfig) => Promise<void>;
}

/**
 * Unplugs, then plugs, the NICs of `changes` in a running VM. A device already in a slot (left by an attempt that
 * failed half-way) is unplugged first, so a retry converges.
 */
export async function applySlotChanges(changes: readonly SlotChange[], c: SlotChangeContext): Promise<void> {
  const present = await presentNicDevices(c.qmp);
  // Unplug first: a slot that changes NIC is emptied before it is filled again.
  for (const ch of changes) {
    const dev = nicSlot(ch.slot).device;
    if (present.has(dev)) c.progress?.(`unplugging NIC ${dev}`);
    await unplugNic(c.qmp, ch.slot, present.has(dev), c.unplugTimeoutMs, c.subject);
  }
  for (const ch of changes) {
    if (!ch.plug) continue;
    const s = nicSlot(ch.slot);
    c.progress?.(`plugging NIC ${s.device} (${ch.plug.tap})`);
    await c.beforePlug?.(ch.plug);
    // QEMU runs jailed and cannot open the tap: the helper opens it and passes it over QMP (SCM_RIGHTS).
    await passTap(c, ch.plug.tap, s.fdname, [netdevAddCommand(ch.slot)]);
    await addNicDevice(c.qmp, ch.plug, ch.slot);
  }
}
