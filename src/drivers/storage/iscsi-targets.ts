// The tgtd side of an iscsi pool: one target per volume (`iscsiTargetName`), its file as LUN 1, the pool's CHAP
// account bound, and the pool's client networks (or ALL) as its ACL. A target is built closed and opened last: tgtd
// refuses every login to a target without an ACL, and lets anyone in (no CHAP) to one without an account, so the
// ACL is bound only once the account is.
import { ConflictError, InvalidRequestError } from '../../shared/errors.js';
import { ISCSI_VOLUME_LUN, iscsiTargetName, type PoolConfig } from '../../shared/storage.js';
import type { TgtClient } from './tgt-client.js';
import { isTgtError } from './tgt-protocol.js';
import type { TgtTarget } from './tgt-show.js';

/** What tgtd should show for one volume of a pool. */
export interface WantedTarget {
  name: string;
  backingStore: string;
  /** CHAP user bound (incoming); undefined: the pool has no CHAP. */
  account?: string;
  acls: string[];
}

/**
 * The target one volume of `pool` should have. `fencedTo`: the address(es) a `volume.fence` bound it to
 * (iscsi-fence.ts: the owner's, and a live migration's target while it streams), which replace the pool's clients as
 * its ACL; `null`: fenced to an address the pool's clients no longer contain, so nobody may log in.
 */
export function wantedTarget(
  storageHost: string,
  pool: PoolConfig,
  volume: string,
  file: string,
  fencedTo?: string | readonly string[] | null,
): WantedTarget {
  return {
    name: iscsiTargetName(storageHost, pool.name, volume),
    backingStore: file,
    ...(pool.chap ? { account: pool.chap.user } : {}),
    acls:
      fencedTo === null
        ? []
        : fencedTo !== undefined
          ? typeof fencedTo === 'string'
            ? [fencedTo]
            : [...fencedTo]
          : pool.clients?.length
            ? pool.clients.map(tgtAcl)
            : ['ALL'],
  };
}

/** A client network as tgtd's ACL takes it: a /32 as the bare address (tgt 1.0.85 matches no /32 network). */
export function tgtAcl(cidr: string): string {
  return cidr.endsWith('/32') ? cidr.slice(0, -3) : cidr;
}

/** How `have` differs from `want`, in words (empty: as wanted). */
export function targetProblems(want: WantedTarget, have: TgtTarget | undefined): string[] {
  if (!have) return [`target ${want.name} is missing`];
  const out: string[] = [];
  const lun = have.luns.find((l) => l.lun === ISCSI_VOLUME_LUN);
  if (lun?.backingStorePath !== want.backingStore)
    out.push(`target ${want.name}: LUN ${ISCSI_VOLUME_LUN} is not backed by ${want.backingStore}`);
  if (want.account && !have.accounts.includes(want.account))
    out.push(`target ${want.name}: CHAP account ${want.account} is not bound`);
  const extra = have.accounts.filter((a) => a !== want.account);
  if (extra.length) out.push(`target ${want.name}: unexpected CHAP account(s) ${extra.join(', ')}`);
  const acls = [...have.acls].sort().join(',');
  if (acls !== [...want.acls].sort().join(','))
    out.push(`target ${want.name}: allows ${have.acls.join(', ') || 'nobody'}, not ${want.acls.join(', ')}`);
  return out;
}

/** The sessions of a target in words, for "in use" refusals; empty when none. */
export function sessionsText(t: TgtTarget | undefined): string {
  return (t?.sessions ?? [])
    .map(
      (s) =>
        `${s.initiator || 'unknown initiator'}${s.addresses.length ? ` (${s.addresses.join(', ')})` : ''}`,
    )
    .join(', ');
}

/** `ConflictError` when an initiator is logged in to the volume's target. */
export function refuseInUse(volume: string, t: TgtTarget | undefined, what: string): void {
  const who = sessionsText(t);
  if (who)
    throw new ConflictError(
      `volume ${volume} is in use by initiator ${who}: cannot ${what} (stop or detach the VM first)`,
      `volume/${volume}`,
    );
}

/** The next free target id of a tgtd (they are per tgtd, shared by its pools). */
export function nextTid(targets: readonly TgtTarget[]): number {
  return targets.reduce((m, t) => Math.max(m, t.tid), 0) + 1;
}

/**
 * Makes tgtd show `want` (creating the target when missing, repairing it otherwise); a target it creates is added
 * to `targets`, so the next call picks another id. With CHAP, a
 * missing account is an error and the target stays closed: the pool's `ensurePool` (which has the password) must
 * run first.
 */
export async function exposeTarget(
  client: TgtClient,
  want: WantedTarget,
  targets: TgtTarget[],
): Promise<void> {
  let have = targets.find((t) => t.name === want.name);
  if (!have) {
    const tid = nextTid(targets);
    await client.newTarget(tid, want.name);
    have = { tid, name: want.name, sessions: [], luns: [], accounts: [], outgoingAccounts: [], acls: [] };
    targets.push(have);
  }
  const tid = have.tid;
  const lun = have.luns.find((l) => l.lun === ISCSI_VOLUME_LUN);
  if (lun && lun.backingStorePath !== want.backingStore) {
    refuseInUse(want.name, have, 'change its backing file');
    await client.deleteLun(tid, ISCSI_VOLUME_LUN);
  }
  if (!lun || lun.backingStorePath !== want.backingStore)
    await client.newLun(tid, ISCSI_VOLUME_LUN, want.backingStore, 'rdwr');
  for (const a of have.accounts) if (a !== want.account) await client.unbindAccount(tid, a);
  if (want.account && !have.accounts.includes(want.account)) {
    try {
      await client.bindAccount(tid, want.account);
    } catch (e) {
      if (isTgtError(e, 'NO_USER'))
        throw new InvalidRequestError(
          `CHAP account ${want.account} is missing from tgtd (restarted?): apply the pool again so its secret is set`,
          want.name,
        );
      throw e;
    }
  }
  for (const a of have.acls) if (!want.acls.includes(a)) await client.unbindInitiatorAddress(tid, a);
  for (const a of want.acls) if (!have.acls.includes(a)) await client.bindInitiatorAddress(tid, a);
}

/** Removes a volume's target; `ConflictError` while an initiator is logged in; a missing target is fine. */
export async function removeTarget(
  client: TgtClient,
  volume: string,
  t: TgtTarget | undefined,
): Promise<void> {
  if (!t) return;
  refuseInUse(volume, t, 'delete it');
  try {
    await client.deleteTarget(t.tid);
  } catch (e) {
    if (isTgtError(e, 'NO_TARGET')) return;
    if (isTgtError(e, 'TARGET_ACTIVE'))
      throw new ConflictError(
        `volume ${volume} is in use by an initiator: cannot delete it`,
        `volume/${volume}`,
      );
    throw e;
  }
}
