// The spec's `lab:` section: network namespaces standing in for physical machines (docs/architecture.md, "The lab").
import { z } from 'zod';
import { ETCD_MEMBERS_MAX, LAB_CONTROLLERS_MAX } from '../shared/limits.js';
import { cidr, dhcpRange, ipv4, linkMtu, name } from './schema-primitives.js';

/** A simulated physical machine on the lab LAN. */
export const LabMachineSchema = z.object({ name, address: ipv4 }).strict();

/** An extra lab switch (a physical segment such as a VLAN trunk). */
export const LabSegmentSchema = z.object({ name, mtu: linkMtu.optional() }).strict();

/** The lab: namespaces standing in for physical machines, a LAN switch, and an upstream router. */
export const LabSchema = z
  .object({
    /** Short lab name; prefixes every namespace (`vl-<lab>-<machine>`). */
    name: z
      .string()
      .regex(/^[a-z][a-z0-9]{0,7}$/, 'must match ^[a-z][a-z0-9]{0,7}$ (it prefixes namespace names)'),
    lan: z
      .object({
        cidr,
        gateway: ipv4,
        dhcp: dhcpRange.optional(),
        /** MTU of the LAN switch and every veth on it (the hosts' underlay); default 1500. */
        mtu: linkMtu.optional(),
      })
      .strict(),
    /** The router's outside network and the one machine standing in for the internet. */
    upstream: z.object({ cidr, address: ipv4 }).strict(),
    hosts: z.array(LabMachineSchema).min(1),
    peers: z.array(LabMachineSchema).default([]),
    /**
     * Storage machines on the LAN (each also a `hosts[]` entry with `role: storage`): the lab runs its agent and
     * its tgtd, rpcbind and nfs-ganesha in its namespace.
     */
    storage: z.array(LabMachineSchema).default([]),
    /** Extra L2 switches; every lab host gets eth1, eth2, ... on them in this order. */
    segments: z.array(LabSegmentSchema).default([]),
    /** etcd members (1, 3 or 5) on the LAN, each in its own namespace, TLS with the lab's CA. */
    etcd: z.array(LabMachineSchema).max(ETCD_MEMBERS_MAX).default([]),
    /** Cluster controllers on the LAN (`vmlink daemon --store etcd://...`), each in its own namespace. */
    controllers: z.array(LabMachineSchema).max(LAB_CONTROLLERS_MAX).default([]),
  })
  .strict();
