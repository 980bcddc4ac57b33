// Names and references: what must be unique, and what must name something that exists.
import type { Spec } from '../schema.js';
import { isMultiHost } from '../topology.js';
import { type Add, dupes } from './common.js';

/** Names that must be unique: hosts, networks, VMs, a VM's disks, environments, lab segments and machines. */
export function checkDuplicates(spec: Spec, add: Add) {
  dupes(
    spec.hosts,
    (h) => h.name,
    (i) => `hosts[${i}].name`,
    'host name',
    add,
  );
  dupes(
    spec.networks,
    (n) => n.name,
    (i) => `networks[${i}].name`,
    'network name',
    add,
  );
  dupes(
    spec.vms,
    (v) => v.name,
    (i) => `vms[${i}].name`,
    'VM name',
    add,
  );
  spec.vms.forEach((v, vi) => {
    dupes(
      v.disks,
      (d) => d.name,
      (i) => `vms[${vi}].disks[${i}].name`,
      `disk name in VM "${v.name}"`,
      add,
    );
  });
  dupes(
    spec.site?.environments ?? [],
    (e) => e.name,
    (i) => `site.environments[${i}].name`,
    'environment name',
    add,
  );
  if (spec.lab) {
    dupes(
      spec.lab.segments,
      (s) => s.name,
      (i) => `lab.segments[${i}].name`,
      'lab segment name',
      add,
    );
    const lab = spec.lab;
    const machines = [
      ...lab.hosts.map((m, i) => ({ name: m.name, path: `lab.hosts[${i}].name` })),
      ...lab.peers.map((m, i) => ({ name: m.name, path: `lab.peers[${i}].name` })),
      ...lab.storage.map((m, i) => ({ name: m.name, path: `lab.storage[${i}].name` })),
    ];
    const seen = new Map<string, string>();
    for (const m of machines) {
      const first = seen.get(m.name);
      if (first === undefined) seen.set(m.name, m.path);
      else
        add(
          m.path,
          `duplicate lab machine name "${m.name}" (already used at ${first}); hosts, peers and storage machines share one namespace`,
        );
    }
  }
}

/** Every host a network or VM names exists, and a multi-host network lists each host once. */
export function checkHostReferences(spec: Spec, hostIdx: Map<string, number>, add: Add) {
  const hostList = spec.hosts.map((h) => h.name).join(', ');
  spec.networks.forEach((n, i) => {
    if (!isMultiHost(n)) {
      if (!hostIdx.has(n.host)) add(`networks[${i}].host`, `unknown host "${n.host}" (hosts: ${hostList})`);
      return;
    }
    const seen = new Map<string, number>();
    (n.hosts ?? []).forEach((h, k) => {
      const path = `networks[${i}].hosts[${k}]`;
      if (!hostIdx.has(h)) add(path, `unknown host "${h}" (hosts: ${hostList})`);
      const first = seen.get(h);
      if (first !== undefined)
        add(
          path,
          `host "${h}" is listed twice (already at networks[${i}].hosts[${first}]); list each host once`,
        );
      else seen.set(h, k);
    });
  });
  spec.vms.forEach((v, i) => {
    if (!hostIdx.has(v.host)) add(`vms[${i}].host`, `unknown host "${v.host}" (hosts: ${hostList})`);
  });
}
