import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { hostPoolBackends } from '../../src/agent/main.js';
import { createAgentServer } from '../../src/agent/server.js';
import { AgentClient } from '../../src/controller/agents.js';
import { createControllerApi } from '../../src/controller/api.js';
import { Controller } from '../../src/controller/controller.js';
import { loadOrCreateSecretsKey } from '../../src/controller/secrets/sealing.js';
import { SpecStore } from '../../src/controller/spec-store.js';
import { SqliteStore } from '../../src/controller/store/sqlite.js';
import { TaskManager } from '../../src/controller/tasks.js';
import {
  CapacityReportSchema,
  PoolListSchema,
  SnapshotListSchema,
  VolumeListSchema,
} from '../../src/controller/wire-storage.js';
import { hypervisorDrivers } from '../../src/drivers/hypervisor/registry.js';
import { SystemRunner } from '../../src/exec/runner.js';
import { listen } from '../../src/shared/http/server.js';

// The storage API end to end on one machine, no VM booted: the controller's routes, the real agent wire (strict
// schemas over a unix socket), the agent's dispatch and checks, and a real dir pool (qemu-img) in a scratch dir.

const root = mkdtempSync('/tmp/vmlink-itstor-');
const poolDir = join(root, 'pools', 'local');
const sock = join(root, 'h1.sock');
const KEY = 'storage-api key 41b7 never shown';
const KEY_B64 = Buffer.from(KEY).toString('base64');

const SPEC = `version: 1
hosts: [{ name: h1, agent: "unix://${sock}" }]
networks: [{ name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }]
pools: [{ name: local, type: dir, host: h1, path: ${poolDir} }]
volumes: [{ name: data, pool: local, sizeMiB: 64 }]
vms:
  - name: web1
    host: h1
    state: stopped
    nics: [{ network: natnet }]
    disks: [{ name: data, pool: local, volume: data }]
`;

