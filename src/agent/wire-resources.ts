// The agent wire's CPU pinning, quota and huge-page fields (issue 13): a VM's config and what the host reports of
// them. Bounded like the rest of the wire (a report is untrusted input to the controller).
import { z } from 'zod';
import { VM_CPUS_MAX } from '../shared/limits.js';
import type { HostResources, ObservedVcpu, VmCpuConfig } from '../shared/model.js';
import { HOST_CPU_ID_MAX } from '../spec/schema-balance.js';

/** VmCpuConfig as it crosses the wire. */
export const VmCpuConfigSchema = z
  .object({
    pin: z.array(z.number().int().min(0).max(HOST_CPU_ID_MAX)).min(1).max(VM_CPUS_MAX).optional(),
    quotaPercent: z.number().int().min(1).max(100).optional(),
  })
  .strict() satisfies z.ZodType<VmCpuConfig>;

/** A VM's vCPU threads in a host report. */
export const ObservedVcpusSchema = z
  .array(
    z
      .object({
        vcpu: z.number().int().min(0).max(VM_CPUS_MAX),
        thread: z.number().int().min(1),
        cpus: z.string().max(256),
      })
      .strict() satisfies z.ZodType<ObservedVcpu>,
  )
  .max(VM_CPUS_MAX);

/** What a host offers for pinning, quotas and huge pages (`capabilities.resources` of its report). */
export const HostResourcesSchema = z
  .object({
    /** Host CPUs a VM may be pinned to (`/sys/devices/system/cpu/online`). */
    onlineCpus: z.array(z.number().int().min(0).max(HOST_CPU_ID_MAX)).max(HOST_CPU_ID_MAX + 1),
    /** Quotas need a cgroup v2 hierarchy vmlink may write (cpu.max). */
    cpuQuota: z.object({ available: z.boolean(), reason: z.string().max(500) }).strict(),
    /** Free huge pages of the default size to back guest RAM with; `mount`: what older agents sent, now unused. */
    hugepages: z
      .object({
        available: z.boolean(),
        reason: z.string().max(500),
        pageSizeKiB: z.number().int().min(0),
        free: z.number().int().min(0),
        mount: z.string().max(256).optional(),
      })
      .strict(),
    vmDiskFreeMiB: z.number().int().min(0).optional(),
  })
  .strict() satisfies z.ZodType<HostResources>;
