// Plan-time checks of storage and devices against what the hosts report (pure): volumes the spec names but does
// not declare (imported images) exist, pools stay within their over-provisioning limit, and each VM's passthrough
// devices pass the host's rules. Validation (../spec/validate/storage.ts) checks what the spec alone can show.
import type { DeviceInventory, DeviceRequest } from '../shared/devices.js';
import type { SpecIssue } from '../shared/errors.js';
import type { HostReport } from '../shared/model.js';
import type { ObservedPool } from '../shared/storage.js';
import type { Spec } from '../spec/schema.js';
import { vmVolumeUses } from '../spec/storage.js';
import type { DesiredState } from './resolve.js';

const key = (pool: string, volume: string) => `${pool}/${volume}`;

/** Each pool as its host reports it (only hosts that answered; a pool whose host did not is not checked). */
function reportedPools(reports: readonly HostReport[]): Map<string, { host: string; pool: ObservedPool }> {
  const out = new Map<string, { host: string; pool: ObservedPool }>();
  for (const r of reports) for (const p of r.pools ?? []) out.set(p.name, { host: r.host, pool: p });
  return out;
}

/**
 * Volumes a VM names that `volumes:` does not declare (imported images, templates) must be in their pool on its
 * host, and a CD-ROM's must be an ISO. Pools whose host did not report are not checked (nothing runs there now).
 */
export function checkNamedVolumes(spec: Spec, reports: readonly HostReport[]): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const seen = reportedPools(reports);
  const reported = new Set(reports.map((r) => r.host));
  const declared = new Set(spec.volumes.map((v) => key(v.pool, v.name)));
  spec.vms.forEach((vm, vi) => {
    for (const use of vmVolumeUses(vm, vi)) {
      if (use.kind === 'made' || declared.has(key(use.pool, use.volume))) continue;
      const pool = spec.pools.find((p) => p.name === use.pool);
      if (!pool || !reported.has(pool.host)) continue;
      const o = seen.get(use.pool);
      const v = o?.host === pool.host ? o.pool.volumes.find((x) => x.name === use.volume) : undefined;
      const path = `${use.path}.volume`;
      if (!v) {
        issues.push({
          path,
          message: `volume "${use.volume}" is not in pool "${use.pool}" on host "${pool.host}" and volumes: does not declare it; import it first (\`vmlink image import FILE --pool ${use.pool} --name ${use.volume}\`) or declare it under volumes:`,
        });
        continue;
      }
      if (use.disk?.media === 'cdrom' && v.format !== 'iso')
        issues.push({
          path: `${use.path}.media`,
          message: `volume "${use.volume}" of pool "${use.pool}" is ${v.format}, not an ISO; a CD-ROM shows an imported ISO image (or attach it as a disk: media: disk)`,
        });
      if (use.disk?.media !== 'cdrom' && v.format === 'iso')
        issues.push({
          path: `${use.path}.media`,
          message: `volume "${use.volume}" of pool "${use.pool}" is an ISO image: attach it with media: cdrom`,
        });
    }
  });
  return issues;
}

/** One pool's provisioning after the plan: what its volumes promise, and its reported capacity. */
export interface PoolProvisioning {
  pool: string;
  host: string;
  /** Sum of the virtual sizes of its volumes once the plan ran (wanted ones at their planned size, kept ones as they are). */
  provisionedMiB: number;
  capacityMiB: number;
}

