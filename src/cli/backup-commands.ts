// `vmlink backup run|list|verify|sync|prune|status|restore-test|key` and `vmlink restore SNAPSHOT|list|discard`
// (issue 12, docs/backup.md): backups through the controller API (src/controller/wire-backup.ts). Long operations are
// tasks whose progress prints as it comes (on stderr with --json); every command has --json. Key material: the
// recovery key `key create` prints is shown once (or written to a new 0600 file), and `key import` reads it from a
// file or stdin, never from an argument (argv is visible to every user of the machine).
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import type { Command } from 'commander';
import { z } from 'zod';
import { TaskAcceptedSchema } from '../controller/wire.js';
import {
  BackupKeyCreatedSchema,
  BackupKeyImportedSchema,
  BackupListSchema,
  BackupPruneResultSchema,
  BackupRunResultSchema,
  BackupStatusSchema,
  BackupSyncResultSchema,
  BackupVerifyResultSchema,
  type RestoreBody,
  RestoreBodySchema,
  RestoredVmListSchema,
  RestoreResultSchema,
  RestoreTestResultSchema,
} from '../controller/wire-backup.js';
import { SnapshotIdSchema } from '../shared/backup.js';
import { VmlinkError } from '../shared/errors.js';
import { NAME_PATTERN } from '../spec/schema.js';
import { followTask, runTask } from './client.js';
import { type Api, emit, progress } from './io.js';
import {
  printable,
  renderBackupList,
  renderBackupRun,
  renderBackupStatus,
  renderKeyCreated,
  renderPrune,
  renderRestore,
  renderRestoredVms,
  renderRestoreTest,
  renderSync,
  renderVerify,
  verifyOk,
} from './render-backup.js';

const RECOVERY_KEY_MAX = 512;

/** A spec name (VM, store, policy, host, network, key), checked before anything is sent. */
export function parseName(what: string, value: string): string {
  if (!NAME_PATTERN.test(value))
    throw new VmlinkError(
      'invalid',
      `${what} "${value}" is not a name (lower-case letter, then a-z, 0-9, -)`,
    );
  return value;
}

/** A snapshot id, `VM@YYYYMMDDTHHMMSSZ` as `vmlink backup list` shows it. */
export function parseSnapshot(value: string): string {
  if (!SnapshotIdSchema.safeParse(value).success)
    throw new VmlinkError(
      'invalid',
      `"${value}" is not a snapshot: they are VM@YYYYMMDDTHHMMSSZ, e.g. web1@20261201T020000Z (vmlink backup list)`,
    );
  return value;
}

/** What `vmlink restore SNAPSHOT` was given, as commander parses it. */
export interface RestoreOptions {
  as?: string;
  inPlace?: boolean;
  file?: string;
  host?: string;
  network?: string;
  start?: boolean;
  disk?: string;
  partition?: string;
  out?: string;
  store?: string;
  policy?: string;
}

