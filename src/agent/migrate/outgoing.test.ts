// The source's job as the controller reads it: QEMU's progress goes on the wire in the job's strict schema, the
// figures kept for the timing stamps (bytes sent in the pause) left out, so an agent answers every poll.
import { describe, expect, it } from 'vitest';
import type { HypervisorMigrations, MigrationProgress } from '../../drivers/hypervisor/types.js';
import type { TlsCredentials } from '../../shared/tls.js';
import { type MigrationJob, MigrationJobSchema } from '../wire-migrate.js';
import { runOutgoing } from './outgoing.js';

describe('runOutgoing', () => {
  it("keeps the job within its wire schema while QEMU's progress carries the bytes sent in the pause", async () => {
    const seen: MigrationJob[] = [];
    const job: MigrationJob = { id: '0b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c111', vm: 'web', state: 'running' };
    const progress = (status: string): MigrationProgress => ({
      status,
      transferredBytes: 90e6,
      remainingBytes: 0,
      totalBytes: 268e6,
      downtimeBytes: 8e6,
      downtimeMs: 120,
    });
    const m: Pick<HypervisorMigrations, 'migrateOut'> = {
      migrateOut: async (_vm, o) => {
        o.onProgress?.(progress('active'));
        seen.push(structuredClone(job));
        o.onProgress?.(progress('completed'));
        return progress('completed');
      },
    };
    await runOutgoing(
      m as HypervisorMigrations,
      { id: job.id, vm: 'web', to: { host: 'host2', agent: 'https://192.0.2.2:7443' }, downtimeLimitMs: 300 },
      {} as TlsCredentials,
      job,
      Promise.resolve(undefined),
    );
    expect(job.state).toBe('completed');
    for (const j of [...seen, job]) expect(MigrationJobSchema.safeParse(j).success).toBe(true);
    expect(job.progress).toMatchObject({ status: 'completed', downtimeMs: 120 });
    expect(job.progress).not.toHaveProperty('downtimeBytes');
  });
});
