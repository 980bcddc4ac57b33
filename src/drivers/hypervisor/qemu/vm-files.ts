// A VM's files on the host, as its jailed QEMU may and may not touch them: who owns what, logs read and capped
// without following anything QEMU's uid could have planted.
import { chmod, chown, lstat, mkdir, stat } from 'node:fs/promises';
import { log } from '../../../shared/log.js';
import type { VmConfig } from '../../../shared/model.js';
import { readTail, rotateLog } from '../../../shared/safe-file.js';
import { readAppended } from '../../../shared/state-file.js';
import type { VmPaths } from './cmdline.js';
import type { VmIdentity } from './identity.js';

/**
 * A VM's directories: its own directory root's (the VM's group may only enter it, so QEMU cannot add, remove or
 * swap entries), the jail's mount point root's, the run directory the VM's alone (the only place QEMU creates files).
 */
export async function prepareVmDirs(p: VmPaths, id: VmIdentity): Promise<void> {
  await mkdir(p.vmDir, { recursive: true, mode: 0o710 });
  await chown(p.vmDir, 0, id.gid);
  await chmod(p.vmDir, 0o710);
  await mkdir(p.jailRoot, { recursive: true, mode: 0o700 });
  await chown(p.jailRoot, 0, 0);
  await chmod(p.jailRoot, 0o700);
  await mkdir(p.runDir, { recursive: true, mode: 0o700 });
  await chown(p.runDir, id.uid, id.gid);
  await chmod(p.runDir, 0o700);
}

/** Gives the VM's disks and seed to its own uid alone (0600): entries of its root-owned directory, never links. */
export async function ownVmFiles(p: VmPaths, cfg: VmConfig, id: VmIdentity): Promise<void> {
  const files = [
    ...(cfg.image.kind === 'qcow2' ? [p.rootDisk, p.seedIso] : []),
    ...cfg.disks.map((d) => p.disk(d.name)),
  ];
  for (const f of files) {
    const st = await lstat(f).catch(() => undefined);
    if (!st?.isFile()) continue;
    await chown(f, id.uid, id.gid);
    await chmod(f, 0o600);
  }
}

/**
 * Takes the run directory back from a stopped VM's uid before its tree is removed: with QEMU gone no process of that
 * uid is left, and now none could reach inside again while the tree is walked.
 */
export async function reclaimRunDir(p: VmPaths): Promise<void> {
  await chown(p.runDir, 0, 0).catch(() => {});
  await chmod(p.runDir, 0o700).catch(() => {});
}

/** The last `maxBytes` of a VM's console log (its rotated part first); links and FIFOs are refused. */
export async function consoleTail(p: VmPaths, maxBytes: number): Promise<string> {
  const now = await readTail(p.consoleLog, maxBytes);
  const left = maxBytes - Buffer.byteLength(now);
  return left > 0 ? (await readTail(`${p.consoleLog}.1`, left)) + now : now;
}

/** Rotates a VM's console and QEMU logs past `maxBytes` (QEMU appends through descriptors); returns those rotated. */
export async function rotateVmLogs(vm: string, p: VmPaths, maxBytes: number): Promise<string[]> {
  const rotated: string[] = [];
  for (const file of [p.consoleLog, p.qemuLog]) {
    try {
      if (await rotateLog(file, maxBytes)) rotated.push(file);
    } catch (e) {
      log.warn({ vm, path: file, err: (e as Error).message }, 'log not rotated');
    }
  }
  return rotated;
}

/** The last `lines` lines of QEMU's own log, read from its last 16 KiB only (QEMU writes it). */
export async function logTail(file: string, lines: number): Promise<string[]> {
  const size = (await stat(file).catch(() => undefined))?.size ?? 0;
  const text = await readAppended(file, Math.max(0, size - 16 * 1024), 16 * 1024);
  return text.trimEnd().split('\n').slice(-lines);
}

/** Checks every VM's logs now and then: QEMU appends to them through descriptors, so only the agent can cap them. */
export class VmLogWatch {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly names: () => Promise<string[]>,
    private readonly rotate: (name: string) => Promise<unknown>,
    private readonly intervalMs: number,
  ) {}

  /** Starts the checks (once; later calls do nothing while they run). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      void this.names().then(
        (names) => Promise.all(names.map((n) => this.rotate(n))),
        () => {},
      );
    }, this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
