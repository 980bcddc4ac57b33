import { describe, expect, it } from 'vitest';
import type { Status } from '../controller/wire.js';
import { renderTuning } from './render-tuning.js';

const host = (
  name: string,
  extra: Partial<Status['hosts'][number]> = {},
  tuning = true,
): Status['hosts'][number] => ({
  name,
  address: `unix:///run/${name}.sock`,
  reachable: true,
  state: 'up',
  report: {
    host: name,
    agentVersion: 'test',
    capabilities: {
      accelerator: 'tcg',
      acceleratorReason: 'test',
      cpus: 2,
      memoryMiB: 2048,
      network: {},
      backends: ['linux'],
      ...(tuning
        ? {
            tuning: {
              congestion: ['bbr', 'reno'],
              congestionAvailable: ['reno', 'bbr'],
              congestionAllowed: ['reno', 'bbr'],
              rootNamespace: false,
              keys: ['congestion', 'mtuProbing', 'ecn', 'fastOpen'],
              current: { congestion: 'bbr', mtuProbing: 0, ecn: 1, fastOpen: 1 },
            },
          }
        : {}),
    },
    networks: [],
    vms: [],
  },
  ...extra,
});

describe('status: tuning', () => {
  it('shows each reporting host its values, and against the spec where it sets tuning', () => {
    expect(
      renderTuning([
        host('host1', { tuningDrift: [] }),
        host('host2', { tuningDrift: ['ecn 1 -> 0'] }),
        host('host3'),
        host('old', {}, false),
      ]),
    ).toEqual([
      'Tuning:',
      '  host1: congestion bbr, mtuProbing 0, ecn 1, fastOpen 1 (as the spec says)',
      '  host2: congestion bbr, mtuProbing 0, ecn 1, fastOpen 1 (drift from the spec: ecn 1 -> 0)',
      '  host3: congestion bbr, mtuProbing 0, ecn 1, fastOpen 1',
    ]);
    expect(renderTuning([host('old', {}, false)])).toEqual([]);
  });
});
