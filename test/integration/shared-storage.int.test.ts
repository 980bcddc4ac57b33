// examples/shared-storage.yaml for real: a lab with two compute hosts and a storage machine (tgtd with CHAP,
// rpcbind + nfs-ganesha), `vmlink apply` and `vmlink verify` green including the storage paths (portals reached,
// volumes open in QEMU, guests reading and writing them). Then a wrong CHAP secret: the apply fails saying why, the
// VM it would have made does not exist, and doctor explains it. Then web, whose disks are an NFS volume and a CHAP
// iSCSI LUN, live-migrates host2 -> host1 under a 10 ms ping from host2: its disks stay where they are, their data
// intact and writable, and the LUN's session and fence follow it. Throughout, neither the CHAP password nor the LUKS
// key appears in any process's command line, any file under the lab's state and run directories, or any API answer.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
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
import type { VerifyResult } from '../../src/controller/verify.js';
import type { HostReport } from '../../src/shared/model.js';
import { runCli } from '../helpers/cli.js';
import { largestGap, pingAround } from '../helpers/ping.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'itss';
const EXAMPLE = fileURLToPath(new URL('../../examples/shared-storage.yaml', import.meta.url));

const root = mkdtempSync('/tmp/vmlink-itss-');
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const machineDir = (m: string) => join(env.VMLINK_STATE_DIR, 'lab', LAB, m);
const CHAP = `chap-${randomBytes(8).toString('hex')}`;
const WRONG_CHAP = `chap-${randomBytes(8).toString('hex')}`;
const LUKS = `luks-${randomBytes(12).toString('hex')}`;
const SECRETS = [CHAP, WRONG_CHAP, LUKS].flatMap((s) => [s, Buffer.from(s).toString('base64')]);

/**
 * The example on a lab of its own (a user's `ss` lab is left alone), its pools below the lab machines' own state
 * directories (nothing in /var/lib/vmlink/pools), one more iSCSI volume kept spare, an encrypted dir-pool disk, and a
 * second dir pool on host1 (`fast`) that `vm move-disk` moves db's scratch disk into. For the live migration: owner
 * records (`cluster:` on the controller's own sqlite store, as migrate.int), web gets a CHAP iSCSI LUN beside its NFS
 * volume, and network app a gateway on host2 (the ping's source: host2's namespace reaches the overlay through it).
 */
function specOf(extra = ''): string {
  const spec = readFileSync(EXAMPLE, 'utf8')
    .replace('version: 1\n', 'version: 1\ncluster: { store: sqlite }\n')
    .replace('cidr: 10.70.0.0/24 }', 'cidr: 10.70.0.0/24, gateway: { host: host2 } }')
    .replace(
      '  - { name: web-files, pool: nas, sizeMiB: 64 }',
      '  - { name: web-files, pool: nas, sizeMiB: 64 }\n  - { name: web-data, pool: san, sizeMiB: 16 }',
    )
    .replace(
      '      - { name: files, pool: nas, volume: web-files }',
      '      - { name: files, pool: nas, volume: web-files }\n      - { name: data, pool: san, volume: web-data }',
    )
    .replace(/^ {2}name: ss$/m, `  name: ${LAB}`)
    .replace(
      '{ name: local, type: dir, host: host1 }',
      `{ name: local, type: dir, host: host1, path: ${machineDir('host1')}/pools/local }\n  - { name: fast, type: dir, host: host1, path: ${machineDir('host1')}/pools/fast }`,
    )
    .replace(
      '    host: san1\n    chap:',
      `    host: san1\n    path: ${machineDir('san1')}/pools/san\n    chap:`,
    )
    .replace(
      '{ name: nas, type: nfs, host: san1,',
      `{ name: nas, type: nfs, host: san1, path: ${machineDir('san1')}/pools/nas,`,
    )
    .replace(
      '  - { name: web-files, pool: nas, sizeMiB: 64 }',
      '  - { name: web-files, pool: nas, sizeMiB: 64 }\n  - { name: spare, pool: san, sizeMiB: 16 }',
    )
    .replace(
      '      - { name: scratch, pool: local, sizeMiB: 32 }',
      '      - { name: scratch, pool: local, sizeMiB: 32 }\n      - { name: vault, pool: local, sizeMiB: 16, encryption: { secret: vault-key } }',
    );
  return spec + extra;
}
const specFile = join(root, 'spec.yaml');
let release: (() => Promise<void>) | undefined;
/** Every CLI answer the test saw: none may carry a secret. */
const answers: string[] = [];

