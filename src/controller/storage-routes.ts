// The controller API's storage routes (issue 10): pools, volumes, snapshots, image import, VM snapshots, capacity.
// Roles and scopes are in auth/roles.ts; every change is audited by the access hooks. Long changes (copies, image
// import, VM snapshots and rollbacks) are tasks, serialised with apply.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { accepted, answers } from './api-answers.js';
import type { StorageControl } from './storage-control.js';
import type { TaskContext } from './tasks.js';
import { VmParamsSchema } from './wire.js';
import {
  CapacityReportSchema,
  ImageImportBodySchema,
  PoolListSchema,
  SnapshotBodySchema,
  SnapshotListSchema,
  VmSnapshotBodySchema,
  VmSnapshotChangeSchema,
  VmSnapshotParamsSchema,
  VolumeChangeSchema,
  VolumeCloneBodySchema,
  VolumeCreateBodySchema,
  VolumeListSchema,
  VolumeParamsSchema,
  VolumeQuerySchema,
  VolumeResizeBodySchema,
  VolumeSnapshotParamsSchema,
} from './wire-storage.js';

/** How storage routes start tasks and refuse a change while apply (or another storage task) runs. */
export interface StorageRouteDeps {
  storage: StorageControl;
  /** Starts a `storage` task (refused while a mutating task runs); returns its id. */
  startTask(body: (ctx: TaskContext) => Promise<unknown>): { taskId: string };
  /** Throws `ConflictError` while a mutating task runs. */
  assertIdle(): void;
}

