import { describe, expect, it } from 'vitest';
import { clusterKeys } from '../../shared/cluster.js';
import { ensureEtcdAuth, hostPermissions, hostRole, prefixEnd } from './etcd-auth.js';

describe('etcd roles', () => {
  it('lets a host write its own lease key and fence report and read owner records and the membership, nothing else', () => {
    expect(hostRole('host2')).toBe('host-host2');
    expect(hostPermissions('host2')).toEqual([
      { permType: 'Readwrite', key: '/vmlink/leases/hosts/host2' },
      { permType: 'Readwrite', key: '/vmlink/fence/host2' },
      { permType: 'Read', key: '/vmlink/kv/owners/', prefix: true },
      { permType: 'Read', key: clusterKeys.members },
    ]);
  });

  it("ends a prefix's range where etcd does (last byte + 1)", () => {
    expect(prefixEnd('/vmlink/kv/owners/').toString()).toBe('/vmlink/kv/owners0');
    expect(prefixEnd('ab').toString()).toBe('ac');
  });

  it('refuses host names that are etcd users of vmlink, before touching etcd', async () => {
    const never = new Proxy({}, { get: () => expect.unreachable('etcd was called') }) as never;
    await expect(ensureEtcdAuth(never, ['host1', 'root'])).rejects.toThrow(/cannot be an etcd user/);
    await expect(ensureEtcdAuth(never, ['vmlink-controller'])).rejects.toThrow(/cannot be an etcd user/);
  });
});
