// Every running VM's guest interfaces in one answer (`GET /v1/guests/interfaces`): what `vm list` shows as guest
// addresses, asked once per host instead of once per VM (issue 13: 20,000 requests at 1,000 hosts x 20 VMs).
// Guests are untrusted: every count and string is bounded here, and the controller parses the answer with this schema.
import { z } from 'zod';
import { NAME_PATTERN } from '../spec/schema.js';

/** The route. */
export const GUEST_INTERFACES_ROUTE = '/v1/guests/interfaces';
/** Most VMs one answer lists (by name); the rest are left out and the answer says `truncated`. */
export const GUEST_LIST_MAX_VMS = 1_024;
/** Most interfaces of one guest in an answer (a guest naming more has the rest cut). */
export const GUEST_LIST_MAX_INTERFACES = 64;
/** Most addresses of one guest interface in an answer. */
export const GUEST_LIST_MAX_ADDRESSES = 32;
/** Guest agents the agent asks at once for one answer. */
export const GUEST_LIST_CONCURRENCY = 8;
/** How long the agent waits for one guest agent before it lists that VM as not answering. */
export const GUEST_LIST_VM_TIMEOUT_MS = 3_000;
/** How long one answer may take in all: VMs not asked by then are listed as not answering. */
export const GUEST_LIST_DEADLINE_MS = 20_000;
/** How long the controller waits for the answer (past the agent's own deadline). */
export const GUEST_LIST_ANSWER_TIMEOUT_MS = GUEST_LIST_DEADLINE_MS + 10_000;
/** Largest answer the controller reads: the bounds above with room (~70 bytes an address). */
export const GUEST_LIST_MAX_BYTES = 8 * 1024 * 1024;

const short = (max: number) => z.string().min(1).max(max);

/** One guest interface: its name, MAC and addresses with prefix, as the guest agent names them. */
export const GuestNicSchema = z
  .object({
    name: short(64),
    mac: short(32),
    addresses: z.array(short(64)).max(GUEST_LIST_MAX_ADDRESSES),
  })
  .strict();

/** One running VM: its guest's interfaces, or why its guest agent gave none (not running, no answer in time). */
export const GuestEntrySchema = z
  .object({
    name: z.string().regex(NAME_PATTERN),
    interfaces: z.array(GuestNicSchema).max(GUEST_LIST_MAX_INTERFACES).optional(),
    error: z.string().max(512).optional(),
  })
  .strict()
  .refine((e) => (e.interfaces === undefined) !== (e.error === undefined), {
    message: 'names either interfaces or an error',
  });

/** The answer: every running VM of the host (at most GUEST_LIST_MAX_VMS, by name). */
export const GuestListSchema = z
  .object({
    vms: z.array(GuestEntrySchema).max(GUEST_LIST_MAX_VMS),
    truncated: z.boolean(),
  })
  .strict();
/** The answer of `GET /v1/guests/interfaces`. */
export type GuestList = z.infer<typeof GuestListSchema>;
/** One VM of it. */
export type GuestEntry = z.infer<typeof GuestEntrySchema>;
