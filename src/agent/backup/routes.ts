// The backup routes of an agent (the list and who may call them: agent/wire-backup.ts's header). Parsed with the
// wire's strict schemas; chunk blobs cross as application/octet-stream bounded by BACKUP_BLOB_MAX_BYTES, manifests
// as JSON bounded by BACKUP_MANIFEST_MAX_BYTES. Who called comes from the connection: the agent's local root socket
// (no TLS), the controller's certificate, or (peer routes only: server.ts lets nothing else through) a host's.
import type { TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  BACKUP_BLOB_MAX_BYTES,
  BACKUP_GC_GRACE_MS,
  BACKUP_MANIFEST_MAX_BYTES,
  BACKUP_SNAPSHOTS_LIST_MAX,
  BackupJobSchema,
  BackupStoreStatusSchema,
  ChunkIdSchema,
  ManifestSchema,
  SnapshotIdSchema,
} from '../../shared/backup.js';
import { ErrorBodySchema, ForbiddenError, InvalidRequestError } from '../../shared/errors.js';
import { identityOf } from '../../shared/tls.js';
import { NAME_PATTERN } from '../../spec/schema.js';
import { OkSchema } from '../wire.js';
import {
  BackupRunRequestSchema,
  FileRestoreRequestSchema,
  GcRequestSchema,
  GcResultSchema,
  MissingChunksAnswerSchema,
  MissingChunksRequestSchema,
  PruneAnswerSchema,
  PruneRequestSchema,
  PullRequestSchema,
  PutChunkAnswerSchema,
  RestoreRequestSchema,
  SnapshotListSchema,
  StoreEnsureRequestSchema,
  StoreListSchema,
  VerifyRequestSchema,
} from '../wire-backup.js';
import type { BackupService } from './service.js';

const answers = <S>(ok: S) => ({ 200: ok, '4xx': ErrorBodySchema, '5xx': ErrorBodySchema });
const StoreParams = z.object({ store: z.string().regex(NAME_PATTERN) }).strict();
const ChunkParams = z.object({ store: z.string().regex(NAME_PATTERN), id: ChunkIdSchema }).strict();
const SnapshotParams = z.object({ store: z.string().regex(NAME_PATTERN), id: SnapshotIdSchema }).strict();
const JobParams = z.object({ id: z.string().regex(/^[a-z0-9-]{1,64}$/) }).strict();

/** Who sent a request: the local socket, the controller, or another host's agent. */
export type Caller = { kind: 'local' } | { kind: 'controller' } | { kind: 'host'; name: string };

/** The caller of `req` (server.ts has already refused anyone else). */
export function callerOf(req: FastifyRequest): Caller {
  const socket = req.raw.socket as TLSSocket;
  if (!socket.encrypted) return { kind: 'local' };
  const id = identityOf(socket.getPeerCertificate()?.subject as never);
  if (id.role === 'host' && id.name) return { kind: 'host', name: id.name };
  return { kind: 'controller' };
}

const who = (c: Caller) =>
  c.kind === 'host'
    ? `host ${c.name}'s agent`
    : c.kind === 'controller'
      ? 'the controller'
      : 'the local socket';

