import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { SnapshotSummary } from '../shared/backup.js';
import type { HttpClient } from '../shared/http/client.js';
import {
  addBackupCommands,
  addRestoreCommands,
  createPrivateFile,
  parseSnapshot,
  readRecoveryKey,
  restoreBody,
} from './backup-commands.js';

const SNAP = 'web1@20261201T020000Z';

function summary(over: Partial<SnapshotSummary> = {}): SnapshotSummary {
  return {
    id: SNAP,
    vm: 'web1',
    host: 'host1',
    policy: 'nightly',
    createdAt: '2026-12-01T02:00:00.000Z',
    finishedAt: '2026-12-01T02:01:00.000Z',
    consistency: 'frozen',
    keyFingerprint: 'ab'.repeat(16),
    disks: [
      {
        name: 'root',
        sizeBytes: 2 * 1024 ** 3,
        mode: 'full',
        fullReason: 'first',
        readBytes: 1024 ** 3,
        newChunks: 200,
        storedBytes: 300 * 1024 ** 2,
        chunkCount: 512,
      },
    ],
    ...over,
  };
}

/** A controller API that records requests and answers tasks with `results[path]` at once. */
function fakeApi(answers: Record<string, unknown>) {
  const calls: { method: string; path: string; body?: unknown }[] = [];
  const tasks = new Map<string, string>();
  const client = {
    async get(path: string, schema: { parse(v: unknown): unknown }) {
      calls.push({ method: 'GET', path });
      const task = /^\/v1\/tasks\/([^?]+)/.exec(path);
      if (task) {
        const p = tasks.get(task[1] as string) as string;
        return schema.parse({
          id: task[1],
          kind: 'x',
          state: 'succeeded',
          startedAt: '2026-12-01T02:00:00Z',
          progress: [`working on ${p}`],
          progressFrom: 0,
          result: answers[p],
        });
      }
      return schema.parse(answers[path.split('?')[0] as string]);
    },
    async post(path: string, body: unknown, schema: { parse(v: unknown): unknown }) {
      calls.push({ method: 'POST', path, body });
      if (path in answers && !path.startsWith('/v1/backups/keys')) {
        tasks.set(`t${tasks.size}`, path);
        return schema.parse({ taskId: `t${tasks.size - 1}` });
      }
      return schema.parse(answers[path]);
    },
    async delete(path: string, schema: { parse(v: unknown): unknown }) {
      calls.push({ method: 'DELETE', path });
      tasks.set(`t${tasks.size}`, path);
      return schema.parse({ taskId: `t${tasks.size - 1}` });
    },
  };
  return { calls, api: () => client as unknown as HttpClient };
}

