// The pre-flight explain of a live migration (docs/mobility.md): pure checks over the facts gathered from the source
// and target agents' reports. Each check says in plain words what it found and, when it blocks, how to fix it; the
// run refuses while any blocker stands, so `--explain` and the run never disagree.
import type { HostReport, VmConfig } from '../../shared/model.js';

/** Bandwidth assumed for the estimate when none was measured (MiB/s): a 10 Gbit/s underlay, roughly. */
export const MIGRATION_BANDWIDTH_DEFAULT_MIBPS = 1000;
/** Memory the target keeps free beyond the VM's own (QEMU's overhead, the host's margin), MiB. */
export const MIGRATION_MEMORY_HEADROOM_MIB = 64;
/** QEMU's maximum downtime asked for (ms): QEMU's own default, the issue's target. */
export const MIGRATION_DOWNTIME_LIMIT_MS = 300;

/** Everything the explain looks at, gathered by `gatherFacts` (facts.ts) or given by a test. */
export interface MigrationFacts {
  vm: string;
  /** Where the VM runs now (owner record, else the spec's host). */
  from: string;
  to: string;
  /** The spec's hosts. */
  hosts: readonly string[];
  /** The source's report; undefined when its agent did not answer (`sourceError` says why). */
  source?: HostReport;
  sourceError?: string;
  target?: HostReport;
  targetError?: string;
  /** The guest's dirty rate measured on the source (`calc-dirty-rate`), MiB/s, when measured. */
  dirtyRateMiBps?: number;
  /** The migration bandwidth to assume (MiB/s); absent: MIGRATION_BANDWIDTH_DEFAULT_MIBPS. */
  bandwidthMiBps?: number;
}

/** One line of the explain. */
export interface MigrationCheck {
  /** Stable id: `vm-running`, `target-host`, `accelerator`, `cpu`, `tcg-memory`, `confidential`, `passthrough`, `disk:<name>`, `network:<name>`, `memory`, `disk-space`, `estimate`. */
  id: string;
  ok: boolean;
  /** A failed blocker stops the run; a warning is shown; info is what was found. */
  severity: 'blocker' | 'warning' | 'info';
  message: string;
  /** How to fix it (failed checks). */
  fix?: string;
}

/** What the explain decided. */
export interface MigrationExplain {
  vm: string;
  from: string;
  to: string;
  /** No failed blocker. */
  ok: boolean;
  /** Some disk is local to the source: its content is copied (`blockdev-mirror` to an NBD export on the target). */
  blockMigration: boolean;
  /** Local disks copied, by name, with their size (MiB). */
  copiedDisks: Array<{ disk: string; sizeMiB: number }>;
  checks: MigrationCheck[];
  estimate: {
    /** Bytes to send before switch-over: memory plus local disks (MiB). */
    transferMiB: number;
    bandwidthMiBps: number;
    /** Whether `bandwidthMiBps` was assumed rather than measured. */
    bandwidthAssumed: boolean;
    dirtyRateMiBps?: number;
    /** Expected total time (s), when the migration converges. */
    seconds: number;
    /** Whether the dirty rate stays below the bandwidth (else it may never converge). */
    converges: boolean;
  };
}

/** The disk size used when a local disk does not say its size (the test guest's own disks are small). */
const UNKNOWN_DISK_MIB = 0;

const blocker = (id: string, message: string, fix: string): MigrationCheck => ({
  id,
  ok: false,
  severity: 'blocker',
  message,
  fix,
});
const pass = (id: string, message: string): MigrationCheck => ({ id, ok: true, severity: 'info', message });
const warn = (id: string, message: string, fix?: string): MigrationCheck => ({
  id,
  ok: false,
  severity: 'warning',
  message,
  ...(fix ? { fix } : {}),
});

/** Memory the VMs running on `r` take (MiB), the migrating VM left out. */
function usedMemoryMiB(r: HostReport, except: string): number {
  return r.vms
    .filter((v) => v.name !== except && v.state !== 'stopped')
    .reduce((sum, v) => sum + (v.config?.memoryMiB ?? 0), 0);
}

