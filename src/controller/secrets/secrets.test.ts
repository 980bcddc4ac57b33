import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeFleet } from '../../../test/helpers/fake-agents.js';
import { RecordingRunner } from '../../exec/runner.js';
import { createControllerApi } from '../api.js';
import { Controller } from '../controller.js';
import { SqliteStore } from '../store/sqlite.js';
import { TaskManager } from '../tasks.js';
import { loadOrCreateSecretsKey, seal, unseal } from './sealing.js';

// A value that must never show up anywhere but in the action the host receives.
const VALUE = 'correct horse battery staple 7f3c';
const VALUE_B64 = Buffer.from(VALUE).toString('base64');

const spec = (o: { secret?: string; confidential?: string } = {}) => `version: 1
hosts: [{ name: h1, agent: "unix:///fake/h1.sock" }]
networks: [{ name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }]
vms:
  - name: web1
    host: h1
    nics: [{ network: natnet }]
    disks:
      - { name: plain, sizeMiB: 64 }
      - { name: vault, sizeMiB: 64${o.secret ? `, encryption: { secret: ${o.secret} }` : ''} }
${o.confidential ? `    confidential: ${o.confidential}\n` : ''}`;

const task = () => {
  const lines: string[] = [];
  return { lines, progress: (m: string) => lines.push(m), signal: new AbortController().signal };
};

describe('secrets: sealing at rest', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-secrets-key-'));
  afterEach(() => rmSync(join(dir, 'secrets.key'), { force: true }));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('makes a 0600 key at first start, reads the same key after, refuses one others can read', () => {
    const path = join(dir, 'secrets.key');
    const key = loadOrCreateSecretsKey(path);
    expect(key).toHaveLength(32);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(loadOrCreateSecretsKey(path).equals(key)).toBe(true);
    chmodSync(path, 0o644);
    expect(() => loadOrCreateSecretsKey(path)).toThrow(/must be 0600/);
  });

  it('authenticates value and name: another key, another name or a flipped bit does not open', () => {
    const key = randomBytes(32);
    const s = seal(key, 'a', Buffer.from(VALUE));
    expect(unseal(key, 'a', s).toString()).toBe(VALUE);
    expect(() => unseal(randomBytes(32), 'a', s)).toThrow();
    expect(() => unseal(key, 'b', s)).toThrow();
    const bytes = Buffer.from(s.data, 'base64');
    bytes[0]! ^= 1;
    expect(() => unseal(key, 'a', { ...s, data: bytes.toString('base64') })).toThrow();
  });
});