let stdout: string[];
let stderr: string[];
beforeEach(() => {
  stdout = [];
  stderr = [];
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => {
    stdout.push(typeof s === 'string' ? s : Buffer.from(s as Uint8Array).toString('latin1'));
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation((s) => {
    stderr.push(String(s));
    return true;
  });
  process.exitCode = undefined;
});
afterEach(() => {
  vi.restoreAllMocks();
  process.exitCode = undefined;
});

async function run(argv: string[], answers: Record<string, unknown>) {
  const { calls, api } = fakeApi(answers);
  const program = new Command().exitOverride();
  addBackupCommands(program, api);
  addRestoreCommands(program, api);
  await program.parseAsync(argv, { from: 'user' });
  return calls;
}

describe('restore arguments', () => {
  it('builds the three kinds of target', () => {
    expect(restoreBody(SNAP, { as: 'web2', host: 'host2', network: 'iso', start: false })).toEqual({
      snapshot: SNAP,
      target: { kind: 'new', name: 'web2', host: 'host2', network: 'iso', start: false },
    });
    expect(restoreBody(SNAP, { inPlace: true, start: true, store: 'vault' })).toEqual({
      snapshot: SNAP,
      store: 'vault',
      target: { kind: 'in-place' },
    });
    expect(restoreBody(SNAP, { file: '/etc/hostname', partition: '2', start: true })).toEqual({
      snapshot: SNAP,
      target: { kind: 'file', path: '/etc/hostname', disk: 'root', partition: 2 },
    });
  });
  it('refuses none or two ways, and options of another way', () => {
    expect(() => restoreBody(SNAP, {})).toThrow(/say where to restore: --as NAME/);
    expect(() => restoreBody(SNAP, { as: 'x', inPlace: true })).toThrow(
      '--as and --in-place do not go together',
    );
    expect(() => restoreBody(SNAP, { inPlace: true, network: 'iso' })).toThrow(
      '--network goes with --as, not --in-place',
    );
    expect(() => restoreBody(SNAP, { file: '/a', start: false })).toThrow(
      '--no-start goes with --as, not --file',
    );
    expect(() => restoreBody(SNAP, { as: 'x', out: '/tmp/f' })).toThrow('--out goes with --file, not --as');
    expect(() => restoreBody(SNAP, { file: 'etc/x' })).toThrow(/absolute path/);
    expect(() => restoreBody(SNAP, { file: '/a', partition: '0' })).toThrow(/partition number 1 to 128/);
    expect(() => restoreBody(SNAP, { as: 'Web2' })).toThrow('VM name "Web2" is not a name');
    expect(() => restoreBody('web1', { as: 'x' })).toThrow(/VM@YYYYMMDDTHHMMSSZ/);
  });
  it('parses snapshot ids', () => {
    expect(parseSnapshot(SNAP)).toBe(SNAP);
    for (const bad of ['web1@2026', '@20261201T020000Z', 'web1@20261201T020000', 'Web1@20261201T020000Z'])
      expect(() => parseSnapshot(bad), bad).toThrow(/not a snapshot/);
  });
});

describe('key files', () => {
  it('reads the recovery key from a file or stdin, trimmed', () => {
    expect(readRecoveryKey(undefined, () => Buffer.from('  ABCD-EFGH \n'))).toBe('ABCD-EFGH');
    expect(() => readRecoveryKey(undefined, () => Buffer.from('\n'))).toThrow(
      /1 to 512 characters \(got 0\)/,
    );
    expect(() => readRecoveryKey('/nonexistent/x')).toThrow(
      /cannot read the recovery key from \/nonexistent\/x/,
    );
  });
  it('creates private files 0600 and never over an existing one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmlink-backup-cli-'));
    try {
      const p = join(dir, 'rk');
      createPrivateFile(p);
      expect(statSync(p).mode & 0o777).toBe(0o600);
      expect(() => createPrivateFile(p)).toThrow(/exists: vmlink writes a new file only/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('vmlink backup and restore against a fake controller', () => {
  it('backup run posts the task and prints the snapshot', async () => {
    const calls = await run(['backup', 'run', 'web1', '--full', '--policy', 'nightly'], {
      '/v1/backups/run': { store: 'site', snapshot: summary() },
    });
    expect(calls[0]).toEqual({
      method: 'POST',
      path: '/v1/backups/run',
      body: { vm: 'web1', policy: 'nightly', full: true },
    });
    expect(stdout.join('')).toContain('working on /v1/backups/run');
    expect(stdout.join('')).toContain(`snapshot ${SNAP} stored in site (frozen)`);
    expect(stdout.join('')).toContain(
      '1 disk, 2.0 GiB: read 1.0 GiB, 200 new chunks, 300.0 MiB stored; full (first)',
    );
  });
  it('--json prints the result alone on stdout, progress on stderr', async () => {
    const r = { store: 'site', snapshot: summary() };
    await run(['backup', 'run', 'web1', '--json'], { '/v1/backups/run': r });
    expect(JSON.parse(stdout.join(''))).toEqual(r);
    expect(stderr.join('')).toContain('working on');
  });
  it('backup list passes filters and says which store did not answer', async () => {
    const calls = await run(['backup', 'list', 'web1', '--store', 'site'], {
      '/v1/backups': {
        snapshots: [
          {
            store: 'vault',
            offsite: true,
            snapshot: summary({ verify: { ok: false, at: '2026-12-01T03:00:00Z', problems: [] } }),
          },
        ],
        unreachable: [{ store: 'site', reason: 'host backup1 is unreachable' }],
      },
    });
    expect(calls[0]?.path).toBe('/v1/backups?vm=web1&store=site');
    const text = stdout.join('');
    expect(text).toContain('vault (offsite)');
    expect(text).toContain('FAILED 2026-12-01 03:00:00Z');
    expect(text).toContain(
      'store site did not answer (the list lacks its snapshots): host backup1 is unreachable',
    );
    expect(process.exitCode).toBeUndefined();
  });
  it('backup verify exits 1 on a problem and names the snapshot and chunk', async () => {
    const calls = await run(['backup', 'verify', SNAP, '--deep'], {
      '/v1/backups/verify': {
        results: [
          {
            store: 'site',
            snapshots: 1,
            chunksChecked: 10,
            bytesRead: 40 * 1024 ** 2,
            deep: true,
            problems: [{ snapshot: SNAP, chunk: 'a'.repeat(64), problem: 'GCM tag does not match' }],
          },
        ],
      },
    });
    expect(calls[0]?.body).toEqual({ snapshot: SNAP, deep: true });
    expect(stdout.join('')).toContain(`  ${SNAP} chunk ${'a'.repeat(64)}: GCM tag does not match`);
    expect(process.exitCode).toBe(1);
  });
  it('backup prune --dry-run says what it would delete and why the rest is kept', async () => {
    const calls = await run(['backup', 'prune', '--dry-run'], {
      '/v1/backups/prune': {
        policies: [
          {
            policy: 'nightly',
            store: 'site',
            kept: [{ snapshot: SNAP, reasons: ['last snapshot', 'daily snapshot'] }],
            deleted: ['web1@20261130T020000Z'],
          },
        ],
        gc: [],
      },
    });
    expect(calls[0]?.body).toEqual({ dryRun: true });
    const text = stdout.join('');
    expect(text).toContain('policy nightly (store site): keep 1, would delete 1');
    expect(text).toContain(`${SNAP}  keep          last snapshot, daily snapshot`);
    expect(text).toContain('web1@20261130T020000Z  would delete  -');
  });
  it('backup key create prints the recovery key once, loudly; --file writes it 0600 and keeps it off stdout', async () => {
    const answer = { name: 'bk', fingerprint: 'cd'.repeat(16), recoveryKey: 'AAAA-BBBB-CCCC' };
    await run(['backup', 'key', 'create', 'bk'], { '/v1/backups/keys': answer });
    expect(stdout.join('')).toContain('RECOVERY KEY (shown this once');
    expect(stdout.join('')).toContain('    AAAA-BBBB-CCCC');
    const dir = mkdtempSync(join(tmpdir(), 'vmlink-backup-cli-'));
    try {
      stdout = [];
      const f = join(dir, 'bk.txt');
      await run(['backup', 'key', 'create', 'bk', '--file', f, '--json'], { '/v1/backups/keys': answer });
      expect(readFileSync(f, 'utf8')).toBe('AAAA-BBBB-CCCC\n');
      expect(statSync(f).mode & 0o777).toBe(0o600);
      expect(JSON.parse(stdout.join(''))).toEqual({
        name: 'bk',
        fingerprint: answer.fingerprint,
        recoveryKeyFile: f,
      });
      // An existing file is refused before any key is made.
      const calls = await run(['backup', 'key', 'create', 'bk', '--file', f], {
        '/v1/backups/keys': answer,
      }).catch((e: Error) => e);
      expect(String(calls)).toMatch(/exists: vmlink writes a new file only/);
      // import from a file
      writeFileSync(join(dir, 'in'), 'AAAA-BBBB-CCCC\n');
      const imp = await run(['backup', 'key', 'import', 'bk', '--file', join(dir, 'in')], {
        '/v1/backups/keys/import': { name: 'bk', fingerprint: answer.fingerprint },
      });
      expect(imp[0]?.body).toEqual({ name: 'bk', recoveryKey: 'AAAA-BBBB-CCCC' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('restore --file --out writes the file 0600; without --out the bytes go to stdout and the rest to stderr', async () => {
    const data = Buffer.from([0, 1, 2, 200, 10]);
    const result = {
      snapshot: SNAP,
      store: 'site',
      host: 'host1',
      seconds: 1.5,
      bytesWritten: 0,
      file: { path: '/etc/x', size: 5, data: data.toString('base64') },
    };
    const dir = mkdtempSync(join(tmpdir(), 'vmlink-backup-cli-'));
    try {
      const out = join(dir, 'x');
      const calls = await run(['restore', SNAP, '--file', '/etc/x', '--disk', 'data', '--out', out], {
        '/v1/restores': result,
      });
      expect(calls[0]?.body).toEqual({
        snapshot: SNAP,
        target: { kind: 'file', path: '/etc/x', disk: 'data' },
      });
      expect([...readFileSync(out)]).toEqual([...data]);
      expect(statSync(out).mode & 0o777).toBe(0o600);
      expect(stdout.join('')).toContain(`/etc/x (5 B) from ${SNAP} written to ${out}`);
      stdout = [];
      stderr = [];
      await run(['restore', SNAP, '--file', '/etc/x'], { '/v1/restores': result });
      expect(Buffer.from(stdout.join(''), 'latin1')).toEqual(data);
      expect(stderr.join('')).toContain('working on /v1/restores');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('restore --as, restore list and restore discard', async () => {
    const calls = await run(['restore', SNAP, '--as', 'web2', '--no-start', '--json'], {
      '/v1/restores': {
        snapshot: SNAP,
        store: 'site',
        vm: 'web2',
        host: 'host1',
        seconds: 30,
        bytesWritten: 1024 ** 3,
      },
    });
    expect(calls[0]?.body).toEqual({ snapshot: SNAP, target: { kind: 'new', name: 'web2', start: false } });
    expect(JSON.parse(stdout.join('')).vm).toBe('web2');
    stdout = [];
    await run(['restore', 'list', '--json'], {
      '/v1/restores': {
        restored: [
          { name: 'web2', host: 'host1', snapshot: SNAP, store: 'site', at: '2026-12-01T03:00:00Z' },
        ],
      },
    });
    expect(JSON.parse(stdout.join('')).restored[0].name).toBe('web2');
    stdout = [];
    const d = await run(['restore', 'discard', 'web2'], { '/v1/restores/web2': {} });
    expect(d[0]).toEqual({ method: 'DELETE', path: '/v1/restores/web2' });
    expect(stdout.join('')).toContain('restored VM web2 discarded');
  });
  it('restore-test exits 1 when a test failed', async () => {
    await run(['backup', 'restore-test', 'nightly'], {
      '/v1/restores/test': {
        policy: 'nightly',
        results: [{ vm: 'web1', snapshot: SNAP, ok: false, error: 'guest agent did not answer in 300 s' }],
      },
    });
    expect(stdout.join('')).toContain('guest agent did not answer in 300 s');
    expect(process.exitCode).toBe(1);
  });
  it('every command has a description and --json', () => {
    const program = new Command();
    const api = () => {
      throw new Error('no API in this test');
    };
    addBackupCommands(program, api);
    addRestoreCommands(program, api);
    const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
    const leaves = all(program).filter(
      (c) => c !== program && (c.commands.length === 0 || c.name() === 'restore'),
    );
    expect(leaves.map((c) => c.name()).sort()).toEqual(
      [
        'run',
        'list',
        'verify',
        'sync',
        'prune',
        'status',
        'restore-test',
        'create',
        'import',
        'restore',
        'list',
        'discard',
      ].sort(),
    );
    for (const c of all(program).filter((x) => x !== program)) expect(c.description(), c.name()).not.toBe('');
    for (const c of leaves)
      expect(
        c.options.map((o) => o.long),
        c.name(),
      ).toContain('--json');
  });
});

describe('untrusted text', () => {
  it('a verify problem with escape sequences reaches the terminal defused; restore --file refuses a terminal', async () => {
    await run(['backup', 'verify'], {
      '/v1/backups/verify': {
        results: [
          {
            store: 'site',
            snapshots: 1,
            chunksChecked: 1,
            bytesRead: 1,
            deep: false,
            problems: [{ snapshot: SNAP, problem: 'bad \u001b]0;owned\u0007 blob' }],
          },
        ],
      },
    });
    expect(stdout.join('')).toContain(`${SNAP}: bad ?]0;owned? blob`);
    const tty = process.stdout.isTTY;
    Object.defineProperty(process.stdout, 'isTTY', { value: true, configurable: true });
    try {
      await expect(run(['restore', SNAP, '--file', '/etc/shadow'], { '/v1/restores': {} })).rejects.toThrow(
        /would print a guest's file on this terminal/,
      );
    } finally {
      Object.defineProperty(process.stdout, 'isTTY', { value: tty, configurable: true });
    }
  });
});
