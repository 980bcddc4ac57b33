// How `vmlink backup ...` and `vmlink restore ...` show the controller's answers to people (--json prints them as
// they are). Pure: every function takes the API's parsed answer and returns text.
import type { z } from 'zod';
import type {
  BackupList,
  BackupPruneResult,
  BackupRunResult,
  BackupStatus,
  BackupSyncResultSchema,
  BackupVerifyResultSchema,
  RestoredVmListSchema,
  RestoreResult,
  RestoreTestResult,
} from '../controller/wire-backup.js';
import type { ObjectiveStatus, SnapshotSummary } from '../shared/backup.js';
import { table } from './render.js';

/**
 * Text safe for a terminal: control characters (C0 but newline, DEL, C1) become `?`. Free text in answers (verify
 * problems, errors, store reasons) can come from a store host or a guest, and an escape sequence must not reach the
 * operator's terminal as one. JSON output needs none of this (JSON.stringify escapes them).
 */
export function printable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
  return text.replace(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/g, '?');
}

/** Bytes for people: `512 B`, `4.0 MiB`, `1.9 GiB`. */
export function formatBytes(n: number | undefined): string | undefined {
  if (n === undefined) return undefined;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  if (n < 1024) return `${n} B`;
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

/** An ISO time as `2026-12-01 02:00:00Z` (shorter in tables). */
export function formatTime(iso: string | undefined): string | undefined {
  return iso === undefined ? undefined : `${iso.slice(0, 10)} ${iso.slice(11, 19)}Z`;
}

/** Minutes for people: `42 s`, `14.5 min`, `3.2 h`, `2.1 d`. */
export function formatMinutes(m: number | undefined): string | undefined {
  if (m === undefined) return undefined;
  if (m < 1) return `${Math.round(m * 60)} s`;
  if (m < 120) return `${Number(m.toFixed(1))} min`;
  if (m < 48 * 60) return `${(m / 60).toFixed(1)} h`;
  return `${(m / 1440).toFixed(1)} d`;
}

/** How a snapshot's disks were read: `full (first)`, `incremental`, or per disk when they differ. */
function readModes(s: SnapshotSummary): string {
  const each = s.disks.map((d) =>
    d.mode === 'full' ? `full${d.fullReason ? ` (${d.fullReason})` : ''}` : d.mode,
  );
  const distinct = [...new Set(each)];
  if (distinct.length <= 1) return distinct[0] ?? '-';
  return s.disks.map((d, i) => `${d.name}: ${each[i]}`).join(', ');
}

const sum = (s: SnapshotSummary, k: 'readBytes' | 'storedBytes' | 'newChunks' | 'sizeBytes') =>
  s.disks.reduce((n, d) => n + d[k], 0);

/** `vmlink backup run`. */
export function renderBackupRun(r: BackupRunResult): string {
  const s = r.snapshot;
  const lines = [
    `snapshot ${s.id} stored in ${r.store} (${s.consistency}${s.base ? `, on ${s.base}` : ''})`,
    `  ${s.disks.length} disk${s.disks.length === 1 ? '' : 's'}, ${formatBytes(sum(s, 'sizeBytes'))}: read ${formatBytes(sum(s, 'readBytes'))}, ${sum(s, 'newChunks')} new chunks, ${formatBytes(sum(s, 'storedBytes'))} stored; ${readModes(s)}`,
  ];
  return lines.join('\n');
}

function verifyText(s: SnapshotSummary): string | undefined {
  if (!s.verify) return undefined;
  return s.verify.ok ? `ok ${formatTime(s.verify.at)}` : `FAILED ${formatTime(s.verify.at)}`;
}

/** `vmlink backup list`. */
export function renderBackupList(r: BackupList): string {
  const parts: string[] = [];
  if (r.snapshots.length === 0) parts.push('no snapshots');
  else
    parts.push(
      table(
        ['SNAPSHOT', 'STORE', 'POLICY', 'CONSISTENCY', 'SIZE', 'READ', 'STORED', 'MODE', 'VERIFIED'],
        r.snapshots.map(({ store, offsite, snapshot: s }) => [
          s.id,
          offsite ? `${store} (offsite)` : store,
          s.policy,
          s.consistency,
          formatBytes(sum(s, 'sizeBytes')),
          formatBytes(sum(s, 'readBytes')),
          formatBytes(sum(s, 'storedBytes')),
          readModes(s),
          verifyText(s),
        ]),
      ),
    );
  for (const u of r.unreachable)
    parts.push(`store ${u.store} did not answer (the list lacks its snapshots): ${u.reason}`);
  return parts.join('\n');
}

/** `vmlink backup verify`. */
export function renderVerify(r: z.output<typeof BackupVerifyResultSchema>): string {
  if (r.results.length === 0) return 'nothing to verify';
  const lines: string[] = [];
  for (const v of r.results) {
    lines.push(
      `store ${v.store}: ${v.snapshots} snapshot${v.snapshots === 1 ? '' : 's'}, ${v.chunksChecked} chunks checked (${formatBytes(v.bytesRead)} read, ${v.deep ? 'decrypted, ids recomputed' : 'checksums'}): ${v.problems.length === 0 ? 'ok' : `${v.problems.length} PROBLEM${v.problems.length === 1 ? '' : 'S'}`}`,
    );
    for (const p of v.problems)
      lines.push(
        `  ${[p.snapshot, p.chunk ? `chunk ${p.chunk}` : undefined].filter(Boolean).join(' ')}: ${p.problem}`,
      );
  }
  return lines.join('\n');
}

/** Whether a verify found nothing wrong (the command's exit status). */
export const verifyOk = (r: z.output<typeof BackupVerifyResultSchema>) =>
  r.results.every((v) => v.problems.length === 0);

/** `vmlink backup sync`. */
export function renderSync(r: z.output<typeof BackupSyncResultSchema>): string {
  if (r.results.length === 0) return 'no offsite stores (declare one with offsite: true and pullFrom)';
  return r.results
    .map(
      (p) =>
        `${p.store} <- ${p.from}: ${p.snapshotsPulled.length} snapshot${p.snapshotsPulled.length === 1 ? '' : 's'} pulled, ${p.chunksFetched} chunks fetched (${formatBytes(p.bytesFetched)}), ${p.chunksAlreadyThere} already there${p.snapshotsPulled.length > 0 ? `\n  ${p.snapshotsPulled.join(', ')}` : ''}`,
    )
    .join('\n');
}

/** `vmlink backup prune`. */
export function renderPrune(r: BackupPruneResult, dryRun: boolean): string {
  const parts: string[] = [];
  if (r.policies.length === 0) parts.push('no policies');
  for (const p of r.policies) {
    parts.push(
      `policy ${p.policy} (store ${p.store}): keep ${p.kept.length}, ${dryRun ? 'would delete' : 'deleted'} ${p.deleted.length}`,
    );
    const rows = [
      ...p.kept.map((k) => [k.snapshot, 'keep', k.reasons.join(', ')]),
      ...p.deleted.map((d) => [d, dryRun ? 'would delete' : 'deleted', undefined]),
    ];
    if (rows.length > 0) parts.push(table(['SNAPSHOT', 'ACTION', 'KEPT AS'], rows));
  }
  for (const g of r.gc)
    parts.push(
      `gc ${g.store}: ${g.chunksRemoved} chunks removed (${formatBytes(g.bytesFreed)} freed), ${g.chunksKept} kept, ${g.chunksInGrace} unreferenced but recent`,
    );
  return parts.join('\n');
}

function objectiveCell(
  o: { state: string; objectiveMinutes?: number },
  measured: number | undefined,
  none: string,
): string {
  if (o.objectiveMinutes === undefined)
    return measured === undefined ? none : `${formatMinutes(measured)} (none set)`;
  const m = measured === undefined ? '?' : formatMinutes(measured);
  return `${o.state === 'ok' ? 'ok' : o.state === 'drift' ? 'DRIFT' : 'unknown'} ${m} / ${formatMinutes(o.objectiveMinutes)}`;
}

function ruleCell(o: ObjectiveStatus['rule']): string {
  const counts = `${o.copies} ${o.copies === 1 ? 'copy' : 'copies'}, ${o.machines} machine${o.machines === 1 ? '' : 's'}, ${o.offsite} offsite`;
  if (o.rule === 'none') return `- (${counts})`;
  return `${o.state === 'ok' ? 'ok' : o.state === 'drift' ? 'DRIFT' : 'unknown'} ${counts}`;
}

/** `vmlink backup status`: objectives per policy and VM, then schedules, then stores, then every problem. */
export function renderBackupStatus(r: BackupStatus): string {
  const parts: string[] = [];
  if (r.objectives.length === 0) parts.push('no backup policies (declare them under backups: in the spec)');
  else
    parts.push(
      table(
        ['POLICY', 'VM', 'NEWEST GOOD', 'RPO (age/objective)', 'RTO (measured/objective)', '3-2-1'],
        r.objectives.map((o) => [
          o.policy,
          o.vm,
          o.rpo.newest,
          objectiveCell(o.rpo, o.rpo.newestAgeMinutes, o.rpo.newest ? '-' : 'no snapshot'),
          objectiveCell(o.rto, o.rto.measuredMinutes, 'no test'),
          ruleCell(o.rule),
        ]),
      ),
    );
  if (r.policies.length > 0)
    parts.push(
      '',
      table(
        ['POLICY', 'STORE', 'SCHEDULE', 'LAST RUN', 'OUTCOME', 'NEXT RUN', 'NEXT RESTORE TEST'],
        r.policies.map((p) => [
          p.name,
          p.store,
          p.schedule,
          formatTime(p.lastRunAt),
          p.lastOutcome === 'failed' ? `failed: ${p.lastError ?? '?'}` : p.lastOutcome,
          formatTime(p.nextRunAt),
          formatTime(p.nextRestoreTestAt),
        ]),
      ),
    );
  if (r.stores.length > 0)
    parts.push(
      '',
      table(
        ['STORE', 'HOST', 'OFFSITE', 'STATE', 'SNAPSHOTS', 'STORED', 'FREE'],
        r.stores.map((s) => [
          s.name,
          s.host,
          s.offsite ? 'yes' : 'no',
          s.reachable ? 'up' : `unreachable${s.reason ? `: ${s.reason}` : ''}`,
          s.snapshots,
          formatBytes(s.storedBytes),
          formatBytes(s.freeBytes),
        ]),
      ),
    );
  const problems = r.objectives.flatMap((o) => o.problems.map((p) => `${o.policy}/${o.vm}: ${p}`));
  if (problems.length > 0) parts.push('', 'problems:', ...problems.map((p) => `  ${p}`));
  return parts.join('\n');
}

/** Whether every declared objective holds (nothing in drift). */
export const objectivesOk = (r: BackupStatus) =>
  r.objectives.every((o) => o.rpo.state !== 'drift' && o.rto.state !== 'drift' && o.rule.state !== 'drift');

/** `vmlink backup key create`: the recovery key, loudly, this once. */
export function renderKeyCreated(
  r: { name: string; fingerprint: string; recoveryKey: string },
  file?: string,
): string {
  const bar = '='.repeat(72);
  const where = file
    ? [`The recovery key was written to ${file} (mode 0600). Move it offline, away from this controller.`]
    : [
        'RECOVERY KEY (shown this once, never again: write it down or store it offline, away from this controller):',
        '',
        `    ${r.recoveryKey}`,
        '',
      ];
  return [
    `backup key ${r.name} created (fingerprint ${r.fingerprint})`,
    bar,
    ...where,
    'Without it, losing this controller makes every backup under this key unreadable.',
    `On a new controller: vmlink backup key import ${r.name} (the recovery key on stdin or --file).`,
    bar,
  ].join('\n');
}

/** `vmlink backup restore-test`. */
export function renderRestoreTest(r: RestoreTestResult): string {
  if (r.results.length === 0) return `policy ${r.policy}: no VM to test`;
  return table(
    ['VM', 'SNAPSHOT', 'RESULT', 'TIME TO GUEST AGENT', 'RESTORE', 'BOOT', 'ERROR'],
    r.results.map((t) => [
      t.vm,
      t.snapshot,
      t.ok ? 'ok' : 'FAILED',
      t.seconds === undefined ? undefined : formatMinutes(t.seconds / 60),
      t.restoreSeconds === undefined ? undefined : formatMinutes(t.restoreSeconds / 60),
      t.bootSeconds === undefined ? undefined : formatMinutes(t.bootSeconds / 60),
      t.error,
    ]),
  );
}

/** `vmlink restore SNAPSHOT ...` (not --file without --out: that prints the file itself). */
export function renderRestore(r: RestoreResult, out?: string): string {
  const took = `${r.seconds.toFixed(1)} s`;
  if (r.file)
    return `${r.file.path} (${formatBytes(r.file.size)}) from ${r.snapshot} written to ${out ?? 'stdout'} (read on ${r.host} in ${took})`;
  if (r.vm)
    return `restored ${r.snapshot} from ${r.store} as VM ${r.vm} on ${r.host}: ${formatBytes(r.bytesWritten)} written in ${took}`;
  return `restored ${r.snapshot} from ${r.store} on ${r.host}: ${formatBytes(r.bytesWritten)} written in ${took}`;
}

/** `vmlink restore list`. */
export function renderRestoredVms(r: z.output<typeof RestoredVmListSchema>): string {
  if (r.restored.length === 0) return 'no restored VMs';
  return table(
    ['VM', 'HOST', 'SNAPSHOT', 'STORE', 'RESTORED'],
    r.restored.map((v) => [v.name, v.host, v.snapshot, v.store, formatTime(v.at)]),
  );
}
