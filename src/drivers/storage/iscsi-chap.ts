// A pool's CHAP account in tgtd: its password from the step's secret values (never on an argv, never written),
// set as tgtd allows (delete and create) without a moment where its targets take logins without CHAP.
import { InvalidRequestError, VmlinkError } from '../../shared/errors.js';
import type { PoolConfig } from '../../shared/storage.js';
import type { SecretValues } from '../hypervisor/types.js';
import type { TgtClient } from './tgt-client.js';
import { isTgtError } from './tgt-protocol.js';
import type { TgtTarget } from './tgt-show.js';

/** The CHAP password of `pool` among the values sent with the step. */
export function chapPassword(pool: PoolConfig, secrets: SecretValues | undefined): string {
  const name = pool.chap?.secret;
  const value = secrets?.find((s) => s.name === name)?.value;
  if (value === undefined)
    throw new InvalidRequestError(
      `pool ${pool.name}: the value of CHAP secret ${name} did not come with the request`,
      `pool/${pool.name}`,
    );
  // Secret values travel base64-encoded (QEMU's secret objects decode them the same way): tgtd wants the password.
  return Buffer.from(value, 'base64').toString('utf8');
}

/**
 * (Re)creates the CHAP account with `password` (tgtd cannot change a password: delete and create). Deleting an
 * account unbinds it from its targets, which would leave them open to logins without CHAP; so their ACLs are
 * lifted first (no new login at all meanwhile; logged-in sessions stay), and the account then the ACLs are put
 * back on each of them (other pools sharing the user included).
 */
export async function setChapAccount(client: TgtClient, user: string, password: string): Promise<void> {
  const lifted: TgtTarget[] = [];
  if ((await client.showAccounts()).includes(user)) {
    for (const t of (await client.showTargets()).filter((x) => x.accounts.includes(user))) {
      for (const a of t.acls) await client.unbindInitiatorAddress(t.tid, a);
      lifted.push(t);
    }
    await client.deleteAccount(user);
  }
  await client.newAccount(user, password);
  for (const t of lifted) {
    await client.bindAccount(t.tid, user);
    for (const a of t.acls) await client.bindInitiatorAddress(t.tid, a);
  }
}

/** Deletes CHAP account `user` from tgtd; a missing account or tgtd is fine. */
export async function deleteChapAccount(client: TgtClient, user: string): Promise<void> {
  await client.deleteAccount(user).catch((e: unknown) => {
    if (!isTgtError(e, 'NO_USER') && !(e instanceof VmlinkError && e.kind === 'unavailable')) throw e;
  });
}
