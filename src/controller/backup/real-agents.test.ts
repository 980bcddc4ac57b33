// The controller's backup side against real agents (in-process, over real mutual TLS on 127.0.0.1 with certificates of
// the controller's CA): a VM host whose stopped VM's disk is served by a real qemu-nbd (as capture's stopped-VM view
// is), a store host with a real DirChunkStore, and an offsite store host that pulls. The controller picks the base,
// sends the key with the one request, prunes by the policy's retention, and refuses a key the store is not bound to.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../agent/agent.js';
import { BackupService } from '../../agent/backup/service.js';
import { BackupStores } from '../../agent/backup/stores.js';
import { createAgentServer } from '../../agent/server.js';
import { DirChunkStore } from '../../drivers/backup/chunk-store.js';
import { connectNbd } from '../../drivers/backup/nbd-client.js';
import { type QemuNbdServer, startQemuNbd } from '../../drivers/backup/qemu-nbd.js';
import type { BackupView, HypervisorDriver } from '../../drivers/hypervisor/types.js';
import { RecordingRunner, SystemRunner } from '../../exec/runner.js';
import { BACKUP_CHUNK_BYTES } from '../../shared/backup.js';
import { BackupKeySet } from '../../shared/backup-crypto.js';
import { listen } from '../../shared/http/server.js';
import { readCredentials } from '../../shared/tls.js';
import { Controller } from '../controller.js';
import { HostCredentials } from '../pki/service.js';
import { SqliteStore } from '../store/sqlite.js';
import type { TaskContext } from '../tasks.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const SIZE = 24 * MiB;
const runner = new SystemRunner();
let dir: string;
const servers: QemuNbdServer[] = [];
const apps: FastifyInstance[] = [];
const urls: Record<string, string> = {};
let store: SqliteStore;
let controller: Controller;
let now = Date.parse('2026-12-01T02:00:00Z');

