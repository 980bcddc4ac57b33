import { describe, expect, it } from 'vitest';
import type { VmConfig } from '../../../shared/model.js';
import { diskNodes, parseBlockstats } from './stats.js';

// The shape QEMU 7.2 answers `query-blockstats` with for -blockdev disks (an anonymous BlockBackend per device).
const entry = (node: string, wr: number) => ({
  device: '',
  qdev: `/machine/peripheral/${node}/virtio-backend`,
  'node-name': node,
  stats: {
    rd_bytes: 4096,
    wr_bytes: wr,
    rd_operations: 1,
    wr_operations: 2,
    flush_operations: 0,
    timed_stats: [],
  },
  parent: { 'node-name': `${node}-file`, stats: { wr_bytes: wr } },
});

const cfg = (kind: string, disks: string[]) =>
  ({ image: { kind }, disks: disks.map((name) => ({ name })) }) as unknown as VmConfig;

describe('VM disk counters from query-blockstats', () => {
  it('names disks by their node: root, then the spec disks by slot', () => {
    expect(diskNodes({ config: cfg('test-guest', ['data', 'logs']), diskSlots: [3, 0] })).toEqual(
      new Map([
        ['disk3', 'data'],
        ['disk0', 'logs'],
      ]),
    );
    expect([...diskNodes({ config: cfg('qcow2', []) }).entries()]).toEqual([['root', 'root']]);
  });

  it('reads the counters of known disks once each, and nothing it does not know', () => {
    const nodes = new Map([['disk0', 'data']]);
    const reply = [entry('disk0', 8192), entry('disk0', 1), entry('seed', 5), entry('disk9', 7)];
    expect(parseBlockstats(reply, nodes)).toEqual([
      { disk: 'data', readBytes: 4096, writeBytes: 8192, readOps: 1, writeOps: 2 },
    ]);
  });

  it('reads what a hostile QEMU could answer as nothing, or as zero counters', () => {
    const nodes = new Map([['disk0', 'data']]);
    expect(parseBlockstats({ return: [] }, nodes)).toEqual([]);
    expect(parseBlockstats([null, 'x', { 'node-name': 'disk0' }], nodes)).toEqual([]);
    const bad = { 'node-name': 'disk0', stats: { rd_bytes: -5, wr_bytes: 1e300, rd_operations: '3' } };
    expect(parseBlockstats([bad], nodes)).toEqual([
      { disk: 'data', readBytes: 0, writeBytes: 0, readOps: 0, writeOps: 0 },
    ]);
  });
});