/** Each reported pool's provisioning once `desired` is applied (volumes grow, new ones appear, none shrinks). */
export function poolProvisioning(desired: DesiredState, reports: readonly HostReport[]): PoolProvisioning[] {
  const want = new Map<string, number>();
  for (const d of Object.values(desired))
    for (const v of d.volumes ?? []) want.set(key(v.config.pool, v.config.name), v.config.sizeMiB);
  return [...reportedPools(reports).values()].map(({ host, pool }) => {
    const sizes = new Map<string, number>();
    for (const v of pool.volumes) sizes.set(v.name, v.sizeMiB);
    for (const [k, size] of want) {
      const [p, name] = k.split('/') as [string, string];
      if (p === pool.name) sizes.set(name, Math.max(size, sizes.get(name) ?? 0));
    }
    const provisionedMiB = Math.ceil([...sizes.values()].reduce((a, b) => a + b, 0));
    return { pool: pool.name, host, provisionedMiB, capacityMiB: pool.capacityMiB };
  });
}

/** Pools with `maxOvercommit` whose planned provisioning exceeds `maxOvercommit × capacity`: refused at plan time. */
export function checkPoolCapacity(
  spec: Spec,
  desired: DesiredState,
  reports: readonly HostReport[],
): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const byName = new Map(poolProvisioning(desired, reports).map((p) => [p.pool, p] as const));
  spec.pools.forEach((p, i) => {
    const got = byName.get(p.name);
    if (p.maxOvercommit === undefined || !got || got.host !== p.host || got.capacityMiB <= 0) return;
    const limit = Math.floor(p.maxOvercommit * got.capacityMiB);
    if (got.provisionedMiB > limit)
      issues.push({
        path: `pools[${i}].maxOvercommit`,
        message: `pool "${p.name}" on host "${p.host}" would provision ${got.provisionedMiB} MiB of volumes, over its limit of ${limit} MiB (maxOvercommit ${p.maxOvercommit} × capacity ${got.capacityMiB} MiB); shrink or drop volumes in the spec, free the pool's disk, or raise maxOvercommit`,
      });
  });
  return issues;
}

/** The VM asking for devices, as the passthrough check names it. */
export interface PassthroughVm {
  name: string;
  host: string;
  index: number;
}

/** One refused device request: where in the spec, why, and what to do. */
export interface PassthroughRefusal {
  path: string;
  reason: string;
  fix: string;
}

/**
 * The rules a host applies to passthrough requests: the devices helper's `checkHostPassthrough`
 * (src/plan/passthrough.ts) has this shape.
 */
export type HostPassthroughCheck = (
  vms: ReadonlyArray<{ vm: PassthroughVm; requests: readonly DeviceRequest[] }>,
  inventory: DeviceInventory | undefined,
  policy: { usbAllow: readonly string[]; usbAllowPath: string },
) => PassthroughRefusal[];

/**
 * Every VM's passthrough devices, host by host, against the inventory the host reported (hosts that did not answer
 * are not checked: nothing is started there). Without `check`, a request is refused only where the host reports no
 * inventory at all (an agent before passthrough), since nothing can be verified there.
 */
export function checkDevicesAgainstHosts(
  spec: Spec,
  reports: readonly HostReport[],
  check?: HostPassthroughCheck,
): SpecIssue[] {
  const issues: SpecIssue[] = [];
  spec.hosts.forEach((h, hi) => {
    const report = reports.find((r) => r.host === h.name);
    if (!report) return;
    const vms = spec.vms
      .map((vm, index) => ({ vm: { name: vm.name, host: vm.host, index }, requests: vm.devices }))
      .filter((x) => x.vm.host === h.name && x.requests.length > 0);
    if (!vms.length) return;
    if (check) {
      const policy = { usbAllow: h.passthrough?.usb ?? [], usbAllowPath: `hosts[${hi}].passthrough.usb` };
      for (const r of check(vms, report.devices, policy))
        issues.push({ path: r.path, message: `${r.reason}; ${r.fix}` });
      return;
    }
    if (report.devices) return;
    for (const { vm, requests } of vms)
      for (let k = 0; k < requests.length; k++)
        issues.push({
          path: `vms[${vm.index}].devices[${k}]`,
          message: `host "${h.name}" did not report its devices (its agent predates passthrough), so the request cannot be checked; upgrade the vmlink agent on that host`,
        });
  });
  return issues;
}
