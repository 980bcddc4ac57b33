// The restore-and-boot test of a policy: per VM, its newest good snapshot restored as a throwaway VM on the policy's
// isolated network, started, and waited on until its guest agent answers (a command through the host agent's guest
// exec route); the time from restore start to that answer is the measured RTO (`backup/rto/<policy>/<vm>`). The
// throwaway VM is always deleted afterwards, whatever happened.
import { createHash } from 'node:crypto';
import { log } from '../../shared/log.js';
import type { Spec } from '../../spec/schema.js';
import type { BackupPolicySpec } from '../../spec/schema-backup.js';
import type { TaskContext } from '../tasks.js';
import type { RestoreTestResult } from '../wire-backup.js';
import { backupAgent, storeSpec } from './agents.js';
import { appliedSpec, type BackupDeps, policyOf } from './deps.js';
import { type RtoRecord, restoredKey, restoredVms, rtoKey } from './records.js';
import { discardRestored, findSnapshot, restoreForTest } from './restore.js';
import { pickBase } from './runs.js';

/** How long a restore test waits for the restored guest's agent by default (without an RTO objective). */
export const RESTORE_TEST_BOOT_TIMEOUT_MS = 10 * 60_000;
/** How often it asks the guest agent. */
const GUEST_POLL_MS = 2_000;
/** How long one guest-agent question may take. */
const GUEST_ASK_MS = 5_000;

/** The throwaway VM's name for `vm`: `rt-<vm>`, shortened with a hash when that is too long for a name. */
export function testVmName(vm: string): string {
  const name = `rt-${vm}`;
  if (name.length <= 31) return name;
  return `rt-${vm.slice(0, 19)}-${createHash('sha256').update(vm).digest('hex').slice(0, 8)}`;
}

/** Runs the restore test of `policyName` (of one VM, or of each of its VMs). */
export async function restoreTest(
  d: BackupDeps,
  policyName: string,
  vm: string | undefined,
  ctx: TaskContext,
  opts: { bootTimeoutMs?: number; guestPollMs?: number } = {},
): Promise<RestoreTestResult> {
  const spec = await appliedSpec(d);
  const policy = policyOf(spec, policyName);
  const vms = vm ? [vm] : policy.vms;
  const results: RestoreTestResult['results'] = [];
  for (const v of vms) results.push(await testOne(d, spec, policy, v, ctx, opts));
  return { policy: policy.name, results };
}

async function testOne(
  d: BackupDeps,
  spec: Spec,
  policy: BackupPolicySpec,
  vm: string,
  ctx: TaskContext,
  opts: { bootTimeoutMs?: number; guestPollMs?: number },
): Promise<RestoreTestResult['results'][number]> {
  const at = d.now().toISOString();
  const name = testVmName(vm);
  const fail = async (error: string, snapshot?: string, extra: Partial<RtoRecord> = {}) => {
    const rec: RtoRecord = {
      policy: policy.name,
      vm,
      ok: false,
      at,
      error,
      ...(snapshot ? { snapshot } : {}),
      ...extra,
    };
    await d.store.put(rtoKey(policy.name, vm), rec);
    await d.store.appendEvent(
      'backup.restore-test-failed',
      `policy ${policy.name} vm ${vm}${snapshot ? ` (${snapshot})` : ''}: ${error}`,
    );
    ctx.progress(`restore test of ${vm}: failed: ${error}`);
    return { vm, ok: false, error, ...(snapshot ? { snapshot } : {}) };
  };
  if (!policy.restoreTest)
    return fail(`policy ${policy.name} has no restoreTest (network, schedule) in the spec`);
  const network = policy.restoreTest.network;
  let snapshot: string | undefined;
  // A leftover from a test the controller did not finish (it stopped mid-test) goes first.
  if ((await restoredVms(d.store)).some((r) => r.name === name && r.test))
    await discardRestored(d, name, ctx).catch((e: unknown) =>
      log.warn(
        { vm: name, err: (e as Error).message },
        'restore test: a leftover test VM could not be removed',
      ),
    );
  try {
    const st = storeSpec(spec, policy.store);
    const snaps = await backupAgent(d.agents, spec, st.host).snapshots(st.name, vm);
    const newest = pickBase(snaps, vm, policy.name);
    if (!newest) return await fail(`no good snapshot of vm ${vm} in store ${st.name}`);
    snapshot = newest.id;
    const found = await findSnapshot(d, spec, newest.id, { store: st.name, policy: policy.name });
    const started = Date.now();
    // The isolated network's host (the validator ties it to the VM's spec host or restoreTest.host); in a cluster
    // the VM itself may run elsewhere by now.
    const net = spec.networks.find((n) => n.name === network);
    const host =
      policy.restoreTest.host ??
      (net && 'host' in net && typeof net.host === 'string' ? net.host : undefined) ??
      spec.vms.find((v) => v.name === vm)?.host;
    const r = await restoreForTest(d, spec, found, { name, network, ...(host ? { host } : {}) }, ctx);
    const restoreSeconds = (Date.now() - started) / 1000;
    const timeoutMs =
      opts.bootTimeoutMs ??
      (policy.rtoMinutes ? policy.rtoMinutes * 2 * 60_000 : RESTORE_TEST_BOOT_TIMEOUT_MS);
    const agent = backupAgent(d.agents, spec, r.host);
    const bootStart = Date.now();
    for (;;) {
      try {
        const x = await agent.exec(name, ['true'], GUEST_ASK_MS);
        if (x.exitCode === 0) break;
      } catch {
        // Not up yet.
      }
      if (ctx.signal.aborted) return await fail('cancelled', snapshot);
      if (Date.now() - bootStart > timeoutMs)
        return await fail(
          `its guest agent did not answer within ${Math.round(timeoutMs / 1000)} s of the start`,
          snapshot,
          {
            seconds: (Date.now() - started) / 1000,
          },
        );
      await new Promise((res) => setTimeout(res, opts.guestPollMs ?? d.poll?.pollMs ?? GUEST_POLL_MS));
    }
    const seconds = (Date.now() - started) / 1000;
    const bootSeconds = (Date.now() - bootStart) / 1000;
    const rec: RtoRecord = { policy: policy.name, vm, snapshot, ok: true, seconds, at };
    await d.store.put(rtoKey(policy.name, vm), rec);
    await d.store.appendEvent(
      'backup.restore-tested',
      `policy ${policy.name} vm ${vm} from ${snapshot}: guest answered ${seconds.toFixed(1)} s after the restore started (restore ${restoreSeconds.toFixed(1)} s, boot ${bootSeconds.toFixed(1)} s)`,
    );
    ctx.progress(`restore test of ${vm}: ${seconds.toFixed(1)} s to the guest agent`);
    return { vm, snapshot, ok: true, seconds, restoreSeconds, bootSeconds };
  } catch (e) {
    return await fail((e as Error).message.split('\n')[0] ?? 'failed', snapshot);
  } finally {
    if (await d.store.get(restoredKey(name)))
      await discardRestored(d, name, ctx).catch((e: unknown) =>
        log.warn({ vm: name, err: (e as Error).message }, 'restore test: the test VM could not be removed'),
      );
  }
}
