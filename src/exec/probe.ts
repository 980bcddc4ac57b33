// Reachability probes as argv arrays, the same for namespaces (iputils ping, busybox wget) and guests (busybox).

import { randomBytes } from 'node:crypto';
import type { ProbeResult } from '../shared/results.js';

/** Where the host-side busybox lives (package busybox-static). */
export const HOST_BUSYBOX = '/bin/busybox';

/**
 * argv of one ICMP echo with a deadline; `busybox` selects the busybox applet (guests). `iface` binds the socket to
 * that interface (`-I`, SO_BINDTODEVICE in iputils and busybox), so the echo leaves through it whatever the routes say.
 */
export function pingArgv(target: string, timeoutMs: number, busybox: boolean, iface?: string): string[] {
  const secs = String(Math.max(1, Math.ceil(timeoutMs / 1000)));
  const bind = iface === undefined ? [] : ['-I', iface];
  return busybox
    ? ['ping', ...bind, '-c', '1', '-W', secs, target]
    : ['ping', '-n', ...bind, '-c', '1', '-W', secs, target];
}

/** argv of an HTTP GET that prints the body; `prefix` is how busybox is reached (`[]` in the guest). */
export function httpArgv(target: string, port: number, timeoutMs: number, prefix: string[]): string[] {
  const secs = String(Math.max(1, Math.ceil(timeoutMs / 1000)));
  // busybox 1.35's `wget -T` crashes, so the deadline comes from busybox `timeout`.
  return [...prefix, 'timeout', secs, ...prefix, 'wget', '-q', '-O', '-', `http://${target}:${port}/`];
}

/**
 * argv of a TCP connect that closes at once (busybox nc runs `true` once connected): a service port answers
 * (an iSCSI portal, an NFS server, a portmapper) without speaking its protocol. `prefix` as in `httpArgv`.
 */
export function tcpArgv(target: string, port: number, timeoutMs: number, prefix: string[]): string[] {
  const secs = String(Math.max(1, Math.ceil(timeoutMs / 1000)));
  // `-w` bounds the connect; the outer timeout a peer that accepts and then stalls.
  return [
    ...prefix,
    'timeout',
    String(Number(secs) + 1),
    ...prefix,
    'nc',
    '-w',
    secs,
    target,
    String(port),
    '-e',
    'true',
  ];
}

// What a ping may say when the network itself refuses the packet: a measured "unreachable".
const NETWORK_REFUSED = /unreachable|no route to host|prohibited|operation not permitted|message too long/i;

/**
 * Reads a ping's outcome from its exit code and output (iputils and busybox both print `time=X ms`). No reply, or the
 * network refusing the packet, is a measured "unreachable"; anything else (ping missing, bad arguments) is unmeasured.
 */
export function parsePing(code: number, stdout: string, stderr: string): ProbeResult {
  const m = /time[=<]([\d.]+) ?ms/.exec(stdout);
  if (code === 0 && m) return { reachable: true, rttMs: Number(m[1]), detail: 'echo reply' };
  const why = (stderr.trim() || stdout.trim().split('\n').pop() || `exit ${code}`).slice(0, 160);
  if (code === 1 && !stderr.trim()) return { reachable: false, detail: 'no reply' };
  if ((code === 1 || code === 2) && NETWORK_REFUSED.test(`${stderr}\n${stdout}`))
    return { reachable: false, detail: why };
  return { reachable: false, detail: `ping did not run: ${why}`, unmeasured: true };
}

/**
 * Reads an HTTP probe's outcome: the body (first line) proves which service answered. A refused or timed-out
 * connection is a measured "unreachable"; a missing tool is not.
 */
export function parseHttp(code: number, stdout: string, stderr: string, ms: number): ProbeResult {
  if (code === 0) return { reachable: true, rttMs: ms, detail: stdout.trim().split('\n')[0] ?? '' };
  const detail = (stderr.trim() || `exit ${code}`).split('\n')[0]!.slice(0, 160);
  if (code === 126 || code === 127 || /not found|applet not found/i.test(stderr))
    return { reachable: false, detail: `probe did not run: ${detail}`, unmeasured: true };
  return { reachable: false, detail };
}

/**
 * Reads a TCP connect probe's outcome: exit 0 is a connection; a refusal, a timeout or no route is a measured
 * "unreachable" carrying nc's own words (the evidence doctor quotes); a missing tool is not measured.
 */
export function parseTcp(code: number, stdout: string, stderr: string, ms: number): ProbeResult {
  if (code === 0) return { reachable: true, rttMs: ms, detail: 'connected' };
  const said = (stderr.trim() || stdout.trim()).split('\n')[0]!.slice(0, 160);
  if (code === 126 || code === 127 || /applet not found|not found/i.test(said))
    return { reachable: false, detail: `probe did not run: ${said || `exit ${code}`}`, unmeasured: true };
  if (code === 124 || code === 143 || !said)
    return { reachable: false, detail: 'no answer (connect timed out)' };
  return { reachable: false, detail: said.replace(/^nc: /, '') };
}

