// A single-member etcd for tests: on this machine's loopback (free ports), its own data directory, plain HTTP.
// The lab's etcd (src/lab/etcd.ts) is the real, TLS-secured, namespaced three-member one; this is for tests of one
// part (a store, a lease keeper, an election) from the test process itself.
import { mkdtempSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SystemRunner } from '../../src/exec/runner.js';
import { identify, type ProcessIdentity, terminate } from '../../src/shared/process.js';
import { sleep } from '../../src/shared/time.js';

/** A running test etcd. */
export interface TestEtcd {
  /** `http://127.0.0.1:PORT`. */
  endpoint: string;
  /** Stops etcd (SIGKILL when `hard`, as a crash) and keeps its data, for a restart. */
  stop(hard?: boolean): Promise<void>;
  /** Starts it again on the same data. */
  restart(): Promise<void>;
  /** Stops it and removes its namespace and data. */
  close(): Promise<void>;
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Starts a one-member etcd on 127.0.0.1 (free client and peer ports) with a fresh data directory. */
export async function startTestEtcd(): Promise<TestEtcd> {
  const runner = new SystemRunner();
  const port = await freePort();
  const peerPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-etcd-'));
  const endpoint = `http://127.0.0.1:${port}`;
  const argv = [
    'etcd',
    '--name',
    'm1',
    '--data-dir',
    join(dir, 'data'),
    '--listen-client-urls',
    endpoint,
    '--advertise-client-urls',
    endpoint,
    '--listen-peer-urls',
    `http://127.0.0.1:${peerPort}`,
    '--initial-advertise-peer-urls',
    `http://127.0.0.1:${peerPort}`,
    '--initial-cluster',
    `m1=http://127.0.0.1:${peerPort}`,
    // Leases are checked often enough for second-scale tests.
    '--heartbeat-interval',
    '100',
    '--election-timeout',
    '1000',
  ];
  let proc: ProcessIdentity | undefined;
  const start = async () => {
    const pid = await runner.spawnDetached(argv, { logFile: join(dir, 'etcd.log') });
    proc = await identify(pid);
    const deadline = Date.now() + 15_000;
    for (;;) {
      const r = await runner.run(['etcdctl', '--endpoints', endpoint, 'endpoint', 'health'], {
        allowFailure: true,
      });
      if (r.code === 0) return;
      if (Date.now() > deadline) throw new Error(`test etcd did not start; see ${join(dir, 'etcd.log')}`);
      await sleep(100);
    }
  };
  const stop = async (hard = false) => {
    if (proc) await terminate(proc, { graceMs: hard ? 0 : 5_000, killMs: 5_000 });
    proc = undefined;
  };
  await start();
  return {
    endpoint,
    stop,
    restart: start,
    close: async () => {
      await stop(true);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