/** Adds the storage routes to `app`. */
export function addStorageRoutes(app: FastifyInstance, d: StorageRouteDeps): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const { storage } = d;
  /** A synchronous change: refused while apply runs. */
  const change = <T>(fn: () => Promise<T>): Promise<T> => {
    d.assertIdle();
    return fn();
  };

  api.get(
    '/v1/pools',
    { schema: { summary: 'Pools, as their hosts observe them', response: answers(PoolListSchema) } },
    async () => storage.pools(),
  );
  api.get(
    '/v1/volumes',
    {
      schema: {
        summary: 'Volumes of every pool (or of ?pool=), with the VMs that use them',
        querystring: VolumeQuerySchema,
        response: answers(VolumeListSchema),
      },
    },
    async (req) => storage.volumes(req.query.pool),
  );
  api.post(
    '/v1/volumes',
    {
      schema: {
        summary: 'Create an empty volume in a pool of the applied spec',
        body: VolumeCreateBodySchema,
        response: answers(VolumeChangeSchema),
      },
    },
    async (req) => change(() => storage.create(req.body)),
  );
  api.post(
    '/v1/volumes/:pool/:name/resize',
    {
      schema: {
        summary: 'Grow a volume (online through the running VM that has it open, where the pool can)',
        params: VolumeParamsSchema,
        body: VolumeResizeBodySchema,
        response: answers(VolumeChangeSchema),
      },
    },
    async (req) => change(() => storage.resize(req.params.pool, req.params.name, req.body.sizeMiB)),
  );
  api.post(
    '/v1/volumes/:pool/:name/clone',
    {
      schema: {
        summary: 'Clone a volume within its pool: a full copy, or a linked clone (task)',
        params: VolumeParamsSchema,
        body: VolumeCloneBodySchema,
        response: accepted,
      },
    },
    async (req, reply) =>
      reply
        .status(202)
        .send(
          d.startTask((ctx) =>
            storage.clone(req.params.pool, req.params.name, req.body.name, req.body.linked, ctx),
          ),
        ),
  );
  api.delete(
    '/v1/volumes/:pool/:name',
    {
      schema: {
        summary: 'Delete a volume (refused while a VM uses it, and for a volume the spec declares)',
        params: VolumeParamsSchema,
        response: answers(VolumeChangeSchema),
      },
    },
    async (req) => change(() => storage.delete(req.params.pool, req.params.name)),
  );
  api.get(
    '/v1/volumes/:pool/:name/snapshots',
    {
      schema: {
        summary: 'Snapshots of a volume',
        params: VolumeParamsSchema,
        response: answers(SnapshotListSchema),
      },
    },
    async (req) => ({ snapshots: await storage.snapshots(req.params.pool, req.params.name) }),
  );
  api.post(
    '/v1/volumes/:pool/:name/snapshots',
    {
      schema: {
        summary: 'Snapshot a volume no running VM has open',
        params: VolumeParamsSchema,
        body: SnapshotBodySchema,
        response: answers(VolumeChangeSchema),
      },
    },
    async (req) => change(() => storage.snapshot('create', req.params.pool, req.params.name, req.body.name)),
  );
  api.post(
    '/v1/volumes/:pool/:name/snapshots/:snap/rollback',
    {
      schema: {
        summary: 'Roll a volume back to a snapshot (data written after it is gone)',
        params: VolumeSnapshotParamsSchema,
        response: answers(VolumeChangeSchema),
      },
    },
    async (req) =>
      change(() => storage.snapshot('rollback', req.params.pool, req.params.name, req.params.snap)),
  );
  api.delete(
    '/v1/volumes/:pool/:name/snapshots/:snap',
    {
      schema: {
        summary: 'Delete a snapshot of a volume',
        params: VolumeSnapshotParamsSchema,
        response: answers(VolumeChangeSchema),
      },
    },
    async (req) =>
      change(() => storage.snapshot('delete', req.params.pool, req.params.name, req.params.snap)),
  );
  api.post(
    '/v1/images/import',
    {
      schema: {
        summary:
          "Import a file on the pool's host (qcow2, raw, ISO), or copy a volume, as a new volume (task)",
        body: ImageImportBodySchema,
        response: accepted,
      },
    },
    async (req, reply) => reply.status(202).send(d.startTask((ctx) => storage.importImage(req.body, ctx))),
  );

  api.get(
    '/v1/vms/:name/snapshots',
    {
      schema: {
        summary: "A VM's whole-VM snapshots",
        params: VmParamsSchema,
        response: answers(SnapshotListSchema),
      },
    },
    async (req) => ({ snapshots: await storage.vmSnapshots(req.params.name) }),
  );
  api.post(
    '/v1/vms/:name/snapshots',
    {
      schema: {
        summary: "Snapshot all of a VM's disks at one instant, with its RAM when memory is true (task)",
        params: VmParamsSchema,
        body: VmSnapshotBodySchema,
        response: accepted,
      },
    },
    async (req, reply) =>
      reply
        .status(202)
        .send(
          d.startTask((ctx) =>
            storage.vmSnapshot('create', req.params.name, req.body.name, req.body.memory, ctx),
          ),
        ),
  );
  api.post(
    '/v1/vms/:name/snapshots/:snap/rollback',
    {
      schema: {
        summary: "Restore all of a VM's disks (and its RAM, when saved) to a snapshot (task)",
        params: VmSnapshotParamsSchema,
        response: accepted,
      },
    },
    async (req, reply) =>
      reply
        .status(202)
        .send(
          d.startTask((ctx) => storage.vmSnapshot('rollback', req.params.name, req.params.snap, false, ctx)),
        ),
  );
  api.delete(
    '/v1/vms/:name/snapshots/:snap',
    {
      schema: {
        summary: 'Delete a whole-VM snapshot',
        params: VmSnapshotParamsSchema,
        response: answers(VmSnapshotChangeSchema),
      },
    },
    async (req) => change(() => storage.vmSnapshot('delete', req.params.name, req.params.snap)),
  );
  api.get(
    '/v1/capacity',
    {
      schema: {
        summary: 'Per pool: capacity, used, free, provisioned, backup, reserve and the projected need',
        response: answers(CapacityReportSchema),
      },
    },
    async () => storage.capacity(),
  );
}
