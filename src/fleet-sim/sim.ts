// A simulated fleet: N hosts served from one process, each the real agent (agent/agent.ts, its HTTP API from
// agent/server.ts, its lease from agent/cluster/membership.ts on a real etcd) over the in-memory drivers
// (drivers/hypervisor/fake, drivers/network/fake standing in for the linux backend). The leases are kept on a thread
// of their own (lease-thread.ts), so that 1,000 agents' work on this event loop never starves a renewal. What is
// shared is what a real host would not have to itself: a few etcd connections for every lease, a runner that refuses
// to run anything, and the process. Each host listens on its own unix socket (`unix://` agent addresses in the spec:
// no TLS), so the controller reaches each through its ordinary agent client.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Agent } from '../agent/agent.js';
import { createAgentServer } from '../agent/server.js';
import { FakeHypervisorDriver } from '../drivers/hypervisor/fake/driver.js';
import { FakeNetworkDriver } from '../drivers/network/fake/driver.js';
import type { Runner } from '../exec/runner.js';
import { CLUSTER_HEARTBEAT_S_DEFAULT } from '../shared/cluster.js';
import { InvalidRequestError, NotFoundError, UnsupportedError } from '../shared/errors.js';
import { listen } from '../shared/http/server.js';
import { NAME_PATTERN } from '../spec/schema.js';
import { LeaseThread, type ThreadMembership } from './lease-thread.js';

/** Most hosts one simulator serves (sockets, memory: ~1 MiB each, see docs/fleet-sim.md). */
export const FLEET_SIM_MAX_HOSTS = 5_000;

/** `count` host names `<prefix>0000`, ... (zero-padded to 4 digits). */
export function hostNames(count: number, prefix = 'h'): string[] {
  return Array.from({ length: count }, (_, i) => `${prefix}${String(i).padStart(4, '0')}`);
}

/** Options of `FleetSim`. */
export interface FleetSimOptions {
  /** Host names (spec names). */
  hosts: string[];
  /** Directory of the hosts' sockets (`<dir>/<host>.sock`) and state directories; made, and removed by `close`. */
  dir: string;
  /** The cluster's etcd client URLs (`http://` here: the simulator holds no host certificates); absent: no leases. */
  etcd?: string[];
  heartbeatSeconds?: number;
  /**
   * Hosts that get an etcd connection of their own, so that `fail(host, 'power')` can cut it: their lease then runs
   * out in etcd as a powered-off host's does (the rest share `etcdConnections`).
   */
  ownConnection?: string[];
  /** Shared etcd connections of the lease thread (hosts spread over them). Default 4. */
  etcdConnections?: number;
}

/** One simulated host. */
export interface SimHost {
  name: string;
  /** Its agent's address for the spec: `unix://<dir>/<name>.sock`. */
  address: string;
  agent: Agent;
  hypervisor: FakeHypervisorDriver;
  network: FakeNetworkDriver;
  /** Its real `EtcdMembership`, kept on the simulator's lease thread. */
  membership?: ThreadMembership;
  app?: FastifyInstance;
  /** It has an etcd connection of its own (`ownConnection`). */
  ownConnection: boolean;
  down: boolean;
}

/** A simulated host runs no commands: a probe or a doctor check that would need one is refused, saying so. */
export const refusingRunner = (host: string): Runner => ({
  run: async (argv) => {
    throw new UnsupportedError(
      `host ${host} is simulated (fleet-sim): it runs no commands (${argv[0]})`,
      `host/${host}`,
    );
  },
  spawnDetached: async (argv) => {
    throw new UnsupportedError(
      `host ${host} is simulated (fleet-sim): it runs no commands (${argv[0]})`,
      `host/${host}`,
    );
  },
});

/** N simulated hosts in this process. */
export class FleetSim {
  private readonly hosts = new Map<string, SimHost>();
  private leases: LeaseThread | undefined;

  constructor(private readonly opts: FleetSimOptions) {
    if (opts.hosts.length > FLEET_SIM_MAX_HOSTS)
      throw new InvalidRequestError(
        `a simulator serves at most ${FLEET_SIM_MAX_HOSTS} hosts, asked ${opts.hosts.length}`,
      );
    for (const h of opts.hosts)
      if (!NAME_PATTERN.test(h))
        throw new InvalidRequestError(`simulated host name ${JSON.stringify(h)} is invalid`);
    if (opts.etcd?.some((e) => !/^https?:\/\/[\w.-]+:\d{1,5}$/.test(e)))
      throw new InvalidRequestError(`etcd endpoints are http(s)://ADDR:PORT, got ${opts.etcd.join(',')}`);
  }

