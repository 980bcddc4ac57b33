// `partition`: the target host is cut off the LAN while its agent and VMs keep running. Its agent cannot renew its
// lease and must stop its VMs (self-fence) before the lease ends; only then may the others start them. Measured:
// detection, each VM's stop on the isolated host and its start elsewhere, its guest answering; the sampler checks
// that no VM ever ran on both sides. Repaired by healing the link; the host must hold a new lease again.
import type { DrillReport } from '../../shared/cluster.js';
import { DrillRun, secondsBetween } from './measure.js';
import type { DrillEnv } from './types.js';

/** Runs a partition drill on `host`. */
export async function partitionDrill(env: DrillEnv, host: string): Promise<DrillReport> {
  const d = new DrillRun(env, 'partition', host);
  await d.requireHealthy();
  const before = await d.firstSample();
  const victims = [...new Set(before.procs.filter((p) => p.host === host).map((p) => p.vm))].sort();
  d.say(`${host} runs ${victims.length ? victims.join(', ') : 'no VM'}; cutting it off the LAN`);
  if (!victims.length) d.note(`${host} ran no VM when it was cut off: nothing to fence or restart`);
  let detectedS: number | undefined;
  try {
    const cut = await env.faults.partitionHost(host);
    const t0 = cut.at;
    const [detected] = await Promise.all([
      d.detectHostFailure(host, t0),
      d.followRestarts(victims, host, t0, { fence: true }),
    ]);
    if (detected) {
      detectedS = secondsBetween(t0, detected.at);
      d.say(`${host} seen failed after ${detectedS} s (${detected.how})`);
    } else d.note(`the cluster did not see ${host} fail within ${env.timing.recoveryMs / 1000} s`);
    // Safety, whatever the timing: every fenced VM stopped on the isolated side before it started elsewhere.
    for (const v of d.vms)
      if (v.stoppedS !== undefined && v.restartedS !== undefined && v.stoppedS > v.restartedS)
        d.note(`${v.vm} started on ${v.to} before its copy on ${host} stopped`);
  } finally {
    d.say(`healing ${host}'s link`);
    d.restored =
      (await d.repair(`put ${host} back on the LAN`, () => env.faults.healPartition(host))) &&
      (await d.repair(`${host} holds a lease again`, () => d.waitLeaseBack(host)));
  }
  await d.checkConverged();
  const summary = await d.samplerInvariants();
  return d.report({ ...(detectedS === undefined ? {} : { detectedS }), summary });
}