/** The disk checks: shared disks stay, VM-directory disks and image overlays are copied, dir-pool volumes block. */
function diskChecks(
  cfg: VmConfig,
  f: MigrationFacts,
): { checks: MigrationCheck[]; copied: Array<{ disk: string; sizeMiB: number }> } {
  const checks: MigrationCheck[] = [];
  const copied: Array<{ disk: string; sizeMiB: number }> = [];
  const root = cfg.rootSource;
  if (cfg.image.kind === 'qcow2') {
    // A qcow2 image's overlay lives in the VM's directory: the target makes a fresh one on its copy of the image
    // and only the overlay's own clusters are copied.
    checks.push(
      warn(
        'disk:root',
        `root disk of vm ${cfg.name} (the image's overlay) is local to ${f.from}: it is copied to ${f.to} (block migration)`,
      ),
    );
    copied.push({ disk: 'root', sizeMiB: UNKNOWN_DISK_MIB });
  } else if (cfg.image.kind === 'volume' && root?.kind === 'file') {
    checks.push(
      blocker(
        'disk:root',
        `root disk of vm ${cfg.name} is volume ${root.pool}/${root.volume} of dir pool ${root.pool}, local to ${f.from}: block migration copies disks in the VM's directory and image overlays, not dir-pool volumes`,
        `keep vm ${cfg.name} on ${f.from}, or give it a root volume on a shared pool (iSCSI or NFS) to move live`,
      ),
    );
  } else if (cfg.image.kind === 'volume' && root) {
    checks.push(
      pass('disk:root', `root disk is ${root.kind} volume ${root.pool}/${root.volume}, shared: it stays`),
    );
  }
  for (const d of cfg.disks) {
    const id = `disk:${d.name}`;
    const src = d.source;
    if (src && src.kind !== 'file') {
      checks.push(
        pass(id, `disk ${d.name} is ${src.kind} volume ${src.pool}/${src.volume}, shared: it stays`),
      );
      continue;
    }
    if (d.media === 'cdrom') {
      checks.push(
        blocker(
          id,
          `disk ${d.name} is a CD-ROM local to ${f.from}`,
          `eject it (remove the disk from vms[${cfg.name}].disks and apply) before migrating`,
        ),
      );
      continue;
    }
    if (src?.kind === 'file') {
      // The target would need a volume made in its pool and the VM's config rewritten: not in this version.
      checks.push(
        blocker(
          id,
          `disk ${d.name} is volume ${src.pool}/${src.volume} of dir pool ${src.pool}, local to ${f.from}: block migration copies disks in the VM's directory and image overlays, not dir-pool volumes`,
          `keep vm ${cfg.name} on ${f.from}, or give it the disk on a shared pool (iSCSI or NFS) to move live: vm move-disk moves disks only between dir pools of one host`,
        ),
      );
      continue;
    }
    const sizeMiB = d.sizeMiB ?? UNKNOWN_DISK_MIB;
    checks.push(
      warn(
        id,
        `disk ${d.name} (${sizeMiB} MiB) is local to ${f.from}: it is copied to ${f.to} (block migration)`,
      ),
    );
    copied.push({ disk: d.name, sizeMiB });
  }
  return { checks, copied };
}

