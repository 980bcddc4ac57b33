// The simulator as a process of its own (bench/fleet.ts runs it beside the controller, so that 1,000 agents do not
// share the controller's event loop):
//   npx tsx src/fleet-sim/main.ts --hosts h0000,h0001,... | --count N [--prefix h] --dir DIR [--etcd http://A:P]
//       [--heartbeat S] [--own h0001,h0002]
// It prints one JSON line when every host serves: {"ready":true,"hosts":N,"startMs":..,"rssBytes":..}; then reads
// commands on stdin, one per line, and answers each with one JSON line:
//   fail HOST clean|power   the host's agent stops answering and its VMs stop; its lease is revoked / runs out
//   rss                     {"rssBytes":..,"heapUsedBytes":..,"held":..,"loopDelayMs":{p50,p99,max}}: memory, how many
//                           hosts hold their lease, and the main thread's event loop delay since the last `rss`
//   quit                    stops every host (leases revoked) and exits
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { InvalidRequestError } from '../shared/errors.js';
import { sleep } from '../shared/time.js';
import { FLEET_SIM_MAX_HOSTS, FleetSim, hostNames } from './sim.js';

/** How long the simulator waits for every host's lease before it says it is ready anyway. */
const READY_WAIT_MS = 120_000;
/** Longest command line read from stdin (a host name and a word). */
const COMMAND_MAX_CHARS = 256;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      hosts: { type: 'string' },
      count: { type: 'string' },
      prefix: { type: 'string', default: 'h' },
      dir: { type: 'string' },
      etcd: { type: 'string' },
      heartbeat: { type: 'string' },
      own: { type: 'string' },
    },
    strict: true,
  });
  if (!values.dir) throw new InvalidRequestError('--dir is required (the hosts’ sockets and state)');
  const count = Number(values.count ?? 0);
  if (!values.hosts && !(Number.isInteger(count) && count >= 1 && count <= FLEET_SIM_MAX_HOSTS))
    throw new InvalidRequestError(`--hosts NAMES or --count 1-${FLEET_SIM_MAX_HOSTS} is required`);
  const hosts = values.hosts ? values.hosts.split(',') : hostNames(count, values.prefix);
  const t0 = Date.now();
  const sim = new FleetSim({
    hosts,
    dir: values.dir,
    ...(values.etcd ? { etcd: values.etcd.split(',') } : {}),
    ...(values.heartbeat ? { heartbeatSeconds: Number(values.heartbeat) } : {}),
    ...(values.own ? { ownConnection: values.own.split(',') } : {}),
  });
  const say = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
  let closing = false;
  const quit = async (code: number) => {
    if (closing) return;
    closing = true;
    await sim.close().catch(() => undefined);
    process.exit(code);
  };
  process.once('SIGTERM', () => void quit(0));
  process.once('SIGINT', () => void quit(0));
  // How starved the agents' event loop is (their leases are kept on a thread of their own: lease-thread.ts).
  const loop = monitorEventLoopDelay({ resolution: 20 });
  loop.enable();
  await sim.start();
  // Ready once every host holds its lease (a host that could not get one yet retries on its own).
  const deadline = Date.now() + READY_WAIT_MS;
  while (values.etcd && sim.held() < hosts.length && Date.now() < deadline) await sleep(100);
  say({
    ready: true,
    hosts: hosts.length,
    held: values.etcd ? sim.held() : 0,
    startMs: Date.now() - t0,
    rssBytes: process.memoryUsage().rss,
  });
  const lines = createInterface({ input: process.stdin });
  lines.on('close', () => void quit(0));
  for await (const raw of lines) {
    const line = raw.slice(0, COMMAND_MAX_CHARS).trim();
    const [cmd, host, how] = line.split(/\s+/);
    try {
      if (cmd === 'fail' && host && (how === undefined || how === 'clean' || how === 'power')) {
        const at = Date.now();
        await sim.fail(host, how ?? 'clean');
        say({ ok: true, failed: host, how: how ?? 'clean', at });
      } else if (cmd === 'rss') {
        const m = process.memoryUsage();
        const ms = (ns: number) => Math.round(ns / 1e6);
        say({
          ok: true,
          rssBytes: m.rss,
          heapUsedBytes: m.heapUsed,
          held: sim.held(),
          loopDelayMs: { p50: ms(loop.percentile(50)), p99: ms(loop.percentile(99)), max: ms(loop.max) },
        });
        loop.reset();
      } else if (cmd === 'quit') return quit(0);
      else say({ ok: false, error: `unknown command ${JSON.stringify(line.slice(0, 80))}` });
    } catch (e) {
      say({ ok: false, error: (e as Error).message });
    }
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`fleet-sim: ${(e as Error).message}\n`);
  process.exit(1);
});
