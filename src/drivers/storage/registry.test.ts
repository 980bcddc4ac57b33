// Every registered storage backend runs the conformance suite against real qemu-img/qemu-io; the pool backends run
// theirs in their own test files (dir-pool.test.ts, and the iscsi/nfs integration tests).
import { describe, expect, it } from 'vitest';
import { SystemRunner } from '../../exec/runner.js';
import { UnsupportedError } from '../../shared/errors.js';
import { POOL_FEATURES, PoolTypes } from '../../shared/storage.js';
import { storageConformance } from './conformance.js';
import { poolBackend, poolBackends, storageDrivers } from './registry.js';

for (const [name, make] of Object.entries(storageDrivers)) storageConformance(name, (env) => make(env));

describe('pool backends', () => {
  const opts = { runner: new SystemRunner(), stateDir: '/nonexistent', storageHost: 'h1' };
  it('builds each registered type with the features it declares, and refuses an unregistered one', () => {
    expect(poolBackends.dir).toBeDefined();
    for (const type of PoolTypes) {
      if (!poolBackends[type]) {
        expect(() => poolBackend(type, opts)).toThrow(UnsupportedError);
        continue;
      }
      const b = poolBackend(type, opts);
      expect(b.type).toBe(type);
      expect(b.features).toEqual(POOL_FEATURES[type]);
      // Fencing is a method only the backends that declare it have (the agent refuses it for the others).
      expect(typeof b.fenceVolume === 'function', type).toBe(POOL_FEATURES[type].fence);
    }
  });
});