/** Registers the backup routes on an agent's server (an encapsulated context: its octet-stream parser stays here). */
export async function registerBackupRoutes(base: FastifyInstance, svc: BackupService): Promise<void> {
  await base.register(async (ctx) => {
    ctx.addContentTypeParser(
      'application/octet-stream',
      { parseAs: 'buffer', bodyLimit: BACKUP_BLOB_MAX_BYTES },
      (_req, body, done) => done(null, body),
    );
    const app = ctx.withTypeProvider<ZodTypeProvider>();
    const refuseOffsiteWrite = async (store: string, caller: Caller, what: string) => {
      const s = await svc.stores.get(store);
      if (s.config.offsite && caller.kind !== 'local')
        throw new ForbiddenError(
          `backup store ${store} on ${svc.host} is offsite: it is filled only by its own pulls, so ${what} from ${who(caller)} is refused`,
          `backup-store/${store}`,
        );
      return s;
    };

    // ---- Peer routes (controller and hosts) ----
    app.post(
      '/v1/backup-stores/:store/chunks/missing',
      {
        schema: {
          params: StoreParams,
          body: MissingChunksRequestSchema,
          response: answers(MissingChunksAnswerSchema),
        },
      },
      async (req) => ({ missing: await (await svc.stores.get(req.params.store)).missing(req.body.ids) }),
    );
    app.put(
      '/v1/backup-stores/:store/chunks/:id',
      {
        bodyLimit: BACKUP_BLOB_MAX_BYTES,
        schema: { params: ChunkParams, response: answers(PutChunkAnswerSchema) },
      },
      async (req) => {
        const s = await refuseOffsiteWrite(req.params.store, callerOf(req), 'a chunk write');
        if (!Buffer.isBuffer(req.body))
          throw new InvalidRequestError('a chunk is sent as application/octet-stream');
        return { stored: await s.putChunk(req.params.id, req.body) };
      },
    );
    app.get(
      '/v1/backup-stores/:store/chunks/:id',
      { schema: { params: ChunkParams } },
      async (req, reply) => {
        const blob = await (await svc.stores.get(req.params.store)).getChunk(req.params.id);
        return reply.type('application/octet-stream').send(blob);
      },
    );
    app.put(
      '/v1/backup-stores/:store/snapshots/:id',
      {
        bodyLimit: BACKUP_MANIFEST_MAX_BYTES,
        schema: { params: SnapshotParams, body: ManifestSchema, response: answers(OkSchema) },
      },
      async (req) => {
        const s = await refuseOffsiteWrite(req.params.store, callerOf(req), 'a snapshot write');
        if (req.body.id !== req.params.id)
          throw new InvalidRequestError(
            `the manifest is of ${req.body.id}, the route names ${req.params.id}`,
          );
        await s.putManifest(req.body);
        return { ok: true as const };
      },
    );
    app.get(
      '/v1/backup-stores/:store/snapshots',
      {
        schema: {
          params: StoreParams,
          querystring: z.object({ vm: z.string().regex(NAME_PATTERN).optional() }).strict(),
          response: answers(SnapshotListSchema),
        },
      },
      async (req) => ({
        snapshots: (await (await svc.stores.get(req.params.store)).list(req.query.vm)).slice(
          -BACKUP_SNAPSHOTS_LIST_MAX,
        ),
      }),
    );
    app.get(
      '/v1/backup-stores/:store/snapshots/:id',
      { schema: { params: SnapshotParams, response: answers(ManifestSchema) } },
      async (req) => (await svc.stores.get(req.params.store)).getManifest(req.params.id),
    );

    // ---- Controller only (and the local socket) ----
    app.post(
      '/v1/backup-stores/:store/ensure',
      {
        schema: {
          params: StoreParams,
          body: StoreEnsureRequestSchema,
          response: answers(BackupStoreStatusSchema),
        },
      },
      async (req) => {
        if (req.body.store.name !== req.params.store)
          throw new InvalidRequestError(
            `the body names store ${req.body.store.name}, the route ${req.params.store}`,
          );
        return svc.stores.ensure(req.body.store);
      },
    );
    app.get('/v1/backup-stores', { schema: { response: answers(StoreListSchema) } }, async () => ({
      stores: await svc.stores.list(),
    }));
    app.post(
      '/v1/backup-stores/:store/prune',
      { schema: { params: StoreParams, body: PruneRequestSchema, response: answers(PruneAnswerSchema) } },
      async (req) => ({
        deleted: await svc.prune(req.params.store, req.body.snapshots, callerOf(req).kind === 'local'),
      }),
    );
    app.post(
      '/v1/backup-stores/:store/gc',
      { schema: { params: StoreParams, body: GcRequestSchema, response: answers(GcResultSchema) } },
      async (req) => {
        const s = await svc.stores.get(req.params.store);
        let grace = req.body.graceMs ?? BACKUP_GC_GRACE_MS;
        // An offsite store's pull writes chunks before their manifest: a GC from the network never cuts the grace.
        if (s.config.offsite && callerOf(req).kind !== 'local') grace = Math.max(grace, BACKUP_GC_GRACE_MS);
        return s.gc(grace);
      },
    );
    app.post(
      '/v1/backup-stores/:store/verify',
      { schema: { params: StoreParams, body: VerifyRequestSchema, response: answers(BackupJobSchema) } },
      async (req) => svc.startVerify(req.params.store, req.body),
    );
    app.post(
      '/v1/backup-stores/:store/pull',
      { schema: { params: StoreParams, body: PullRequestSchema, response: answers(BackupJobSchema) } },
      async (req) => svc.startPull(req.params.store, req.body),
    );
    app.post(
      '/v1/backup-jobs',
      { schema: { body: BackupRunRequestSchema, response: answers(BackupJobSchema) } },
      async (req) => svc.startBackup(req.body),
    );
    app.post(
      '/v1/restore-jobs',
      { schema: { body: RestoreRequestSchema, response: answers(BackupJobSchema) } },
      async (req) => svc.startRestore(req.body),
    );
    app.post(
      '/v1/file-restore-jobs',
      { schema: { body: FileRestoreRequestSchema, response: answers(BackupJobSchema) } },
      async (req) => svc.startFileRestore(req.body),
    );
    app.get(
      '/v1/backup-jobs/:id',
      { schema: { params: JobParams, response: answers(BackupJobSchema) } },
      async (req) => svc.jobs.get(req.params.id),
    );
  });
}
