// Sequential I/O inside a guest on the three kinds of pool volume: a dir pool's qcow2 (a file on the VM's host), an
// iSCSI LUN (QEMU's initiator, CHAP, over the lab LAN to tgtd on the storage machine) and a qcow2 on an NFS export
// (QEMU's NFSv3 client to nfs-ganesha). examples/shared-storage.yaml on a lab of its own, applied through the CLI;
// then in each guest, per repeat: `dd` with direct I/O writes and reads the disk found by its serial, timed by the
// guest's own clock. Reported side by side; under TCG the guest's CPU emulation dominates every number.
//   npx tsx bench/storage-io.ts [--repeat N] [--mib M]
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { diskSerial } from '../src/verify/storage.js';
import { acquireVmLock } from '../test/helpers/vmlock.js';
import { startCliLab, vmlink, vmlinkOk } from './cli.js';
import { hostInfo, median, numArg, round, runCleanups, sleep } from './lib.js';

const repeat = numArg('--repeat', 3);
/** MiB written and read per repeat: the example's volumes are 32-64 MiB. */
const MIB = Math.min(numArg('--mib', 24), 28);
const EXAMPLE = fileURLToPath(new URL('../examples/shared-storage.yaml', import.meta.url));

/** The disks compared: which VM has which kind. */
const DISKS = [
  { kind: 'dir', vm: 'db', disk: 'scratch' },
  { kind: 'iscsi', vm: 'db', disk: 'data' },
  { kind: 'nfs', vm: 'web', disk: 'files' },
] as const;

/**
 * Guest script: finds the disk by serial ($1), writes $2 MiB of zeros and reads them back, each with direct I/O,
 * and prints `write SECONDS` and `read SECONDS` from /proc/uptime (busybox date has no sub-second clock).
 */
const IO_SCRIPT = `want="$1"; mib="$2"; d=
for f in /sys/block/*/serial; do [ "$(cat "$f")" = "$want" ] && { d=\${f%/serial}; d=\${d##*/}; break; }; done
[ -n "$d" ] || { echo "no disk with serial $want"; exit 3; }
t() { read -r u _ </proc/uptime; echo "$u"; }
a=$(t); dd if=/dev/zero of="/dev/$d" bs=1M count="$mib" oflag=direct conv=fsync 2>/dev/null || exit 4; b=$(t)
dd if="/dev/$d" of=/dev/null bs=1M count="$mib" iflag=direct 2>/dev/null || exit 5; c=$(t)
echo "write $a $b"; echo "read $b $c"
`;

function seconds(out: string, what: 'write' | 'read'): number {
  const m = new RegExp(`^${what} ([\\d.]+) ([\\d.]+)$`, 'm').exec(out);
  if (!m) throw new Error(`guest printed no ${what} time: ${out.slice(0, 200)}`);
  return Number(m[2]) - Number(m[1]);
}

async function main(): Promise<void> {
  const release = await acquireVmLock();
  try {
    const lab = await startCliLab('storage-io', (name) =>
      readFileSync(EXAMPLE, 'utf8').replace(/^ {2}name: ss$/m, `  name: ${name}`),
    );
    const specFile = lab.specFile(
      'spec.yaml',
      readFileSync(EXAMPLE, 'utf8').replace(/^ {2}name: ss$/m, `  name: ${lab.lab}`),
    );
    const chap = lab.specFile('chap', randomBytes(12).toString('hex'));
    await vmlinkOk(['secret', 'set', 'san-chap', '--from-file', chap], lab.env);
    rmSync(chap);
    const applied = await vmlink(['apply', '-f', specFile], lab.env, 600_000);
    if (applied.code !== 0) throw new Error(`apply failed: ${applied.stderr.trim()}`);
    // The guests boot under TCG: wait until each one's guest agent answers (untimed).
    for (const vm of new Set(DISKS.map((d) => d.vm))) {
      const deadline = Date.now() + 300_000;
      while ((await vmlink(['vm', 'exec', vm, '--', 'true'], lab.env, 60_000)).code !== 0) {
        if (Date.now() > deadline) throw new Error(`the guest of ${vm} did not answer within 300 s`);
        await sleep(2_000);
      }
    }
    const results: Record<string, { write: number[]; read: number[] }> = {};
    for (let r = 0; r < repeat; r++) {
      // Order rotates each repeat so that a slow moment of the machine does not always hit the same kind.
      const order = DISKS.map((_, i) => DISKS[(i + r) % DISKS.length]!);
      for (const d of order) {
        const run = await vmlink(
          [
            'vm',
            'exec',
            d.vm,
            '--timeout',
            '300',
            '--',
            'sh',
            '-c',
            IO_SCRIPT,
            'io',
            diskSerial(d.disk),
            String(MIB),
          ],
          lab.env,
          400_000,
        );
        if (run.code !== 0)
          throw new Error(`${d.kind} in ${d.vm}: exit ${run.code}: ${run.stdout}${run.stderr}`);
        const e = results[d.kind] ?? { write: [], read: [] };
        results[d.kind] = e;
        e.write.push(round(seconds(run.stdout, 'write'), 2));
        e.read.push(round(seconds(run.stdout, 'read'), 2));
      }
    }
    const rate = (xs: number[]) => round(MIB / Math.max(median(xs), 0.01), 1);
    const info = hostInfo();
    console.log(
      `storage I/O in a guest (${MIB} MiB sequential, dd bs=1M, direct I/O), ${repeat} repeats, median`,
    );
    console.log(
      `machine: ${info.cpuModel}, ${info.cores} cores, accelerator ${info.accelerator}, QEMU ${info.qemu}`,
    );
    console.log('kind   write MiB/s  read MiB/s  (write s, read s per repeat)');
    for (const d of DISKS) {
      const e = results[d.kind]!;
      console.log(
        `${d.kind.padEnd(6)} ${String(rate(e.write)).padStart(11)} ${String(rate(e.read)).padStart(11)}  (${e.write.map((x) => round(x, 2)).join(' ')}; ${e.read.map((x) => round(x, 2)).join(' ')})`,
      );
    }
    console.log(
      'note: the guest runs under TCG (emulated CPU): its virtio and block-layer work, not the disk or the network, ' +
        "sets these numbers; compare the kinds with each other, not with hardware. The guest's clock (/proc/uptime) " +
        'ticks in 10 ms: a pass under 0.1 s is read to +-10 % or worse.',
    );
    writeFileSync(
      fileURLToPath(new URL('./results/storage-io.json', import.meta.url)),
      `${JSON.stringify({ at: new Date().toISOString(), mib: MIB, repeat, machine: info, results }, null, 1)}\n`,
    );
    await lab.close();
  } finally {
    await runCleanups();
    await release();
  }
}

process.on('SIGINT', () => void runCleanups().then(() => process.exit(130)));
main().catch(async (e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  await runCleanups();
  process.exit(1);
});
