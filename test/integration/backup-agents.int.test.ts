// Backups across real agents: a running test guest on host1 (the real QEMU driver: fleecing, dirty bitmaps) is backed
// up by host1's backup side into store `site` served by a real `vmlink agent` process (store1), over mutual TLS with
// host certificates; a second real agent process (store2) holds the offsite store `vault` and pulls only the chunks it
// lacks (counted); an in-place restore writes the guest's disk back byte for byte; the offsite store refuses writes
// and prune from the network.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { BackupService } from '../../src/agent/backup/service.js';
import { StoreClient } from '../../src/agent/backup/store-client.js';
import { BackupStores } from '../../src/agent/backup/stores.js';
import { createAgentServer } from '../../src/agent/server.js';
import { AgentClient, setAgentTrust } from '../../src/controller/agents.js';
import { HostCredentials } from '../../src/controller/pki/service.js';
import { DirChunkStore } from '../../src/drivers/backup/chunk-store.js';
import { connectNbd } from '../../src/drivers/backup/nbd-client.js';
import { startQemuNbd, stopQemuNbd } from '../../src/drivers/backup/qemu-nbd.js';
import { QemuDriver } from '../../src/drivers/hypervisor/qemu/driver.js';
import { defaultLauncherPath } from '../../src/drivers/hypervisor/qemu/launcher.js';
import { SystemRunner } from '../../src/exec/runner.js';
import { type BackupJob, type StoreLocation, snapshotId } from '../../src/shared/backup.js';
import { BackupKeySet, newBackupKey } from '../../src/shared/backup-crypto.js';
import { listen } from '../../src/shared/http/server.js';
import type { VmConfig } from '../../src/shared/model.js';
import { readCredentials } from '../../src/shared/tls.js';
import { createBridgedTaps } from '../helpers/guest-net.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const runner = new SystemRunner();
const NS = 'vltest-bkag';
const BRIDGE = 'vltest-bkagbr';
const TAP = 'vlt-bkag0001';
const VM = 'vltest-bkag1';
const GUEST_DIR = '/var/lib/vmlink/images/test-guest';
const MiB = 1024 * 1024;
const PORT = 19_000 + Math.floor(Math.random() * 1_000);
const key = { name: 'backup-key', value: newBackupKey().toString('base64') };
const isRoot = process.getuid?.() === 0;

const cfg: VmConfig = {
  name: VM,
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  disks: [{ name: 'data', sizeMiB: 24 }],
  nics: [{ network: 'n', backend: 'linux', bridge: BRIDGE, tap: TAP, mac: '52:54:00:96:00:12', mtu: 1500 }],
  state: 'running',
};

