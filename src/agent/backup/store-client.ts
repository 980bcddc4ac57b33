// An agent's client of another agent's backup store (docs/backup.md, "Moving data: agents talk to agents"): mutual
// TLS with this host's certificate, and the answer counts only from the store host's own agent (its certificate names
// that host). Everything the other side sends is parsed with the wire's schemas and bounded; blobs are checked by the
// caller (their checksum, or opened with the key).
import { Agent as HttpsAgent } from 'node:https';
import { z } from 'zod';
import {
  BACKUP_BLOB_MAX_BYTES,
  BACKUP_MANIFEST_MAX_BYTES,
  type ChunkId,
  ChunkIdSchema,
  type Manifest,
  ManifestSchema,
  type SnapshotId,
  SnapshotIdSchema,
  type SnapshotSummary,
  type StoreLocation,
} from '../../shared/backup.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { HttpClient } from '../../shared/http/client.js';
import { peerMismatch, type TlsCredentials } from '../../shared/tls.js';
import { MissingChunksAnswerSchema, PutChunkAnswerSchema, SnapshotListSchema } from '../wire-backup.js';

const OkAnswer = z.object({ ok: z.literal(true) }).strict();

/** The client of one store on another host's agent. */
export class StoreClient {
  private readonly http: HttpClient;
  private readonly keepAlive: HttpsAgent | undefined;
  private readonly base: string;

  constructor(
    readonly loc: StoreLocation,
    tls?: TlsCredentials,
  ) {
    // With TLS, a plain address would hand chunks and manifests to whoever is on the path: refused.
    if (tls ? !loc.agent.startsWith('https://') : !loc.agent.startsWith('http://'))
      throw new InvalidRequestError(
        `store ${loc.store}'s agent address ${loc.agent} is not ${tls ? 'https://' : 'http://'} (this agent ${tls ? 'speaks TLS' : 'has no certificate'})`,
        `backup-store/${loc.store}`,
      );
    this.keepAlive = tls ? new HttpsAgent({ keepAlive: true, maxSockets: 8 }) : undefined;
    this.http = new HttpClient(loc.agent, {
      name: `agent of ${loc.host} (backup store ${loc.store})`,
      protocol: 'wire',
      maxResponseBytes: BACKUP_MANIFEST_MAX_BYTES,
      ...(tls
        ? {
            tls: {
              ...tls,
              checkPeer: (cert) => peerMismatch(cert, { role: 'host', name: loc.host }),
              agent: this.keepAlive!,
            },
          }
        : {}),
    });
    this.base = `/v1/backup-stores/${loc.store}`;
  }

  /** Which of `ids` the store lacks (present ones are touched there). */
  async missing(ids: ChunkId[]): Promise<ChunkId[]> {
    if (ids.length === 0) return [];
    const { missing } = await this.http.post(
      `${this.base}/chunks/missing`,
      { ids },
      MissingChunksAnswerSchema,
    );
    // An answer naming ids not asked for is the other side's bug or malice: keep only those asked.
    const asked = new Set(ids);
    return missing.filter((id) => asked.has(id));
  }

  /** Sends a blob; false when the store had it already. */
  async putChunk(id: ChunkId, blob: Buffer): Promise<boolean> {
    return (
      await this.http.putBytes(`${this.base}/chunks/${ChunkIdSchema.parse(id)}`, blob, PutChunkAnswerSchema)
    ).stored;
  }

  /** A blob (at most BACKUP_BLOB_MAX_BYTES; its content is checked by the caller). */
  getChunk(id: ChunkId): Promise<Buffer> {
    return this.http.getBytes(`${this.base}/chunks/${ChunkIdSchema.parse(id)}`, BACKUP_BLOB_MAX_BYTES);
  }

  async putManifest(m: Manifest): Promise<void> {
    await this.http.put(`${this.base}/snapshots/${SnapshotIdSchema.parse(m.id)}`, m, OkAnswer);
  }

  async getManifest(id: SnapshotId): Promise<Manifest> {
    const m = await this.http.get(`${this.base}/snapshots/${SnapshotIdSchema.parse(id)}`, ManifestSchema);
    if (m.id !== id)
      throw new InvalidRequestError(
        `store ${this.loc.store} on ${this.loc.host} answered snapshot ${m.id} when asked for ${id}`,
      );
    return m;
  }

  async list(vm?: string): Promise<SnapshotSummary[]> {
    const q = vm === undefined ? '' : `?vm=${encodeURIComponent(vm)}`;
    return (await this.http.get(`${this.base}/snapshots${q}`, SnapshotListSchema)).snapshots;
  }

  /** Closes kept-alive connections. */
  close(): void {
    this.keepAlive?.destroy();
  }
}
