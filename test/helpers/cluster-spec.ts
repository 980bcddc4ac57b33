// Cluster specs for controller tests: three hosts on one vxlan network, VMs with HA policies.
import type { TaskContext } from '../../src/controller/tasks.js';

/** A three-host cluster spec on one vxlan network; `vms` is the text under `vms:`. */
export const clusterSpec = (vms: string, hosts = ['h1', 'h2', 'h3']) => `version: 1
cluster: { store: etcd, heartbeatSeconds: 5, endpoints: ["https://10.0.0.9:2379"] }
hosts:
${hosts.map((h, i) => `  - { name: ${h}, agent: "unix:///fake/${h}.sock", address: 10.0.0.${i + 1} }`).join('\n')}
networks:
  - { name: ov, mode: vxlan, vni: 100, cidr: 10.20.0.0/24 }
vms:
${vms}`;

/** A VM entry on the vxlan network; `extra` adds fields. */
export const vm = (name: string, extra = '') => `  - { name: ${name}, nics: [{ network: ov }]${extra} }\n`;

/** A task context that keeps its progress lines. */
export function task(): TaskContext & { lines: string[] } {
  const lines: string[] = [];
  return { lines, progress: (m) => lines.push(m), signal: new AbortController().signal };
}
