import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupAgentsHarness, run } from '../../agent/backup/agents.test-util.js';
import { RecordingRunner } from '../../exec/runner.js';
import { Controller } from '../controller.js';
import { HostCredentials } from '../pki/service.js';
import { SqliteStore } from '../store/sqlite.js';
import type { TaskContext } from '../tasks.js';

const MiB = 1024 * 1024;
const SIZE = 24 * MiB;
let dir: string;
let h: BackupAgentsHarness;
const urls: Record<string, string> = {};
let store: SqliteStore;
let controller: Controller;
let now = Date.parse('2026-12-01T02:00:00Z');

const qemuIo = (...cmds: string[]) => h.qemuIo(cmds);

function task(): TaskContext & { lines: string[] } {
  const lines: string[] = [];
  return { lines, progress: (m) => lines.push(m), signal: new AbortController().signal };
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
  h = new BackupAgentsHarness(dir, SIZE);
  // Opening the CA also makes it what this process's agent clients trust and present (as the controller does).
  const pki = await HostCredentials.open(join(dir, 'pki'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', h.image, String(SIZE)]);
  await qemuIo('write -P 0x11 0 2M', 'write -P 0x22 9M 4M');
  const hv = h.hypervisor();
  for (const name of ['host1', 'store1', 'store2']) urls[name] = (await h.node(pki, name, hv)).url;
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
  await h?.close();
  await store?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('controller backups through real agents over mutual TLS', () => {
  let first: string;

  it('backs a VM up in full, then only what changed on the base the controller picked; the offsite store pulls', async () => {
    const t = task();
    const a = await controller.backups.run({ vm: 'web' }, t);
    first = a.snapshot.id;
    // Six 1 MiB chunks with data: 0-1 all 0x11, 9-12 all 0x22 (equal chunks are stored once).
    expect(a.snapshot.disks[0]).toMatchObject({ mode: 'full', fullReason: 'first', newChunks: 2 });
    expect(a.snapshot.disks[0]!.readBytes).toBe(6 * MiB);
    await qemuIo('write -P 0x33 17M 64k');
    now += 60 * 60_000;
    const b = await controller.backups.run({ vm: 'web' }, task());
    expect(b.snapshot.base).toBe(first);
    expect(b.snapshot.disks[0]).toMatchObject({ mode: 'incremental', newChunks: 1 });
    expect(b.snapshot.disks[0]!.readBytes).toBe(MiB);
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