async function cli(args: string[], timeoutMs?: number) {
  const r = await runCli(args, env, timeoutMs);
  answers.push(r.stdout, r.stderr);
  return r;
}

async function setSecret(name: string, value: string): Promise<void> {
  const file = join(root, `${name}.value`);
  writeFileSync(file, value, { mode: 0o600 });
  const r = await cli(['secret', 'set', name, '--from-file', file]);
  rmSync(file);
  expect(r.code, r.stderr).toBe(0);
}

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(specFile, specOf());
  expect(readFileSync(specFile, 'utf8')).toContain(`${machineDir('san1')}/pools/san`);
  release = await acquireVmLock();
  const d = await cli(['daemon', '--detach']);
  expect(d.code, d.stderr).toBe(0);
  await setSecret('san-chap', CHAP);
  await setSecret('vault-key', LUKS);
  const up = await cli(['lab', 'up', '-f', specFile]);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  const apply = await cli(['apply', '-f', specFile]);
  expect(apply.code, apply.stderr + apply.stdout).toBe(0);
}, 420_000);

afterAll(async () => {
  await runCli(['lab', 'down', '-f', specFile], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

/** Command lines of every process on this machine (the lab's tgtd, ganesha, agents, QEMUs among them). */
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

/** Every regular file below `dir` up to 16 MiB (logs, state records, configs; volume images are larger or sparse). */
function filesBelow(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesBelow(p));
    else if (e.isFile() && statSync(p).size <= 16 * 1024 * 1024) out.push(p);
  }
  return out;
}

function expectNoSecretIn(where: string, text: string): void {
  for (const s of SECRETS) expect(text.includes(s), `a secret value in ${where}`).toBe(false);
}

describe('shared storage on a lab with a storage machine', () => {
  it('verify is green, storage paths included: portals, open volumes, guest reads and writes', async () => {
    const r = await cli(['verify', '--json']);
    const v = JSON.parse(r.stdout) as VerifyResult;
    const storage = v.storage ?? [];
    const names = storage.map(
      (c) => `${c.check} ${c.vm ? `${c.vm}/${c.disk}` : c.host} ${c.ok ? 'ok' : c.detail}`,
    );
    expect(names.sort()).toEqual(
      [
        'portal host1 ok', // 192.168.70.30:3260
        'portal host2 ok', // :111
        'portal host2 ok', // :2049
        'portal host2 ok', // 192.168.70.30:3260 (web's LUN)
        'open db/data ok',
        'io db/data ok',
        'open db/scratch ok',
        'io db/scratch ok',
        'open db/vault ok',
        'io db/vault ok',
        'open web/files ok',
        'io web/files ok',
        'open web/data ok',
        'io web/data ok',
      ].sort(),
    );
    expect(
      storage
        .filter((c) => c.check === 'portal')
        .map((c) => c.target)
        .sort(),
    ).toEqual([
      '192.168.70.30:111 (portmapper)',
      '192.168.70.30:2049 (nfs)',
      '192.168.70.30:3260 (iscsi)',
      '192.168.70.30:3260 (iscsi)',
    ]);
    expect(v.cells.filter((c) => !c.ok)).toEqual([]);
    expect(v.ok).toBe(true);
    const text = await cli(['verify']);
    expect(text.stdout).toContain('Storage paths');
    expect(text.code, text.stdout).toBe(0);
  }, 300_000);

  it('a wrong CHAP secret: the apply fails saying so, the VM is not made, and doctor explains it', async () => {
    await setSecret('san-chap', WRONG_CHAP);
    writeFileSync(
      specFile,
      specOf().replace(
        '\nlab:\n',
        '\n  - name: probe\n    host: host2\n    memoryMiB: 128\n    nics: [{ network: app, ip: 10.70.0.13 }]\n    disks: [{ name: spare, pool: san, volume: spare }]\nlab:\n',
      ),
    );
    const apply = await cli(['apply', '-f', specFile]);
    expect(apply.code).not.toBe(0);
    expect(apply.stderr + apply.stdout).toMatch(/probe/);
    expect(apply.stderr + apply.stdout).toMatch(/iscsi|login|authenticat|CHAP/i);
    // Nothing half-applied: no VM probe anywhere, running or not.
    const vms = await cli(['vm', 'list', '--json']);
    const probe = (JSON.parse(vms.stdout) as Array<{ name: string; state: string }>).find(
      (v) => v.name === 'probe',
    );
    expect(probe?.state ?? 'absent').toBe('absent');
    const doctor = await cli(['doctor', '--json']);
    expect(doctor.stdout).toMatch(/storage iSCSI login to pool san on san1/);
    expect(doctor.stdout).toContain('vmlink secret set san-chap');
    // The same failure as the doctor's storage-path-down diagnosis, with its evidence and fix.
    const path = (
      JSON.parse(doctor.stdout) as { diagnoses: Array<{ id: string; object: string; fix: string }> }
    ).diagnoses.find((d) => d.id === 'storage-path-down');
    expect(path).toMatchObject({ object: 'iSCSI login to pool san on san1' });
    expect(path!.fix).toContain('vmlink secret set san-chap');
    expect(doctor.code).toBe(1);
    // The right secret again and the original spec: nothing left to change.
    await setSecret('san-chap', CHAP);
    writeFileSync(specFile, specOf());
    const back = await cli(['apply', '-f', specFile]);
    expect(back.code, back.stderr + back.stdout).toBe(0);
  }, 300_000);

  it('a storage path cut (no route from host1 to the iSCSI portal): doctor diagnoses it, and not once restored', async () => {
    type Doctor = {
      checks: Array<{ name: string; ok: boolean }>;
      diagnoses: Array<{ id: string; host?: string; object: string; evidence: string[]; fix: string }>;
    };
    const doctor = async () =>
      JSON.parse((await cli(['doctor', '--host', 'host1', '--json'])).stdout) as Doctor;
    const portal = (await doctor()).checks
      .map((c) => /^storage portal ([\d.]+):3260 \(iscsi\) from host1$/.exec(c.name)?.[1])
      .find(Boolean)!;
    expect(portal).toBeDefined();
    const route = ['ip', '-n', `vl-${LAB}-host1`, 'route'];
    execFileSync(route[0]!, [...route.slice(1), 'add', 'blackhole', `${portal}/32`]);
    try {
      const d = (await doctor()).diagnoses.find((x) => x.id === 'storage-path-down');
      expect(d).toMatchObject({ host: 'host1', object: `portal ${portal}:3260 (iscsi) from host1` });
      expect(d!.fix).toMatch(/tgtd/);
    } finally {
      execFileSync(route[0]!, [...route.slice(1), 'del', 'blackhole', `${portal}/32`]);
    }
    expect((await doctor()).diagnoses.filter((x) => x.id === 'storage-path-down')).toEqual([]);
  }, 120_000);

  it('vm move-disk: apply refuses to restart onto an empty disk, the move keeps the guest and its data, apply is then a no-op', async () => {
    const MARK = 'vmlink-move-disk-mark-4c1e';
    const guest = (script: string) =>
      cli([
        'vm',
        'exec',
        'db',
        '--',
        'sh',
        '-c',
        `D=$(for d in /sys/block/vd*; do [ "$(cat $d/serial)" = scratch ] && echo /dev/$(basename $d); done); ${script}`,
      ]);
    const w = await guest(`printf %s ${MARK} | dd of=$D bs=1M seek=2 conv=notrunc,fsync 2>/dev/null`);
    expect(w.code, w.stderr + w.stdout).toBe(0);
    // The guest's boot id: the same one after the move and the apply means the VM never restarted.
    const boot = async () =>
      (await cli(['vm', 'exec', 'db', '--', 'cat', '/proc/sys/kernel/random/boot_id'])).stdout.trim();
    const before = await boot();
    expect(before).toMatch(/^[0-9a-f-]{36}$/);
    // The spec puts scratch in fast; the disk is still in local: the apply refuses, nothing changed.
    writeFileSync(
      specFile,
      specOf().replace(
        '      - { name: scratch, pool: local, sizeMiB: 32 }',
        '      - { name: scratch, pool: fast, sizeMiB: 32 }',
      ),
    );
    const refused = await cli(['apply', '-f', specFile]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr + refused.stdout).toContain(
      'disk scratch sits in pool local but the spec puts it in pool fast',
    );
    expect(refused.stderr + refused.stdout).toContain('vmlink vm move-disk db scratch --to-pool fast');
    expect(await boot()).toBe(before);
    // The move: same QEMU, the volume the spec expects, the data there; the old volume gone.
    const moved = await cli(['vm', 'move-disk', 'db', 'scratch', '--to-pool', 'fast', '--json'], 240_000);
    expect(moved.code, moved.stderr + moved.stdout).toBe(0);
    const r = JSON.parse(moved.stdout) as {
      from: string;
      pool: string;
      volume: string;
      host: string;
      ms: number;
    };
    expect(r).toMatchObject({ from: 'pool local', pool: 'fast', volume: 'db-scratch', host: 'host1' });
    expect(await boot()).toBe(before);
    const read = await guest(
      'echo 3 > /proc/sys/vm/drop_caches; dd if=$D bs=1M skip=2 count=1 2>/dev/null | head -c 26',
    );
    expect(read.stdout).toContain(MARK);
    const vols = JSON.parse((await cli(['volume', 'list', '--json'])).stdout) as Array<{
      pool: string;
      name: string;
    }>;
    expect(vols.filter((v) => v.name === 'db-scratch').map((v) => v.pool)).toEqual(['fast']);
    // A second move into the same pool is refused with the reason.
    const again = await cli(['vm', 'move-disk', 'db', 'scratch', '--to-pool', 'fast']);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('disk scratch is in pool fast already');
    // The disk is where the spec says: nothing to change, and the VM was never restarted.
    const apply = await cli(['apply', '-f', specFile]);
    expect(apply.code, apply.stderr + apply.stdout).toBe(0);
    expect(apply.stdout).toContain('no changes');
    expect(await boot()).toBe(before);
    console.log(`move-disk: db/scratch (32 MiB) local -> fast in ${r.ms} ms`);
  }, 300_000);

  it('live migration of web (NFS volume + CHAP iSCSI LUN) host2 -> host1 under a ping: the disks stay shared, data and writes intact, the session and fence follow', async () => {
    const MARK = `vmlink-migrate-mark-${Date.now()}`;
    // The guest device of disk `serial`, then `script` with it in $D.
    const onDisk = (serial: string, script: string) =>
      cli([
        'vm',
        'exec',
        'web',
        '--',
        'sh',
        '-c',
        `D=$(for d in /sys/block/vd*; do [ "$(cat $d/serial)" = ${serial} ] && echo /dev/$(basename $d); done); ${script}`,
      ]);
    const write = (serial: string, mark: string, seekMiB: number) =>
      onDisk(serial, `printf %s ${mark} | dd of=$D bs=1M seek=${seekMiB} conv=notrunc,fsync 2>/dev/null`);
    const read = (serial: string, seekMiB: number, n: number) =>
      onDisk(
        serial,
        `echo 3 > /proc/sys/vm/drop_caches; dd if=$D bs=1M skip=${seekMiB} count=1 2>/dev/null | head -c ${n}`,
      );
    for (const d of ['data', 'files']) {
      const w = await write(d, MARK, 3);
      expect(w.code, w.stderr + w.stdout).toBe(0);
    }
    const sanVolume = async () => {
      const st = JSON.parse((await cli(['status', '--json'])).stdout) as {
        hosts: Array<{ name: string; report?: HostReport }>;
      };
      const san = st.hosts.find((h) => h.name === 'san1')?.report;
      const vol = san?.pools?.find((p) => p.name === 'san')?.volumes.find((v) => v.name === 'web-data');
      const holders = st.hosts.filter((h) => h.report?.vms.some((v) => v.name === 'web')).map((h) => h.name);
      return { vol, holders };
    };
    const before = await sanVolume();
    expect(before.holders).toEqual(['host2']);
    expect(before.vol?.sessions?.flatMap((x) => x.addresses)).toEqual(['192.168.70.12']);

    // The explain: both disks are shared and stay; nothing is copied.
    const ex = await cli(['vm', 'migrate', 'web', '--to', 'host1', '--explain', '--json']);
    expect(ex.code, ex.stderr + ex.stdout).toBe(0);
    const explain = JSON.parse(ex.stdout) as {
      blockMigration: boolean;
      copiedDisks: unknown[];
      checks: Array<{ id: string; ok: boolean; message: string }>;
    };
    expect(explain).toMatchObject({ blockMigration: false, copiedDisks: [] });
    expect(
      explain.checks
        .filter((c) => c.id.startsWith('disk:'))
        .map((c) => [c.id, c.ok, c.message])
        .sort(),
    ).toEqual([
      ['disk:data', true, 'disk data is iscsi volume san/web-data, shared: it stays'],
      ['disk:files', true, 'disk files is nfs volume nas/web-files, shared: it stays'],
    ]);

    // A 10 ms ping from host2's namespace (the overlay's gateway): local before the move, across VXLAN after it.
    const {
      result: r,
      answeredBefore,
      times,
      returned,
      stoppedAt,
    } = await pingAround(`vl-${LAB}-host2`, '10.70.0.12', () =>
      cli(['vm', 'migrate', 'web', '--to', 'host1', '--json'], 240_000),
    );
    expect(answeredBefore, 'web answers host2 before the move').toBe(true);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const report = JSON.parse(r.stdout) as {
      from: string;
      to: string;
      blockMigration: boolean;
      downtimeMs?: number;
      totalMs: number;
    };
    expect(report).toMatchObject({ from: 'host2', to: 'host1', blockMigration: false });
    expect(times.filter((t) => t > returned).length, 'replies from web on host1').toBeGreaterThan(0);
    const maxGap = largestGap(times, stoppedAt);
    console.log(
      `migrate (shared storage): QEMU downtime ${report.downtimeMs} ms, largest ping gap ${maxGap.toFixed(0)} ms, total ${report.totalMs} ms`,
    );
    expect(maxGap).toBeLessThan(5_000);

    // The data written on host2 reads back on host1, from both disks; and the guest still writes them.
    for (const d of ['data', 'files']) expect((await read(d, 3, MARK.length)).stdout).toContain(MARK);
    const MARK2 = `${MARK}-after`;
    for (const d of ['data', 'files']) {
      const w = await write(d, MARK2, 5);
      expect(w.code, w.stderr + w.stdout).toBe(0);
      expect((await read(d, 5, MARK2.length)).stdout).toContain(MARK2);
    }
    // The LUN: one session, from host1 alone (host2's QEMU and its login are gone), fenced to host1 under the owner
    // record's new token.
    const after = await sanVolume();
    expect(after.holders).toEqual(['host1']);
    expect(after.vol?.sessions?.flatMap((x) => x.addresses)).toEqual(['192.168.70.11']);
    expect(after.vol?.fence).toMatchObject({ host: 'host1', address: '192.168.70.11' });
    const list = JSON.parse((await cli(['vm', 'list', '--json'])).stdout) as Array<{
      name: string;
      host: string;
      state: string;
    }>;
    expect(list.find((v) => v.name === 'web')).toMatchObject({ host: 'host1', state: 'running' });

    // And back: the LUN, fenced to host1 alone now, lets host2 in beside it for the stream, then follows web again.
    const back = await cli(['vm', 'migrate', 'web', '--to', 'host2', '--json'], 240_000);
    expect(back.code, back.stderr + back.stdout).toBe(0);
    const again = await sanVolume();
    expect(again.holders).toEqual(['host2']);
    expect(again.vol?.sessions?.flatMap((x) => x.addresses)).toEqual(['192.168.70.12']);
    expect(again.vol?.fence).toMatchObject({ host: 'host2', address: '192.168.70.12' });
    expect(again.vol?.fence?.peer).toBeUndefined();
    expect((await read('data', 5, MARK2.length)).stdout).toContain(MARK2);
  }, 400_000);

  it('no CHAP password or LUKS key in any command line, file under the lab, or API answer', async () => {
    expectNoSecretIn('/proc/*/cmdline', allCmdlines());
    for (const f of filesBelow(root)) expectNoSecretIn(f, readFileSync(f, 'latin1'));
    // Read-only answers: asked at once.
    await Promise.all(
      [
        ['status', '--json'],
        ['vm', 'list', '--json'],
        ['secret', 'list', '--json'],
        ['pool', 'list', '--json'],
        ['volume', 'list', '--json'],
        ['doctor', '--json'],
        ['plan', '-f', specFile, '--json'],
        ['audit', '--json'],
      ].map((args) => cli(args)),
    );
    for (const [i, a] of answers.entries()) expectNoSecretIn(`CLI answer ${i}`, a);
  }, 120_000);
});
