// Throughput between two endpoints with iperf3: a one-off server on one side, a JSON client run on the other.
// The measurement runs no command itself: it only asks each side to "run argv there" and "start a server there".
// A guest side runs through its host's agent (qemu-guest-agent exec); a lab machine's side (src/lab/throughput.ts)
// runs in the lab namespace the controller built, as verify's lab probes do.
import { VmlinkError } from '../shared/errors.js';
import { sleep } from '../shared/time.js';

/** iperf3's default port. */
export const IPERF_PORT = 5201;

/** One measured throughput: `from` sent to `to` for `durationS` seconds. */
export interface ThroughputResult {
  from: string;
  to: string;
  /** Received rate in megabits per second (10^6 bit/s). */
  mbps: number;
  /** TCP retransmissions at the sender, when iperf3 reports them (Linux senders do). */
  retransmits?: number;
  durationS: number;
}

/** A finished command on one side. */
export interface SideRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** One end of a measurement. */
export interface ThroughputSide {
  /** Endpoint id, as the matrix names it. */
  id: string;
  /** The address the other side connects to when this side is the server. */
  address: string;
  /** Runs argv on this side to completion (a non-zero exit is returned, not thrown). */
  run(argv: string[], timeoutMs: number): Promise<SideRun>;
  /** Starts a one-off iperf3 server on `port` in the background; the returned function stops it (idempotent). */
  startServer(port: number): Promise<() => Promise<void>>;
}

/** argv of a one-off iperf3 server (`-1`: exits after one test) that writes its pid to `pidfile`. */
export function iperfServerArgv(port: number, pidfile: string, daemon: boolean): string[] {
  return ['iperf3', '-s', '-1', ...(daemon ? ['-D'] : []), '-p', String(port), '-I', pidfile];
}

/** argv of an iperf3 client sending to `target` for `seconds`, JSON output. */
export function iperfClientArgv(target: string, port: number, seconds: number): string[] {
  return [
    'iperf3',
    '-c',
    target,
    '-p',
    String(port),
    '-t',
    String(seconds),
    '-J',
    '--connect-timeout',
    '3000',
  ];
}

/** The measurement in `iperf3 -J` client output; throws with iperf3's own message when the run failed. */
export function parseIperf3Json(text: string): Omit<ThroughputResult, 'from' | 'to'> {
  let doc: {
    error?: string;
    end?: {
      sum_received?: { bits_per_second?: number; seconds?: number };
      sum_sent?: { bits_per_second?: number; seconds?: number; retransmits?: number };
    };
  };
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch {
    const first = text.trim().split('\n')[0] ?? '';
    throw new VmlinkError('exec', `iperf3 printed no JSON${first ? `: ${first.slice(0, 160)}` : ''}`);
  }
  if (doc.error) throw new VmlinkError('exec', `iperf3: ${doc.error}`);
  const recv = doc.end?.sum_received;
  const sent = doc.end?.sum_sent;
  if (typeof recv?.bits_per_second !== 'number')
    throw new VmlinkError('exec', 'iperf3 JSON has no end.sum_received.bits_per_second');
  return {
    mbps: Math.round(recv.bits_per_second / 1e4) / 100,
    ...(typeof sent?.retransmits === 'number' ? { retransmits: sent.retransmits } : {}),
    durationS: Math.round((recv.seconds ?? sent?.seconds ?? 0) * 100) / 100,
  };
}

/** Whether iperf3's failure means "the server is not listening yet" (worth retrying). */
function notListening(text: string): boolean {
  return /Connection refused|server is busy/i.test(text);
}

/**
 * Measures `a` -> `b`: starts a one-off server on `b`, runs the client on `a` (retrying while the server comes up),
 * parses the JSON, and stops the server whatever happened.
 */
export async function measureThroughput(
  a: ThroughputSide,
  b: ThroughputSide,
  opts: { seconds?: number; port?: number; attempts?: number; retryMs?: number } = {},
): Promise<ThroughputResult> {
  const seconds = opts.seconds ?? 3;
  const port = opts.port ?? IPERF_PORT;
  const attempts = opts.attempts ?? 6;
  const stop = await b.startServer(port);
  try {
    let last = '';
    for (let i = 0; i < attempts; i++) {
      const r = await a.run(iperfClientArgv(b.address, port, seconds), (seconds + 20) * 1000);
      // iperf3 3.12 exits 0 even when -J reports an error: the JSON decides.
      try {
        return { from: a.id, to: b.id, ...parseIperf3Json(r.stdout) };
      } catch (e) {
        last = (e as Error).message;
        if (!r.stdout.trim() && r.stderr.trim()) last = `${last} (${r.stderr.trim().split('\n')[0]})`;
      }
      if (!notListening(last)) break;
      await sleep(opts.retryMs ?? 500);
    }
    throw new VmlinkError('exec', `throughput ${a.id} -> ${b.id}: ${last.slice(0, 300)}`);
  } finally {
    await stop();
  }
}

/** Runs argv in a guest (qemu-guest-agent exec), as the agent's or the controller's client does. */
export type GuestExec = (
  argv: string[],
  timeoutMs: number,
) => Promise<{ exitCode: number; stdout: string; stderr: string }>;

/** A VM as a throughput side: the server daemonises in the guest (`-D`), stopped through its pidfile. */
export function guestSide(id: string, address: string, exec: GuestExec): ThroughputSide {
  const run = async (argv: string[], timeoutMs: number): Promise<SideRun> => {
    const r = await exec(argv, timeoutMs);
    return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  };
  return {
    id,
    address,
    run,
    async startServer(port) {
      const pidfile = `/tmp/vmlink-iperf3-${port}.pid`;
      const r = await run(iperfServerArgv(port, pidfile, true), 15_000);
      if (r.code !== 0)
        throw new VmlinkError(
          'exec',
          `cannot start iperf3 in ${id}: ${(r.stderr.trim() || r.stdout.trim() || `exit ${r.code}`).slice(0, 200)}`,
        );
      let stopped = false;
      return async () => {
        if (stopped) return;
        stopped = true;
        // A one-off server has usually exited (and removed its pidfile) by now.
        const pid = (await run(['cat', pidfile], 10_000).catch(() => undefined))?.stdout.trim();
        if (pid && /^\d+$/.test(pid)) await run(['kill', pid], 10_000).catch(() => undefined);
      };
    },
  };
}
