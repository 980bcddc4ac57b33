// What an agent answers the doctor (`GET /v1/doctor`): its prerequisite checks, and what it observes for the
// doctor's diagnoses: the STP state of its Linux bridges' ports, the VLAN settings of its OVS ports, its links' MTUs,
// and its clock. Raw facts only: the controller compares them with the applied spec (controller/diagnose/).
// Untrusted on the controller's side: strict and bounded.
import { z } from 'zod';
import { VLAN_ID_MAX, VLAN_ID_MIN } from '../shared/limits.js';

/** Most entries of each list (a host with more ports than this is reported in part, and says so). */
export const DOCTOR_OBSERVATIONS_MAX = 4096;

const ifname = z.string().regex(/^[A-Za-z0-9_.@:-]{1,15}$/);
const vlan = z.number().int().min(VLAN_ID_MIN).max(VLAN_ID_MAX);

/** Linux bridge port states (`bridge -j link show`), as the kernel names them. */
export const STP_STATES = ['disabled', 'listening', 'learning', 'forwarding', 'blocking'] as const;
export type StpState = (typeof STP_STATES)[number];

/** One port of a Linux bridge and its STP state. */
export const BridgePortObservationSchema = z
  .object({ bridge: ifname, port: ifname, state: z.enum(STP_STATES) })
  .strict();
export type BridgePortObservation = z.infer<typeof BridgePortObservationSchema>;

/** One port of the agent's Open vSwitch: its bridge and VLAN settings (`trunks` empty: every VLAN). */
export const OvsPortObservationSchema = z
  .object({
    bridge: ifname,
    port: ifname,
    tag: vlan.optional(),
    trunks: z.array(vlan).max(VLAN_ID_MAX),
    vlanMode: z.string().max(32).optional(),
  })
  .strict();
export type OvsPortObservation = z.infer<typeof OvsPortObservationSchema>;

/** One link of the host's namespace: its MTU, kind and master. */
export const LinkObservationSchema = z
  .object({
    name: ifname,
    mtu: z.number().int().min(0).max(65_536),
    kind: z.string().max(32).optional(),
    master: ifname.optional(),
  })
  .strict();
export type LinkObservation = z.infer<typeof LinkObservationSchema>;

/** Everything an agent observed for the doctor, at one instant. */
export const DoctorObservationsSchema = z
  .object({
    /** The agent's clock when it observed (epoch ms): the clock-drift evidence, bounded by the request's RTT. */
    at: z.number().int().nonnegative(),
    bridgePorts: z.array(BridgePortObservationSchema).max(DOCTOR_OBSERVATIONS_MAX),
    ovsPorts: z.array(OvsPortObservationSchema).max(DOCTOR_OBSERVATIONS_MAX),
    links: z.array(LinkObservationSchema).max(DOCTOR_OBSERVATIONS_MAX),
    /** What could not be observed (OVS not running, a command that failed), so an absence is not read as health. */
    errors: z.array(z.string().max(512)).max(16),
  })
  .strict();
export type DoctorObservations = z.infer<typeof DoctorObservationsSchema>;

/** One prerequisite check: what, whether it passed, what was seen, and how to fix it. */
export const DoctorCheckSchema = z.object({
  name: z.string(),
  ok: z.boolean(),
  detail: z.string(),
  fix: z.string().optional(),
});
/** One prerequisite check. */
export type DoctorCheck = z.infer<typeof DoctorCheckSchema>;

/**
 * `GET /v1/doctor`: the host's prerequisite checks (binaries, QEMU identity, launcher, test guest, tun) and what it
 * observes for the doctor's diagnoses (wire-doctor.ts; absent from older agents).
 */
export const AgentDoctorSchema = z.object({
  checks: z.array(DoctorCheckSchema).max(256),
  observations: DoctorObservationsSchema.optional(),
});
