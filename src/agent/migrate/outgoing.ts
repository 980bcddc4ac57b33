// The source side of one live migration (docs/mobility.md): QEMU's run (`migrateOut`) with the bench's variant, its
// stream relayed to the target's agent (relay.ts), its NBD connections tunnelled (tunnel.ts, block migration), and
// the job the controller follows.
import type { Socket } from 'node:net';
import type { HypervisorMigrations, MigrationProgress } from '../../drivers/hypervisor/types.js';
import { log } from '../../shared/log.js';
import type { MigrationTuning } from '../../shared/migrate-tuning.js';
import type { TlsCredentials } from '../../shared/tls.js';
import type { MigrationJob, OutgoingRequest } from '../wire-migrate.js';
import { migrationStamp, RELAY_WINDOW_BYTES, type RelayCounts, sendStream } from './relay.js';
import { tunnelTo } from './tunnel.js';

/** Sends VM `req.vm` to `req.to`, keeping `job` up to date; resolves when it ended (the job says how). */
export async function runOutgoing(
  m: HypervisorMigrations,
  req: OutgoingRequest,
  tls: TlsCredentials,
  job: MigrationJob,
  tuning: Promise<MigrationTuning | undefined>,
): Promise<void> {
  const onProgress = (p: MigrationProgress) => {
    job.progress = onWire(p);
  };
  // QEMU's NBD connections (block migration), each carried to the target; all cut when the job ends.
  const tunnels = new Set<Socket>();
  const nbdTunnel = (conn: Socket) => {
    tunnels.add(conn);
    conn.once('close', () => tunnels.delete(conn));
    tunnelTo(conn, { id: req.id, to: req.to, tls }).catch((e: Error) =>
      log.warn({ migration: req.id, vm: req.vm, err: e.message }, 'disk tunnel failed'),
    );
  };
  await tuning
    .then((t) => {
      const stamp = migrationStamp(req.id, req.vm, t?.variant);
      let seen = false;
      const counts: RelayCounts = { sent: 0, acked: 0 };
      const onProgressStamped = (p: MigrationProgress) => {
        onProgress(p);
        if (p.status !== 'completed' || seen) return;
        seen = true;
        // What crossed in the pause (QEMU's count) and what the relay still had in flight when QEMU completed.
        stamp('source-qemu-completed', {
          downtimeMs: p.downtimeMs,
          downtimeBytes: p.downtimeBytes,
          transferredBytes: p.transferredBytes,
          mbps: p.mbps,
          relaySent: counts.sent,
          relayAcked: counts.acked,
        });
      };
      return m
        .migrateOut(
          req.vm,
          {
            downtimeLimitMs: t?.downtimeLimitMs ?? req.downtimeLimitMs,
            ...(t?.downtimeStartMs !== undefined ? { downtimeStartMs: t.downtimeStartMs } : {}),
            onProgress: onProgressStamped,
            nbdTunnel,
            ...(t?.maxBandwidthMiB ? { maxBandwidthBytes: t.maxBandwidthMiB * 1024 * 1024 } : {}),
            ...(t?.vcpuNice !== undefined ? { vcpuNice: t.vcpuNice } : {}),
            ...(req.holdOnceSent ? { holdOnceSent: true } : {}),
          },
          (stream) =>
            sendStream(stream, req, tls, {
              stamp,
              counts,
              ...(t?.relay === 'nodelay' ? { noDelay: true } : {}),
              // The bench's `nowin` (0) sends as before the window.
              ...(t?.relayWindowKiB === 0
                ? {}
                : { windowBytes: t?.relayWindowKiB ? t.relayWindowKiB * 1024 : RELAY_WINDOW_BYTES }),
            }),
        )
        .then((last) => {
          stamp('source-completed', { downtimeMs: last.downtimeMs, totalTimeMs: last.totalTimeMs });
          return last;
        });
    })
    .then(
      (last) => {
        job.progress = onWire(last);
        job.state = 'completed';
      },
      (e: Error) => {
        job.state = 'failed';
        job.error = e.message.slice(0, 4000);
        if (job.progress?.status === 'held') job.sourcePaused = true;
        log.warn({ migration: req.id, vm: req.vm, err: e.message }, 'outgoing migration failed');
      },
    )
    .finally(() => {
      for (const c of tunnels) c.destroy();
    });
}

/** A progress as the job carries it (wire-migrate.ts's strict schema): the bytes in the pause are the stamps' only. */
function onWire(p: MigrationProgress): MigrationProgress {
  const { downtimeBytes: _, ...wire } = p;
  return wire;
}
