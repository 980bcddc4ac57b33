// `etcd-member-failure`: one etcd member stops. With the others' quorum the cluster must keep working: every host
// keeps its lease (no host failed, no HA action), an apply (store writes) succeeds, no VM is touched. Measured: when
// the controllers saw the member down. Repaired by starting the member; it must be healthy again.
import type { DrillReport } from '../../shared/cluster.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { pollUntil, sleep } from '../../shared/time.js';
import { DrillRun, secondsBetween } from './measure.js';
import type { DrillEnv } from './types.js';

/** Runs an etcd-member-failure drill on member `member`. */
export async function etcdMemberFailureDrill(env: DrillEnv, member: string): Promise<DrillReport> {
  const d = new DrillRun(env, 'etcd-member-failure', member);
  const members = await pollUntil(() => env.cluster.members().catch(() => undefined), {
    timeoutMs: env.timing.recoveryMs,
    intervalMs: env.timing.pollMs,
  });
  if (!members) throw new Error('no cluster controller answers: is the lab up?');
  if (!members.some((m) => m.name === member))
    throw new InvalidRequestError(
      `${member} is no etcd member (members: ${members.map((m) => m.name).join(', ')})`,
      'target',
    );
  const sick = members.filter((m) => !m.healthy).map((m) => m.name);
  if (sick.length) throw new Error(`etcd is not healthy before the drill: ${sick.join(', ')} down`);
  await d.requireHealthy();
  const before = await d.firstSample();
  const hosts = env.spec.hosts.filter((h) => h.role !== 'storage').map((h) => h.name);
  let detectedS: number | undefined;
  const missing = new Set<string>();
  let polls = 0;
  try {
    const { at: t0 } = await env.faults.stopEtcdMember(member);
    d.say(`etcd member ${member} stopped; watching the cluster for ${env.timing.outageMs / 1000} s`);
    const watchUntil = t0 + env.timing.outageMs;
    const watch = (async () => {
      while (Date.now() < watchUntil) {
        const [live, ms] = await Promise.all([
          env.cluster.liveHosts().catch(() => undefined),
          env.cluster.members().catch(() => undefined),
        ]);
        polls++;
        if (live) for (const h of hosts) if (!live.includes(h)) missing.add(h);
        if (detectedS === undefined && ms?.some((m) => m.name === member && !m.healthy)) {
          detectedS = secondsBetween(t0, Date.now());
          d.say(`the controllers see ${member} down after ${detectedS} s`);
        }
        await sleep(env.timing.pollMs);
      }
    })();
    // A write through the store while the member is down: an apply appends its event and reads every host. If the
    // member was etcd's leader, raft elects another (and the active controller may step down meanwhile): applies are
    // tried again until one succeeds within the watch, and the report says how long that took and what came before.
    const before = await env.cluster.active().catch(() => undefined);
    const attempts: string[] = [];
    let write: string | undefined;
    let writeAt: number | undefined;
    while (Date.now() < watchUntil) {
      const r = await env.cluster.startApply().then(
        (x) => x.done,
        (e: unknown) => `refused: ${e instanceof Error ? e.message : String(e)}`,
      );
      if (r === 'succeeded') {
        write = r;
        writeAt = Date.now();
        break;
      }
      attempts.push(r);
      await sleep(env.timing.pollMs * 5);
    }
    await watch;
    const after = await env.cluster.active().catch(() => undefined);
    if (before && after && before.name !== after.name)
      d.note(`the active controller changed from ${before.name} to ${after.name} while ${member} was down`);
    const failedEvents = (await env.cluster.events(200).catch(() => []))
      .filter((e) => e.kind === 'ha.host-failed' && Date.parse(e.time) >= t0)
      .map((e) => e.message);
    d.invariants.push({
      name: 'no-host-failed',
      ok: missing.size === 0 && failedEvents.length === 0,
      detail:
        missing.size === 0 && failedEvents.length === 0
          ? `every host kept its lease (${polls} looks over ${env.timing.outageMs / 1000} s), no ha.host-failed event`
          : `${[...missing]
              .map((h) => `${h} lost its lease`)
              .concat(failedEvents)
              .join('; ')}`,
    });
    const earlier = attempts.length
      ? ` (${attempts.length} earlier attempt(s): ${[...new Set(attempts)].slice(0, 2).join('; ')})`
      : '';
    d.invariants.push({
      name: 'store-writes',
      ok: write === 'succeeded',
      detail:
        writeAt !== undefined
          ? `an apply (store writes) succeeded ${secondsBetween(t0, writeAt)} s after ${member} stopped${earlier}`
          : `no apply succeeded in ${env.timing.outageMs / 1000} s with ${member} down${earlier}`,
    });
    if (detectedS === undefined) d.note(`no controller reported ${member} down`);
  } finally {
    d.say(`starting etcd member ${member} again`);
    d.restored =
      (await d.repair(`start etcd member ${member}`, () => env.faults.startEtcdMember(member))) &&
      (await d.repair(`${member} healthy again`, async () =>
        pollUntil(
          async () =>
            (await env.cluster.members().catch(() => undefined))?.find((m) => m.name === member)?.healthy
              ? true
              : undefined,
          { timeoutMs: env.timing.restoreMs, intervalMs: env.timing.pollMs },
        ).then((ok) => ok === true),
      ));
  }
  await d.checkConverged();
  const summary = await d.samplerInvariants();
  const moved = before.procs.filter(
    (p) => !env.sampler.latest()?.procs.some((q) => q.vm === p.vm && q.pid === p.pid),
  );
  if (moved.length)
    d.note(
      `VM processes replaced during the drill: ${moved.map((p) => `${p.vm} (was pid ${p.pid} on ${p.host})`).join(', ')}`,
    );
  return d.report({ ...(detectedS === undefined ? {} : { detectedS }), summary });
}
