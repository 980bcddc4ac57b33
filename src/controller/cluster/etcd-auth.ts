// etcd's users and roles for a vmlink cluster (see docs/ha.md): with `--client-cert-auth` a client's etcd user is
// its certificate's CN, so the controllers (CN vmlink-controller) are root, and each compute host's agent (CN = host
// name) may write only its own lease key and fence report, and read the owner records and the membership.
import type { Etcd3 } from 'etcd3';
import { clusterKeys, ETCD_PREFIX, RESERVED_ETCD_USERS } from '../../shared/cluster.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { etcdFailure } from '../../shared/etcd.js';
import { CONTROLLER_NAME } from '../../shared/tls.js';
import { NAME_PATTERN } from '../../spec/schema.js';

/** etcd's built-in role that may do everything (auth included). */
const ROOT = 'root';

/** The role of host `host`'s agent. */
export const hostRole = (host: string): string => `host-${host}`;

/** One permission of a role: a single key, or every key below a prefix. */
export interface EtcdPermission {
  permType: 'Read' | 'Write' | 'Readwrite';
  key: string;
  prefix?: boolean;
}

/** What host `host`'s agent may do in etcd, and nothing more. */
export function hostPermissions(host: string): EtcdPermission[] {
  return [
    { permType: 'Readwrite', key: clusterKeys.hostLease(host) },
    { permType: 'Readwrite', key: clusterKeys.fenceReport(host) },
    { permType: 'Read', key: clusterKeys.kv('owners/'), prefix: true },
    { permType: 'Read', key: clusterKeys.members },
  ];
}

/** The end of the range of every key starting with `prefix` (etcd's convention: the prefix with its last byte + 1). */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const end = b.subarray(0, i + 1);
      end[i] = b[i]! + 1;
      return Buffer.from(end);
    }
  }
  return Buffer.from([0]);
}

/**
 * Makes etcd's users and roles what the cluster needs and enables auth: `root` and `vmlink-controller` with role
 * root, and per compute host a user named after it with role `host-<name>` (`hostPermissions`). Idempotent: what
 * exists is kept, what is missing is added (a re-run after an apply adds new hosts). Users have no password (etcd
 * 3.4's `no_password`): only a certificate with their CN can act as them. The client must be root (before auth is
 * enabled, any client of the CA is).
 */
export async function ensureEtcdAuth(client: Etcd3, hosts: readonly string[]): Promise<void> {
  for (const h of hosts)
    if (!NAME_PATTERN.test(h) || (RESERVED_ETCD_USERS as readonly string[]).includes(h))
      throw new InvalidRequestError(
        `host ${JSON.stringify(h)} cannot be an etcd user: ${RESERVED_ETCD_USERS.join(' and ')} are the controllers' and etcd's own`,
        `host/${h}`,
      );
  const auth = client.auth;
  try {
    const users = new Set((await auth.userList()).users);
    const roles = new Set((await auth.roleList()).roles);
    const addUser = async (name: string) => {
      if (!users.has(name)) await auth.userAdd({ name, options: { no_password: true } });
    };
    for (const u of [ROOT, CONTROLLER_NAME]) {
      await addUser(u);
      await auth.userGrantRole({ user: u, role: ROOT });
    }
    for (const h of hosts) {
      const role = hostRole(h);
      if (!roles.has(role)) await auth.roleAdd({ name: role });
      for (const p of hostPermissions(h))
        await auth.roleGrantPermission({
          name: role,
          perm: {
            permType: p.permType,
            key: Buffer.from(p.key),
            range_end: p.prefix ? prefixEnd(p.key) : Buffer.alloc(0),
          },
        });
      await addUser(h);
      await auth.userGrantRole({ user: h, role });
    }
    // etcd 3.4 has no AuthStatus; enabling is a no-op once enabled.
    await auth.authEnable();
  } catch (e) {
    throw etcdFailure(e, `setting up users and roles below ${ETCD_PREFIX}`);
  }
}
