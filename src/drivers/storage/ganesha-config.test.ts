import { describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../shared/errors.js';
import type { PoolConfig } from '../../shared/storage.js';
import { ganeshaExportOf, renderGaneshaConfig } from './ganesha-config.js';

const owner = { uid: 2_000_000_000, gid: 2_000_000_000 };
const nfsPool = (name: string, extra: Partial<PoolConfig> = {}): PoolConfig => ({
  name,
  type: 'nfs',
  path: `/var/lib/vmlink/pools/${name}`,
  nfs: { exportId: 100 + name.length, pseudoPath: `/vmlink/${name}` },
  ...extra,
});

describe('renderGaneshaConfig', () => {
  it('golden: two exports, one open to any client, one to two networks', async () => {
    const conf = renderGaneshaConfig({
      dir: '/var/lib/vmlink/nfs',
      owner,
      exports: [
        ganeshaExportOf(nfsPool('nas')),
        ganeshaExportOf(nfsPool('vmdisks', { clients: ['10.0.0.0/24', 'fd00::/64'] })),
      ],
    });
    await expect(conf).toMatchFileSnapshot('__golden__/ganesha-two-exports.conf');
  });

  it('golden: no exports', async () => {
    const conf = renderGaneshaConfig({ dir: '/srv/nfs', owner, exports: [] });
    await expect(conf).toMatchFileSnapshot('__golden__/ganesha-no-exports.conf');
  });

  it('refuses quotes, newlines, relative paths and dot-dot in paths', () => {
    for (const path of ['/a"b', '/a\nEXPORT {', 'rel/path', '/a/../etc', '/a b', '/a;b', '/a}']) {
      const e = { exportId: 1, path, pseudoPath: '/vmlink/x' };
      expect(() => renderGaneshaConfig({ dir: '/srv', owner, exports: [e] })).toThrow(InvalidRequestError);
      const p = { exportId: 1, path: '/srv/x', pseudoPath: path };
      expect(() => renderGaneshaConfig({ dir: '/srv', owner, exports: [p] })).toThrow(InvalidRequestError);
    }
    expect(() => renderGaneshaConfig({ dir: '/srv"', owner, exports: [] })).toThrow(InvalidRequestError);
  });

  it('refuses clients that are not addresses or networks', () => {
    for (const c of ['*', 'host.example', '10.0.0.0/24; Access_Type = RW', '"10.0.0.1"', '10.0.0.1\n}']) {
      const e = { exportId: 1, path: '/srv/x', pseudoPath: '/vmlink/x', clients: [c] };
      expect(() => renderGaneshaConfig({ dir: '/srv', owner, exports: [e] })).toThrow(InvalidRequestError);
    }
  });

  it('refuses a root or out-of-range owner, bad export ids, and two exports sharing an id or pseudo path', () => {
    for (const o of [
      { uid: 0, gid: 5 },
      { uid: 5, gid: 0 },
      { uid: -1, gid: 5 },
      { uid: 1.5, gid: 5 },
    ])
      expect(() => renderGaneshaConfig({ dir: '/srv', owner: o, exports: [] })).toThrow(InvalidRequestError);
    for (const exportId of [0, 65_535, 1.5])
      expect(() =>
        renderGaneshaConfig({ dir: '/srv', owner, exports: [{ exportId, path: '/a', pseudoPath: '/b' }] }),
      ).toThrow(InvalidRequestError);
    const a = { exportId: 1, path: '/a', pseudoPath: '/vmlink/a' };
    expect(() =>
      renderGaneshaConfig({
        dir: '/srv',
        owner,
        exports: [a, { ...a, path: '/b', pseudoPath: '/vmlink/b' }],
      }),
    ).toThrow(/used twice/);
    expect(() => renderGaneshaConfig({ dir: '/srv', owner, exports: [a, { ...a, exportId: 2 }] })).toThrow(
      /used twice/,
    );
  });

  it('ganeshaExportOf refuses a pool that is not nfs or lacks its export settings', () => {
    expect(() => ganeshaExportOf({ name: 'd', type: 'dir', path: '/d' })).toThrow(InvalidRequestError);
    expect(() => ganeshaExportOf({ name: 'n', type: 'nfs', path: '/n' })).toThrow(InvalidRequestError);
    expect(ganeshaExportOf(nfsPool('p', { clients: [] }))).toEqual({
      exportId: 101,
      path: '/var/lib/vmlink/pools/p',
      pseudoPath: '/vmlink/p',
    });
  });
});
