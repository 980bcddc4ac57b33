import { describe, expect, it } from 'vitest';
import type { DrillReport } from '../shared/cluster.js';
import { drillPassed, renderDrillReport } from './drill-commands.js';

const report: DrillReport = {
  kind: 'partition',
  target: 'host2',
  startedAt: '2026-12-01T11:00:00.000Z',
  detectedS: 10.21,
  vms: [
    { vm: 'web', from: 'host2', to: 'host3', stoppedS: 8.05, restartedS: 11.4, guestAnswersS: 19.93 },
    { vm: 'db', from: 'host2' },
  ],
  invariants: [
    { name: 'no-vm-twice', ok: true, detail: 'never two QEMU processes of one VM in one sample' },
    { name: 'converged', ok: false, detail: '1 step(s) left: + start db on host2' },
  ],
  samples: { everyMs: 100, count: 412 },
  restored: true,
  notes: ['db has no `ha: { state: started }`: HA leaves it down with its host'],
};

describe('vmlink drill rendering', () => {
  it('shows detection, each VM from -> to with its times, the reference times, invariants and notes', () => {
    expect(renderDrillReport(report)).toBe(
      [
        'Drill partition of host2 (started 2026-12-01T11:00:00.000Z)',
        'Detected:  10.2 s',
        '',
        'VM   from   to               stopped there  QEMU running  guest answers',
        'web  host2  host3            8.1 s          11.4 s        19.9 s',
        'db   host2  (not restarted)  -              -             -',
        'Slowest restart 11.4 s; for reference: vSphere HA ~15 s, Proxmox VE HA ~120 s',
        '',
        'Invariants:',
        '  ✓ no-vm-twice  never two QEMU processes of one VM in one sample',
        '  ✗ converged    1 step(s) left: + start db on host2',
        '',
        'Sampled every 100 ms (412 samples). Lab restored: yes.',
        'Notes:',
        '  - db has no `ha: { state: started }`: HA leaves it down with its host',
      ].join('\n'),
    );
  });

  it('shows the takeover for a controller drill, and fails a report with a broken invariant or no repair', () => {
    const c: DrillReport = {
      ...report,
      kind: 'controller-failure',
      target: 'active',
      takeoverS: 3.26,
      vms: [],
    };
    expect(renderDrillReport(c)).toMatch(/^Takeover: {2}3\.3 s until a standby was active$/m);
    expect(drillPassed(report)).toBe(false);
    const ok = { ...report, invariants: report.invariants.map((i) => ({ ...i, ok: true })) };
    expect(drillPassed(ok)).toBe(true);
    expect(drillPassed({ ...ok, restored: false })).toBe(false);
  });
});
