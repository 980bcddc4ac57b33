import { InvalidRequestError } from '../../shared/errors.js';
import { type EtcdConnection, etcdClient, parseEtcdLocation } from '../../shared/etcd.js';
import { EtcdStore } from './etcd.js';
import { SqliteStore } from './sqlite.js';
import type { Store } from './types.js';

/** TLS credentials for etcd, as PEM texts: the members' CA, and our certificate (CN = etcd user) and key. */
export type EtcdTls = NonNullable<EtcdConnection['tls']>;

/** Options of an etcd store. */
export interface EtcdStoreOpenOptions {
  /** Required for `etcd://` (TLS); refused for `etcd+http://` (plain, tests only). */
  tls?: EtcdTls;
}

/** The connection an etcd location names, with its credentials checked against its scheme. */
export function etcdConnection(location: string, opts: EtcdStoreOpenOptions = {}): EtcdConnection {
  const { endpoints, tls } = parseEtcdLocation(location);
  if (tls && !opts.tls)
    throw new InvalidRequestError(
      `${location} uses TLS: the controller's certificate, key and CA are needed (or etcd+http:// for tests)`,
    );
  if (!tls && opts.tls)
    throw new InvalidRequestError(
      `${location} is plain HTTP: TLS credentials given for it would not be used`,
    );
  return tls ? { endpoints, tls: opts.tls } : { endpoints };
}

/** Store implementations by name. */
export const stores = {
  sqlite: (path: string) => new SqliteStore(path),
  /** An etcd store that owns its client (`close()` closes it); share `store.client` with `EtcdCoordination`. */
  etcd: (location: string, opts: EtcdStoreOpenOptions = {}) =>
    new EtcdStore(etcdClient(etcdConnection(location, opts)), { ownsClient: true }),
} satisfies Record<string, (location: string, opts?: EtcdStoreOpenOptions) => Store>;

/** Which kind of store a location names: `etcd://…`/`etcd+http://…` is etcd, `sqlite://PATH` or a path SQLite. */
export function storeKind(location: string): 'sqlite' | 'etcd' {
  if (/^etcd(\+http)?:\/\//.test(location)) {
    parseEtcdLocation(location); // refuses a bad one here, naming its bad part
    return 'etcd';
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//.test(location) && !location.startsWith('sqlite://'))
    throw new InvalidRequestError(
      `unknown store location ${location}: use sqlite://PATH or etcd://ADDR:PORT[,...]`,
    );
  return 'sqlite';
}

/** Opens the store at `location`: `sqlite://PATH` (or a bare PATH), `etcd://A:P[,...]` (TLS) or `etcd+http://…`. */
export function openStore(location: string, opts: EtcdStoreOpenOptions = {}): Store {
  if (storeKind(location) === 'etcd') return stores.etcd(location, opts);
  const path = location.startsWith('sqlite://') ? location.slice('sqlite://'.length) : location;
  if (!path) throw new InvalidRequestError('sqlite:// needs a path (sqlite:///var/lib/vmlink/state.db)');
  return stores.sqlite(path);
}
