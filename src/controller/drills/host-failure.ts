// `host-failure`: the target host loses power (its agent and every QEMU of its VMs killed at once). Measured: when
// the cluster saw it failed, when each HA VM's QEMU ran on another host, when its guest answered. Repaired by
// starting the host's agent again; it must hold a lease again and the plan must come out empty.
import type { DrillReport } from '../../shared/cluster.js';
import { DrillRun, secondsBetween } from './measure.js';
import type { DrillEnv } from './types.js';

/** Runs a host-failure drill on `host`. */
export async function hostFailureDrill(env: DrillEnv, host: string): Promise<DrillReport> {
  const d = new DrillRun(env, 'host-failure', host);
  await d.requireHealthy();
  const before = await d.firstSample();
  const victims = [...new Set(before.procs.filter((p) => p.host === host).map((p) => p.vm))].sort();
  d.say(
    `${host} runs ${victims.length ? victims.join(', ') : 'no VM'}; killing its agent and QEMU processes`,
  );
  if (!victims.length) d.note(`${host} ran no VM when it was killed: nothing to restart`);
  let detectedS: number | undefined;
  try {
    const kill = await env.faults.killHost(host);
    const t0 = kill.at;
    const [detected] = await Promise.all([
      d.detectHostFailure(host, t0),
      d.followRestarts(victims, host, t0),
    ]);
    if (detected) {
      detectedS = secondsBetween(t0, detected.at);
      d.say(`${host} seen failed after ${detectedS} s (${detected.how})`);
    } else d.note(`the cluster did not see ${host} fail within ${env.timing.recoveryMs / 1000} s`);
  } finally {
    d.say(`powering ${host} back on (its agent)`);
    d.restored =
      (await d.repair(`start the agent of ${host}`, () => env.faults.restartAgent(host))) &&
      (await d.repair(`${host} holds a lease again`, () => d.waitLeaseBack(host)));
  }
  await d.checkConverged();
  const summary = await d.samplerInvariants();
  return d.report({ ...(detectedS === undefined ? {} : { detectedS }), summary });
}
