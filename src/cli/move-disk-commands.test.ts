import { describe, expect, it } from 'vitest';
import { renderMoveDisk } from './move-disk-commands.js';

describe('vm move-disk output', () => {
  it('says where the disk went, how long it took, what it holds, and what to do next', () => {
    const text = renderMoveDisk({
      vm: 'db',
      disk: 'scratch',
      host: 'host1',
      from: 'pool local',
      pool: 'fast',
      volume: 'db-scratch',
      ms: 843,
      allocatedMiB: 2.4,
      specSays: false,
      next: 'edit the spec (vms db disks scratch pool: fast) before the next apply, which refuses otherwise',
    });
    expect(text.split('\n')).toEqual([
      'vm db: disk scratch moved from pool local to pool fast (volume db-scratch) on host1 in 0.8 s, 2 MiB allocated in the new volume',
      '  next: edit the spec (vms db disks scratch pool: fast) before the next apply, which refuses otherwise',
    ]);
  });
});