/** The API body of `vmlink restore`: exactly one of --as, --in-place, --file, and only the options that go with it. */
export function restoreBody(snapshot: string, o: RestoreOptions): RestoreBody {
  const modes = [
    o.as !== undefined && '--as',
    o.inPlace && '--in-place',
    o.file !== undefined && '--file',
  ].filter(Boolean);
  if (modes.length !== 1)
    throw new VmlinkError(
      'invalid',
      modes.length === 0
        ? 'say where to restore: --as NAME (a new VM), --in-place (over the stopped VM) or --file PATH (one file)'
        : `${modes.join(' and ')} do not go together: restore one way at a time`,
    );
  const only = (allowed: string[]) => {
    const given: [string, unknown][] = [
      ['--network', o.network],
      ['--no-start', o.start === false ? true : undefined],
      ['--disk', o.disk],
      ['--partition', o.partition],
      ['--out', o.out],
    ];
    for (const [flag, v] of given)
      if (v !== undefined && !allowed.includes(flag))
        throw new VmlinkError(
          'invalid',
          `${flag} goes with ${flag === '--network' || flag === '--no-start' ? '--as' : '--file'}, not ${modes[0]}`,
        );
  };
  const common = {
    snapshot: parseSnapshot(snapshot),
    ...(o.store !== undefined ? { store: parseName('store', o.store) } : {}),
    ...(o.policy !== undefined ? { policy: parseName('policy', o.policy) } : {}),
  };
  const host = o.host !== undefined ? { host: parseName('host', o.host) } : {};
  let target: RestoreBody['target'];
  if (o.as !== undefined) {
    only(['--network', '--no-start']);
    target = {
      kind: 'new',
      name: parseName('VM name', o.as),
      ...host,
      ...(o.network !== undefined ? { network: parseName('network', o.network) } : {}),
      start: o.start !== false,
    };
  } else if (o.inPlace) {
    only([]);
    target = { kind: 'in-place', ...host };
  } else {
    only(['--disk', '--partition', '--out']);
    const path = o.file as string;
    if (!/^\/[^\0]{0,4095}$/.test(path))
      throw new VmlinkError(
        'invalid',
        `--file takes an absolute path inside the guest's filesystem, got "${path}"`,
      );
    let partition: number | undefined;
    if (o.partition !== undefined) {
      partition = Number(o.partition);
      if (!Number.isInteger(partition) || partition < 1 || partition > 128)
        throw new VmlinkError('invalid', `--partition is a partition number 1 to 128, got "${o.partition}"`);
    }
    target = {
      kind: 'file',
      path,
      disk: o.disk !== undefined ? parseName('disk', o.disk) : 'root',
      ...(partition !== undefined ? { partition } : {}),
      ...host,
    };
  }
  return RestoreBodySchema.parse({ ...common, target });
}

/** The recovery key from `file` or stdin: surrounding white space dropped, 1 to 512 characters. */
export function readRecoveryKey(
  file: string | undefined,
  stdin: () => Buffer = () => readFileSync(0),
): string {
  let text: string;
  try {
    text = (file === undefined ? stdin() : readFileSync(file)).toString('utf8').trim();
  } catch (e) {
    throw new VmlinkError(
      'invalid',
      `cannot read the recovery key from ${file ?? 'stdin'}: ${(e as Error).message}`,
    );
  }
  if (text.length === 0 || text.length > RECOVERY_KEY_MAX)
    throw new VmlinkError(
      'invalid',
      `a recovery key is 1 to ${RECOVERY_KEY_MAX} characters (got ${text.length}): the text vmlink backup key create printed`,
    );
  return text;
}

/** Opens a new file for secret output: created 0600, never over an existing file (nor through a link there). */
export function createPrivateFile(path: string): number {
  try {
    return openSync(path, 'wx', 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new VmlinkError(
      'invalid',
      code === 'EEXIST'
        ? `${path} exists: vmlink writes a new file only (remove it or choose another path)`
        : `cannot create ${path}: ${(e as Error).message}`,
    );
  }
}

/** Writes `data` to the open file and closes it; on a failure the half-written file is removed. */
function finishPrivateFile(fd: number, path: string, data: Buffer | string): void {
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
  } catch (e) {
    closeSync(fd);
    unlinkSync(path);
    throw new VmlinkError('invalid', `cannot write ${path}: ${(e as Error).message}`);
  }
  closeSync(fd);
}

