// The host's readiness for jailed VMs, as `vmlink doctor` reports it: a launcher that jails, free VM ids, the kvm
// group, per-VM cgroups. Read-only: it changes nothing.
import { existsSync, statSync } from 'node:fs';
import type { Runner } from '../../../exec/runner.js';
import { readFileCapped } from '../../../shared/state-file.js';
import { CGROUP_ROOT, isCgroupV2 } from './cgroup.js';
import { DEFAULT_VM_ID_RANGE, type IdRange, idsInUse } from './identity.js';

/** One check, as the agent's doctor reports it. */
export interface JailCheck {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
}

/** What the checks look at (tests point them elsewhere). */
export interface JailCheckOptions {
  runner: Runner;
  launcher: string;
  range?: IdRange;
  systemFiles?: string[];
  cgroupRoot?: string;
  kvmDevice?: string;
}

/** Checks that VMs can be jailed on this host. */
export async function jailChecks(o: JailCheckOptions): Promise<JailCheck[]> {
  const checks: JailCheck[] = [];
  // The launcher prints its usage (exit 64) when run without arguments: a current one names --jail.
  const usage = await o.runner
    .run([o.launcher], { allowFailure: true, timeoutMs: 5_000 })
    .catch((e: Error) => ({ code: 127, stdout: '', stderr: e.message }));
  const jails = usage.code === 64 && usage.stderr.includes('--jail');
  checks.push({
    name: 'vm jail',
    ok: jails,
    detail: jails
      ? 'launcher jails each QEMU (own uid, mount namespace, not dumpable, limits)'
      : `launcher ${o.launcher} cannot jail QEMU (missing or older than its sources)`,
    fix: 'run `npm run build:native` (or npm run setup)',
  });

  const range = o.range ?? DEFAULT_VM_ID_RANGE;
  const texts = await Promise.all(
    (o.systemFiles ?? ['/etc/passwd', '/etc/group']).map(
      async (f) => (await readFileCapped(f, { maxBytes: 16 << 20 }).catch(() => undefined)) ?? '',
    ),
  );
  const last = range.first + range.count - 1;
  const clash = [...idsInUse(...texts)].filter((id) => id >= range.first && id <= last).length;
  const kvm = await o.runner.run(['getent', 'group', 'kvm'], { allowFailure: true });
  const kvmGid = kvm.code === 0 ? Number(kvm.stdout.split(':')[2]) : undefined;
  const dev = o.kvmDevice ?? '/dev/kvm';
  const devGid = existsSync(dev) ? statSync(dev).gid : undefined;
  const kvmNote =
    devGid === undefined
      ? `no ${dev}: VMs run under TCG`
      : kvmGid !== undefined && devGid === kvmGid
        ? `VMs join group kvm (${kvmGid}) for ${dev}`
        : `${dev} is not group kvm's: VMs cannot use KVM and run under TCG`;
  checks.push({
    name: 'vm identities',
    ok: clash < range.count,
    detail: `one uid/gid per VM from ${range.first}..${last}${clash ? ` (${clash} used by /etc/passwd or /etc/group, skipped)` : ''}; ${kvmNote}`,
    fix: 'choose a VM id range no system account uses',
  });

  const v2 = await isCgroupV2(o.cgroupRoot ?? CGROUP_ROOT);
  checks.push({
    name: 'vm cgroups',
    // Optional hardening: without cgroup v2 the rlimits still bound each QEMU.
    ok: true,
    detail: v2
      ? 'cgroup v2: one cgroup per VM (memory, pids, cpu)'
      : 'no cgroup v2 (v1 or hybrid hierarchy): no per-VM cgroups; each QEMU is bounded by its rlimits only',
    ...(v2
      ? {}
      : { fix: 'boot with systemd.unified_cgroup_hierarchy=1 (Debian 12 default) for per-VM cgroups' }),
  });
  return checks;
}
