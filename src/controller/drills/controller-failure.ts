// `controller-failure`: SIGKILL the active cluster controller (optionally while it applies a spec). Measured: how
// long until a standby is active. Then the killed controller starts again (a standby now), an apply through the new
// active one must succeed and a plan must come out empty (an apply cut short converges on the next one), and no VM
// may have been touched.
import type { DrillReport } from '../../shared/cluster.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { pollUntil, sleep } from '../../shared/time.js';
import { DrillRun, secondsBetween } from './measure.js';
import type { ActiveController, DrillEnv } from './types.js';

/** How long an apply started before the kill may take to show its first progress line. */
const APPLY_START_WAIT_MS = 5_000;

/** Runs a controller-failure drill: `target` is `active` or the active controller's name. */
export async function controllerFailureDrill(env: DrillEnv, target: string): Promise<DrillReport> {
  const d = new DrillRun(env, 'controller-failure', target);
  const active = await pollUntil(() => env.cluster.active().catch(() => undefined), {
    timeoutMs: env.timing.recoveryMs,
    intervalMs: env.timing.pollMs,
  });
  if (!active) throw new Error('no cluster controller answers as active: is the lab up?');
  if (target !== 'active' && target !== active.name)
    throw new InvalidRequestError(
      `${target} is not the active controller (${active.name} is): controller-failure kills the active one; name it or say \`active\``,
      'target',
    );
  await d.requireHealthy();
  const before = await d.firstSample();
  let takeoverS: number | undefined;
  let next: ActiveController | undefined;
  try {
    const apply = env.options.duringApply ? await env.cluster.startApply() : undefined;
    if (apply) {
      await Promise.race([apply.started, sleep(APPLY_START_WAIT_MS)]);
      d.say(`an apply runs on ${active.name}; killing it now`);
    } else d.say(`killing the active controller ${active.name}${active.pid ? ` (pid ${active.pid})` : ''}`);
    const { at: t0 } = await env.faults.killController(active.name);
    next = await pollUntil(
      async () => {
        const a = await env.cluster.active().catch(() => undefined);
        return a && a.name !== active.name ? a : undefined;
      },
      { timeoutMs: env.timing.recoveryMs, intervalMs: env.timing.pollMs },
    );
    if (next) {
      takeoverS = secondsBetween(t0, Date.now());
      d.say(`${next.name} is active after ${takeoverS} s`);
    } else d.note(`no standby became active within ${env.timing.recoveryMs / 1000} s`);
    if (apply) {
      const end = await Promise.race([
        apply.done,
        sleep(env.timing.recoveryMs).then(() => 'still running' as const),
      ]);
      d.note(`the apply interrupted on ${active.name} ended: ${end}`);
    }
  } finally {
    d.say(`starting ${active.name} again`);
    d.restored = await d.repair(`start controller ${active.name}`, () =>
      env.faults.restartController(active.name),
    );
  }
  if (env.options.duringApply) {
    const again = await env.cluster.startApply().then(
      (r) => r.done,
      (e: unknown) => `refused: ${e instanceof Error ? e.message : String(e)}`,
    );
    if (again !== 'succeeded') d.note(`the next apply did not succeed: ${again}`);
    await d.checkConverged(
      again === 'succeeded' ? 'the next apply succeeded and a plan of the spec is empty' : undefined,
    );
  } else await d.checkConverged();
  const summary = await d.samplerInvariants();
  const moved = before.procs.filter(
    (p) => !env.sampler.latest()?.procs.some((q) => q.vm === p.vm && q.pid === p.pid),
  );
  if (moved.length)
    d.note(
      `VM processes replaced during the drill: ${moved.map((p) => `${p.vm} (was pid ${p.pid} on ${p.host})`).join(', ')}`,
    );
  return d.report({
    ...(takeoverS === undefined ? {} : { detectedS: takeoverS, takeoverS }),
    summary,
  });
}
