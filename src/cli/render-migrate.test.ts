import { describe, expect, it } from 'vitest';
import { renderExplain } from './render-migrate.js';

describe('renderExplain', () => {
  it('marks blockers, warnings and passes, with the fix under each failed check', () => {
    const text = renderExplain({
      vm: 'web',
      from: 'host1',
      to: 'host2',
      ok: false,
      blockMigration: false,
      copiedDisks: [],
      checks: [
        { id: 'vm-running', ok: true, severity: 'info', message: 'vm web is running on host1' },
        {
          id: 'network:lan',
          ok: false,
          severity: 'blocker',
          message: 'network lan is not on host2',
          fix: 'add it',
        },
        { id: 'cpu', ok: false, severity: 'warning', message: 'overcommitted' },
      ],
      estimate: {
        transferMiB: 256,
        bandwidthMiBps: 1000,
        bandwidthAssumed: true,
        seconds: 0.3,
        converges: true,
      },
    });
    expect(text.split('\n')).toEqual([
      'migrate vm web: host1 -> host2: blocked',
      '  ✓ vm web is running on host1',
      '  ✗ network lan is not on host2',
      '      fix: add it',
      '  ! overcommitted',
    ]);
  });
});