describe('secrets through the controller (fake agents)', () => {
  let fleet: FakeFleet;
  let store: SqliteStore;
  let controller: Controller;
  let app: FastifyInstance;
  let dir: string;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmlink-secrets-'));
    fleet = new FakeFleet();
    store = new SqliteStore(join(dir, 'vmlink.db'));
    controller = new Controller(store, new RecordingRunner(), {
      agents: fleet.agents,
      secretsKey: loadOrCreateSecretsKey(join(dir, 'secrets.key')),
    });
    app = await createControllerApi(controller, new TaskManager());
  });
  afterEach(async () => {
    await app.close();
    fleet.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const setSecret = (name: string, value = VALUE_B64) =>
    app.inject({ method: 'POST', url: `/v1/secrets/${name}`, payload: { value } });

  it('refuses at plan time a spec naming a secret that does not exist, naming the disk and the fix', async () => {
    const r = await controller.plan(spec({ secret: 'vault-key' }), 'site.yaml').catch((e: unknown) => e);
    expect(r).toMatchObject({ kind: 'invalid' });
    expect(String((r as Error).message)).toMatch(
      /vms\[0\]\.disks\[1\]\.encryption\.secret.*secret "vault-key" \(for vm web1 disk vault\) does not exist on the controller: create it with `vmlink secret set vault-key`/s,
    );
    expect(fleet.sent()).toEqual([]);
  });

  it('delivers the value only in the VM steps sent to the host; plan, tasks, events, answers and the store never hold it', async () => {
    const set = await setSecret('vault-key');
    expect(set.statusCode).toBe(200);
    expect(set.json()).toEqual({ name: 'vault-key', created: true });
    const text = spec({ secret: 'vault-key' });
    const plan = await controller.plan(text, 'site.yaml');
    expect(plan.text).toContain('disks: plain, vault (secret: vault-key)'); // the name, never the value
    const t = task();
    await controller.apply(text, 'site.yaml', t);

    // The host got the value with vm.create and vm.start, and nothing else carries secrets.
    const actions = fleet.host('h1').actions;
    const withSecrets = actions.filter((a) => 'secrets' in a && a.secrets);
    expect(withSecrets.map((a) => a.kind)).toEqual(['vm.create', 'vm.start']);
    for (const a of withSecrets)
      expect((a as { secrets: unknown }).secrets).toEqual([{ name: 'vault-key', value: VALUE_B64 }]);
    const create = actions.find((a) => a.kind === 'vm.create');
    expect(create && 'vm' in create && create.vm.disks[1]).toEqual({
      name: 'vault',
      sizeMiB: 64,
      encryption: { secret: 'vault-key' },
    });

    // `vmlink vm start` outside apply gets it too.
    fleet.clearSent();
    await controller.vmPower('web1', 'start');
    expect(fleet.host('h1').actions).toMatchObject([
      { kind: 'vm.start', secrets: [{ name: 'vault-key', value: VALUE_B64 }] },
    ]);

    // Nowhere else: plan, task progress, events, API answers, the database file (the value, nor its base64).
    const list = await app.inject({ method: 'GET', url: '/v1/secrets' });
    expect(list.json()).toMatchObject([{ name: 'vault-key', usedBy: ['vm web1 disk vault'] }]);
    const events = await app.inject({ method: 'GET', url: '/v1/events' });
    const planAnswer = await app.inject({ method: 'POST', url: '/v1/plan', payload: { spec: text } });
    const status = await app.inject({ method: 'GET', url: '/v1/vms' });
    const dbFiles = ['vmlink.db', 'vmlink.db-wal'].map((f) => {
      try {
        return readFileSync(join(dir, f)).toString('latin1');
      } catch {
        return '';
      }
    });
    for (const where of [
      plan.text,
      JSON.stringify(plan.plan),
      t.lines.join('\n'),
      set.body,
      list.body,
      events.body,
      planAnswer.body,
      status.body,
      ...dbFiles,
    ]) {
      expect(where).not.toContain(VALUE);
      expect(where).not.toContain(VALUE_B64);
    }
    expect(dbFiles.join('')).toContain('vault-key'); // the row is there, sealed
  });

  it('refuses to delete a secret the applied spec uses; deletes it once unused; never lists a value', async () => {
    await setSecret('vault-key');
    await controller.apply(spec({ secret: 'vault-key' }), 'site.yaml', task());
    const refused = await app.inject({ method: 'DELETE', url: '/v1/secrets/vault-key' });
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.message).toMatch(
      /used by vm web1 disk vault: remove it from the spec and apply first/,
    );
    await setSecret('spare');
    expect((await setSecret('spare', Buffer.from('other').toString('base64'))).json()).toEqual({
      name: 'spare',
      created: false,
    });
    expect((await app.inject({ method: 'DELETE', url: '/v1/secrets/spare' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'DELETE', url: '/v1/secrets/spare' })).statusCode).toBe(404);
    const names = (await app.inject({ method: 'GET', url: '/v1/secrets' })).json() as Array<
      Record<string, unknown>
    >;
    expect(names.map((s) => Object.keys(s).sort())).toEqual([['created', 'name', 'updated', 'usedBy']]);
  });

  it('rejects a value that is not base64 or too long, before storing anything', async () => {
    const bad = await setSecret('x', 'not base64!');
    expect(bad.statusCode).toBe(422);
    expect(bad.body).not.toContain('not base64!'); // the error names the field, never echoes the value
    expect((await setSecret('x', 'A'.repeat(6000))).statusCode).toBe(422);
    expect((await app.inject({ method: 'GET', url: '/v1/secrets' })).json()).toEqual([]);
  });

  it('refuses a confidential VM at plan time, naming the host and the missing piece', async () => {
    const tcg = await controller
      .plan(spec({ confidential: 'sev-snp' }), 'site.yaml')
      .catch((e: unknown) => e);
    expect(String((tcg as Error).message)).toMatch(
      /vms\[0\]\.confidential.*VM "web1" asks for a sev-snp confidential VM but host "h1" cannot launch one: it runs VMs under tcg, not KVM/s,
    );
    fleet.host('h1').capabilities = {
      accelerator: 'kvm',
      confidential: {
        sev: { available: true, reason: 'ok' },
        'sev-snp': { available: false, reason: 'QEMU 7.2 is too old: sev-snp needs QEMU 9.1 or newer' },
        tdx: { available: false, reason: 'the CPU has no tdx_host_platform flag in /proc/cpuinfo' },
        cbitpos: 51,
        reducedPhysBits: 1,
      },
    };
    const old = await controller
      .plan(spec({ confidential: 'sev-snp' }), 'site.yaml')
      .catch((e: unknown) => e);
    expect(String((old as Error).message)).toMatch(/host "h1" cannot launch one: QEMU 7.2 is too old/);
    const ok = await controller.plan(spec({ confidential: 'sev' }), 'site.yaml');
    expect(ok.plan.steps.some((s) => s.kind === 'vm.create')).toBe(true);
    expect(fleet.sent()).toEqual([]);
  });
});
