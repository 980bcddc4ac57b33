// The source agent's relay of QEMU's migration stream to the target's agent: one PUT over mutual TLS whose answer
// counts only from the target host's own certificate (docs/mobility.md). With a window, it asks for an acked answer
// (wire-migrate.ts, STREAM_ACKS_HEADER) and keeps at most `windowBytes` unacknowledged: QEMU then waits on its socket
// instead of filling the kernel's TCP buffers (megabytes here), which would otherwise drain between the agents after
// QEMU stopped the guest, inside the pause.
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { BadResponseError } from '../../shared/errors.js';
import { log } from '../../shared/log.js';
import { peerMismatch, type TlsCredentials } from '../../shared/tls.js';
import { formatVersionHeader, localVersion, VERSION_HEADER } from '../../shared/version.js';
import {
  MIGRATION_STREAM_TYPE,
  type OutgoingRequest,
  STREAM_ACK_LINE_MAX,
  STREAM_ACKS_HEADER,
  StreamAckLineSchema,
  StreamAnswerSchema,
} from '../wire-migrate.js';

/**
 * The relay's window: at most this many bytes sent and not yet acknowledged. Measured side by side (bench/migrate.ts,
 * docs/mobility.md): 256 KiB and 1 MiB lowered the median gap alike (659 / 676 ms against 1081 ms with no window, load
 * 7-10); 1 MiB keeps a fast link's throughput (1 MiB per round trip).
 */
export const RELAY_WINDOW_BYTES = 1024 * 1024;
/** How long a windowed relay waits for the target's acked answer to begin before it sends without a window (ms). */
const ACKS_WAIT_MS = 2000;
/** The target's plain answer to a stream is one small JSON object. */
const ANSWER_MAX_BYTES = 4096;

/** A timing stamp in the agent's log (service.ts's migrationStamp). */
export type Stamp = (what: string, extra?: Record<string, unknown>) => void;

/** The relay's byte counts as it goes (read by the source's timing stamps). */
export interface RelayCounts {
  /** Bytes taken from QEMU and written towards the target. */
  sent: number;
  /** Bytes the target acknowledged (windowed relay only). */
  acked: number;
}

export interface RelayOptions {
  /** Most bytes sent and not yet acknowledged by the target; absent: no window (the plain answer). */
  windowBytes?: number;
  /** Bench variant: no Nagle delay on the TLS connection. */
  noDelay?: boolean;
  stamp?: Stamp;
  /** Kept up to date as bytes go and acks come. */
  counts?: RelayCounts;
}