/** Reads one probe's outcome with the parser of its kind. */
export function parseProbe(
  kind: ProbeSpec['kind'],
  code: number,
  stdout: string,
  stderr: string,
  ms: number,
): ProbeResult {
  if (kind === 'ping') return parsePing(code, stdout, stderr);
  return kind === 'tcp' ? parseTcp(code, stdout, stderr, ms) : parseHttp(code, stdout, stderr, ms);
}

/**
 * argv of one don't-fragment ICMP echo carrying `payload` data bytes (iputils ping: `-M do`; busybox ping has no
 * such option). A packet larger than the sender's route MTU fails at once ("message too long"). `iface` as in
 * `pingArgv`.
 */
export function dfPingArgv(target: string, payload: number, timeoutMs: number, iface?: string): string[] {
  const secs = String(Math.max(1, Math.ceil(timeoutMs / 1000)));
  const bind = iface === undefined ? [] : ['-I', iface];
  return ['ping', '-n', ...bind, '-M', 'do', '-c', '1', '-W', secs, '-s', String(payload), target];
}

/** argv that prints the neighbour entry of `address` (`ADDR dev eth0 lladdr MAC STATE`; iproute2 and busybox). */
export function neighArgv(address: string): string[] {
  return ['ip', 'neigh', 'show', address];
}

/** The link-layer address `ip neigh show` lists for an entry, lower-cased; undefined when none (FAILED, absent). */
export function parseNeighMac(text: string): string | undefined {
  return /\blladdr ([0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5})\b/.exec(text)?.[1]?.toLowerCase();
}

// Batches: every probe of one source in one command, run concurrently.

/** What a probe asks for, wherever it starts. */
export interface ProbeSpec {
  /** ICMP echo, an HTTP GET that must answer, or a bare TCP connect (`tcp`, its `port` required). */
  kind: 'ping' | 'http' | 'tcp';
  target: string;
  /** TCP port of an http probe (default 80) or a tcp one. */
  port?: number;
  timeoutMs: number;
}

/** One probe of a batch: its argv, and how to read its outcome. */
export interface ProbeCommand {
  kind: ProbeSpec['kind'];
  argv: string[];
}

/** Output of the one command that ran a batch. */
export interface BatchOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * argv of one probe: on a host or in a namespace (iputils ping, busybox-static wget), or in a guest (its `ping`,
 * busybox wget). `iface` binds a ping as in `pingArgv`.
 */
export function probeArgv(p: ProbeSpec, where: 'host' | 'guest', iface?: string): string[] {
  if (p.kind === 'ping') return pingArgv(p.target, p.timeoutMs, where === 'guest', iface);
  const prefix = where === 'guest' ? [] : [HOST_BUSYBOX];
  if (p.kind === 'tcp') return tcpArgv(p.target, p.port ?? 0, p.timeoutMs, prefix);
  return httpArgv(p.target, p.port ?? 80, p.timeoutMs, where === 'guest' ? [] : [HOST_BUSYBOX]);
}

/** Most bytes of each of a batched probe's stdout and stderr that come back (ping prints ~300, wget one line). */
export const PROBE_OUTPUT_MAX_BYTES = 2048;

/** A fresh batch delimiter: unguessable, so no probe's output (an HTTP body, say) can forge another's block. */
export function probeNonce(): string {
  return randomBytes(12).toString('hex');
}

/** Quotes one word for a POSIX shell (single quotes; a `'` becomes `'\''`). */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * A POSIX `sh` script (dash, busybox ash) that runs every argv at once in the background, each into its own files
 * in a private temporary directory, waits for all, and then prints, per probe in order:
 * `@@NONCE I status CODE START END` (START, END: /proc/uptime), its stdout, `@@NONCE I stderr`, its stderr,
 * `@@NONCE I end`, each stream cut at `PROBE_OUTPUT_MAX_BYTES`. Read it with `parseProbeBatch`.
 */
export function probeBatchScript(argvs: readonly (readonly string[])[], nonce: string): string {
  if (!/^[0-9a-f]{16,64}$/.test(nonce)) throw new Error(`probe batch nonce must be hex: ${nonce}`);
  const lines = ['d=$(mktemp -d) || exit 125', `trap 'rm -rf "$d"' EXIT`];
  argvs.forEach((argv, i) => {
    if (!argv.length) throw new Error(`probe ${i} of a batch has an empty argv`);
    lines.push(
      `(read -r a _ </proc/uptime; ${argv.map(shellQuote).join(' ')} >"$d/${i}.o" 2>"$d/${i}.e"; c=$?; ` +
        `read -r b _ </proc/uptime; echo "$c $a $b" >"$d/${i}.s") &`,
    );
  });
  const max = PROBE_OUTPUT_MAX_BYTES;
  lines.push(
    'wait',
    'i=0',
    `while [ $i -lt ${argvs.length} ]; do`,
    `  printf '@@%s %s status %s\\n' ${nonce} $i "$(cat "$d/$i.s" 2>/dev/null)"`,
    `  head -c ${max} "$d/$i.o" 2>/dev/null`,
    `  printf '\\n@@%s %s stderr\\n' ${nonce} $i`,
    `  head -c ${max} "$d/$i.e" 2>/dev/null`,
    `  printf '\\n@@%s %s end\\n' ${nonce} $i`,
    '  i=$((i + 1))',
    'done',
  );
  return `${lines.join('\n')}\n`;
}