/** `vmlink backup ...`. */
export function addBackupCommands(program: Command, api: Api): void {
  const backup = program
    .command('backup')
    .description(
      'backups of VMs (the spec declares them under backupStores: and backups:): run, list, verify, sync, prune, objectives, keys',
    );

  backup
    .command('run')
    .description(
      "back VM up now, into its policy's store (incremental from the last snapshot where its bitmap allows)",
    )
    .argument('<vm>', 'the VM')
    .option(
      '--policy <policy>',
      'the policy whose store, key and retention apply (default: the one naming the VM)',
    )
    .option('--full', 'read every disk whole, not only what changed since the last snapshot')
    .option('--json', 'machine-readable output')
    .action(async (vm: string, o: { policy?: string; full?: boolean; json?: boolean }) => {
      const body = {
        vm: parseName('VM', vm),
        ...(o.policy !== undefined ? { policy: parseName('policy', o.policy) } : {}),
        full: !!o.full,
      };
      const r = await runTask(api(), '/v1/backups/run', body, BackupRunResultSchema, progress(!!o.json));
      emit(!!o.json, r, () => printable(renderBackupRun(r)));
    });

  backup
    .command('list')
    .description(
      'snapshots in every store (or one VM, one store): size, what was read and stored, verify outcome',
    )
    .argument('[vm]', 'only this VM')
    .option('--store <store>', 'only this store')
    .option('--json', 'machine-readable output')
    .action(async (vm: string | undefined, o: { store?: string; json?: boolean }) => {
      const q = new URLSearchParams();
      if (vm !== undefined) q.set('vm', parseName('VM', vm));
      if (o.store !== undefined) q.set('store', parseName('store', o.store));
      const qs = q.toString();
      const r = await api().get(`/v1/backups${qs ? `?${qs}` : ''}`, BackupListSchema);
      emit(!!o.json, r, () => printable(renderBackupList(r)));
    });

  backup
    .command('verify')
    .description(
      'check every chunk of a snapshot (or of every snapshot) where it is stored; exit status 1 when a problem is found',
    )
    .argument('[snapshot]', 'only this snapshot (VM@YYYYMMDDTHHMMSSZ)')
    .option('--store <store>', 'only this store')
    .option(
      '--deep',
      "decrypt every chunk and recompute its id (the policy's key goes to the store host for this)",
    )
    .option('--json', 'machine-readable output')
    .action(async (snapshot: string | undefined, o: { store?: string; deep?: boolean; json?: boolean }) => {
      const body = {
        ...(snapshot !== undefined ? { snapshot: parseSnapshot(snapshot) } : {}),
        ...(o.store !== undefined ? { store: parseName('store', o.store) } : {}),
        deep: !!o.deep,
      };
      const r = await runTask(
        api(),
        '/v1/backups/verify',
        body,
        BackupVerifyResultSchema,
        progress(!!o.json),
      );
      emit(!!o.json, r, () => printable(renderVerify(r)));
      if (!verifyOk(r)) process.exitCode = 1;
    });

  backup
    .command('sync')
    .description('offsite stores pull what they lack from their source now (only missing chunks cross)')
    .option('--store <store>', 'only this offsite store')
    .option('--json', 'machine-readable output')
    .action(async (o: { store?: string; json?: boolean }) => {
      const body = o.store !== undefined ? { store: parseName('store', o.store) } : {};
      const r = await runTask(api(), '/v1/backups/sync', body, BackupSyncResultSchema, progress(!!o.json));
      emit(!!o.json, r, () => printable(renderSync(r)));
    });

  backup
    .command('prune')
    .description(
      "apply the policies' retention now (as restic forget --keep-* would), then collect unreferenced chunks",
    )
    .option('--policy <policy>', 'only this policy')
    .option('--dry-run', 'show what would be deleted, delete nothing')
    .option('--json', 'machine-readable output')
    .action(async (o: { policy?: string; dryRun?: boolean; json?: boolean }) => {
      const body = {
        ...(o.policy !== undefined ? { policy: parseName('policy', o.policy) } : {}),
        dryRun: !!o.dryRun,
      };
      const r = await runTask(api(), '/v1/backups/prune', body, BackupPruneResultSchema, progress(!!o.json));
      emit(!!o.json, r, () => printable(renderPrune(r, !!o.dryRun)));
    });

  backup
    .command('status')
    .description(
      "each policy's objectives per VM (RPO: newest good snapshot's age; RTO: last restore test; 3-2-1: copies, machines, offsite), schedules and stores",
    )
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api().get('/v1/backups/status', BackupStatusSchema);
      emit(!!o.json, r, () => printable(renderBackupStatus(r)));
    });

  backup
    .command('restore-test')
    .description(
      "restore a policy's newest snapshots as throwaway VMs on its isolated network, wait for their guest agents, record the time (RTO), delete them",
    )
    .argument('<policy>', 'the policy')
    .option('--vm <vm>', 'only this VM of the policy')
    .option('--json', 'machine-readable output')
    .action(async (policy: string, o: { vm?: string; json?: boolean }) => {
      const body = {
        policy: parseName('policy', policy),
        ...(o.vm !== undefined ? { vm: parseName('VM', o.vm) } : {}),
      };
      const r = await runTask(api(), '/v1/restores/test', body, RestoreTestResultSchema, progress(!!o.json));
      emit(!!o.json, r, () => printable(renderRestoreTest(r)));
      if (r.results.some((t) => !t.ok)) process.exitCode = 1;
    });

  const key = backup
    .command('key')
    .description(
      'backup encryption keys, kept sealed by the controller (a policy names one under encryption.key)',
    );
  key
    .command('create')
    .description(
      'make a random 256-bit key, seal it as secret NAME, and print its recovery key ONCE (or write it to a new 0600 --file)',
    )
    .argument('<name>', 'the key (as encryption.key names it)')
    .option('--file <file>', 'write the recovery key to this new file (mode 0600) instead of printing it')
    .option('--json', 'machine-readable output (the recovery key is in it unless --file)')
    .action(async (name: string, o: { file?: string; json?: boolean }) => {
      const body = { name: parseName('key', name) };
      // The file first: a path that cannot be written fails before a key exists whose recovery key nobody saw.
      const fd = o.file !== undefined ? createPrivateFile(o.file) : undefined;
      let r: z.output<typeof BackupKeyCreatedSchema>;
      try {
        r = await api().post('/v1/backups/keys', body, BackupKeyCreatedSchema);
      } catch (e) {
        if (fd !== undefined && o.file !== undefined) {
          closeSync(fd);
          unlinkSync(o.file);
        }
        throw e;
      }
      if (fd !== undefined && o.file !== undefined) {
        finishPrivateFile(fd, o.file, `${r.recoveryKey}\n`);
        emit(!!o.json, { name: r.name, fingerprint: r.fingerprint, recoveryKeyFile: o.file }, () =>
          renderKeyCreated(r, o.file),
        );
      } else {
        emit(!!o.json, r, () => printable(renderKeyCreated(r)));
      }
    });
  key
    .command('import')
    .description(
      'seal a key again from its recovery key (stdin or --file, never an argument), e.g. on a new controller',
    )
    .argument('<name>', 'the key (as encryption.key names it)')
    .option('--file <file>', 'read the recovery key from this file instead of stdin')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { file?: string; json?: boolean }) => {
      const body = { name: parseName('key', name), recoveryKey: readRecoveryKey(o.file) };
      const r = await api().post('/v1/backups/keys/import', body, BackupKeyImportedSchema);
      emit(!!o.json, r, () => `backup key ${r.name} imported (fingerprint ${r.fingerprint})`);
    });
}

