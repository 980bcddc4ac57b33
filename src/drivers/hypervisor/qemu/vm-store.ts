// One VM's persisted record, `<stateDir>/vms/<name>/config.json`: its config, its hash and the QEMU command line
// it was started with (read back to adopt a running VM after an agent restart).
import { readdir } from 'node:fs/promises';
import { z } from 'zod';
import type { VmConfig } from '../../../shared/model.js';
import { readJsonFile, writeJsonFile } from '../../../shared/state-file.js';
import { NAME_PATTERN } from '../../../spec/schema.js';

/** What `config.json` in a VM's directory holds. */
export interface StoredVm {
  config: VmConfig;
  configHash: string;
  accel: 'kvm' | 'tcg';
  /** QEMU argv (binary first), run through the launcher. */
  argv: string[];
  /** Slot (PCIe root port) of each NIC, in `config.nics` order; absent in VMs stored before slots: NIC i in slot i. */
  nicSlots?: number[];
  /** Slot (PCIe root port) of each disk, in `config.disks` order; absent in VMs stored before slots: disk i in slot i. */
  diskSlots?: number[];
  /** Its QEMU was started in the host's network namespace (it has iSCSI or NFS disks); absent: an empty one. */
  hostNetwork?: true;
}

// What the driver relies on in config.json; the rest of `config` is what it wrote itself (VmConfig).
const StoredVmSchema = z
  .object({
    config: z.custom<VmConfig>(
      (v) =>
        typeof v === 'object' &&
        v !== null &&
        typeof (v as VmConfig).name === 'string' &&
        Array.isArray((v as VmConfig).nics) &&
        (v as VmConfig).nics.every((n) => typeof n?.tap === 'string'),
      'must be a VM config with a name and NICs',
    ),
    configHash: z.string(),
    accel: z.enum(['kvm', 'tcg']),
    argv: z.array(z.string()).min(1),
    nicSlots: z.array(z.number().int().min(0)).optional(),
    diskSlots: z.array(z.number().int().min(0)).optional(),
    hostNetwork: z.literal(true).optional(),
  })
  // Fields a newer vmlink added are kept, not dropped, when an older one reads the file.
  .loose() satisfies z.ZodType<StoredVm>;

/** config.json holds one VM's config and QEMU command line: 1 MiB is far above any. */
const CONFIG_MAX_BYTES = 1 << 20;

/** Names of the VMs with a directory under `<stateDir>/vms/`, sorted. */
export async function storedVmNames(stateDir: string): Promise<string[]> {
  const entries = await readdir(`${stateDir}/vms`, { withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isDirectory() && NAME_PATTERN.test(e.name))
    .map((e) => e.name)
    .sort();
}

/** A VM's record from its `config.json`; undefined when there is none. */
export function readStoredVm(configFile: string): Promise<StoredVm | undefined> {
  return readJsonFile(configFile, StoredVmSchema, { maxBytes: CONFIG_MAX_BYTES });
}

/** Writes a VM's record atomically, readable by the agent only. */
export async function writeStoredVm(configFile: string, stored: StoredVm): Promise<void> {
  await writeJsonFile(configFile, stored, { mode: 0o600 });
}

/** `vm` as it is started with `argv`, recording whether its QEMU keeps the host's network (iSCSI or NFS disks). */
export function asStarted(vm: StoredVm, argv: string[], hostNetwork: boolean): StoredVm {
  const { hostNetwork: _n, ...rest } = vm;
  return { ...rest, argv, ...(hostNetwork ? { hostNetwork: true } : {}) };
}
