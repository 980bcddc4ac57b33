// What apply writes to etcd for a cluster besides the Store: each host's etcd user and role (so its agent may hold
// its lease and read owner records) and the membership agents read for the outage check (`clusterKeys.members`,
// outside the Store's kv prefix, written through the etcd store's own method).
import type { Etcd3 } from 'etcd3';
import type { ClusterMembers } from '../../shared/cluster.js';
import { AGENT_TCP_PORT } from '../../shared/paths.js';
import type { Spec } from '../../spec/schema.js';
import { hostAddress } from '../../spec/topology.js';
import { ensureEtcdAuth } from '../cluster/etcd-auth.js';

/** The etcd side of a cluster that apply prepares (an `EtcdStore` provides both). */
export interface ClusterEtcd {
  readonly client: Etcd3;
  /** Writes the membership unless it is unchanged; whether it was written. */
  putClusterMembers(members: ClusterMembers): Promise<boolean>;
}

/**
 * The membership of `spec` as agents read it: its compute hosts and where their agents answer peers over mutual TLS
 * (the spec's `https://` agent address, else the host's underlay address on the agent's TCP port, as a lab runs
 * it). A host with neither (reached over a unix socket only) is still listed, as `none`: no peer can ask it, so
 * no peer can prove an outage etcd-wide while it is in the cluster (leaving it out would let a partitioned host
 * wrongly prove one).
 */
export function clusterMembersOf(spec: Spec): ClusterMembers {
  const hosts = spec.hosts
    .filter((h) => h.role !== 'storage')
    .flatMap((h) => {
      if (h.agent?.startsWith('https://')) return [{ name: h.name, agent: h.agent }];
      const addr = hostAddress(spec, h);
      return [{ name: h.name, agent: addr ? `https://${addr}:${AGENT_TCP_PORT}` : 'none' }];
    });
  return { heartbeatSeconds: spec.cluster?.heartbeatSeconds ?? 5, hosts };
}

/** Prepares etcd for `spec`'s hosts: their users and roles (idempotent; unless `auth` is false), then the membership. */
export async function prepareClusterEtcd(
  etcd: ClusterEtcd,
  spec: Spec,
  auth = true,
): Promise<ClusterMembers> {
  const compute = spec.hosts.filter((h) => h.role !== 'storage').map((h) => h.name);
  if (auth) await ensureEtcdAuth(etcd.client, compute);
  const members = clusterMembersOf(spec);
  await etcd.putClusterMembers(members);
  return members;
}