/** --json of `restore list|discard`: commander hands an option after a subcommand to `restore` itself (it has
 * --json too), so both are read. */
const wantsJson = (cmd: Command) => !!cmd.optsWithGlobals<{ json?: boolean }>().json;

/** `vmlink restore SNAPSHOT ...`, `vmlink restore list`, `vmlink restore discard NAME`. */
export function addRestoreCommands(program: Command, api: Api): void {
  const restore = program
    .command('restore')
    .description(
      'restore a snapshot: as a new VM (--as), over its stopped VM (--in-place) or one file out of it (--file); `restore list`, `restore discard`',
    )
    .argument('[snapshot]', 'the snapshot, VM@YYYYMMDDTHHMMSSZ (vmlink backup list)')
    .option('--as <name>', 'a new VM of this name from the snapshot (fresh MACs, addresses by DHCP)')
    .option('--in-place', "over the VM's own disks: it must be stopped (or its host failed: then --host)")
    .option('--file <path>', "one file's content, out of an ext2/3/4 filesystem of the snapshot")
    .option(
      '--host <host>',
      "where: the new VM's host (default: the snapshot's; in a cluster the scheduler's), the in-place restore's, or where --file is read",
    )
    .option('--network <network>', 'with --as: put its NICs on this network')
    .option('--no-start', 'with --as: leave the new VM stopped')
    .option('--disk <disk>', 'with --file: the disk (default root)')
    .option(
      '--partition <n>',
      'with --file: the partition number (default: the whole disk, or its only filesystem)',
    )
    .option('--out <file>', 'with --file: write it to this new file (mode 0600) instead of stdout')
    .option('--store <store>', "read from this store (default: the policy's store, else any holding it)")
    .option(
      '--policy <policy>',
      "the policy whose key opens it (default: the one whose key's fingerprint matches)",
    )
    .option('--json', 'machine-readable output')
    .action(async (snapshot: string | undefined, o: RestoreOptions & { json?: boolean }) => {
      if (snapshot === undefined)
        throw new VmlinkError(
          'invalid',
          'name the snapshot to restore (vmlink backup list), or: vmlink restore list',
        );
      const body = restoreBody(snapshot, o);
      const json = !!o.json;
      const toStdout = body.target.kind === 'file' && o.out === undefined && !json;
      if (toStdout && process.stdout.isTTY)
        throw new VmlinkError(
          'invalid',
          "--file without --out would print a guest's file on this terminal (it may hold escape sequences): add --out FILE, or pipe the output",
        );
      const fd = o.out !== undefined ? createPrivateFile(o.out) : undefined;
      let r: z.output<typeof RestoreResultSchema>;
      try {
        // The file itself goes to stdout: progress goes to stderr then.
        r = await runTask(api(), '/v1/restores', body, RestoreResultSchema, progress(json || toStdout));
      } catch (e) {
        if (fd !== undefined && o.out !== undefined) {
          closeSync(fd);
          unlinkSync(o.out);
        }
        throw e;
      }
      if (r.file && fd !== undefined && o.out !== undefined) {
        finishPrivateFile(fd, o.out, Buffer.from(r.file.data, 'base64'));
        const { data: _d, ...file } = r.file;
        emit(json, { ...r, file: { ...file, out: o.out } }, () => printable(renderRestore(r, o.out)));
      } else if (r.file && toStdout) {
        process.stdout.write(Buffer.from(r.file.data, 'base64'));
        process.stderr.write(`${printable(renderRestore(r))}\n`);
      } else {
        if (fd !== undefined && o.out !== undefined) {
          closeSync(fd);
          unlinkSync(o.out);
        }
        emit(json, r, () => printable(renderRestore(r)));
      }
    });
  restore
    .command('list')
    .description('VMs made by restore --as: apply leaves them alone until restore discard')
    .option('--json', 'machine-readable output')
    .action(async (_o: unknown, cmd: Command) => {
      const json = wantsJson(cmd);
      const r = await api().get('/v1/restores', RestoredVmListSchema);
      emit(json, r, () => printable(renderRestoredVms(r)));
    });
  restore
    .command('discard')
    .description('delete a VM made by restore --as (and its disks)')
    .argument('<name>', 'the restored VM')
    .option('--json', 'machine-readable output')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const json = wantsJson(cmd);
      const path = `/v1/restores/${parseName('VM', name)}`;
      const client = api();
      const { taskId } = await client.delete(path, TaskAcceptedSchema);
      const r = await followTask(client, taskId, path, z.unknown(), progress(json));
      emit(json, r ?? { discarded: name }, () => `restored VM ${name} discarded`);
    });
}
