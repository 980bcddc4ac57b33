// A lab spec with every kind of pool, and what its hosts report once it is realised: shared by the storage plan
// tests (resolve, diff, destroy, checks).

import { parse as parseYaml } from 'yaml';
import type { HostReport, ObservedVm } from '../shared/model.js';
import type { ObservedPool } from '../shared/storage.js';
import { loadSpec } from '../spec/load.js';
import type { Spec } from '../spec/schema.js';
import { networkConfigHash, vmConfigHash } from './hash.js';
import type { DesiredState } from './resolve.js';
import { poolConfigHash } from './storage-changes.js';

/** host1 and host2 compute, san1 storage (iscsi with CHAP, nfs), a dir pool on host1. */
export const STORAGE_SPEC = `
version: 1
hosts:
  - { name: host1 }
  - { name: host2 }
  - { name: san1, role: storage }
networks:
  - { name: iso, host: host1, mode: isolated, cidr: 10.20.0.0/24 }
  - { name: iso2, host: host2, mode: isolated, cidr: 10.21.0.0/24 }
pools:
  - { name: local, type: dir, host: host1 }
  - { name: san, type: iscsi, host: san1, chap: { user: vmlink, secret: san-chap } }
  - { name: nas, type: nfs, host: san1, maxOvercommit: 2 }
volumes:
  - { name: tmpl, pool: nas, sizeMiB: 2048 }
  - { name: data, pool: san, sizeMiB: 512 }
vms:
  - name: web1
    host: host1
    image: { kind: volume, pool: nas, volume: tmpl, clone: true }
    disks:
      - { name: scratch, sizeMiB: 64 }
      - { name: logs, pool: local, sizeMiB: 128 }
      - { name: data, pool: san, volume: data }
    nics: [{ network: iso }]
  - name: db1
    host: host2
    disks: [{ name: db, pool: nas, sizeMiB: 1024 }]
    nics: [{ network: iso2 }]
lab:
  name: st
  lan: { cidr: 192.168.50.0/24, gateway: 192.168.50.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.1 }
  hosts: [{ name: host1, address: 192.168.50.10 }, { name: host2, address: 192.168.50.11 }]
  storage: [{ name: san1, address: 192.168.50.20 }]
`;

// biome-ignore lint/suspicious/noExplicitAny: raw documents are edited freely by the tests.
type Raw = any;

/** The spec above, changed first by `edit` (on the parsed YAML document). */
export function storageSpec(edit?: (doc: Raw) => void): Spec {
  const doc: Raw = parseYaml(STORAGE_SPEC);
  edit?.(doc);
  return loadSpec(JSON.stringify(doc));
}

const caps = {
  accelerator: 'tcg' as const,
  acceleratorReason: 'test',
  cpus: 4,
  memoryMiB: 4096,
  network: {},
  backends: ['linux' as const],
};

/** What the hosts report once `desired` is realised: every VM in `state`, every volume at its desired size. */
export function realised(desired: DesiredState, state: ObservedVm['state'] = 'running'): HostReport[] {
  return Object.entries(desired).map(([host, d]) => ({
    host,
    agentVersion: 'test',
    capabilities: caps,
    networks: d.networks.map((n) => ({
      name: n.name,
      bridge: n.bridge,
      configHash: networkConfigHash(n),
      problems: [],
      config: n,
    })),
    vms: d.vms.map((v) => ({ name: v.name, state, configHash: vmConfigHash(v), problems: [], config: v })),
    pools: (d.pools ?? []).map(
      (p): ObservedPool => ({
        name: p.name,
        type: p.type,
        configHash: poolConfigHash(p),
        problems: [],
        config: p,
        capacityMiB: 10_000,
        usedMiB: 1_000,
        freeMiB: 9_000,
        volumes: (d.volumes ?? [])
          .filter((v) => v.config.pool === p.name)
          .map((v) => ({
            name: v.config.name,
            format: v.config.format,
            sizeMiB: v.config.sizeMiB,
            allocatedMiB: 1,
            encrypted: v.config.encryption !== undefined,
            snapshots: [],
          })),
      }),
    ),
  }));
}
