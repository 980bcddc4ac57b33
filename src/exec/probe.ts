// Reachability probes as argv arrays, the same for namespaces (iputils ping, busybox wget) and guests (busybox).
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
