// Storage-side fencing of iscsi volumes (issue 11, docs/ha.md "Storage fencing"). A VM's owner record carries a
// fencing token (its store version: every reassignment a larger one); before the HA manager starts the VM on a new
// host it sends `volume.fence { owner: { host, address, token } }` to the pool's storage host, whose agent:
//  1. refuses a token older than the newest it has seen for the volume (`FencedError` naming both) and changes
//     nothing; the same token for the same owner again is idempotent (it finishes what a failed attempt left);
//  2. records the new token (atomically, 0600) BEFORE it touches tgtd: a crash in between leaves the newer token on
//     disk, so a late request with a token between the old and the new one is still refused (the other order would
//     let it through);
//  3. narrows the volume's target ACL to the owner's address alone (inside the pool's `clients`, which stay the
//     outer bound: an owner outside them is refused): tgtd checks the ACL at login, so no other host logs in again;
//  4. closes the connections of every session from another address (tgtd closes a session with its last
//     connection; libiscsi's reconnect then fails at the ACL).
// The fenced ACL is part of what the target should look like (`wantedTarget`): `ensurePool`, the plan's repairs and
// `whileClosed` keep it, so an apply never reopens a fenced volume to the whole pool.
//
// What cannot be fenced here: an nfs pool is one ganesha export for all its volume files, with one client list, and
// NFSv3 has no session to drop; a dir pool's files are on the VM's own host. Both rely on the owner check at the
// VM's host and on self-fencing (POOL_FEATURES.fence is false for them, and the controller says so in an event).
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { compareTokens, FencingTokenSchema } from '../../shared/cluster.js';
import { ConflictError, FencedError, InvalidRequestError, VmlinkError } from '../../shared/errors.js';
import { readJsonFile, writeFileAtomic } from '../../shared/state-file.js';
import {
  POOL_VOLUMES_MAX,
  type PoolConfig,
  VOLUME_SESSIONS_MAX,
  type VolumeFence,
  type VolumeSession,
} from '../../shared/storage.js';
import { cidrContains, parseCidr, parseIpv4 } from '../../spec/net.js';
import { POOL_NAME } from './pool-state.js';
import { VOLUME_NAME } from './qcow2-volumes.js';
import type { TgtClient } from './tgt-client.js';
import { isTgtError } from './tgt-protocol.js';
import type { TgtTarget } from './tgt-show.js';
import type { FenceOwner } from './types.js';

export type { FenceOwner } from './types.js';

/** How many times the foreign sessions are looked for and closed before the fence gives up (a login in flight). */
export const FENCE_CLOSE_ROUNDS = 5;

// The state file of one pool: `<stateDir>/fence/<pool>.json`. Read back with every field checked, so a hand-edited
// file cannot open a target to an address the schema would refuse.
const FenceFileSchema = z
  .object({
    version: z.literal(1),
    pool: z.string().regex(POOL_NAME),
    volumes: z.record(
      z.string().regex(VOLUME_NAME),
      z
        .object({
          host: z.string().regex(/^[a-z][a-z0-9-]{0,62}$/),
          address: z.string().refine((a) => parseIpv4(a) !== undefined, 'must be an IPv4 address'),
          token: FencingTokenSchema,
          at: z.string().max(64),
          peer: z
            .object({
              host: z.string().regex(/^[a-z][a-z0-9-]{0,62}$/),
              address: z.string().refine((a) => parseIpv4(a) !== undefined, 'must be an IPv4 address'),
            })
            .strict()
            .optional(),
        })
        .strict(),
    ),
  })
  .strict();

/** The fence records of an agent's iscsi pools: the newest token and owner of each fenced volume. */
export class FenceStateStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'fence');
  }

  private file(pool: string): string {
    if (!POOL_NAME.test(pool))
      throw new InvalidRequestError(`pool name ${JSON.stringify(pool)} is not valid`);
    return join(this.dir, `${pool}.json`);
  }

  /** The fenced volumes of `pool`, by volume name (empty when none ever was). */
  async read(pool: string): Promise<Map<string, VolumeFence>> {
    const s = await readJsonFile(this.file(pool), FenceFileSchema);
    if (!s) return new Map();
    if (s.pool !== pool)
      throw new VmlinkError('internal', `fence state of pool ${pool} names pool ${s.pool}`);
    return new Map(Object.entries(s.volumes));
  }

  /** Replaces the records of `pool` (atomically, 0600; none left: the file goes). */
  async write(pool: string, volumes: ReadonlyMap<string, VolumeFence>): Promise<void> {
    if (volumes.size === 0) return this.remove(pool);
    if (volumes.size > POOL_VOLUMES_MAX)
      throw new VmlinkError('internal', `pool ${pool}: more than ${POOL_VOLUMES_MAX} fenced volumes`);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const body = {
      version: 1,
      pool,
      volumes: Object.fromEntries([...volumes].sort(([a], [b]) => (a < b ? -1 : 1))),
    };
    await writeFileAtomic(this.file(pool), `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600 });
  }

  /** Forgets the records of `pool`; missing is fine. */
  async remove(pool: string): Promise<void> {
    await rm(this.file(pool), { force: true });
  }
}

/** What a fence request is, against what the storage host last recorded for the volume. */
export type FenceVerdict = 'first' | 'newer' | 'same';

/**
 * Judges `owner`'s token against `have` (the newest recorded for `pool/volume`): a stale token is a `FencedError`
 * naming both tokens; the same token naming another owner is a `ConflictError` (one store version is one record).
 */
export function judgeFence(
  pool: string,
  volume: string,
  have: VolumeFence | undefined,
  owner: FenceOwner,
): FenceVerdict {
  if (!have) return 'first';
  const c = compareTokens(owner.token, have.token);
  const subject = `volume/${pool}/${volume}`;
  if (c < 0)
    throw new FencedError(
      `volume ${pool}/${volume}: fencing token ${owner.token} (for host ${owner.host}) is older than token ${have.token}, which fenced it to host ${have.host} (${have.address}); refused, nothing changed`,
      subject,
    );
  if (c > 0) return 'newer';
  if (have.host !== owner.host || have.address !== owner.address)
    throw new ConflictError(
      `volume ${pool}/${volume}: fencing token ${owner.token} already fenced it to host ${have.host} (${have.address}), not ${owner.host} (${owner.address}); refused, nothing changed`,
      subject,
    );
  return 'same';
}

/**
 * The tgtd ACL entry letting only `address` in: the bare address (tgt matches no /32 network), refused unless the
 * pool's `clients` (when it has any) contain it.
 */
export function ownerAcl(pool: PoolConfig, address: string): string {
  const ip = parseIpv4(address);
  if (ip === undefined)
    throw new InvalidRequestError(`owner address ${JSON.stringify(address)} is not an IPv4 address`);
  const clients = pool.clients ?? [];
  if (
    clients.length &&
    !clients.some((c) => {
      const n = parseCidr(c);
      return n !== undefined && cidrContains(n, ip);
    })
  )
    throw new InvalidRequestError(
      `pool ${pool.name}: owner address ${address} is outside the pool's clients (${clients.join(', ')}): a fence cannot let in a host the pool does not`,
      `pool/${pool.name}`,
    );
  return address;
}