/** Carries `stream` (QEMU's socket) to the target agent of `req`; resolves once the target took every byte. */
export function sendStream(
  stream: Socket,
  req: OutgoingRequest,
  tls: TlsCredentials,
  o: RelayOptions = {},
): Promise<void> {
  const url = new URL(`${req.to.agent}/v1/migrations/${req.id}/stream`);
  const who = `the agent of ${req.to.host}`;
  return new Promise<void>((resolve, reject) => {
    let sent = 0;
    let acked = 0;
    const started = Date.now();
    // The window holds from the start; an older target (no acks: it answers only at the end) is recognised by its
    // answer's headers, or by none within ACKS_WAIT_MS, and then gets the stream without a window.
    let windowOn = o.windowBytes !== undefined;
    const noAcks = () => {
      windowOn = false;
      resumeIfRoom();
    };
    const acksWait = windowOn ? setTimeout(noAcks, ACKS_WAIT_MS) : undefined;
    let outFull = false;
    const resumeIfRoom = () => {
      if (!outFull && (!windowOn || sent - acked <= o.windowBytes!)) stream.resume();
    };
    const out = httpsRequest(
      {
        method: 'PUT',
        hostname: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port || 443,
        path: url.pathname,
        key: tls.key,
        cert: tls.cert,
        ca: tls.ca,
        checkServerIdentity: (_h, cert) => {
          const why = peerMismatch(cert, { role: 'host', name: req.to.host });
          return why ? new Error(`the agent at ${req.to.agent} is not ${req.to.host}'s: ${why}`) : undefined;
        },
        headers: {
          'content-type': MIGRATION_STREAM_TYPE,
          [VERSION_HEADER.wire]: formatVersionHeader(localVersion('wire')),
          ...(o.windowBytes ? { [STREAM_ACKS_HEADER]: '1' } : {}),
        },
      },
      (res) => {
        clearTimeout(acksWait);
        res.setEncoding('utf8');
        res.on('error', reject);
        const acks =
          o.windowBytes !== undefined && res.statusCode === 200 && res.headers[STREAM_ACKS_HEADER] === '1';
        if (!acks) {
          if (windowOn) noAcks();
          let body = '';
          res.on('data', (c: string) => {
            body += c;
            if (body.length > ANSWER_MAX_BYTES) res.destroy(new BadResponseError('answer too large'));
          });
          res.on('end', () => {
            o.stamp?.('source-relay-answered');
            if (res.statusCode !== 200)
              return reject(
                new BadResponseError(
                  `${who} refused the migration stream (HTTP ${res.statusCode}): ${body.slice(0, 500)}`,
                ),
              );
            try {
              StreamAnswerSchema.parse(JSON.parse(body));
              resolve();
            } catch {
              reject(new BadResponseError(`${who} answered the stream with ${body.slice(0, 200)}`));
            }
          });
          return;
        }
        let pending = '';
        let answered = false;
        const onLine = (text: string) => {
          let line: ReturnType<typeof StreamAckLineSchema.parse>;
          try {
            line = StreamAckLineSchema.parse(JSON.parse(text));
          } catch {
            return res.destroy(new BadResponseError(`${who} answered the stream with ${text.slice(0, 200)}`));
          }
          if ('ack' in line) {
            // An ack past what was sent is a lie: it would open the window without bound.
            if (line.ack > sent)
              return res.destroy(new BadResponseError(`${who} acknowledged bytes never sent`));
            acked = Math.max(acked, line.ack);
            if (o.counts) o.counts.acked = acked;
            resumeIfRoom();
          } else if ('error' in line) {
            res.destroy(new BadResponseError(`${who} failed the migration stream: ${line.error}`));
          } else answered = true;
        };
        res.on('data', (c: string) => {
          pending += c;
          for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
            onLine(pending.slice(0, nl));
            pending = pending.slice(nl + 1);
          }
          if (pending.length > STREAM_ACK_LINE_MAX) res.destroy(new BadResponseError('answer line too long'));
        });
        res.on('end', () => {
          o.stamp?.('source-relay-answered');
          if (answered) resolve();
          else reject(new BadResponseError(`${who} ended the migration stream's answer without its outcome`));
        });
      },
    );
    out.on('error', (e) => {
      clearTimeout(acksWait);
      reject(e);
    });
    out.on('drain', () => {
      outFull = false;
      resumeIfRoom();
    });
    if (o.noDelay) out.setNoDelay(true);
    o.stamp?.('source-relay-start');
    out.once('finish', () => o.stamp?.('source-relay-flushed', { bytes: sent, ms: Date.now() - started }));
    stream.on('error', (e) => out.destroy(e));
    stream.on('data', (c: Buffer) => {
      sent += c.length;
      if (o.counts) o.counts.sent = sent;
      if (!out.write(c)) {
        outFull = true;
        stream.pause();
      } else if (windowOn && sent - acked > o.windowBytes!) stream.pause();
    });
    stream.once('end', () => out.end());
  });
}

/**
 * A timing stamp of the switch-over in the agent's log (its `time` against the ping's replies: where a pause goes;
 * bench/migrate.ts reads them back).
 */
export function migrationStamp(id: string, vm: string, variant?: string): Stamp {
  return (what, extra) =>
    log.info(
      { migration: id, vm, stamp: what, ...(variant ? { variant } : {}), ...extra },
      'migration stamp',
    );
}
