import { describe, expect, it } from 'vitest';
import type { BackupStatus } from '../controller/wire-backup.js';
import {
  formatBytes,
  formatMinutes,
  objectivesOk,
  printable,
  renderBackupStatus,
  renderKeyCreated,
  renderSync,
} from './render-backup.js';

const status: BackupStatus = {
  objectives: [
    {
      policy: 'nightly',
      vm: 'web1',
      rpo: { state: 'ok', objectiveMinutes: 15, newestAgeMinutes: 4.5, newest: 'web1@20261201T115530Z' },
      rto: { state: 'drift', objectiveMinutes: 30, measuredMinutes: 41, measuredAt: '2026-12-01T03:00:00Z' },
      rule: { state: 'drift', rule: '3-2-1', copies: 2, machines: 2, offsite: 0, stores: ['site'] },
      problems: [
        'RTO 30 min: the restore test at 2026-12-01T03:00:00.000Z took 41 min',
        '3-2-1: web1@20261201T115530Z has 2 copies (needs 3), no offsite copy (needs 1): vmlink backup sync (offsite vault lacks it)',
      ],
    },
    {
      policy: 'nightly',
      vm: 'db',
      rpo: { state: 'unknown' },
      rto: { state: 'unknown' },
      rule: { state: 'unknown', rule: 'none', copies: 1, machines: 1, offsite: 0, stores: [] },
      problems: [],
    },
  ],
  policies: [
    {
      name: 'nightly',
      store: 'site',
      schedule: 'every 10m',
      lastRunAt: '2026-12-01T11:55:30Z',
      lastOutcome: 'failed',
      lastError: 'host host1 is unreachable',
      nextRunAt: '2026-12-01T12:05:30Z',
    },
  ],
  stores: [
    {
      name: 'site',
      host: 'backup1',
      offsite: false,
      reachable: true,
      snapshots: 12,
      storedBytes: 3 * 1024 ** 3,
      freeBytes: 50 * 1024 ** 3,
    },
    { name: 'vault', host: 'backup2', offsite: true, reachable: false, reason: 'agent did not answer' },
  ],
};

describe('backup rendering', () => {
  it('formats sizes and durations', () => {
    expect([
      formatBytes(0),
      formatBytes(1023),
      formatBytes(4 * 1024 ** 2),
      formatBytes(1.5 * 1024 ** 4),
      formatBytes(undefined),
    ]).toEqual(['0 B', '1023 B', '4.0 MiB', '1.5 TiB', undefined]);
    expect([formatMinutes(0.5), formatMinutes(14.25), formatMinutes(180), formatMinutes(4320)]).toEqual([
      '30 s',
      '14.3 min',
      '3.0 h',
      '3.0 d',
    ]);
  });
  it('status: objectives per VM, schedules, stores, then every problem', () => {
    const text = renderBackupStatus(status);
    const lines = text.split('\n');
    expect(lines[0]).toMatch(
      /^POLICY\s+VM\s+NEWEST GOOD\s+RPO \(age\/objective\)\s+RTO \(measured\/objective\)\s+3-2-1$/,
    );
    expect(lines[1]).toMatch(
      /^nightly\s+web1\s+web1@20261201T115530Z\s+ok 4\.5 min \/ 15 min\s+DRIFT 41 min \/ 30 min\s+DRIFT 2 copies, 2 machines, 0 offsite$/,
    );
    expect(lines[2]).toMatch(
      /^nightly\s+db\s+-\s+no snapshot\s+no test\s+- \(1 copy, 1 machine, 0 offsite\)$/,
    );
    expect(text).toContain('failed: host host1 is unreachable');
    expect(text).toContain('2026-12-01 12:05:30Z');
    expect(text).toMatch(/vault\s+backup2\s+yes\s+unreachable: agent did not answer/);
    expect(text).toMatch(/site\s+backup1\s+no\s+up\s+12\s+3\.0 GiB\s+50\.0 GiB/);
    expect(text).toContain('problems:\n  nightly/web1: RTO 30 min');
    expect(objectivesOk(status)).toBe(false);
    expect(
      objectivesOk({ ...status, objectives: [status.objectives[1] as BackupStatus['objectives'][number]] }),
    ).toBe(true);
  });
  it('status with no policies says where to declare them', () => {
    expect(renderBackupStatus({ objectives: [], policies: [], stores: [] })).toBe(
      'no backup policies (declare them under backups: in the spec)',
    );
  });
  it('the recovery key is printed between bars with how to import it', () => {
    const text = renderKeyCreated({ name: 'bk', fingerprint: 'ab'.repeat(16), recoveryKey: 'AAAA-BBBB' });
    expect(text).toContain('\n    AAAA-BBBB\n');
    expect(text).toContain('vmlink backup key import bk');
    expect(
      renderKeyCreated({ name: 'bk', fingerprint: 'ab'.repeat(16), recoveryKey: 'AAAA-BBBB' }, '/root/bk'),
    ).not.toContain('AAAA');
  });
  it('sync says what crossed', () => {
    expect(
      renderSync({
        results: [
          {
            store: 'vault',
            from: 'site',
            snapshotsPulled: ['web1@20261201T115530Z'],
            chunksFetched: 3,
            bytesFetched: 12 * 1024 ** 2,
            chunksAlreadyThere: 500,
          },
        ],
      }),
    ).toBe(
      'vault <- site: 1 snapshot pulled, 3 chunks fetched (12.0 MiB), 500 already there\n  web1@20261201T115530Z',
    );
  });
});

describe('printable', () => {
  it('turns control characters into ? and keeps newlines and text', () => {
    expect(printable('ok\n\u001b[2J\u0007bad\ttab\u009b31m é')).toBe('ok\n?[2J?bad?tab?31m é');
  });
});