const img = () => join(dir, 'web-root.qcow2');
const qemuIo = (...cmds: string[]) =>
  run('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), img()]);

function task(): TaskContext & { lines: string[] } {
  const lines: string[] = [];
  return { lines, progress: (m) => lines.push(m), signal: new AbortController().signal };
}

/** One stopped VM `web` whose root disk is a qcow2 file, read through qemu-nbd with its persistent bitmaps. */
function hypervisor(): HypervisorDriver {
  let n = 0;
  const bitmaps = async () => {
    const { stdout } = await run('qemu-img', ['info', '--output=json', '-U', img()]);
    const info = JSON.parse(stdout) as {
      'format-specific'?: { data?: { bitmaps?: Array<{ name: string }> } };
    };
    return (info['format-specific']?.data?.bitmaps ?? []).map((b) => b.name);
  };
  return {
    config: async (name: string) =>
      name === 'web' ? ({ name: 'web', cpus: 1, memoryMiB: 256, disks: [], nics: [] } as never) : undefined,
    backupOpen: async (_name, opts): Promise<BackupView> => {
      const base =
        opts.bitmaps.base && (await bitmaps()).includes(opts.bitmaps.base) ? opts.bitmaps.base : undefined;
      const s = await startQemuNbd(runner, {
        image: img(),
        format: 'qcow2',
        readOnly: true,
        ...(base ? { bitmap: base } : {}),
        socketDir: join(dir, 'nbd'),
        exportName: `view${++n}`,
      });
      servers.push(s);
      const end = async () => {
        await s.stop();
        servers.splice(servers.indexOf(s), 1);
      };
      return {
        consistency: 'stopped',
        at: new Date(),
        disks: [
          {
            name: 'root',
            sizeBytes: SIZE,
            socket: s.socket,
            exportName: s.exportName,
            changed:
              base && !opts.full
                ? { context: `qemu:dirty-bitmap:${base}` }
                : { fullReason: base ? 'forced' : 'first' },
          },
        ],
        commit: async () => {
          await end();
          if (base) await run('qemu-img', ['bitmap', '--remove', img(), base]);
          await run('qemu-img', ['bitmap', '--add', img(), opts.bitmaps.next]);
        },
        abort: end,
      };
    },
  } as Partial<HypervisorDriver> as HypervisorDriver;
}

async function startAgent(pki: HostCredentials, name: string, hv: HypervisorDriver): Promise<void> {
  const stateDir = join(dir, name);
  await mkdir(stateDir, { recursive: true });
  await pki.ensureLabHost(name, join(stateDir, 'tls'));
  const creds = readCredentials(join(stateDir, 'tls'))!;
  const svc = new BackupService({
    host: name,
    stateDir,
    runner,
    hypervisor: hv,
    stores: new BackupStores({
      host: name,
      stateDir,
      poolRoots: [join(dir, 'pools')],
      open: (c) => DirChunkStore.open(c),
    }),
    tls: () => creds,
    connect: connectNbd,
    keys: (k) => BackupKeySet.fromBase64(k.value, k.name),
  });
  await svc.start();
  const agent = new Agent({
    host: name,
    runner: new RecordingRunner(),
    networks: {},
    hypervisor: hv,
    stateDir,
  });
  const tcp = await createAgentServer(agent, { tls: creds, prerequisites: async () => [], backup: svc });
  await listen(tcp, 'https://127.0.0.1:0');
  apps.push(tcp);
  urls[name] = `https://127.0.0.1:${(tcp.server.address() as { port: number }).port}`;
}

const specText = () => `version: 1
hosts:
  - { name: host1, agent: "${urls.host1}" }
  - { name: store1, agent: "${urls.store1}" }
  - { name: store2, agent: "${urls.store2}" }
networks:
  - { name: natnet, host: host1, mode: nat, cidr: 10.10.0.0/24 }
vms:
  - { name: web, host: host1, nics: [{ network: natnet }] }
backupStores:
  - { name: site, host: store1 }
  - { name: vault, host: store2, offsite: true, pullFrom: site }
backups:
  - { name: nightly, vms: [web], store: site, schedule: "every 1h", retention: { last: 1 }, encryption: { key: bk }, rpoMinutes: 90 }
`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-backup-controller-'));
  // Opening the CA also makes it what this process's agent clients trust and present (as the controller does).
  const pki = await HostCredentials.open(join(dir, 'pki'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', img(), String(SIZE)]);
  await qemuIo('write -P 0x11 0 2M', 'write -P 0x22 9M 4M');
  const hv = hypervisor();
  for (const h of ['host1', 'store1', 'store2']) await startAgent(pki, h, hv);
  store = new SqliteStore(':memory:');
  controller = new Controller(store, new RecordingRunner(), {
    secretsKey: randomBytes(32),
    backup: { now: () => new Date(now), poll: { pollMs: 50 } },
  });
  // The spec as an apply records it (the agents here have no VMs or networks to make).
  await store.put('spec/current', {
    text: specText(),
    source: 'b.yaml',
    appliedAt: new Date(now).toISOString(),
  });
  await controller.backups.keyCreate('bk');
}, 60_000);

afterAll(async () => {
  for (const a of apps) await a.close().catch(() => {});
  for (const s of [...servers]) await s.stop().catch(() => {});
  await store?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('controller backups through real agents over mutual TLS', () => {
  let first: string;

  it('backs a VM up in full, then only what changed on the base the controller picked; the offsite store pulls', async () => {
    const t = task();
    const a = await controller.backups.run({ vm: 'web' }, t);
    first = a.snapshot.id;
    expect(a.snapshot.disks[0]).toMatchObject({ mode: 'full', fullReason: 'first', newChunks: 3 });
    expect(a.snapshot.disks[0]!.readBytes).toBe(3 * BACKUP_CHUNK_BYTES);
    await qemuIo('write -P 0x33 17M 64k');
    now += 60 * 60_000;
    const b = await controller.backups.run({ vm: 'web' }, task());
    expect(b.snapshot.base).toBe(first);
    expect(b.snapshot.disks[0]).toMatchObject({ mode: 'incremental', newChunks: 1 });
    expect(b.snapshot.disks[0]!.readBytes).toBe(BACKUP_CHUNK_BYTES);
    // Retention (last 1) deleted the first from the site store after the second; the offsite store pulled both
    // (it keeps its own: nothing from the network deletes there).
    const list = await controller.backups.list({ vm: 'web' });
    expect(list.unreachable).toEqual([]);
    expect(list.snapshots.map((s) => `${s.store} ${s.snapshot.id}`).sort()).toEqual(
      [`site ${b.snapshot.id}`, `vault ${b.snapshot.id}`, `vault ${first}`].sort(),
    );
    const events = (await store.events(100)).map((e) => e.kind);
    expect(events.filter((k) => k === 'backup.succeeded')).toHaveLength(2);
    expect(events).toContain('backup.pruned');
    expect(events).toContain('backup.synced');
  }, 120_000);

  it('verifies deep with the key sent to each store host, and reports the objectives', async () => {
    const v = await controller.backups.verify({ deep: true }, task());
    expect(v.results.map((r) => [r.store, r.deep, r.problems.length])).toEqual([
      ['site', true, 0],
      ['vault', true, 0],
    ]);
    const s = await controller.backups.status();
    expect(s.objectives[0]).toMatchObject({ policy: 'nightly', vm: 'web', rpo: { state: 'ok' } });
    expect(s.stores.map((x) => [x.name, x.reachable, x.snapshots])).toEqual([
      ['site', true, 1],
      ['vault', true, 2],
    ]);
  }, 120_000);

  it('refuses a backup under a key the store is not bound to before any chunk is read', async () => {
    await store.delete('secret/bk');
    await controller.backups.keyCreate('bk');
    now += 60 * 60_000;
    await expect(controller.backups.run({ vm: 'web' }, task())).rejects.toMatchObject({
      kind: 'key-mismatch',
      message: expect.stringContaining('nothing was read or written'),
    });
    expect((await controller.backups.status()).stores[0]).toMatchObject({ name: 'site', snapshots: 1 });
  }, 60_000);
});
