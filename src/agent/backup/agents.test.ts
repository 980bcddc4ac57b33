import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../controller/agents.js';
import { HostCredentials } from '../../controller/pki/service.js';
import type { HypervisorDriver } from '../../drivers/hypervisor/types.js';
import { type BackupJob, type StoreLocation, snapshotId } from '../../shared/backup.js';
import { newBackupKey } from '../../shared/backup-crypto.js';
import { HttpClient } from '../../shared/http/client.js';
import type { TlsCredentials } from '../../shared/tls.js';
import { OkSchema } from '../wire.js';
import { PruneAnswerSchema, StoreListSchema } from '../wire-backup.js';
import { BackupAgentsHarness, type BackupNode, run } from './agents.test-util.js';
import { StoreClient } from './store-client.js';

const MiB = 1024 * 1024;
const SIZE = 24 * MiB;
const key = { name: 'backup-key', value: newBackupKey().toString('base64') };
let dir: string;
let pki: HostCredentials;
let h: BackupAgentsHarness;

type Node = BackupNode;
let host1: Node;
let store1: Node;
let store2: Node;

const img = () => h.image;
const qemuIo = (file: string, ...cmds: string[]) => h.qemuIo(cmds, file);
const node = (name: string, hypervisor: HypervisorDriver) => h.node(pki, name, hypervisor);

const client = (n: Node) => new AgentClient(n.name, n.url);
const loc = (n: Node, store: string): StoreLocation => ({ store, host: n.name, agent: n.url });