/**
 * The ACL addresses of a fenced volume: its owner's (and a migration peer's) while the pool's clients still contain
 * them, `null` when the owner's left them (its target then lets nobody in); undefined when it is not fenced (the
 * pool's clients apply). A peer the clients no longer contain is left out.
 */
export function fencedAcl(pool: PoolConfig, fence: VolumeFence | undefined): string[] | null | undefined {
  if (!fence) return undefined;
  const allowed = (a: string) => {
    try {
      return ownerAcl(pool, a);
    } catch {
      return undefined;
    }
  };
  const owner = allowed(fence.address);
  if (owner === undefined) return null;
  const peer = fence.peer ? allowed(fence.peer.address) : undefined;
  return peer !== undefined && peer !== owner ? [owner, peer] : [owner];
}

/** Whether `a` and `b` name the same migration peer (both absent included). */
export function samePeer(a: VolumeFence['peer'], b: VolumeFence['peer']): boolean {
  return a?.host === b?.host && a?.address === b?.address;
}

/** A connection of a session from an address other than the owner's. */
export interface ForeignConnection {
  sid: number;
  cid: number;
  initiator: string;
  address: string;
}

/**
 * The connections of `t` from addresses other than `address` (or than each of them). A session tgtd shows without a
 * connection id cannot be closed by id: it is returned with cid -1 so the caller can say so.
 */
export function foreignConnections(
  t: TgtTarget | undefined,
  address: string | readonly string[],
): ForeignConnection[] {
  const allowed = new Set(typeof address === 'string' ? [address] : address);
  const out: ForeignConnection[] = [];
  for (const s of t?.sessions ?? []) {
    const conns = s.connections.length ? s.connections : [{ cid: -1, address: s.addresses[0] ?? '' }];
    for (const c of conns)
      if (!allowed.has(c.address))
        out.push({ sid: s.nexus, cid: c.cid, initiator: s.initiator, address: c.address });
  }
  return out;
}

/**
 * Closes every connection of `target`'s sessions from an address other than `address` (or than each of them: a
 * migration's owner and peer) (the ACL must already keep
 * them from logging in again), then looks again, up to `FENCE_CLOSE_ROUNDS` times: a login accepted just before the
 * ACL changed may complete after a look. Connections that vanished meanwhile are fine. Returns what it closed;
 * throws when foreign sessions remain.
 */
export async function closeForeignSessions(
  client: TgtClient,
  find: () => Promise<TgtTarget | undefined>,
  address: string | readonly string[],
  what: string,
): Promise<ForeignConnection[]> {
  const closed: ForeignConnection[] = [];
  for (let round = 0; round < FENCE_CLOSE_ROUNDS; round++) {
    const t = await find();
    const foreign = foreignConnections(t, address);
    if (!t || !foreign.length) return closed;
    for (const c of foreign) {
      if (c.cid < 0) continue;
      try {
        await client.closeConnection(t.tid, c.sid, c.cid);
        closed.push(c);
      } catch (e) {
        if (!isTgtError(e, 'NO_SESSION') && !isTgtError(e, 'NO_CONNECTION')) throw e;
      }
    }
    // tgtd closes a connection in its event loop: give it a moment before looking again.
    await new Promise((r) => setTimeout(r, 50 * (round + 1)));
  }
  const left = foreignConnections(await find(), address);
  if (!left.length) return closed;
  throw new VmlinkError(
    'conflict',
    `${what}: initiator(s) ${left.map((c) => `${c.initiator || 'unknown'} (${c.address || 'no address'})`).join(', ')} still logged in after ${FENCE_CLOSE_ROUNDS} attempts to close them`,
  );
}

/** The sessions of a target as a host report lists them (bounded). */
export function volumeSessions(t: TgtTarget | undefined): VolumeSession[] {
  return (t?.sessions ?? []).slice(0, VOLUME_SESSIONS_MAX).map((s) => ({
    initiator: s.initiator.slice(0, 256),
    addresses: s.addresses.slice(0, 8),
  }));
}
