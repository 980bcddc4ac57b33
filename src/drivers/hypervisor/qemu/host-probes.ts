// What this host offers QEMU, probed once per driver: the accelerator (KVM or TCG, and why), confidential-VM
// support, and whether per-VM cgroups can be made (cgroup v2).
import type { Runner } from '../../../exec/runner.js';
import type { ConfidentialCapabilities, HostCapabilities } from '../../../shared/model.js';
import { cachedAccelerator } from './accel.js';
import { CGROUP_ROOT, isCgroupV2 } from './cgroup.js';
import { type ConfidentialHost, detectConfidential } from './confidential.js';
import { assertLauncher, type QemuUser } from './launcher.js';

/** What the probes need from their driver. */
export interface HostProbeDeps {
  runner: Runner;
  launcher: string;
  qemuBinary: string;
  qemuUser: () => Promise<QemuUser>;
  /** Skips the accelerator probe (tests, operators who know better). */
  accelerator?: 'kvm' | 'tcg';
  /** Root of /proc, /sys, /dev and /usr the confidential-VM detector reads (default `/`). */
  confidentialRoot?: string;
  /** The cgroup v2 mount per-VM cgroups go under (default /sys/fs/cgroup). */
  cgroupRoot?: string;
}

/** The host's QEMU-relevant features, each probed at most once. */
export class QemuHostProbes {
  private cgroupV2: Promise<boolean> | undefined;
  private confidentialHostP: Promise<ConfidentialHost> | undefined;

  constructor(private readonly deps: HostProbeDeps) {}

  async accelerator(): Promise<Pick<HostCapabilities, 'accelerator' | 'acceleratorReason'>> {
    if (this.deps.accelerator)
      return { accelerator: this.deps.accelerator, acceleratorReason: 'set by configuration' };
    assertLauncher(this.deps.launcher);
    const r = await cachedAccelerator({
      runner: this.deps.runner,
      launcher: this.deps.launcher,
      user: await this.deps.qemuUser(),
      qemuBinary: this.deps.qemuBinary,
    });
    return { accelerator: r.accelerator, acceleratorReason: r.acceleratorReason };
  }

  /** Which confidential-VM kinds this host can launch, each with the missing piece where it cannot. */
  async confidential(): Promise<ConfidentialCapabilities> {
    const { firmware: _, ...caps } = await this.confidentialHost();
    return caps;
  }

  // Detected once: CPU, kernel and firmware do not change while the agent runs (a QEMU upgrade needs a restart).
  confidentialHost(): Promise<ConfidentialHost> {
    this.confidentialHostP ??= (async () => {
      const v = await this.deps.runner
        .run([this.deps.qemuBinary, '--version'], { allowFailure: true, timeoutMs: 10_000 })
        .catch(() => undefined);
      return detectConfidential({
        qemuVersionText: v?.code === 0 ? v.stdout : undefined,
        ...(this.deps.confidentialRoot ? { root: this.deps.confidentialRoot } : {}),
      });
    })();
    return this.confidentialHostP;
  }

  /** The cgroup v2 root per-VM cgroups go under, or undefined where the host has no cgroup v2. */
  async cgroupRoot(): Promise<string | undefined> {
    const root = this.deps.cgroupRoot ?? CGROUP_ROOT;
    this.cgroupV2 ??= isCgroupV2(root);
    return (await this.cgroupV2) ? root : undefined;
  }
}