async function finished(n: Node, job: BackupJob): Promise<BackupJob> {
  for (;;) {
    const j = await client(n).job(job.id);
    if (j.state !== 'running') return j;
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-backup-agents-'));
  h = new BackupAgentsHarness(dir, SIZE);
  pki = await HostCredentials.open(join(dir, 'pki'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', img(), String(SIZE)]);
  await qemuIo(img(), 'write -P 0x11 0 2M', 'write -P 0x22 9M 4M');
  const hv = h.hypervisor(join(dir, 'restored.qcow2'));
  host1 = await node('host1', hv);
  store1 = await node('store1', hv);
  store2 = await node('store2', hv);
  await client(store1).backupStoreEnsure({ name: 'site', offsite: false });
  await client(store2).backupStoreEnsure({ name: 'vault', offsite: true });
});

afterAll(async () => {
  await h?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('stores on agents', () => {
  it('are made by ensure (default directory), listed, and kept across a restart of the agent', async () => {
    const stores = await client(store1).backupStores();
    expect(stores).toEqual([expect.objectContaining({ name: 'site', offsite: false, snapshots: 0 })]);
    // A new service on the same state directory serves the same store.
    const again = h.stores('store1');
    expect((await again.list()).map((s) => s.name)).toEqual(['site']);
    expect((await again.get('site')).config.path).toBe(join(dir, 'store1', 'backup-stores', 'site'));
  });

  it('refuse a directory outside the pool roots, and an offsite store turned writable', async () => {
    await expect(
      client(store1).backupStoreEnsure({ name: 'etc', offsite: false, path: '/etc/vmlink-store' }),
    ).rejects.toMatchObject({ kind: 'invalid', message: expect.stringContaining('is not below') });
    await expect(client(store2).backupStoreEnsure({ name: 'vault', offsite: false })).rejects.toMatchObject({
      kind: 'conflict',
      message: expect.stringContaining('is offsite and stays so'),
    });
    expect(
      await client(store1).backupStoreEnsure({
        name: 'extra',
        offsite: false,
        path: join(dir, 'pools', 'extra'),
      }),
    ).toMatchObject({ name: 'extra', snapshots: 0 });
  });
});

let first: BackupJob;
let second: BackupJob;

describe('a backup from one agent into another agent’s store', () => {
  it('sends every allocated chunk the first time, across mutual TLS', async () => {
    const job = await client(host1).startBackup({
      vm: 'web',
      snapshot: snapshotId('web', new Date('2026-12-01T02:00:00Z')),
      policy: 'nightly',
      store: loc(store1, 'site'),
      key,
      full: false,
      freeze: true,
    });
    expect(job.state).toBe('running');
    first = await finished(host1, job);
    expect(first).toMatchObject({ state: 'succeeded', kind: 'backup' });
    // Six 1 MiB chunks with data: 0-1 all 0x11, 9-12 all 0x22 (equal chunks are stored once).
    expect(first.snapshot!.disks[0]).toMatchObject({ mode: 'full', fullReason: 'first', newChunks: 2 });
    expect(first.snapshot!.disks[0]!.readBytes).toBe(6 * MiB);
    const st = (await client(store1).backupStores()).find((s) => s.name === 'site');
    expect(st).toMatchObject({ snapshots: 1, chunks: 3 }); // two with data, the zero chunk
  });

  it('reads and sends only the changed chunk the next time', async () => {
    await qemuIo(img(), 'write -P 0x33 17M 64k');
    const job = await client(host1).startBackup({
      vm: 'web',
      snapshot: snapshotId('web', new Date('2026-12-01T03:00:00Z')),
      policy: 'nightly',
      store: loc(store1, 'site'),
      key,
      base: first.snapshot!.id,
      full: false,
      freeze: true,
    });
    second = await finished(host1, job);
    expect(second.state).toBe('succeeded');
    expect(second.snapshot!.base).toBe(first.snapshot!.id);
    expect(second.snapshot!.disks[0]).toMatchObject({ mode: 'incremental', newChunks: 1 });
    expect(second.snapshot!.disks[0]!.readBytes).toBe(MiB);
  });

  it('a second backup of the same VM while one runs is refused', async () => {
    const req = {
      vm: 'web',
      snapshot: snapshotId('web', new Date('2026-12-01T04:00:00Z')),
      policy: 'nightly',
      store: loc(store1, 'site'),
      key,
      base: second.snapshot!.id,
      full: false,
      freeze: true,
    };
    const a = await client(host1).startBackup(req);
    await expect(client(host1).startBackup(req)).rejects.toMatchObject({ kind: 'invalid-state' });
    expect((await finished(host1, a)).state).toBe('succeeded');
  });

  it('with another key is refused by the store, nothing stored', async () => {
    const other = { name: 'other-key', value: newBackupKey().toString('base64') };
    const chunks = async () => (await client(store1).backupStores()).find((s) => s.name === 'site')!.chunks;
    const before = await chunks();
    const job = await client(host1).startBackup({
      vm: 'web',
      snapshot: snapshotId('web', new Date('2026-12-01T05:00:00Z')),
      policy: 'nightly',
      store: loc(store1, 'site'),
      key: other,
      full: false,
      freeze: true,
    });
    const done = await finished(host1, job);
    expect(done).toMatchObject({
      state: 'failed',
      errorKind: 'key-mismatch',
      error: expect.stringContaining('nothing was sent'),
    });
    expect(await chunks()).toBe(before);
    expect((await client(store1).snapshots('site')).map((s) => s.id)).toHaveLength(3);
  });

  it('restores into the VM byte for byte', async () => {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'restored.qcow2'), String(SIZE)]);
    const job = await client(host1).startRestore({
      snapshot: second.snapshot!.id,
      store: loc(store1, 'site'),
      key,
      vm: 'web',
    });
    const done = await finished(host1, job);
    expect(done).toMatchObject({ state: 'succeeded', kind: 'restore' });
    expect(done.restored!.disks).toEqual([{ name: 'root', bytesWritten: 7 * MiB }]); // zero chunks skipped
    await run('qemu-img', ['compare', '-q', img(), join(dir, 'restored.qcow2')]);
  });
});

describe('an offsite store pulls from the primary', () => {
  it('fetches every chunk the first time, then only what it lacks', async () => {
    const a = await finished(store2, await client(store2).pull('vault', { from: loc(store1, 'site') }));
    expect(a).toMatchObject({ state: 'succeeded', kind: 'pull' });
    expect(a.pull!.snapshotsPulled).toHaveLength(3);
    expect(a.pull!.chunksFetched).toBe(4); // 2 + 1 new + the zero chunk
    await qemuIo(img(), 'write -P 0x44 1M 4k');
    const b = await finished(
      host1,
      await client(host1).startBackup({
        vm: 'web',
        snapshot: snapshotId('web', new Date('2026-12-01T06:00:00Z')),
        policy: 'nightly',
        store: loc(store1, 'site'),
        key,
        base: (await client(store1).snapshots('site', 'web')).at(-1)!.id,
        full: false,
        freeze: true,
      }),
    );
    expect(b.state).toBe('succeeded');
    const again = await finished(store2, await client(store2).pull('vault', { from: loc(store1, 'site') }));
    expect(again.pull).toMatchObject({ snapshotsPulled: [b.snapshot!.id], chunksFetched: 1 });
    expect(again.pull!.chunksAlreadyThere).toBe(4); // 0x11, 0x22, 0x33 and the zero chunk, each asked once
  });

  it('refuses writes from the network and prune from anyone but its local socket', async () => {
    const asHost = new StoreClient(loc(store2, 'vault'), host1.creds);
    const m = await client(store2).manifest('vault', first.snapshot!.id);
    await expect(asHost.putChunk(m.disks[0]!.chunks[0]!, Buffer.alloc(100))).rejects.toMatchObject({
      kind: 'forbidden',
      message: expect.stringContaining('offsite'),
    });
    await expect(asHost.putManifest(m)).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(client(store2).prune('vault', [first.snapshot!.id])).rejects.toMatchObject({
      kind: 'forbidden',
      message: expect.stringContaining('local socket'),
    });
    const local = new HttpClient(store2.local, { protocol: 'wire' });
    expect(
      await local.post(
        '/v1/backup-stores/vault/prune',
        { snapshots: [first.snapshot!.id] },
        PruneAnswerSchema,
      ),
    ).toEqual({ deleted: [first.snapshot!.id] });
    expect(await asHost.list()).toHaveLength(3);
    asHost.close();
  });

  it('applies its own retention after a pull', async () => {
    await client(store2).backupStoreEnsure({ name: 'vault2', offsite: true });
    const site = (await client(store1).snapshots('site', 'web')).map((x) => x.id);
    const j = await finished(
      store2,
      await client(store2).pull('vault2', { from: loc(store1, 'site'), retention: { last: 2 } }),
    );
    expect(j.state).toBe('succeeded');
    expect(j.pull!.snapshotsPulled).toEqual(site);
    expect((await client(store2).snapshots('vault2')).map((x) => x.id)).toEqual(site.slice(-2));
    expect(j.notes).toEqual([expect.stringContaining(`retention removed ${site.length - 2} snapshot(s)`)]);
  });

  it("host certificates reach only the store's peer routes", async () => {
    const raw = (n: Node, c: TlsCredentials) => new HttpClient(n.url, { protocol: 'wire', tls: { ...c } });
    const asHost = raw(store1, host1.creds);
    await expect(asHost.get('/v1/backup-stores', StoreListSchema)).rejects.toMatchObject({
      kind: 'unauthorized',
    });
    await expect(
      asHost.post('/v1/backup-stores/site/prune', { snapshots: [first.snapshot!.id] }, PruneAnswerSchema),
    ).rejects.toMatchObject({ kind: 'unauthorized' });
    await expect(asHost.post('/v1/backup-stores/site/gc', {}, OkSchema)).rejects.toMatchObject({
      kind: 'unauthorized',
    });
    await expect(asHost.get(`/v1/backup-jobs/${first.id}`, OkSchema)).rejects.toMatchObject({
      kind: 'unauthorized',
    });
    // The peer routes answer it.
    const sc = new StoreClient(loc(store1, 'site'), host1.creds);
    expect((await sc.list('web')).length).toBeGreaterThan(0);
    const id = (await sc.getManifest(first.snapshot!.id)).disks[0]!.chunks[0]!;
    expect((await sc.getChunk(id)).subarray(0, 4).toString()).toBe('VLCK');
    sc.close();
    // A store client refuses an agent whose certificate names another host.
    const wrong = new StoreClient({ store: 'site', host: 'store9', agent: store1.url }, host1.creds);
    await expect(wrong.list()).rejects.toMatchObject({ kind: 'unauthorized' });
    wrong.close();
  });
});

describe('one file out of a snapshot', () => {
  it('reads a file from an ext4 partition with debugfs, without mounting it', async () => {
    // An MBR disk: partition 1 at 1 MiB holding an ext4 filesystem with /etc/hostname.
    const tree = join(dir, 'tree');
    await mkdir(join(tree, 'etc'), { recursive: true });
    await writeFile(join(tree, 'etc', 'hostname'), 'web-from-backup\n');
    const fs = join(dir, 'fs.raw');
    await run('mkfs.ext4', ['-q', '-F', '-d', tree, fs, '8M']);
    const mbr = Buffer.alloc(MiB);
    mbr.writeUInt8(0x83, 446 + 4);
    mbr.writeUInt32LE(2048, 446 + 8);
    mbr.writeUInt32LE((8 * MiB) / 512, 446 + 12);
    mbr.writeUInt16LE(0xaa55, 510);
    const disk = join(dir, 'disk.raw');
    await writeFile(disk, Buffer.concat([mbr, await readFile(fs), Buffer.alloc(SIZE - 9 * MiB)]));
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', disk, img()]);
    const b = await finished(
      host1,
      await client(host1).startBackup({
        vm: 'web',
        snapshot: snapshotId('web', new Date('2026-12-01T07:00:00Z')),
        policy: 'nightly',
        store: loc(store1, 'site'),
        key,
        full: true,
        freeze: true,
      }),
    );
    expect(b.state).toBe('succeeded');
    const f = await finished(
      host1,
      await client(host1).startFileRestore({
        snapshot: b.snapshot!.id,
        store: loc(store1, 'site'),
        key,
        disk: 'root',
        partition: 1,
        path: '/etc/hostname',
      }),
    );
    expect(f).toMatchObject({ state: 'succeeded', file: { path: '/etc/hostname', size: 16 } });
    expect(Buffer.from(f.file!.data, 'base64').toString()).toBe('web-from-backup\n');
    const missing = await finished(
      host1,
      await client(host1).startFileRestore({
        snapshot: b.snapshot!.id,
        store: loc(store1, 'site'),
        key,
        disk: 'root',
        partition: 1,
        path: '/etc/shadow',
      }),
    );
    expect(missing).toMatchObject({ state: 'failed', errorKind: 'not-found' });
    const dirNode = await finished(
      host1,
      await client(host1).startFileRestore({
        snapshot: b.snapshot!.id,
        store: loc(store1, 'site'),
        key,
        disk: 'root',
        partition: 1,
        path: '/etc',
      }),
    );
    expect(dirNode).toMatchObject({ state: 'failed', error: expect.stringContaining('not a regular file') });
  });
});
