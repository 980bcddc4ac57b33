// The controller API's backup routes (controller/wire-backup.ts). Long operations are `backup` tasks (202); they are
// not serialised with apply (a backup changes no host's configuration), but one VM has one backup or restore at a
// time (VmLocks). Roles are in auth/roles.ts: run, verify, sync, prune, restores: operator; status and lists:
// read-only; keys: admin. No answer carries a key's value, except the recovery key printed once at creation.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { accepted, answers } from '../api-answers.js';
import type { TaskContext } from '../tasks.js';
import { VmParamsSchema } from '../wire.js';
import {
  BackupKeyCreateBodySchema,
  BackupKeyCreatedSchema,
  BackupKeyImportBodySchema,
  BackupKeyImportedSchema,
  BackupListQuerySchema,
  BackupListSchema,
  BackupPruneBodySchema,
  BackupRunBodySchema,
  BackupStatusSchema,
  BackupSyncBodySchema,
  BackupVerifyBodySchema,
  RestoreBodySchema,
  RestoredVmListSchema,
  RestoreTestBodySchema,
} from '../wire-backup.js';
import type { BackupControl } from './control.js';

/** What the backup routes need. */
export interface BackupRouteDeps {
  backups: BackupControl;
  /** Starts a `backup` task; returns its id. */
  startTask(body: (ctx: TaskContext) => Promise<unknown>): { taskId: string };
}

/** Adds the backup routes to `app`. */
export function addBackupRoutes(app: FastifyInstance, d: BackupRouteDeps): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { backups } = d;

  api.post(
    '/v1/backups/run',
    {
      schema: {
        summary:
          "Back a VM up now under its policy (or --policy): incremental from the policy's newest good snapshot (task)",
        body: BackupRunBodySchema,
        response: accepted,
      },
    },
    async (req, reply) => reply.status(202).send(d.startTask((ctx) => backups.run(req.body, ctx))),
  );
  api.get(
    '/v1/backups',
    {
      schema: {
        summary: 'Snapshots in every store (or ?store=), of every VM (or ?vm=), newest first',
        querystring: BackupListQuerySchema,
        response: answers(BackupListSchema),
      },
    },
    async (req) => backups.list(req.query),
  );
  api.post(
    '/v1/backups/verify',
    {
      schema: {
        summary:
          'Check snapshots where they are stored: every chunk present and intact (deep: decrypted) (task)',
        body: BackupVerifyBodySchema,
        response: accepted,
      },
    },
    async (req, reply) => reply.status(202).send(d.startTask((ctx) => backups.verify(req.body, ctx))),
  );
  api.post(
    '/v1/backups/sync',
    {
      schema: {
        summary: 'Offsite stores pull what they lack from their source stores (task)',
        body: BackupSyncBodySchema,
        response: accepted,
      },
    },
    async (req, reply) => reply.status(202).send(d.startTask((ctx) => backups.sync(req.body, ctx))),
  );
  api.post(
    '/v1/backups/prune',
    {
      schema: {
        summary: "Apply policies' retention now, then garbage-collect their stores (task)",
        body: BackupPruneBodySchema,
        response: accepted,
      },
    },
    async (req, reply) => reply.status(202).send(d.startTask((ctx) => backups.prune(req.body, ctx))),
  );
  api.get(
    '/v1/backups/status',
    {
      schema: {
        summary: "Every policy's objectives (RPO, RTO, 3-2-1) per VM, its schedule, and the stores",
        response: answers(BackupStatusSchema),
      },
    },
    async () => backups.status(),
  );
  api.post(
    '/v1/backups/keys',
    {
      schema: {
        summary: 'Create a backup key in the vault; the answer shows its recovery key, this once',
        body: BackupKeyCreateBodySchema,
        response: answers(BackupKeyCreatedSchema),
      },
    },
    async (req) => backups.keyCreate(req.body.name),
  );
  api.post(
    '/v1/backups/keys/import',
    {
      schema: {
        summary: 'Seal a backup key given by its recovery key into the vault',
        body: BackupKeyImportBodySchema,
        response: answers(BackupKeyImportedSchema),
      },
    },
    async (req) => backups.keyImport(req.body.name, req.body.recoveryKey),
  );
  api.post(
    '/v1/restores',
    {
      schema: {
        summary: 'Restore a snapshot: as a new VM, in place (VM stopped), or one file (task)',
        body: RestoreBodySchema,
        response: accepted,
      },
    },
    async (req, reply) => reply.status(202).send(d.startTask((ctx) => backups.restore(req.body, ctx))),
  );
  api.post(
    '/v1/restores/test',
    {
      schema: {
        summary:
          "A policy's restore-and-boot test now: restore, boot on its isolated network, time it, delete (task)",
        body: RestoreTestBodySchema,
        response: accepted,
      },
    },
    async (req, reply) =>
      reply.status(202).send(d.startTask((ctx) => backups.restoreTest(req.body.policy, req.body.vm, ctx))),
  );
  api.get(
    '/v1/restores',
    {
      schema: {
        summary: 'VMs made by restore --as (apply leaves them alone)',
        response: answers(RestoredVmListSchema),
      },
    },
    async () => backups.restored(),
  );
  api.delete(
    '/v1/restores/:name',
    {
      schema: {
        summary: 'Delete a VM made by restore --as, and its record (task)',
        params: VmParamsSchema,
        response: accepted,
      },
    },
    async (req, reply) => reply.status(202).send(d.startTask((ctx) => backups.discard(req.params.name, ctx))),
  );
}
