import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../exec/runner.js';
import { ConflictError, InvalidRequestError, NotFoundError, UnsupportedError } from '../../shared/errors.js';
import { POOL_FEATURE_REASONS, POOL_FEATURES, type PoolConfig } from '../../shared/storage.js';
import { IscsiPool } from './iscsi.js';
import { nextTid, refuseInUse, targetProblems, wantedTarget } from './iscsi-targets.js';
import type { TgtTarget } from './tgt-show.js';

const pool: PoolConfig = {
  name: 'san',
  type: 'iscsi',
  path: '/srv/pools/san',
  chap: { user: 'vmlink', secret: 'chap' },
  clients: ['10.0.0.0/24'],
};

function target(over: Partial<TgtTarget> = {}): TgtTarget {
  return {
    tid: 3,
    name: 'iqn.2026-12.io.vmlink:st1.san.v1',
    sessions: [],
    luns: [
      { lun: 0, type: 'controller', backingStoreType: 'null' },
      { lun: 1, type: 'disk', backingStoreType: 'rdwr', backingStorePath: '/srv/pools/san/v1.img' },
    ],
    accounts: ['vmlink'],
    outgoingAccounts: [],
    acls: ['10.0.0.0/24'],
    ...over,
  };
}

describe('iscsi targets', () => {
  const want = wantedTarget('st1', pool, 'v1', '/srv/pools/san/v1.img');

  it('wants one target per volume with LUN 1, the CHAP account and the client ACL (ALL without clients)', () => {
    expect(want).toEqual({
      name: 'iqn.2026-12.io.vmlink:st1.san.v1',
      backingStore: '/srv/pools/san/v1.img',
      account: 'vmlink',
      acls: ['10.0.0.0/24'],
    });
    expect(wantedTarget('st1', { ...pool, clients: ['10.0.0.7/32'] }, 'v1', '/x.img').acls).toEqual([
      '10.0.0.7',
    ]);
    const open = wantedTarget('st1', { ...pool, chap: undefined, clients: undefined }, 'v1', '/x.img');
    expect(open.acls).toEqual(['ALL']);
    expect(open.account).toBeUndefined();
  });

  it('reports what differs from the wanted target', () => {
    expect(targetProblems(want, target())).toEqual([]);
    expect(targetProblems(want, undefined)).toEqual(['target iqn.2026-12.io.vmlink:st1.san.v1 is missing']);
    expect(targetProblems(want, target({ accounts: [], acls: ['ALL'] }))).toEqual([
      'target iqn.2026-12.io.vmlink:st1.san.v1: CHAP account vmlink is not bound',
      'target iqn.2026-12.io.vmlink:st1.san.v1: allows ALL, not 10.0.0.0/24',
    ]);
    expect(targetProblems(want, target({ luns: [] }))[0]).toMatch(/LUN 1 is not backed by/);
  });

  it('names the initiators of a volume in use', () => {
    const busy = target({
      sessions: [
        {
          nexus: 1,
          initiator: 'iqn.2008-11.org.linux-kvm',
          addresses: ['10.0.0.5'],
          connections: [{ cid: 0, address: '10.0.0.5' }],
        },
      ],
    });
    expect(() => refuseInUse('v1', busy, 'resize it')).toThrow(
      'volume v1 is in use by initiator iqn.2008-11.org.linux-kvm (10.0.0.5): cannot resize it',
    );
    expect(() => refuseInUse('v1', busy, 'x')).toThrow(ConflictError);
    expect(() => refuseInUse('v1', target(), 'x')).not.toThrow();
  });

  it('picks the next target id after the highest', () => {
    expect(nextTid([])).toBe(1);
    expect(nextTid([target({ tid: 2 }), target({ tid: 7 })])).toBe(8);
  });
});

describe('IscsiPool refusals (before tgtd is asked)', () => {
  let dir = '';
  let p: IscsiPool;
  let local: PoolConfig;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-iscsi-'));
    // No tgtd listens on this prefix: a refusal that reached tgtd would fail differently (UnavailableError).
    p = new IscsiPool({
      runner: new RecordingRunner(),
      stateDir: dir,
      storageHost: 'st1',
      tgtControlPort: 1,
      socketPrefix: join(dir, 'none'),
    });
    local = { ...pool, path: join(dir, 'pool') };
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('declares no snapshots, online resize, linked clones or encryption, and refuses them with the reason', async () => {
    expect(p.features).toEqual(POOL_FEATURES.iscsi);
    await expect(p.createSnapshot(local)).rejects.toThrow(UnsupportedError);
    await expect(p.rollbackSnapshot(local)).rejects.toThrow(POOL_FEATURE_REASONS.iscsi!.snapshots!);
    await expect(p.deleteSnapshot(local)).rejects.toThrow(UnsupportedError);
    await expect(
      p.createVolume(local, {
        pool: 'san',
        name: 'c',
        sizeMiB: 8,
        format: 'raw',
        from: { volume: 'v', linked: true },
      }),
    ).rejects.toThrow(POOL_FEATURE_REASONS.iscsi!.linkedClones!);
    await expect(
      p.createVolume(local, {
        pool: 'san',
        name: 'e',
        sizeMiB: 8,
        format: 'raw',
        encryption: { secret: 'k' },
      }),
    ).rejects.toThrow(POOL_FEATURE_REASONS.iscsi!.encryption!);
  });

  it('refuses qcow2 volumes, bad names and sizes', async () => {
    await expect(
      p.createVolume(local, { pool: 'san', name: 'q', sizeMiB: 8, format: 'qcow2' }),
    ).rejects.toThrow(/iscsi volumes are raw/);
    await expect(
      p.createVolume(local, { pool: 'san', name: '../x', sizeMiB: 8, format: 'raw' }),
    ).rejects.toThrow(InvalidRequestError);
    await expect(
      p.createVolume(local, { pool: 'san', name: 'z', sizeMiB: 0, format: 'raw' }),
    ).rejects.toThrow(/whole number of MiB/);
    expect(
      () => new IscsiPool({ runner: new RecordingRunner(), stateDir: dir, storageHost: 'Bad Host' }),
    ).toThrow(InvalidRequestError);
  });

  it('refuses a pool without its CHAP secret value, and resizing a missing volume', async () => {
    await expect(p.ensurePool(local, 'h', undefined, [])).rejects.toThrow(
      'pool san: the value of CHAP secret chap did not come with the request',
    );
    await expect(p.resizeVolume(local, 'nope', 16)).rejects.toThrow(NotFoundError);
  });

  it('reports no pools before any was realised', async () => {
    expect(await p.listPools()).toEqual([]);
  });
});