/** One probe's raw outcome as the batch script printed it. */
interface ProbeBlock {
  code: number;
  stdout: string;
  stderr: string;
  elapsedMs?: number;
}

const STATUS = /^(\d{1,3})(?: +(\d{1,12}\.\d{1,3}) +(\d{1,12}\.\d{1,3}))? *$/;

/** The blocks of a batch's output, in order; undefined where a block is missing, cut off or malformed. */
function probeBlocks(text: string, count: number, nonce: string): Array<ProbeBlock | undefined> {
  const out: Array<ProbeBlock | undefined> = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    const head = `@@${nonce} ${i} status `;
    const errMark = `\n@@${nonce} ${i} stderr\n`;
    const endMark = `\n@@${nonce} ${i} end\n`;
    const h = text.indexOf(head, at);
    const eol = h < 0 ? -1 : text.indexOf('\n', h);
    const e = eol < 0 ? -1 : text.indexOf(errMark, eol);
    const z = e < 0 ? -1 : text.indexOf(endMark, e + errMark.length);
    if (z < 0 || (h > 0 && text[h - 1] !== '\n')) {
      out.push(undefined);
      continue;
    }
    at = z + endMark.length;
    const status = STATUS.exec(text.slice(h + head.length, eol));
    const stdout = text.slice(eol + 1, e);
    const stderr = text.slice(e + errMark.length, z);
    // Decoded text has no more characters than the bytes the script let through: more means a forged block.
    if (
      !status ||
      Number(status[1]) > 255 ||
      stdout.length > PROBE_OUTPUT_MAX_BYTES ||
      stderr.length > PROBE_OUTPUT_MAX_BYTES
    ) {
      out.push(undefined);
      continue;
    }
    const elapsed =
      status[2] === undefined ? undefined : Math.round((Number(status[3]) - Number(status[2])) * 1000);
    out.push({
      code: Number(status[1]),
      stdout,
      stderr,
      ...(elapsed !== undefined && elapsed >= 0 ? { elapsedMs: elapsed } : {}),
    });
  }
  return out;
}

/**
 * Reads a batch's outcomes, one per probe in order, each with the parser of its kind. A probe whose block is
 * missing, cut off or malformed is unmeasured, never reachable.
 */
export function parseProbeBatch(
  kinds: readonly ProbeCommand['kind'][],
  nonce: string,
  out: BatchOutput,
): ProbeResult[] {
  // Untrusted (guest) output: never read more than a well-formed batch can print.
  const bound = kinds.length * (2 * PROBE_OUTPUT_MAX_BYTES + 4 * (nonce.length + 64));
  const blocks = probeBlocks(out.stdout.slice(0, bound), kinds.length, nonce);
  const why = out.code === 0 ? '' : ` (probe script exit ${out.code}: ${firstLine(out.stderr)})`;
  return kinds.map((kind, i) => {
    const b = blocks[i];
    if (!b)
      return {
        reachable: false,
        detail: `not measured: the probe batch printed no outcome for it${why}`,
        unmeasured: true,
      };
    const r = parseProbe(kind, b.code, b.stdout, b.stderr, b.elapsedMs ?? 0);
    if (kind !== 'ping' && b.elapsedMs === undefined) delete r.rttMs;
    return r;
  });
}

/**
 * Runs `probes` at once through one `sh -c` that `exec` runs (on a host, in a namespace, or in a guest) and reads
 * each one's outcome. Throws what `exec` throws (the batch did not run at all).
 */
export async function runProbeBatch(
  probes: readonly ProbeCommand[],
  exec: (argv: string[]) => Promise<BatchOutput>,
): Promise<ProbeResult[]> {
  if (!probes.length) return [];
  const nonce = probeNonce();
  const out = await exec([
    'sh',
    '-c',
    probeBatchScript(
      probes.map((p) => p.argv),
      nonce,
    ),
  ]);
  return parseProbeBatch(
    probes.map((p) => p.kind),
    nonce,
    out,
  );
}

function firstLine(s: string): string {
  return (s.trim().split('\n')[0] ?? '').slice(0, 160) || 'no message';
}
