// HAProxy's stats socket: which backends it sees up. HAProxy's answer is bounded (size, time) and parsed strictly:
// it runs as root here, but the socket file sits in a directory a bug elsewhere could let someone else write to.
import { connect } from 'node:net';

/** Most bytes read from one `show stat` answer. */
export const STATS_ANSWER_MAX_BYTES = 256 * 1024;
/** How long one stats query may take. */
export const STATS_TIMEOUT_MS = 2000;

/** Server rows of `show stat` CSV: backend (`be-PORT`), server name (the VM) and status (`UP`, `DOWN`, `MAINT`, ...). */
export function parseShowStat(csv: string): { backend: string; server: string; status: string }[] {
  const lines = csv.split('\n');
  const header = lines[0]?.replace(/^# /, '').split(',') ?? [];
  const px = header.indexOf('pxname');
  const sv = header.indexOf('svname');
  const st = header.indexOf('status');
  if (px < 0 || sv < 0 || st < 0) return [];
  return lines.slice(1).flatMap((l) => {
    const f = l.split(',');
    const backend = f[px] ?? '';
    const server = f[sv] ?? '';
    const status = (f[st] ?? '').split(' ')[0] ?? '';
    if (!/^be-\d{1,5}$/.test(backend) || !/^[a-z][a-z0-9-]{0,30}$/.test(server)) return [];
    return [{ backend, server, status }];
  });
}

/** Backend VMs that are UP in every backend of HAProxy (sorted); undefined when the socket does not answer. */
export function backendsUp(rows: ReturnType<typeof parseShowStat>): string[] {
  const down = new Set(rows.filter((r) => r.status !== 'UP').map((r) => r.server));
  return [...new Set(rows.map((r) => r.server))].filter((s) => !down.has(s)).sort();
}

/** Asks the stats socket at `path` for `show stat`; undefined when it cannot (no socket, timeout, oversize). */
export function showStat(path: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const sock = connect(path);
    const done = (v: string | undefined) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(undefined), STATS_TIMEOUT_MS);
    sock.on('connect', () => sock.write('show stat\n'));
    sock.on('data', (b: Buffer) => {
      size += b.length;
      if (size > STATS_ANSWER_MAX_BYTES) return done(undefined);
      chunks.push(b);
    });
    sock.on('end', () => done(Buffer.concat(chunks).toString('utf8')));
    sock.on('error', () => done(undefined));
  });
}
