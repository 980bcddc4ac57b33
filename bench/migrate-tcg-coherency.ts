// Does a TCG live migration carry every page the guest wrote? Two plain QEMUs of the test guest on this machine
// (no vmlink between them): the source runs a guest that keeps writing (a shell loop rewriting a file), migrates
// live to the target over a unix socket, and once both are paused (source completed, target arrived with `-S`) the
// guest's RAM of each is saved (`pmemsave`) and compared page by page. Any page that differs is a write the
// migration lost. QEMU before 9.0 lacks commit 03bfc2188f ("physmem: Fix migration dirty bitmap coherency with TCG
// memory access"): its fast dirty-bitmap sync, taken when a RAM block's length is a multiple of 64 pages, leaves
// TCG's TLB entries writable without dirty tracking, so stores after a sync can be lost. Rows per RAM size:
// `aligned` (-m 256M, the fast path) and `unaligned` (-m 256M + 8 KiB: the per-page path, which resets the TLB).
//   npx tsx bench/migrate-tcg-coherency.ts [--runs 5] [--mib 256] [--downtime 300]   (root; ~1 min a run)
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { GuestAgentClient, QmpClient } from '../src/drivers/hypervisor/qemu/qmp.js';
import { DEFAULT_GUEST_DIR } from '../src/guest/build.js';
import { sleep } from './lib.js';

const argValue = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
};
const runs = Math.max(1, Math.min(50, Number(argValue('--runs')) || 5));
const mib = Math.max(128, Math.min(2048, Number(argValue('--mib')) || 256));
const downtimeMs = Math.max(10, Math.min(10_000, Number(argValue('--downtime')) || 300));
const only = argValue('--only');

const VARIANTS: Record<string, string> = { aligned: `${mib}M`, unaligned: `${mib * 1024 + 8}k` };

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

interface Result {
  variant: string;
  differingPages: number;
  firstDiffs: string[];
  downtimeMs?: number;
  syncs?: number;
  totalMs?: number;
}

async function once(variant: string): Promise<Result> {
  const mem = VARIANTS[variant]!;
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
      variant,
      differingPages,
      firstDiffs,
      downtimeMs: info.downtime,
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
function readRamSize(mem: string): number {
  const n = Number.parseInt(mem, 10);
  return mem.endsWith('M') ? n * 1024 * 1024 : n * 1024;
}

async function main(): Promise<void> {
  const variants = only ? only.split(',') : Object.keys(VARIANTS);
  const all: Result[] = [];
  for (let k = 0; k < runs; k++)
    for (const v of variants) {
      const r = await once(v);
      all.push(r);
      console.log(
        `run ${k + 1}/${runs} ${v} (-m ${VARIANTS[v]}): ${r.differingPages} page(s) differ${r.firstDiffs.length ? ` (first at ${r.firstDiffs.join(', ')})` : ''}; QEMU downtime ${r.downtimeMs} ms, ${r.syncs} dirty syncs, total ${r.totalMs} ms`,
      );
    }
  for (const v of variants) {
    const rs = all.filter((r) => r.variant === v);
    console.log(
      `${v}: ${rs.filter((r) => r.differingPages > 0).length} of ${rs.length} migrations lost writes (pages differing: ${rs.map((r) => r.differingPages).join(', ')})`,
    );
  }
}

await main();
