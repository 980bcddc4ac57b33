import type { LabSpec } from '../spec/schema.js';

// Infrastructure namespaces use a double dash: spec names cannot start with '-', so they never collide.
/** Namespace of a lab machine (host, peer, storage machine, etcd member or cluster controller). */
export const machineNs = (lab: string, machine: string): string => `vl-${lab}-${machine}`;
/** Namespace of the lab's LAN switch. */
export const switchNs = (lab: string): string => `vl-${lab}--sw`;
/** Namespace of the lab's upstream router. */
export const routerNs = (lab: string): string => `vl-${lab}--rt`;
/** Namespace of the machine standing in for the internet. */
export const upstreamNs = (lab: string): string => `vl-${lab}--up`;
/** Namespace of the lab's management station: the controller's relay to the agents sits here, on the LAN. */
export const mgmtNs = (lab: string): string => `vl-${lab}--mgmt`;

/** Every namespace a lab owns, infrastructure first. */
export function labNamespaces(lab: LabSpec): string[] {
  return [
    switchNs(lab.name),
    routerNs(lab.name),
    upstreamNs(lab.name),
    mgmtNs(lab.name),
    ...lab.hosts.map((h) => machineNs(lab.name, h.name)),
    ...lab.peers.map((p) => machineNs(lab.name, p.name)),
    ...lab.storage.map((s) => machineNs(lab.name, s.name)),
    ...lab.etcd.map((m) => machineNs(lab.name, m.name)),
    ...lab.controllers.map((c) => machineNs(lab.name, c.name)),
  ];
}
