// The spec's balancing and per-VM resource fields (issue 13, docs/mobility.md): `cluster.balance`,
// `cluster.balanceThreshold`, `vms[].cpu` (pinning, quota) and `vms[].memory.hugepages`. Each object is checked alone
// here; pin count against `cpus` in validate/vm-resources.ts, CPUs and support against the host when the VM starts.
import { z } from 'zod';
import { VM_CPUS_MAX } from '../shared/limits.js';

/** Highest host CPU number a pin may name (Linux's NR_CPUS is at most 8192). */
export const HOST_CPU_ID_MAX = 8191;
/** `50%`: a share of the VM's vCPUs' time, 1% to 100%. */
export const CPU_QUOTA_PATTERN = /^([1-9]\d?|100)%$/;

/** The percent of a quota CPU_QUOTA_PATTERN accepts. */
export function quotaPercent(quota: string): number {
  const m = CPU_QUOTA_PATTERN.exec(quota);
  if (!m) throw new Error(`invalid CPU quota ${JSON.stringify(quota)}: use e.g. 50%`);
  return Number(m[1]);
}

/** `vms[].cpu`: where its vCPUs run and how much CPU time they get. */
export const VmCpuSchema = z
  .object({
    /** Host CPU of each vCPU, in vCPU order (vCPU i runs on pin[i] only): one per vCPU, each once. */
    pin: z.array(z.number().int().min(0).max(HOST_CPU_ID_MAX)).min(1).max(VM_CPUS_MAX).optional(),
    /**
     * Share of its vCPUs' time it may use (cgroups v2 `cpu.max`): `50%` of 2 vCPUs is one CPU's worth per period.
     * Needs a host that delegates a cgroup to vmlink (its capability report says so).
     */
    quota: z.string().regex(CPU_QUOTA_PATTERN, 'must be a percent from 1% to 100%, e.g. 50%').optional(),
  })
  .strict();

/** `vms[].memory`: how its RAM is backed. */
export const VmMemorySchema = z
  .object({
    /** Back the guest's RAM with the host's free huge pages; refused where the host has too few. */
    hugepages: z.boolean().default(false),
  })
  .strict();

/** Fields of `vms[]` (spread into VmSchema). */
export const vmResourceFields = {
  cpu: VmCpuSchema.optional(),
  memory: VmMemorySchema.optional(),
};

/** Fields of `cluster:` (spread into ClusterSchema). */
export const clusterBalanceFields = {
  /** `manual`: `vmlink balance --apply` runs a plan; `automatic`: the active controller re-plans on a period. */
  balance: z.enum(['manual', 'automatic']).default('manual'),
  /** Max - min host CPU and memory use allowed, in percentage points (default 10). */
  balanceThreshold: z.number().int().min(1).max(100).default(10),
};

/** `vms[].cpu` as written. */
export type VmCpuSpec = z.infer<typeof VmCpuSchema>;