describe.runIf(isRoot && existsSync(`${GUEST_DIR}/vmlinuz`))('backups across real agents', () => {
  let root = '';
  let release: (() => Promise<void>) | undefined;
  let driver: QemuDriver;
  let dev = '';
  let app: FastifyInstance | undefined;
  let host1Url = '';
  const procs: ChildProcess[] = [];
  const stores: Record<string, { url: string; dir: string }> = {};
  let pki: HostCredentials;

  const client = (host: string) => new AgentClient(host, host === 'host1' ? host1Url : stores[host]!.url);
  const loc = (host: string, store: string): StoreLocation => ({ store, host, agent: stores[host]!.url });
  const finished = async (host: string, job: BackupJob): Promise<BackupJob> => {
    for (;;) {
      const j = await client(host).job(job.id);
      if (j.state !== 'running') return j;
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const guestWrite = async (offset: number, text: string) => {
    const r = await driver.guestExec(VM, [
      'sh',
      '-c',
      `printf %s ${text} | dd of=${dev} bs=1 seek=${offset} conv=notrunc,fsync 2>&1`,
    ]);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
  };
  let n = 0;
  const backup = async (base?: string) => {
    const job = await client('host1').startBackup({
      vm: VM,
      snapshot: snapshotId(VM, new Date(Date.UTC(2026, 11, 1, 2, ++n))),
      policy: 'nightly',
      store: loc('store1', 'site'),
      key,
      ...(base ? { base } : {}),
      full: false,
      freeze: true,
    });
    const done = await finished('host1', job);
    expect(done.state, done.error).toBe('succeeded');
    return done.snapshot!;
  };
  /** The data disk's bytes, read through a writable restore view of the stopped VM (and `change` applied). */
  const diskBytes = async (change?: (w: (at: number, b: Buffer) => Promise<void>) => Promise<void>) => {
    const view = await driver.restoreOpen!(VM);
    try {
      const d = view.disks.find((x) => x.name === 'data')!;
      const nbd = await connectNbd({ socket: d.socket, exportName: d.exportName });
      try {
        if (change) await change((at, b) => nbd.write(at, b));
        const parts: Buffer[] = [];
        for (let at = 0; at < d.sizeBytes; at += 4 * MiB)
          parts.push(await nbd.read(at, Math.min(4 * MiB, d.sizeBytes - at)));
        return Buffer.concat(parts);
      } finally {
        await nbd.flush();
        await nbd.close();
      }
    } finally {
      await view.close();
    }
  };

  async function startStoreAgent(host: string, port: number): Promise<void> {
    const dir = join(root, host);
    await mkdir(join(dir, 'pools'), { recursive: true });
    await pki.ensureLabHost(host, join(dir, 'tls'));
    const url = `https://127.0.0.1:${port}`;
    const p = spawn(
      process.execPath,
      [
        'bin/vmlink.js',
        'agent',
        '--host',
        host,
        '--role',
        'storage',
        '--listen',
        `unix://${join(dir, 'agent.sock')}`,
        '--listen-tcp',
        url,
        '--state-dir',
        dir,
        '--uplink',
        'lo',
        '--pool-root',
        join(dir, 'pools'),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    p.stderr?.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-4000);
    });
    procs.push(p);
    stores[host] = { url, dir };
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        await client(host).health();
        return;
      } catch (e) {
        if (Date.now() > deadline || p.exitCode !== null)
          throw new Error(`agent ${host} did not come up: ${(e as Error).message}\n${err}`);
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }

  beforeAll(async () => {
    if (!existsSync(defaultLauncherPath())) await runner.run(['bash', 'scripts/build-native.sh']);
    root = await mkdtemp(join(tmpdir(), 'vmlink-bkag-int-'));
    await chmod(root, 0o711);
    pki = await HostCredentials.open(join(root, 'pki'));
    await startStoreAgent('store1', PORT);
    await startStoreAgent('store2', PORT + 1);
    release = await acquireVmLock();
    await createBridgedTaps(runner, NS, BRIDGE, [TAP]);
    const stateDir = join(root, 'host1');
    await mkdir(stateDir, { recursive: true });
    driver = new QemuDriver({
      runner,
      stateDir,
      netns: NS,
      nbdServers: {
        start: (o) => startQemuNbd(runner, o),
        stopLeft: async (d, name) => {
          await stopQemuNbd(d, name);
        },
      },
    });
    await driver.create(cfg, 'bkag-h1');
    await driver.start(VM);
    await driver.waitForGuestAgent(VM, 240_000);
    const r = await driver.guestExec(VM, [
      'sh',
      '-c',
      'for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = data ] && echo /dev/$(basename $d); done',
    ]);
    dev = r.stdout.trim();
    expect(dev).toMatch(/^\/dev\/vd[a-z]$/);
    // host1's agent side: the real driver, its backup service, its TLS listener.
    await pki.ensureLabHost('host1', join(stateDir, 'tls'));
    const creds = readCredentials(join(stateDir, 'tls'))!;
    const svc = new BackupService({
      host: 'host1',
      stateDir,
      runner,
      hypervisor: driver,
      stores: new BackupStores({
        host: 'host1',
        stateDir,
        poolRoots: [],
        open: (c) => DirChunkStore.open(c),
      }),
      tls: () => creds,
      connect: connectNbd,
      keys: (k) => BackupKeySet.fromBase64(k.value, k.name),
    });
    const agent = new Agent({ host: 'host1', runner, networks: {}, hypervisor: driver, stateDir });
    app = await createAgentServer(agent, { tls: creds, prerequisites: async () => [], backup: svc });
    host1Url = `https://127.0.0.1:${PORT + 2}`;
    await listen(app, host1Url);
    await client('store1').backupStoreEnsure({ name: 'site', offsite: false });
    await client('store2').backupStoreEnsure({ name: 'vault', offsite: true });
  }, 900_000);

  afterAll(async () => {
    try {
      await app?.close().catch(() => {});
      if (driver) await driver.delete(VM).catch(() => {});
      await driver?.close();
      for (const p of procs) p.kill('SIGTERM');
      await Promise.all(
        procs.map((p) => (p.exitCode !== null ? undefined : new Promise((r) => p.once('exit', r)))),
      );
    } finally {
      setAgentTrust(undefined);
      await runner.run(['ip', 'netns', 'del', NS], { allowFailure: true });
      if (root) await rm(root, { recursive: true, force: true });
      await release?.();
    }
  });

  let last = '';

  it('a running guest is backed up into another agent’s store, then only what it changed', async () => {
    await guestWrite(1 * MiB, 'FIRST-AAAA');
    await guestWrite(9 * MiB, 'FIRST-BBBB');
    const a = await backup();
    console.log('first backup:', JSON.stringify(a.disks), a.consistency);
    const data = a.disks.find((d) => d.name === 'data')!;
    expect(data).toMatchObject({ mode: 'full', fullReason: 'first' });
    await guestWrite(17 * MiB, 'SECOND-CCC');
    const b = await backup(a.id);
    const d2 = b.disks.find((d) => d.name === 'data')!;
    console.log('second backup:', JSON.stringify(b.disks));
    expect(d2).toMatchObject({ mode: 'incremental', newChunks: 1, readBytes: MiB }); // one 1 MiB chunk
    expect(b.base).toBe(a.id);
    last = b.id;
    const listed = await client('store1').snapshots('site', VM);
    expect(listed.map((s) => s.id)).toEqual([a.id, b.id]);
  }, 600_000);

  it('the offsite store pulls everything once, then only the chunks it lacks', async () => {
    const first = await finished(
      'store2',
      await client('store2').pull('vault', { from: loc('store1', 'site') }),
    );
    expect(first.state, first.error).toBe('succeeded');
    const site = (await client('store1').backupStores()).find((s) => s.name === 'site')!;
    expect(first.pull!.snapshotsPulled).toHaveLength(2);
    expect(first.pull!.chunksFetched).toBe(site.chunks);
    await guestWrite(5 * MiB, 'THIRD-DDDD');
    await guestWrite(21 * MiB, 'THIRD-EEEE');
    const c = await backup(last);
    last = c.id;
    const sent = c.disks.reduce((s, d) => s + d.newChunks, 0);
    expect(sent).toBe(2);
    const again = await finished(
      'store2',
      await client('store2').pull('vault', { from: loc('store1', 'site') }),
    );
    console.log('second pull:', JSON.stringify(again.pull));
    expect(again.pull).toMatchObject({ snapshotsPulled: [c.id], chunksFetched: sent });
  }, 600_000);

  it('the offsite store refuses writes and prune from the network', async () => {
    const hostCreds = readCredentials(join(root, 'host1', 'tls'))!;
    const asHost = new StoreClient(loc('store2', 'vault'), hostCreds);
    const m = await client('store2').manifest('vault', last);
    await expect(asHost.putManifest(m)).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(asHost.putChunk(m.disks[0]!.chunks[0]!, Buffer.alloc(64))).rejects.toMatchObject({
      kind: 'forbidden',
    });
    asHost.close();
    await expect(client('store2').prune('vault', [last])).rejects.toMatchObject({ kind: 'forbidden' });
    expect((await client('store2').snapshots('vault')).map((s) => s.id)).toContain(last);
  });

  it('an in-place restore writes the guest’s disk back byte for byte', async () => {
    await driver.stop(VM, { force: true });
    const expected = await diskBytes();
    expect(expected.toString('latin1', 5 * MiB, 5 * MiB + 10)).toBe('THIRD-DDDD');
    // Damage the disk, then restore the last snapshot over it.
    await diskBytes(async (w) => {
      await w(5 * MiB, Buffer.from('GARBAGE!!!'));
      await w(12 * MiB, Buffer.alloc(MiB, 0x5a));
    });
    const job = await client('host1').startRestore({
      snapshot: last,
      store: loc('store1', 'site'),
      key,
      vm: VM,
      disks: [{ from: 'data', to: 'data' }],
    });
    const done = await finished('host1', job);
    expect(done.state, done.error).toBe('succeeded');
    console.log('restore:', JSON.stringify(done.restored));
    const got = await diskBytes();
    expect(got.length).toBe(expected.length);
    expect(got.equals(expected)).toBe(true);
  }, 600_000);
});
