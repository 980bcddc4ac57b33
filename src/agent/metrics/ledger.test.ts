import { describe, expect, it } from 'vitest';
import { ProcessCpuLedger } from './ledger.js';

const p = (pid: number, ppid: number, ticks: number, startTime = pid * 10) => ({
  pid,
  ppid,
  ticks,
  startTime,
});

describe('ProcessCpuLedger', () => {
  it('counts each process once: a child its parent waited for lives on in the parent', () => {
    const l = new ProcessCpuLedger();
    expect(l.update([p(10, 1, 100), p(11, 10, 50)])).toBe(150);
    // 11 exited and 10 waited for it: 10's ticks now hold 11's 60.
    expect(l.update([p(10, 1, 100 + 60)])).toBe(160);
  });

  it('keeps the ticks of a process whose parent is not in the set', () => {
    const l = new ProcessCpuLedger();
    expect(l.update([p(10, 1, 100), p(20, 1, 40)])).toBe(140);
    expect(l.update([p(10, 1, 110)])).toBe(150);
    // A new process with the old pid is another process.
    expect(l.update([p(10, 1, 110), p(20, 1, 5, 999)])).toBe(155);
  });

  it('never goes back, even when a parent never waits for its children', () => {
    const l = new ProcessCpuLedger();
    expect(l.update([p(10, 1, 100), p(11, 10, 50)])).toBe(150);
    expect(l.update([p(10, 1, 100)])).toBe(150);
    expect(l.update([p(10, 1, 120)])).toBe(150);
    expect(l.update([p(10, 1, 160)])).toBe(160);
  });
});
