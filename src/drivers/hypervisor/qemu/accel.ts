// Accelerator probe: boot a 64 KiB firmware that writes to isa-debug-exit; a working accelerator exits 99 at once.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExecError, type Runner } from '../../../exec/runner.js';
import type { HostCapabilities } from '../../../shared/model.js';
import { QEMU_MACHINE, SANDBOX } from './cmdline.js';
import { describeLaunchExit, launchArgv, type QemuUser, userCanAccess } from './launcher.js';

/** Exit status of QEMU when the probe firmware ran: isa-debug-exit exits with (0x31 << 1) | 1. */
export const PROBE_EXIT = 99;
/** Default time a probe may take before it is killed. */
export const PROBE_TIMEOUT_MS = 5000;

/** A 64 KiB BIOS whose reset vector (offset 0xfff0) runs `mov al,0x31; out 0xf4,al; hlt; jmp $-1`. */
export function probeFirmware(): Buffer {
  const fw = Buffer.alloc(64 * 1024, 0xf4); // hlt everywhere else
  Buffer.from([0xb0, 0x31, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]).copy(fw, 0xfff0);
  return fw;
}

/** What one probe run saw. */
export interface ProbeRun {
  accel: 'kvm' | 'tcg';
  ok: boolean;
  ms: number;
  /** Why it failed, in words (undefined when ok). */
  reason?: string;
}

/** What the probe needs: the runner, the launcher and the unprivileged user. */
export interface ProbeOptions {
  runner: Runner;
  launcher: string;
  user: QemuUser;
  qemuBinary: string;
  timeoutMs?: number;
  /** KVM device node (tests point it elsewhere). */
  kvmDevice?: string;
}

/** Boots the probe firmware under `accel` as the QEMU user; ok when QEMU exits 99 within the timeout. */
export async function runProbe(accel: 'kvm' | 'tcg', o: ProbeOptions): Promise<ProbeRun> {
  const timeoutMs = o.timeoutMs ?? PROBE_TIMEOUT_MS;
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-probe-'));
  try {
    await chmod(dir, 0o755); // the QEMU user reads the firmware
    const bios = join(dir, 'probe.bin');
    await writeFile(bios, probeFirmware(), { mode: 0o644 });
    const qemu = [
      o.qemuBinary,
      '-nodefaults',
      '-no-user-config',
      '-machine',
      `${QEMU_MACHINE},accel=${accel}`,
      '-cpu',
      accel === 'kvm' ? 'host' : 'max',
      '-m',
      '16',
      '-display',
      'none',
      '-vga',
      'none',
      '-sandbox',
      SANDBOX,
      '-bios',
      bios,
      '-device',
      'isa-debug-exit,iobase=0xf4,iosize=0x04',
    ];
    const started = Date.now();
    let code: number;
    let stderr = '';
    try {
      const r = await o.runner.run(launchArgv(o.launcher, o.user.name, [], qemu), {
        timeoutMs,
        allowFailure: true,
      });
      code = r.code;
      stderr = r.stderr.trim();
    } catch (e) {
      const ms = Date.now() - started;
      if (e instanceof ExecError && /timed out/.test(e.message)) {
        return { accel, ok: false, ms, reason: `probe timed out after ${timeoutMs / 1000} s (killed)` };
      }
      return {
        accel,
        ok: false,
        ms,
        reason: `probe could not run: ${e instanceof Error ? e.message : String(e)}`,
      };
    }
    const ms = Date.now() - started;
    if (code === PROBE_EXIT) return { accel, ok: true, ms };
    const launch = describeLaunchExit(code);
    const detail = stderr ? `: ${stderr.split('\n').slice(-2).join(' ')}` : '';
    return {
      accel,
      ok: false,
      ms,
      reason: `probe exited with ${code}${launch ? ` (launcher: ${launch})` : ''}${detail}`,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Chooses the accelerator: KVM when /dev/kvm is accessible to the QEMU user and the probe passes, else TCG. */
export async function probeAccelerator(
  o: ProbeOptions,
): Promise<Pick<HostCapabilities, 'accelerator' | 'acceleratorReason'> & { probes: ProbeRun[] }> {
  const kvm = o.kvmDevice ?? '/dev/kvm';
  const probes: ProbeRun[] = [];
  let why: string;
  if (!userCanAccess(kvm, o.user, 'rw')) {
    why = `KVM unusable: ${kvm} not accessible to ${o.user.name}`;
  } else {
    const run = await runProbe('kvm', o);
    probes.push(run);
    if (run.ok) return { accelerator: 'kvm', acceleratorReason: `KVM probe passed in ${run.ms} ms`, probes };
    why = `KVM unusable: ${run.reason}`;
  }
  const tcg = await runProbe('tcg', o);
  probes.push(tcg);
  if (!tcg.ok)
    throw new ExecError(
      { argv: [o.qemuBinary], code: 1, stdout: '', stderr: `${why}; TCG ${tcg.reason}` },
      'QEMU cannot run guests',
    );
  return {
    accelerator: 'tcg',
    acceleratorReason: `${why}; using TCG (probe passed in ${tcg.ms} ms)`,
    probes,
  };
}

let cache: { key: string; result: ReturnType<typeof probeAccelerator> } | undefined;

/** `probeAccelerator`, once per process (per launcher, binary and user). */
export function cachedAccelerator(o: ProbeOptions): ReturnType<typeof probeAccelerator> {
  const key = `${o.launcher}\0${o.qemuBinary}\0${o.user.name}\0${o.kvmDevice ?? ''}`;
  if (cache?.key !== key) {
    const result = probeAccelerator(o);
    cache = { key, result };
    result.catch(() => {
      if (cache?.result === result) cache = undefined; // a failed probe is retried next time
    });
  }
  return cache.result;
}

/** Forgets the cached probe (tests). */
export function resetAcceleratorCache(): void {
  cache = undefined;
}