/** The explain of moving `f.vm` from `f.from` to `f.to`: every check, pure (same facts, same answer). */
export function explainMigration(f: MigrationFacts): MigrationExplain {
  const checks: MigrationCheck[] = [];
  const { vm, from, to } = f;
  if (from === to)
    checks.push(blocker('target-host', `vm ${vm} already runs on ${to}`, 'pick another host with --to'));
  if (!f.hosts.includes(to))
    checks.push(
      blocker(
        'target-host',
        `host ${to} is not in the applied spec (hosts: ${f.hosts.join(', ')})`,
        'pick one of the spec hosts with --to',
      ),
    );
  else if (!f.target)
    checks.push(
      blocker(
        'target-host',
        `the agent of ${to} does not answer${f.targetError ? `: ${f.targetError}` : ''}`,
        `start or repair the agent of ${to} (vmlink doctor)`,
      ),
    );
  const observed = f.source?.vms.find((v) => v.name === vm);
  const cfg = observed?.config;
  if (!f.source)
    checks.push(
      blocker(
        'vm-running',
        `the agent of ${from} (where vm ${vm} runs) does not answer${f.sourceError ? `: ${f.sourceError}` : ''}`,
        `start or repair the agent of ${from}; a failed host's VMs are restarted by HA, not migrated`,
      ),
    );
  else if (!observed || !cfg)
    checks.push(
      blocker(
        'vm-running',
        `vm ${vm} is not on ${from}`,
        `apply the spec first (vmlink apply) so that it runs`,
      ),
    );
  else if (observed.state !== 'running' && observed.state !== 'paused')
    checks.push(
      blocker(
        'vm-running',
        `vm ${vm} is ${observed.state} on ${from}: live migration moves a running VM`,
        `a stopped VM moves by changing vms[${vm}].host in the spec and applying; or start it first (vmlink vm start ${vm})`,
      ),
    );
  else checks.push(pass('vm-running', `vm ${vm} is ${observed.state} on ${from}`));
  const target = f.target;
  if (target?.vms.some((v) => v.name === vm))
    checks.push(
      blocker(
        'target-host',
        `${to} already has a vm ${vm} (left from an earlier move?)`,
        `remove it there first: vmlink apply reconciles ${to}, or vmlink vm delete on that host`,
      ),
    );

  let copied: Array<{ disk: string; sizeMiB: number }> = [];
  if (cfg && f.source && target) {
    const sa = f.source.capabilities.accelerator;
    const ta = target.capabilities.accelerator;
    if (sa !== ta)
      checks.push(
        blocker(
          'accelerator',
          `vm ${vm} runs under ${sa.toUpperCase()} on ${from}, ${to} has ${ta.toUpperCase()}: QEMU cannot migrate between them`,
          `pick a host with ${sa.toUpperCase()} (${to}: ${target.capabilities.acceleratorReason})`,
        ),
      );
    else
      checks.push(
        sa === 'kvm'
          ? warn(
              'cpu',
              `-cpu host under KVM on both: the guest keeps ${from}'s CPU features, so ${to}'s CPU must have every one of them (same model or newer)`,
            )
          : pass('cpu', `-cpu max under TCG on both: the same emulated CPU on every host`),
      );
    // QEMU before 9.0 loses guest writes when it migrates TCG RAM whose length is a multiple of 256 KiB; a TCG guest's
    // RAM is padded off that (qemu/tcg-ram.ts), which a huge-page backend cannot be.
    if (sa === 'tcg' && sa === ta && cfg.hugepages)
      checks.push(
        blocker(
          'tcg-memory',
          `vm ${vm} runs under TCG with its RAM on huge pages: QEMU's live migration of such RAM can lose the guest's writes (QEMU before 9.0)`,
          `stop it and start it on ${to} (change vms[${vm}].host in the spec), or drop memory.hugepages`,
        ),
      );
    if (cfg.cpus > target.capabilities.cpus)
      checks.push(
        warn(
          'cpu',
          `vm ${vm} has ${cfg.cpus} vCPUs, ${to} has ${target.capabilities.cpus} CPUs: they will be overcommitted`,
        ),
      );
    if (cfg.confidential)
      checks.push(
        blocker(
          'confidential',
          `vm ${vm} is a confidential VM (${cfg.confidential}): its encrypted memory cannot be live-migrated by vmlink`,
          `stop it and move it by changing vms[${vm}].host in the spec`,
        ),
      );
    for (const d of cfg.devices ?? [])
      checks.push(
        blocker(
          'passthrough',
          `vm ${vm} has host device ${'pci' in d ? `pci ${d.pci}` : `usb ${d.usb}`} passed through: QEMU cannot migrate a device's state`,
          `remove it from vms[${vm}].devices and apply, or stop the VM and move it`,
        ),
      );
    const disks = diskChecks(cfg, f);
    checks.push(...disks.checks);
    copied = disks.copied;
    const space = diskSpaceCheck(copied, target.capabilities.resources?.vmDiskFreeMiB, to);
    if (space) checks.push(space);
    const nets = [...new Set(cfg.nics.flatMap((n) => n.trunk?.networks ?? [n.network]))];
    for (const n of nets) {
      const there = target.networks.find((x) => x.name === n);
      if (!there)
        checks.push(
          blocker(
            `network:${n}`,
            `network ${n} is not on ${to}`,
            `add ${to} to network ${n}'s hosts in the spec and apply, or pick a host that has it`,
          ),
        );
      else if (there.problems.length)
        checks.push(
          blocker(
            `network:${n}`,
            `network ${n} on ${to} has problems: ${there.problems.join('; ')}`,
            `repair it with vmlink apply (vmlink doctor says more)`,
          ),
        );
      else checks.push(pass(`network:${n}`, `network ${n} is on ${to} (bridge ${there.bridge})`));
    }
    const free = target.capabilities.memoryMiB - usedMemoryMiB(target, vm);
    const need = cfg.memoryMiB + MIGRATION_MEMORY_HEADROOM_MIB;
    if (free < need)
      checks.push(
        blocker(
          'memory',
          `${to} has ${free} MiB of memory free (${target.capabilities.memoryMiB} MiB, its VMs take the rest); vm ${vm} needs ${cfg.memoryMiB} MiB + ${MIGRATION_MEMORY_HEADROOM_MIB} MiB headroom`,
          `stop or move VMs off ${to}, or pick a host with more free memory`,
        ),
      );
    else checks.push(pass('memory', `${to} has ${free} MiB free, vm ${vm} needs ${need} MiB`));
  }

  const bandwidthMiBps = f.bandwidthMiBps ?? MIGRATION_BANDWIDTH_DEFAULT_MIBPS;
  const transferMiB = (cfg?.memoryMiB ?? 0) + copied.reduce((s, d) => s + d.sizeMiB, 0);
  const dirty = f.dirtyRateMiBps;
  const converges = dirty === undefined || dirty < bandwidthMiBps;
  // Pre-copy resends what the guest dirtied meanwhile: a geometric series of rounds, ratio dirty/bandwidth.
  const ratio = dirty === undefined ? 0 : Math.min(dirty / bandwidthMiBps, 0.99);
  const seconds = Math.round((transferMiB / bandwidthMiBps / (1 - ratio)) * 10) / 10;
  const estimate = {
    transferMiB,
    bandwidthMiBps,
    bandwidthAssumed: f.bandwidthMiBps === undefined,
    ...(dirty !== undefined ? { dirtyRateMiBps: dirty } : {}),
    seconds,
    converges,
  };
  if (cfg && !converges)
    checks.push(
      warn(
        'estimate',
        `the guest dirties ${dirty} MiB/s, as fast as ${bandwidthMiBps} MiB/s can be sent: the migration may not converge within ${MIGRATION_DOWNTIME_LIMIT_MS} ms of downtime`,
        'migrate when the guest is less busy',
      ),
    );
  else if (cfg)
    checks.push(
      pass(
        'estimate',
        `about ${transferMiB} MiB to send, ~${seconds} s at ${bandwidthMiBps} MiB/s${f.bandwidthMiBps === undefined ? ' (assumed)' : ''}${dirty !== undefined ? `, guest dirties ${dirty} MiB/s` : ''}`,
      ),
    );
  return {
    vm,
    from,
    to,
    ok: !checks.some((c) => !c.ok && c.severity === 'blocker'),
    blockMigration: copied.length > 0,
    copiedDisks: copied,
    checks,
    estimate,
  };
}

/**
 * Room on the target for the copied disks. A warning, not a blocker: local disks are thin, so a copy takes what the
 * guest wrote, which the source does not report; the sum of their sizes is the most it can take. Nothing when no
 * disk is copied or the target does not say its free space (an older agent).
 */
function diskSpaceCheck(
  copied: ReadonlyArray<{ disk: string; sizeMiB: number }>,
  freeMiB: number | undefined,
  to: string,
): MigrationCheck | undefined {
  const needMiB = copied.reduce((s, d) => s + d.sizeMiB, 0);
  if (copied.length === 0 || freeMiB === undefined) return undefined;
  return freeMiB < needMiB
    ? warn(
        'disk-space',
        `${to} has ${freeMiB} MiB free for VM disks; the copied disks are up to ${needMiB} MiB (thin: they take what the guest wrote)`,
        `free space on ${to}, or move the disks to a shared pool first (vmlink vm move-disk)`,
      )
    : pass(
        'disk-space',
        `${to} has ${freeMiB} MiB free for VM disks; the copied disks are up to ${needMiB} MiB`,
      );
}
