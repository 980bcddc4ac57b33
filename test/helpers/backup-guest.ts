// Guest-side steps of the backup end-to-end test (test/integration/backup.int.test.ts), run through the real CLI
// (`vmlink vm exec`): find a disk by its serial, write known bytes to it, hash ranges of it, and a writer that keeps
// stamping blocks while a backup runs, whose stamps in a restored copy must form a prefix (a point in time).
import { type CliResult, runCli } from './cli.js';

/** Shell prelude: `$dev` is the disk whose serial is $SERIAL (as verify finds disks: /sys/block/NAME/serial). */
const FIND = `d=; for f in /sys/block/*/serial; do [ "$(cat "$f")" = "$SERIAL" ] && { d=\${f%/serial}; d=\${d##*/}; break; }; done
[ -n "$d" ] || { echo "no disk with serial $SERIAL" >&2; exit 3; }; dev=/dev/$d`;

/** The guest scripts (busybox sh), `$dev` being the disk (found by FIND first). */
export const SCRIPTS = {
  writeRandom:
    'dd if=/dev/urandom of="$dev" bs=1M seek="$AT" count="$N" oflag=direct conv=notrunc 2>/dev/null && sync',
  hashRange: 'dd if="$dev" bs=1M skip="$AT" count="$N" iflag=direct 2>/dev/null | sha256sum',
  stamper: `i=0; while [ "$i" -lt "$N" ]; do
  printf 'blk-%06d\\n' "$i" | dd of="$dev" bs=4096 seek=$((AT + i)) count=1 conv=sync,notrunc oflag=direct 2>/dev/null || exit 4
  i=$((i + 1)); done; echo done "$i"`,
  readStamps: `dd if="$dev" bs=4096 skip="$AT" count="$N" iflag=direct 2>/dev/null | tr -d '\\000'`,
} as const;

/** Runs a shell script in VM `vm` through `vmlink vm exec`, with `vars` set first (names and values: [\w./-] only). */
export async function guestSh(
  env: Record<string, string>,
  vm: string,
  script: string,
  vars: Record<string, string | number> = {},
  timeoutS = 120,
): Promise<CliResult> {
  const sets = Object.entries(vars).map(([k, v]) => {
    if (!/^[A-Z_]+$/.test(k) || !/^[\w./-]*$/.test(String(v))) throw new Error(`guest variable ${k}=${v}`);
    return `${k}=${v}`;
  });
  return runCli(
    [
      'vm',
      'exec',
      vm,
      '--timeout',
      String(timeoutS),
      '--',
      'sh',
      '-c',
      `${sets.join('; ')}\n${FIND}\n${script}`,
    ],
    env,
    (timeoutS + 60) * 1000,
  );
}

/** Like guestSh, failing with the guest's output unless it exits 0; returns stdout. */
export async function guestShOk(
  env: Record<string, string>,
  vm: string,
  script: string,
  vars: Record<string, string | number> = {},
  timeoutS = 120,
): Promise<string> {
  const r = await guestSh(env, vm, script, vars, timeoutS);
  if (r.code !== 0) throw new Error(`guest script in ${vm} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Writes `mib` MiB of random bytes at MiB `atMiB` of the disk with serial `serial` (direct I/O), then syncs. */
export function writeRandom(
  env: Record<string, string>,
  vm: string,
  serial: string,
  atMiB: number,
  mib: number,
) {
  return guestShOk(env, vm, SCRIPTS.writeRandom, { SERIAL: serial, AT: atMiB, N: mib });
}

/** SHA-256 of `mib` MiB at MiB `atMiB` of the disk with serial `serial` (read with direct I/O). */
export async function hashRange(
  env: Record<string, string>,
  vm: string,
  serial: string,
  atMiB: number,
  mib: number,
): Promise<string> {
  const out = await guestShOk(env, vm, SCRIPTS.hashRange, { SERIAL: serial, AT: atMiB, N: mib });
  const m = /^([0-9a-f]{64})\b/.exec(out.trim());
  if (!m) throw new Error(`sha256sum in ${vm} printed ${out}`);
  return m[1]!;
}

/**
 * Starts a writer in the guest that stamps 4 KiB blocks `blk-000000` ... in order, from block `at4k` on, `count` of
 * them, each with direct I/O. Resolves when it ends (the CLI call returns); the caller runs a backup meanwhile.
 */
export function startStamper(
  env: Record<string, string>,
  vm: string,
  serial: string,
  at4k: number,
  count: number,
): Promise<CliResult> {
  return guestSh(env, vm, SCRIPTS.stamper, { SERIAL: serial, AT: at4k, N: count }, 300);
}

/**
 * The stamps found in the `count` blocks from `at4k` on, in disk order (zero padding dropped; a block never written
 * reads as zeroes and adds nothing). A stamp names its own block, so order and gaps show.
 */
export async function readStamps(
  env: Record<string, string>,
  vm: string,
  serial: string,
  at4k: number,
  count: number,
): Promise<string[]> {
  const out = await guestShOk(env, vm, SCRIPTS.readStamps, { SERIAL: serial, AT: at4k, N: count }, 300);
  return out.split('\n').filter((l) => l !== '');
}

/**
 * Whether `stamps` (in disk order) are a prefix `blk-000000` ... `blk-<k-1>`, as a disk cut at one instant must hold
 * when a single writer wrote them in order. Returns k, or the first stamp out of place.
 */
export function stampPrefix(stamps: string[]): number | string {
  for (const [i, s] of stamps.entries())
    if (s !== `blk-${String(i).padStart(6, '0')}`)
      return `stamp ${i} is "${s.slice(0, 40)}", not blk-${String(i).padStart(6, '0')}`;
  return stamps.length;
}

/** Waits until `vmlink vm exec VM -- true` exits 0 (the guest agent answers), up to `timeoutMs`. */
export async function waitGuest(env: Record<string, string>, vm: string, timeoutMs = 300_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const r = await runCli(['vm', 'exec', vm, '--timeout', '5', '--', 'true'], env, 60_000);
    if (r.code === 0) return;
    last = r.stderr;
    await new Promise((res) => setTimeout(res, 2000));
  }
  throw new Error(`the guest agent of ${vm} did not answer in ${timeoutMs / 1000} s: ${last}`);
}