  /** Starts every host: its agent, its lease (when etcd is given), then its listener. `concurrency` at a time. */
  async start(concurrency = 50): Promise<void> {
    mkdirSync(this.opts.dir, { recursive: true, mode: 0o700 });
    const etcd = this.opts.etcd;
    if (etcd?.length) {
      this.leases = new LeaseThread({
        etcd,
        heartbeatSeconds: this.opts.heartbeatSeconds ?? CLUSTER_HEARTBEAT_S_DEFAULT,
        connections: this.opts.etcdConnections ?? 4,
      });
      await this.leases.started();
    }
    // Agents and listeners first (the CPU-heavy part), then the leases: a renewal must not wait behind a server's
    // set-up on this one event loop, or the host fences itself as a starved machine would.
    await inParallel(this.opts.hosts, concurrency, (h) => this.startHost(h));
    await inParallel(this.list(), concurrency, async (h) => h.membership?.start());
  }

  /** How many hosts hold their lease now (a failed host does not, whatever its stopped keeper last said). */
  held(): number {
    return this.list().filter((h) => !h.down && h.membership?.status().mode === 'held').length;
  }

  private async startHost(name: string): Promise<void> {
    const stateDir = join(this.opts.dir, 'state', name);
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const network = new FakeNetworkDriver();
    const hypervisor = new FakeHypervisorDriver({ tapExists: (t) => network.hasPort(t) });
    const own = this.opts.ownConnection?.includes(name) ?? false;
    let agent: Agent | undefined;
    const membership = await this.leases?.membership(
      name,
      stateDir,
      (reason) => agent!.fenceVms(reason),
      own,
    );
    agent = new Agent({
      host: name,
      runner: refusingRunner(name),
      networks: { linux: network },
      hypervisor,
      stateDir,
      ...(membership ? { cluster: membership } : {}),
    });
    await agent.start();
    const host: SimHost = {
      name,
      address: `unix://${this.socket(name)}`,
      agent,
      hypervisor,
      network,
      ...(membership ? { membership } : {}),
      ownConnection: own,
      down: false,
    };
    host.app = await this.serve(host);
    this.hosts.set(name, host);
  }

  private async serve(host: SimHost): Promise<FastifyInstance> {
    const app = await createAgentServer(host.agent, {
      prerequisites: async () => [
        {
          name: 'simulated host',
          ok: true,
          detail: 'fleet-sim: in-memory hypervisor and network, no host commands',
        },
      ],
    });
    rmSync(this.socket(host.name), { force: true });
    await listen(app, host.address);
    return app;
  }

  private socket(name: string): string {
    return join(this.opts.dir, `${name}.sock`);
  }

  /** Host `name`, or NotFoundError. */
  host(name: string): SimHost {
    const h = this.hosts.get(name);
    if (!h) throw new NotFoundError('simulated host', name);
    return h;
  }

  /** Every host, in the order they were given. */
  list(): SimHost[] {
    return this.opts.hosts.flatMap((h) => this.hosts.get(h) ?? []);
  }

  /**
   * Fails host `name`: its agent stops answering and its VMs stop (the machine is gone). `clean`: the lease is revoked
   * (an agent stopped cleanly: failed at once); `power`: renewals stop and etcd lets the lease run out (needs
   * `ownConnection`).
   */
  async fail(name: string, how: 'clean' | 'power' = 'clean'): Promise<void> {
    const h = this.host(name);
    if (how === 'power' && !h.ownConnection)
      throw new InvalidRequestError(
        `host ${name} shares the etcd connection: list it in ownConnection to cut it`,
      );
    h.down = true;
    await h.app?.close();
    h.app = undefined;
    for (const vm of await h.hypervisor.list()) await h.hypervisor.kill(vm.name);
    if (how === 'power') await h.membership?.cut();
    else await h.membership?.stop();
  }

  /** Stops every host (leases revoked) and removes the directory. */
  async close(): Promise<void> {
    for (const h of this.hosts.values()) {
      await h.app?.close().catch(() => undefined);
      h.agent.stop();
      if (!h.down) await h.membership?.stop().catch(() => undefined);
    }
    this.hosts.clear();
    await this.leases?.close();
    rmSync(this.opts.dir, { recursive: true, force: true });
  }
}

/** Runs `fn` on every item, `limit` at a time. */
async function inParallel<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<unknown>,
): Promise<void> {
  const queue = [...items];
  const worker = async () => {
    for (let x = queue.shift(); x !== undefined; x = queue.shift()) await fn(x);
  };
  await Promise.all(Array.from({ length: Math.min(limit, queue.length) }, worker));
}
