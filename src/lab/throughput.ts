// A lab machine (a namespace the controller built on its own machine) as one side of a throughput measurement.
// Only the lab runs such commands from the controller's machine; real hosts are measured through their agents.
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Runner } from '../exec/runner.js';
import { iperfServerArgv, type ThroughputSide } from '../verify/throughput.js';

/**
 * A machine reached through the runner as a throughput side: this host (`netns` undefined, as the agent uses it)
 * or a lab namespace (the controller's view of lab hosts, peers and the upstream).
 */
export function runnerSide(id: string, address: string, runner: Runner, netns?: string): ThroughputSide {
  const ns = netns === undefined ? {} : { netns };
  return {
    id,
    address,
    async run(argv, timeoutMs) {
      const r = await runner.run(argv, { ...ns, allowFailure: true, timeoutMs });
      return { code: r.code, stdout: r.stdout, stderr: r.stderr };
    },
    async startServer(port) {
      const pidfile = join(tmpdir(), `vmlink-iperf3-${port}-${randomBytes(4).toString('hex')}.pid`);
      await runner.spawnDetached(iperfServerArgv(port, pidfile, false), ns);
      let stopped = false;
      return async () => {
        if (stopped) return;
        stopped = true;
        // -F: only the pid iperf3 wrote; -x iperf3: and only if that pid is still an iperf3.
        await runner.run(['pkill', '-F', pidfile, '-x', 'iperf3'], { allowFailure: true, timeoutMs: 10_000 });
        await rm(pidfile, { force: true });
      };
    },
  };
}