describe('storage API with a local agent and a dir pool', () => {
  let agentApp: FastifyInstance;
  let api: FastifyInstance;
  let store: SqliteStore;
  const stateDir = join(root, 'agent');
  beforeAll(async () => {
    const runner = new SystemRunner();
    const agent = new Agent({
      host: 'h1',
      runner,
      networks: {},
      hypervisor: hypervisorDrivers.qemu({ runner, stateDir }),
      stateDir,
      storage: {
        role: 'compute',
        pools: hostPoolBackends('compute', { runner, stateDir, storageHost: 'h1' }),
        poolRoots: [join(root, 'pools')],
      },
    });
    agentApp = await createAgentServer(agent, { prerequisites: async () => [] });
    await listen(agentApp, `unix://${sock}`);
    store = new SqliteStore(join(root, 'controller.db'));
    const controller = new Controller(store, runner, {
      secretsKey: loadOrCreateSecretsKey(join(root, 'secrets.key')),
    });
    api = await createControllerApi(controller, new TaskManager());
    await new SpecStore(store).recordAttempt(SPEC, 'site.yaml');
    // What apply sends for the spec's pool and volume (the plan's steps), straight to the agent.
    const client = new AgentClient('h1', `unix://${sock}`);
    await client.act({
      kind: 'pool.ensure',
      pool: { name: 'local', type: 'dir', path: poolDir },
      configHash: 'abcdef12',
      secrets: [],
    });
    await client.act({
      kind: 'volume.ensure',
      volume: { pool: 'local', name: 'data', sizeMiB: 64, format: 'qcow2' },
      secrets: [],
    });
  }, 60_000);
  afterAll(async () => {
    await api?.close();
    await agentApp?.close();
    await store?.close();
    rmSync(root, { recursive: true, force: true });
  });

  const call = (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: object) =>
    api.inject({ method, url, ...(payload ? { payload } : {}) });

  it('creates, lists, grows, snapshots and deletes volumes; refuses a shrink and a volume in use', async () => {
    const pools = PoolListSchema.parse((await call('GET', '/v1/pools')).json());
    expect(pools).toMatchObject([{ name: 'local', type: 'dir', host: 'h1', state: 'ok', volumes: 1 }]);
    expect(pools[0]!.capacityMiB).toBeGreaterThan(0);

    expect(
      (await call('POST', '/v1/volumes', { pool: 'local', name: 'scratch', sizeMiB: 32 })).statusCode,
    ).toBe(200);
    expect(existsSync(join(poolDir, 'scratch.qcow2'))).toBe(true);
    const grown = await call('POST', '/v1/volumes/local/scratch/resize', { sizeMiB: 48 });
    expect(grown.statusCode, grown.body).toBe(200);
    const shrink = await call('POST', '/v1/volumes/local/scratch/resize', { sizeMiB: 16 });
    expect(shrink.json().error.message).toMatch(/is 48 MiB; a resize only grows it/);

    let volumes = VolumeListSchema.parse((await call('GET', '/v1/volumes')).json());
    expect(volumes.map((v) => [v.name, v.sizeMiB, v.format, v.usedBy.map((u) => u.vm)])).toEqual([
      ['data', 64, 'qcow2', ['web1']],
      ['scratch', 48, 'qcow2', []],
    ]);

    expect((await call('POST', '/v1/volumes/local/scratch/snapshots', { name: 's1' })).statusCode).toBe(200);
    const snaps = SnapshotListSchema.parse((await call('GET', '/v1/volumes/local/scratch/snapshots')).json());
    expect(snaps.snapshots.map((s) => s.name)).toEqual(['s1']);
    expect((await call('POST', '/v1/volumes/local/scratch/snapshots/s1/rollback')).statusCode).toBe(200);

    const inUse = await call('DELETE', '/v1/volumes/local/data');
    expect(inUse.statusCode).toBe(409);
    expect(inUse.json().error.message).toMatch(/volume local\/data is used by VM web1/);
    expect((await call('DELETE', '/v1/volumes/local/scratch')).statusCode).toBe(200);
    expect(existsSync(join(poolDir, 'scratch.qcow2'))).toBe(false);
    volumes = VolumeListSchema.parse((await call('GET', '/v1/volumes')).json());
    expect(volumes.map((v) => v.name)).toEqual(['data']);

    const cap = CapacityReportSchema.parse((await call('GET', '/v1/capacity')).json());
    expect(cap.pools[0]).toMatchObject({ pool: 'local', provisionedMiB: 64 });
    expect(cap.pools[0]!.projectedNeedMiB).toBe(96);
  }, 120_000);

  it('an import reads only below the import roots; the agent refuses /etc/passwd before touching it', async () => {
    const r = await call('POST', '/v1/images/import', {
      pool: 'local',
      name: 'stolen',
      sourcePath: '/etc/passwd',
    });
    expect(r.statusCode).toBe(202);
    const task = await waitTask(r.json().taskId);
    expect(task.error?.message).toMatch(/\/etc\/passwd is not below/);
    expect(existsSync(join(poolDir, 'stolen.qcow2'))).toBe(false);
  }, 60_000);

  it('an encrypted volume is made, grown and snapshotted with its key, which no answer, file or store holds', async () => {
    expect((await call('POST', '/v1/secrets/vault-key', { value: KEY_B64 })).statusCode).toBe(200);
    const made = await call('POST', '/v1/volumes', {
      pool: 'local',
      name: 'vault',
      sizeMiB: 16,
      encryption: { secret: 'vault-key' },
    });
    expect(made.statusCode, made.body).toBe(200);
    // qemu-img must open the LUKS volume to grow it and to snapshot it: it works only with the key delivered.
    const grown = await call('POST', '/v1/volumes/local/vault/resize', { sizeMiB: 32 });
    expect(grown.statusCode, grown.body).toBe(200);
    const snap = await call('POST', '/v1/volumes/local/vault/snapshots', { name: 'k1' });
    expect(snap.statusCode, snap.body).toBe(200);
    const list = VolumeListSchema.parse((await call('GET', '/v1/volumes')).json());
    expect(list.find((v) => v.name === 'vault')).toMatchObject({
      encrypted: true,
      sizeMiB: 32,
      snapshots: 1,
    });
    const file = readFileSync(join(poolDir, 'vault.qcow2'));
    expect(file.includes(Buffer.from(KEY))).toBe(false);
    const answers = [
      made.body,
      grown.body,
      snap.body,
      (await call('GET', '/v1/events')).body,
      (await call('GET', '/v1/audit')).body,
    ];
    const files = walk(root).filter((f) => !f.endsWith('.sock') && statSync(f).size < 64 * 1024 * 1024);
    for (const where of [...answers, ...files.map((f) => readFileSync(f).toString('latin1'))]) {
      expect(where).not.toContain(KEY);
      expect(where).not.toContain(KEY_B64);
    }
  }, 120_000);

  async function waitTask(id: string) {
    for (;;) {
      const t = (await call('GET', `/v1/tasks/${id}`)).json() as {
        state: string;
        error?: { message: string };
      };
      if (t.state !== 'running') return t;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
});

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : [],
  );
}
