// Backups end to end through the CLI (issue 12): examples/backup.yaml on a lab of its own (host1 with `web`, the
// backup machines backup1 with the store `site` and backup2 with the offsite `vault`), a key made by
// `vmlink backup key create`. The guest writes known bytes to its data disk; a full backup; more writes, and a
// second (incremental) backup while the guest keeps stamping blocks; `restore --as` gives a new VM whose disk holds
// exactly what the guest wrote, cut at one instant. `backup sync` copies only chunks the vault lacks (counted on both
// stores' disks); `verify` names a chunk corrupted on disk; a recovery key with a typo and a backup or restore under
// another key are refused with nothing written; `backup restore-test` boots the newest snapshot on the isolated
// network and the guest answers, and `backup status` shows the objectives met. One lab for the whole file.
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type {
  BackupList,
  BackupRunResult,
  BackupStatus,
  RestoreResult,
  RestoreTestResult,
} from '../../src/controller/wire-backup.js';
import type { Manifest, PullResult, SnapshotSummary, VerifyResult } from '../../src/shared/backup.js';
import { parseRecoveryKey } from '../../src/shared/backup-crypto.js';
import {
  hashRange,
  readStamps,
  stampPrefix,
  startStamper,
  waitGuest,
  writeRandom,
} from '../helpers/backup-guest.js';
import { type CliResult, runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'itbk';
const EXAMPLE = fileURLToPath(new URL('../../examples/backup.yaml', import.meta.url));
const VM = 'web';
const DISK = 'data';
/** Where the stamper writes on the data disk (4 KiB blocks from 40 MiB on) and how many blocks. */
const STAMP_AT = (40 * 1024 * 1024) / 4096;
const STAMPS = 400;

const root = mkdtempSync('/tmp/vmlink-itbk-');
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const machineDir = (m: string) => join(env.VMLINK_STATE_DIR, 'lab', LAB, m);
const storeDir = {
  site: join(machineDir('backup1'), 'pools', 'site'),
  vault: join(machineDir('backup2'), 'pools', 'vault'),
};

/**
 * A daily window twelve hours away: neither the policy's schedule nor its restore test comes due while the test runs,
 * so every backup here is one the test started.
 */
function farWindow(): string {
  const h = String((new Date().getUTCHours() + 12) % 24).padStart(2, '0');
  return `${h}:00-${h}:30`;
}

/** The example on a lab of its own, its stores at known places below the backup machines' pool roots. */
function specOf(key = 'backup-key'): string {
  const w = farWindow();
  const spec = readFileSync(EXAMPLE, 'utf8')
    .replace(/^ {2}name: bk$/m, `  name: ${LAB}`)
    .replace('{ name: site, host: backup1 }', `{ name: site, host: backup1, path: ${storeDir.site} }`)
    .replace(
      '{ name: vault, host: backup2, offsite: true, pullFrom: site }',
      `{ name: vault, host: backup2, path: ${storeDir.vault}, offsite: true, pullFrom: site }`,
    )
    .replace('schedule: every 10m', `schedule: "${w}"`)
    .replace('restoreTest: { schedule: every 1d,', `restoreTest: { schedule: "${w}",`)
    // A daily window's RPO must exceed a day (spec validation): the objective is not what this test measures.
    .replace('rpoMinutes: 15', 'rpoMinutes: 1500')
    .replace('encryption: { key: backup-key }', `encryption: { key: ${key} }`);
  for (const want of [
    `name: ${LAB}`,
    storeDir.site,
    storeDir.vault,
    `schedule: "${w}"`,
    `key: ${key}`,
    'rpoMinutes: 1500',
  ])
    if (!spec.includes(want)) throw new Error(`the example changed: ${want} not placed`);
  return spec;
}

const specFile = join(root, 'spec.yaml');
let release: (() => Promise<void>) | undefined;
/** Every CLI answer of the test: none may hold the key (checked at the end). */
const answers: string[] = [];
let recoveryKey = '';
/** Indexes in `answers` of `backup key create`'s own answer: it may show the recovery key, that once. */
const shownOnce = new Set<number>();
let fingerprint = '';

async function cli(args: string[], timeoutMs = 600_000): Promise<CliResult> {
  const r = await runCli(args, env, timeoutMs);
  answers.push(r.stdout, r.stderr);
  return r;
}

async function json<T>(args: string[], timeoutMs?: number): Promise<T> {
  const r = await cli([...args, '--json'], timeoutMs);
  if (r.code !== 0) throw new Error(`vmlink ${args.join(' ')} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

/** The chunk files of a store on its machine's disk, by id. */
function chunkFiles(store: keyof typeof storeDir): Map<string, string> {
  const out = new Map<string, string>();
  const dir = join(storeDir[store], 'chunks');
  if (!existsSync(dir)) return out;
  for (const sub of readdirSync(dir))
    for (const f of readdirSync(join(dir, sub))) if (/^[0-9a-f]{64}$/.test(f)) out.set(f, join(dir, sub, f));
  return out;
}

/** Snapshot ids of VM in `store`, oldest first. */
async function snapshotsIn(store: string): Promise<string[]> {
  const l = await json<BackupList>(['backup', 'list', VM, '--store', store]);
  expect(l.unreachable).toEqual([]);
  return l.snapshots.map((s) => s.snapshot.id).sort();
}

const sum = (s: SnapshotSummary, k: 'readBytes' | 'newChunks' | 'sizeBytes') =>
  s.disks.reduce((n, d) => n + d[k], 0);

/** Command lines of every process on this machine (agents, QEMUs, qemu-nbd among them). */
function allCmdlines(): string {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      out.push(readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '));
    } catch {
      // gone meanwhile
    }
  }
  return out.join('\n');
}

/** Regular files below `dir` up to 16 MiB (records, configs, logs, manifests; disk images are larger or skipped). */
function filesBelow(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesBelow(p));
    else if (e.isFile() && statSync(p).size <= 16 * 1024 * 1024) out.push(p);
  }
  return out;
}

/** What the test learned along the way, for the next steps. */
const seen: {
  hashA?: string;
  hashB?: string;
  s1?: SnapshotSummary;
  s2?: SnapshotSummary;
  s3?: SnapshotSummary;
} = {};

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(specFile, specOf());
  release = await acquireVmLock();
  const d = await cli(['daemon', '--detach']);
  expect(d.code, d.stderr).toBe(0);
  const keyFile = join(root, 'recovery.txt');
  shownOnce.add(answers.length).add(answers.length + 1);
  const k = await json<{ name: string; fingerprint: string; recoveryKey?: string }>([
    'backup',
    'key',
    'create',
    'backup-key',
    '--file',
    keyFile,
  ]);
  expect(k.fingerprint).toMatch(/^[0-9a-f]{32}$/);
  fingerprint = k.fingerprint;
  recoveryKey = existsSync(keyFile) ? readFileSync(keyFile, 'utf8').trim() : (k.recoveryKey ?? '');
  expect(recoveryKey.length).toBeGreaterThan(20);
  const up = await cli(['lab', 'up', '-f', specFile]);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  const apply = await cli(['apply', '-f', specFile]);
  expect(apply.code, apply.stderr + apply.stdout).toBe(0);
  await waitGuest(env, VM);
}, 900_000);

afterAll(async () => {
  await runCli(['lab', 'down', '-f', specFile], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
}, 300_000);

describe('backups end to end through the CLI', () => {
  it('full, then incremental while the guest writes; restore --as holds what the guest wrote, cut at one instant', async () => {
    await writeRandom(env, VM, DISK, 4, 8);
    seen.hashA = await hashRange(env, VM, DISK, 4, 8);

    const r1 = await json<BackupRunResult>(['backup', 'run', VM]);
    expect(r1.store).toBe('site');
    expect(r1.snapshot.id).toMatch(/^web@\d{8}T\d{6}Z$/);
    expect(r1.snapshot.keyFingerprint).toBe(fingerprint);
    // The test guest boots from a kernel and initrd (no root disk): its one disk is `data`.
    expect(r1.snapshot.disks.map((d) => [d.name, d.mode, d.fullReason])).toEqual([[DISK, 'full', 'first']]);
    seen.s1 = r1.snapshot;

    await writeRandom(env, VM, DISK, 20, 8);
    seen.hashB = await hashRange(env, VM, DISK, 20, 8);
    // The guest stamps blocks in order while the second backup runs.
    const stamper = startStamper(env, VM, DISK, STAMP_AT, STAMPS);
    await new Promise((r) => setTimeout(r, 3000));
    const r2 = await json<BackupRunResult>(['backup', 'run', VM]);
    const stamped = await stamper;
    expect(stamped.code, stamped.stderr).toBe(0);
    expect(stamped.stdout.trim()).toBe(`done ${STAMPS}`);
    seen.s2 = r2.snapshot;
    expect(r2.snapshot.base).toBe(r1.snapshot.id);
    for (const d of r2.snapshot.disks) expect([d.name, d.mode]).toEqual([d.name, 'incremental']);
    // Only what changed was read: the 8 MiB written and the stamped blocks touch at most 20 MiB of the data disk's
    // 1 MiB chunks (5 chunks when they were 4 MiB).
    const data2 = r2.snapshot.disks.find((d) => d.name === DISK)!;
    expect(data2.readBytes).toBeLessThanOrEqual(20 * 1024 * 1024);
    expect(data2.readBytes).toBeGreaterThan(0);
    // (The full backup read only what had been written: holes are not read. So compare with the disk's size.)
    expect(data2.readBytes).toBeLessThan(data2.sizeBytes / 2);
    expect(data2.readBytes % (1024 * 1024)).toBe(0);

    const restored = await json<RestoreResult>(['restore', r2.snapshot.id, '--as', 'web-copy'], 900_000);
    expect(restored.vm).toBe('web-copy');
    expect(restored.host).toBe('host1');
    await waitGuest(env, 'web-copy');
    expect(await hashRange(env, 'web-copy', DISK, 4, 8)).toBe(seen.hashA);
    expect(await hashRange(env, 'web-copy', DISK, 20, 8)).toBe(seen.hashB);
    // The copy's stamps are a prefix of what the writer wrote: the disk was cut at one instant.
    const copyStamps = stampPrefix(await readStamps(env, 'web-copy', DISK, STAMP_AT, STAMPS));
    expect(typeof copyStamps, String(copyStamps)).toBe('number');
    expect(copyStamps as number).toBeLessThanOrEqual(STAMPS);
    // The original holds all of them.
    expect(stampPrefix(await readStamps(env, VM, DISK, STAMP_AT, STAMPS))).toBe(STAMPS);

    // apply leaves the restored VM alone; discard removes it.
    const plan = await cli(['plan', '-f', specFile, '--json']);
    expect(plan.stdout).not.toMatch(/web-copy/);
    const listed = await json<{ vms?: Array<{ name: string }> } | Array<{ name: string }>>([
      'restore',
      'list',
    ]);
    expect(JSON.stringify(listed)).toContain('web-copy');
    const discard = await cli(['restore', 'discard', 'web-copy']);
    expect(discard.code, discard.stderr).toBe(0);
    const vms = await json<Array<{ name: string }>>(['vm', 'list']);
    expect(vms.map((v) => v.name)).toEqual([VM]);
  }, 1_800_000);

  it('sync fills the offsite vault; the next sync sends only the chunks it lacks', async () => {
    const first = await json<{ results: PullResult[] }>(['backup', 'sync']);
    expect(first.results.map((r) => [r.store, r.from])).toEqual([['vault', 'site']]);
    expect(await snapshotsIn('vault')).toEqual([seen.s1!.id, seen.s2!.id]);
    // The vault holds exactly the site's chunks (each pulled once, checked, stored under its id).
    expect([...chunkFiles('vault').keys()].sort()).toEqual([...chunkFiles('site').keys()].sort());

    const siteBefore = new Set(chunkFiles('site').keys());
    const vaultBefore = new Set(chunkFiles('vault').keys());
    await writeRandom(env, VM, DISK, 30, 4);
    const r3 = await json<BackupRunResult>(['backup', 'run', VM]);
    seen.s3 = r3.snapshot;
    const newChunks = sum(r3.snapshot, 'newChunks');
    expect(newChunks).toBeGreaterThan(0);
    const siteAdded = [...chunkFiles('site').keys()].filter((id) => !siteBefore.has(id));
    expect(siteAdded.length).toBe(newChunks);

    const second = await json<{ results: PullResult[] }>(['backup', 'sync']);
    const pull = second.results.find((r) => r.store === 'vault')!;
    const vaultAdded = [...chunkFiles('vault').keys()].filter((id) => !vaultBefore.has(id));
    expect(vaultAdded.sort()).toEqual(siteAdded.sort());
    if (pull.snapshotsPulled.includes(r3.snapshot.id)) {
      // This sync pulled the snapshot: exactly its new chunks crossed, the rest were already there.
      expect(pull.snapshotsPulled).toEqual([r3.snapshot.id]);
      expect(pull.chunksFetched).toBe(newChunks);
      expect(pull.chunksAlreadyThere).toBeGreaterThan(0);
    } else {
      // The backup run synced the vault itself (docs/backup.md): nothing was left to send.
      expect(pull.chunksFetched).toBe(0);
    }
    expect(await snapshotsIn('vault')).toEqual([seen.s1!.id, seen.s2!.id, seen.s3!.id]);
  }, 900_000);

  it('verify names a chunk corrupted on the store disk; the offsite copy is intact', async () => {
    const s3 = seen.s3!;
    const stamp = s3.id.split('@')[1]!;
    const manifest = JSON.parse(
      readFileSync(join(storeDir.site, 'snapshots', VM, `${stamp}.json`), 'utf8'),
    ) as Manifest;
    expect(manifest.keyFingerprint).toBe(fingerprint);
    // A chunk named once in this snapshot and by no earlier one: the newest data the guest wrote.
    const counts = new Map<string, number>();
    for (const d of manifest.disks) for (const c of d.chunks) counts.set(c, (counts.get(c) ?? 0) + 1);
    const files = chunkFiles('site');
    const victim = manifest.disks
      .find((d) => d.name === DISK)!
      .chunks.find((c) => counts.get(c) === 1 && files.has(c))!;
    expect(victim).toBeDefined();
    const file = files.get(victim)!;
    const original = readFileSync(file);
    const bad = Buffer.from(original);
    bad[bad.length - 100]! ^= 0xff;
    writeFileSync(file, bad);
    try {
      const r = await cli(['backup', 'verify', '--store', 'site', '--json']);
      const v = JSON.parse(r.stdout) as { results: VerifyResult[] };
      const problems = v.results.flatMap((x) => x.problems);
      expect(
        problems.some((p) => p.chunk === victim && p.snapshot === s3.id),
        JSON.stringify(problems),
      ).toBe(true);
      // Only that chunk is bad.
      expect(new Set(problems.map((p) => p.chunk))).toEqual(new Set([victim]));
      const text = await cli(['backup', 'verify', '--store', 'site']);
      expect(text.stdout + text.stderr).toContain(victim);
      const vault = await json<{ results: VerifyResult[] }>(['backup', 'verify', '--store', 'vault']);
      expect(vault.results.flatMap((x) => x.problems)).toEqual([]);
      expect(vault.results[0]!.chunksChecked).toBeGreaterThan(0);
    } finally {
      writeFileSync(file, original);
    }
    const again = await json<{ results: VerifyResult[] }>(['backup', 'verify', '--store', 'site']);
    expect(again.results.flatMap((x) => x.problems)).toEqual([]);
  }, 600_000);

  it('a wrong key: a recovery key with a typo is refused, and a backup or restore under another key writes nothing', async () => {
    // One character of the recovery key changed: its checksum says so, and no secret is made.
    const at = recoveryKey.search(/[A-Z2-7](?=[^-]*$)/i);
    const c = recoveryKey[at]!.toUpperCase();
    const typo = `${recoveryKey.slice(0, at)}${c === 'A' ? 'B' : 'A'}${recoveryKey.slice(at + 1)}`;
    const typoFile = join(root, 'typo.txt');
    writeFileSync(typoFile, typo, { mode: 0o600 });
    const bad = await cli(['backup', 'key', 'import', 'typo-key', '--file', typoFile]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/recovery key/i);
    const secrets = await json<Array<{ name: string }>>(['secret', 'list']);
    expect(secrets.map((s) => s.name)).not.toContain('typo-key');
    // The right one under another name gives the same key back.
    const goodFile = join(root, 'good.txt');
    writeFileSync(goodFile, recoveryKey, { mode: 0o600 });
    const copy = await json<{ name: string; fingerprint: string }>([
      'backup',
      'key',
      'import',
      'key-copy',
      '--file',
      goodFile,
    ]);
    expect(copy.fingerprint).toBe(fingerprint);

    // The policy switched to another key: the site store is bound to the first one.
    shownOnce.add(answers.length).add(answers.length + 1);
    const other = await json<{ fingerprint: string }>([
      'backup',
      'key',
      'create',
      'other-key',
      '--file',
      join(root, 'other.txt'),
    ]);
    expect(other.fingerprint).not.toBe(fingerprint);
    writeFileSync(specFile, specOf('other-key'));
    const apply = await cli(['apply', '-f', specFile]);
    expect(apply.code, apply.stderr + apply.stdout).toBe(0);
    const snapshotsBefore = await snapshotsIn('site');
    const chunksBefore = [...chunkFiles('site').keys()].sort();
    try {
      const run = await cli(['backup', 'run', VM]);
      expect(run.code).not.toBe(0);
      expect(run.stderr).toMatch(/key/i);
      expect(run.stderr).toContain(other.fingerprint);
      const restore = await cli(['restore', seen.s3!.id, '--as', 'web-wrong', '--policy', 'nightly']);
      expect(restore.code).not.toBe(0);
      expect(restore.stderr).toMatch(/key/i);
      expect(restore.stderr).toMatch(/nothing (was )?written/i);
      const vms = await json<Array<{ name: string }>>(['vm', 'list']);
      expect(vms.map((v) => v.name)).toEqual([VM]);
      expect(await snapshotsIn('site')).toEqual(snapshotsBefore);
      expect([...chunkFiles('site').keys()].sort()).toEqual(chunksBefore);
    } finally {
      writeFileSync(specFile, specOf());
      const back = await cli(['apply', '-f', specFile]);
      expect(back.code, back.stderr + back.stdout).toBe(0);
    }
  }, 600_000);

  it('restore-test boots the newest snapshot on restore-net and the guest answers; status shows the objectives met', async () => {
    const t = await json<RestoreTestResult>(['backup', 'restore-test', 'nightly'], 900_000);
    expect(t.policy).toBe('nightly');
    expect(t.results.length).toBe(1);
    const r = t.results[0]!;
    expect(r.error).toBeUndefined();
    expect(r.ok).toBe(true);
    expect(r.vm).toBe(VM);
    expect(r.snapshot).toBe(seen.s3!.id);
    expect(r.seconds).toBeGreaterThan(0);
    // The throwaway VM is gone again.
    const vms = await json<Array<{ name: string }>>(['vm', 'list']);
    expect(vms.map((v) => v.name)).toEqual([VM]);

    const status = await json<BackupStatus>(['backup', 'status']);
    const o = status.objectives.find((x) => x.policy === 'nightly' && x.vm === VM)!;
    expect(o.problems).toEqual([]);
    expect(o.rpo.state).toBe('ok');
    expect(o.rpo.newest).toBe(seen.s3!.id);
    expect(o.rto.state).toBe('ok');
    expect(o.rto.measuredMinutes).toBeGreaterThan(0);
    expect(o.rule).toMatchObject({ state: 'ok', rule: '3-2-1' });
    expect(o.rule.copies).toBeGreaterThanOrEqual(3);
    expect(o.rule.machines).toBeGreaterThanOrEqual(2);
    expect(o.rule.offsite).toBeGreaterThanOrEqual(1);
    expect(status.stores.map((s) => [s.name, s.reachable]).sort()).toEqual([
      ['site', true],
      ['vault', true],
    ]);
  }, 1_200_000);

  it('the key never appears in a CLI answer, a command line or a file under the lab', () => {
    const raw = parseRecoveryKey(recoveryKey);
    const needles = [raw.toString('base64'), raw.toString('hex'), recoveryKey];
    // The recovery key itself was printed once, into the file `key create --file` wrote (and the test's own copies).
    const own = new Set(['recovery.txt', 'good.txt', 'typo.txt', 'other.txt'].map((f) => join(root, f)));
    for (const [i, a] of answers.entries())
      if (!shownOnce.has(i))
        for (const n of needles) expect(a.includes(n), `the key in CLI answer ${i}`).toBe(false);
    for (const n of needles.slice(0, 2))
      expect(allCmdlines().includes(n), 'the key in a command line').toBe(false);
    for (const f of filesBelow(root).filter((x) => !own.has(x)))
      for (const n of needles) expect(readFileSync(f, 'latin1').includes(n), `the key in ${f}`).toBe(false);
  });
});
