// A TCG live migration checked page by page (bench/migrate-tcg-coherency.ts, test/integration/tcg-migration): two
// plain QEMUs of the test guest on this machine, no vmlink between them. The source runs a guest that keeps writing
// (a shell loop rewriting a file, a 1 MiB file rewritten whole), migrates live to the target over a unix socket, and
// once both are paused (source completed, target arrived under `-S`) each one's guest RAM is saved (`pmemsave`) and
// compared: a page that differs is a write the migration lost (src/drivers/hypervisor/qemu/tcg-ram.ts says why QEMU
// 7.2 loses some, and how vmlink's RAM size avoids it).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { GuestAgentClient, QmpClient } from '../../src/drivers/hypervisor/qemu/qmp.js';
import { DEFAULT_GUEST_DIR } from '../../src/guest/build.js';
import { sleep } from '../../src/shared/time.js';

function qemuArgs(dir: string, side: string, mem: string): string[] {
  const kernel = join(DEFAULT_GUEST_DIR, 'vmlinux');
  return [
    ...['-nodefaults', '-no-user-config', '-display', 'none', '-machine', 'q35,accel=tcg'],
    ...['-cpu', 'max', '-smp', '2', '-m', mem],
    ...['-qmp', `unix:${dir}/${side}.qmp,server=on,wait=off`],
    ...['-serial', `file:${dir}/${side}.console`],
    ...['-device', 'virtio-serial-pci'],
    ...['-chardev', `socket,id=qga0,path=${dir}/${side}.qga,server=on,wait=off`],
    ...['-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0'],
    ...['-kernel', kernel, '-initrd', join(DEFAULT_GUEST_DIR, 'initrd.img')],
    ...['-append', 'console=ttyS0 quiet panic=-1 vmlink.hostname=coherency'],
  ];
}

async function connect(path: string): Promise<QmpClient> {
  for (let i = 0; ; i++) {
    try {
      return await QmpClient.connect(path, { timeoutMs: 60_000 });
    } catch (e) {
      if (i > 100) throw e;
      await sleep(100);
    }
  }
}

async function agentUp(path: string): Promise<GuestAgentClient> {
  const end = Date.now() + 120_000;
  for (;;) {
    try {
      const ga = await GuestAgentClient.connect(path, { timeoutMs: 2000 });
      await ga.sync(2000);
      return ga;
    } catch (e) {
      if (Date.now() > end) throw e;
      await sleep(500);
    }
  }
}

/** One migration's outcome: how many 4 KiB pages of guest RAM differ between the paused source and target. */
export interface CoherencyResult {
  /** The `-m` value both QEMUs ran with. */
  mem: string;
  differingPages: number;
  firstDiffs: string[];
  /** QEMU's own downtime figure (ms). */
  qemuDowntimeMs?: number;
  syncs?: number;
  totalMs?: number;
}

/**
 * Boots the test guest under TCG with `-m mem`, starts two writers in it, migrates it live to a second QEMU over a unix
 * socket with QEMU's downtime limit `downtimeMs`, and compares both paused RAMs. Kills both QEMUs and removes its
 * directory whatever happens.
 */
export async function migrateAndCompare(mem: string, downtimeMs = 300): Promise<CoherencyResult> {
  const dir = mkdtempSync('/tmp/vmlink-tcg-coherency-');
  const procs: ChildProcess[] = [];
  const qemu = (side: string, extra: string[]) => {
    const p = spawn('qemu-system-x86_64', [...qemuArgs(dir, side, mem), ...extra], { stdio: 'ignore' });
    procs.push(p);
    return p;
  };
  try {
    qemu('src', []);
    const src = await connect(join(dir, 'src.qmp'));
    const ga = await agentUp(join(dir, 'src.qga'));
    // Writers that stay in one process each (no context switch flushes TCG's TLB): a file rewritten in a loop,
    // and a 1 MiB one rewritten whole.
    for (const script of [
      'i=0; while :; do i=$((i+1)); echo $i > /run/a; done',
      'while :; do dd if=/dev/urandom of=/run/b bs=64k count=16 2>/dev/null; done',
    ])
      await ga.execute('guest-exec', { path: '/bin/sh', arg: ['-c', script] });
    ga.close();
    await sleep(2000);
    qemu('dst', ['-incoming', 'defer', '-S']);
    const dst = await connect(join(dir, 'dst.qmp'));
    const uri = `unix:${dir}/mig.sock`;
    await dst.execute('migrate-incoming', { uri });
    await src.execute('migrate-set-parameters', {
      'downtime-limit': downtimeMs,
      'max-bandwidth': 10 * 1024 * 1024 * 1024,
    });
    await src.execute('migrate', { uri });
    let info: {
      status?: string;
      downtime?: number;
      'total-time'?: number;
      ram?: { 'dirty-sync-count'?: number };
    };
    for (;;) {
      info = await src.execute('query-migrate');
      if (info.status === 'completed') break;
      if (info.status === 'failed' || info.status === 'cancelled')
        throw new Error(`migration ${info.status}`);
      await sleep(20);
    }
    for (;;) {
      const st = await dst.execute<{ status: string }>('query-status');
      if (st.status === 'paused') break;
      await sleep(20);
    }
    const bytes = readRamSize(mem);
    await src.execute('pmemsave', { val: 0, size: bytes, filename: join(dir, 'src.mem') }, 60_000);
    await dst.execute('pmemsave', { val: 0, size: bytes, filename: join(dir, 'dst.mem') }, 60_000);
    src.close();
    dst.close();
    const a = readFileSync(join(dir, 'src.mem'));
    const b = readFileSync(join(dir, 'dst.mem'));
    const firstDiffs: string[] = [];
    let differingPages = 0;
    for (let off = 0; off < Math.min(a.length, b.length); off += 4096)
      if (a.compare(b, off, off + 4096, off, off + 4096) !== 0) {
        differingPages++;
        if (firstDiffs.length < 6) firstDiffs.push(`0x${off.toString(16)}`);
      }
    return {
      mem,
      differingPages,
      firstDiffs,
      qemuDowntimeMs: info.downtime,
      syncs: info.ram?.['dirty-sync-count'],
      totalMs: info['total-time'],
    };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await sleep(200);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `-m` as bytes (`256M`, `262152k`). */
export function readRamSize(mem: string): number {
  const n = Number.parseInt(mem, 10);
  return mem.endsWith('M') ? n * 1024 * 1024 : n * 1024;
}
