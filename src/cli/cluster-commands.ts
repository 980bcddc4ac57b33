// `vmlink cluster status`: which controller is active, which stand by, etcd's members and the hosts' leases, as
// the controller the CLI reaches sees them (a standby answers this too).
import type { Command } from 'commander';
import { type ClusterView, ClusterViewSchema } from '../controller/wire-cluster.js';
import { type Api, emit } from './io.js';
import { table } from './render.js';

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

/** The human rendering of `GET /v1/cluster`. */
export function renderCluster(v: ClusterView): string {
  const lines: string[] = [];
  const s = v.self;
  lines.push(
    `store: ${v.store}`,
    `this controller: ${s.name} (pid ${s.pid}, ${s.address}${s.tcp ? `, ${s.tcp}` : ''}): ${s.role} since ${s.roleSince}`,
  );
  if (v.active)
    lines.push(
      `active controller: ${v.active.name}${v.active.pid ? ` (pid ${v.active.pid})` : ''} at ${v.active.address}${v.active.tcp ? `, ${v.active.tcp}` : ''}`,
    );
  else lines.push('active controller: none known');
  if (v.store === 'etcd') {
    lines.push('', 'etcd members:');
    lines.push(
      v.members.length === 0
        ? '  (none answered)'
        : table(
            ['MEMBER', 'ENDPOINT', 'HEALTH', 'LEADER', 'ERROR'],
            v.members.map((m) => [
              m.name,
              m.endpoint,
              m.healthy ? 'healthy' : 'UNHEALTHY',
              m.isLeader ? 'leader' : m.hasLeader === false ? 'NO LEADER' : '',
              m.error,
            ]),
          ),
    );
    lines.push('', 'host leases:');
    lines.push(
      v.hosts.length === 0
        ? '  (no host holds a lease)'
        : table(
            ['HOST', 'LEASE', 'HEARTBEAT', 'SEEN FOR', 'GRANTED'],
            v.hosts.map((h) => [h.host, h.leaseId, `${h.heartbeatSeconds}s`, seconds(h.ageMs), h.since]),
          ),
    );
  }
  if (v.problems.length) lines.push('', 'problems:', ...v.problems.map((p) => `  ${p}`));
  return lines.join('\n');
}

/** `vmlink cluster ...`. */
export function addClusterCommands(program: Command, api: Api): void {
  const cluster = program
    .command('cluster')
    .description('the cluster: controllers, etcd members, host leases');
  cluster
    .command('status')
    .description(
      'which controller is active and which stand by, etcd members and their health, the hosts holding a lease',
    )
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const v = await api().get('/v1/cluster', ClusterViewSchema);
      emit(!!o.json, v, () => renderCluster(v));
    });
}
