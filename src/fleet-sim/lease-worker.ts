// The simulated hosts' leases on a thread of their own (lease-thread.ts starts it): each host's real
// `EtcdMembership` (its LeaseKeeper, its etcd operations, its peers' outage check, its owner check) runs here, so that
// a renewal's answer never waits behind 1,000 agents' HTTP work on the main thread's event loop: one process
// serving a whole fleet starved its renewals and every host fenced itself at once (docs/fleet-sim.md). On real
// hardware each agent has a machine of its own; here the thread stands in for that machine's idle CPU.
import { parentPort, workerData } from 'node:worker_threads';
import type { Etcd3 } from 'etcd3';
import { EtcdMembership } from '../agent/cluster/membership.js';
import { InvalidRequestError, toErrorBody } from '../shared/errors.js';
import { etcdClient } from '../shared/etcd.js';
import { OWNER_READ_CONCURRENCY } from '../shared/limits.js';
import { Limiter } from '../shared/queue.js';
import { LEASE_STATUS_PUSH_MS, type LeaseThreadData, type ToMain, type ToWorker } from './lease-protocol.js';

const port = parentPort;
if (!port) throw new Error('lease-worker.ts runs as a worker thread (fleet-sim/lease-thread.ts)');
const data = workerData as LeaseThreadData;
const send = (m: ToMain) => port.postMessage(m);

/** Shared connections (hosts spread over them: etcd3 multiplexes each host's keepalive stream on one). */
const shared: Etcd3[] = Array.from({ length: data.connections }, () =>
  etcdClient({ endpoints: data.etcd }, { retry: false, breaker: false }),
);
const hosts = new Map<string, { m: EtcdMembership; own?: Etcd3 }>();
/** Fence requests waiting for the main thread's agent to stop the host's VMs. */
const fences = new Map<number, { resolve: (vms: string[]) => void; reject: (e: Error) => void }>();
let nextFence = 0;
/**
 * The owner checks of every host at once (1,000 during an apply, where a real host has only its own few): bounded, so
 * that etcd's queue stays short and the keepalives sent on the same connections are answered within their deadline.
 */
const ownerReads = new Limiter(OWNER_READ_CONCURRENCY);
/**
 * The whole reads of the cluster membership (~50 KB at 1,000 hosts) of every host: each agent already spreads its
 * read of a change over a heartbeat (agent/cluster/peers.ts); here they also leave one process, over the same few
 * connections as every host's keepalives, so no more than a few are in flight at once.
 */
const MEMBERS_READ_CONCURRENCY = 4;
const membersReads = new Limiter(MEMBERS_READ_CONCURRENCY);
/** Each host's status as last pushed (only changes are sent). */
const pushed = new Map<string, string>();

function membership(host: string): EtcdMembership {
  const h = hosts.get(host);
  if (!h) throw new InvalidRequestError(`simulated host ${host} has no lease here`);
  return h.m;
}

function add(host: string, stateDir: string, own: boolean): void {
  if (hosts.has(host)) throw new InvalidRequestError(`simulated host ${host} is added twice`);
  const ownClient = own ? etcdClient({ endpoints: data.etcd }, { retry: false }) : undefined;
  const m = new EtcdMembership({
    host,
    connection: { endpoints: data.etcd },
    heartbeatSeconds: data.heartbeatSeconds,
    stateDir,
    fenceVms: (reason) =>
      new Promise<string[]>((resolve, reject) => {
        const id = nextFence++;
        fences.set(id, { resolve, reject });
        send({ kind: 'fence', id, host, reason });
      }),
    client: ownClient ?? shared[hosts.size % shared.length]!,
    membersReads,
  });
  hosts.set(host, { m, ...(ownClient ? { own: ownClient } : {}) });
}

async function handle(msg: ToWorker): Promise<unknown> {
  switch (msg.op) {
    case 'add':
      return add(msg.host, msg.stateDir, msg.own);
    case 'start':
      return membership(msg.host).start();
    case 'stop':
      return membership(msg.host).stop();
    case 'cut':
      // A power loss: the host's own connection goes, renewals stop, etcd lets the lease run out.
      return hosts.get(msg.host)?.own?.close();
    case 'verified':
      return membership(msg.host).verifiedStatus(msg.boundMs);
    case 'assertOwner':
      return ownerReads.run(() => membership(msg.host).assertOwner(msg.vm, msg.fence));
    case 'ownedElsewhere':
      return ownerReads.run(() => membership(msg.host).ownedElsewhere(msg.vms));
    case 'fenced': {
      const f = fences.get(msg.id);
      fences.delete(msg.id);
      if (msg.error !== undefined) f?.reject(new Error(msg.error));
      else f?.resolve(msg.vms ?? []);
      return;
    }
    case 'close':
      for (const [, h] of hosts) h.own?.close();
      for (const c of shared) c.close();
      clearInterval(timer);
      return;
  }
}

/** Pushes the statuses that changed since the last push (the main thread answers `status()` from them). */
function push(): void {
  const changed: ToMain & { kind: 'status' } = { kind: 'status', statuses: [] };
  for (const [host, h] of hosts) {
    const s = h.m.status();
    const text = JSON.stringify(s);
    if (pushed.get(host) === text) continue;
    pushed.set(host, text);
    changed.statuses.push(s);
  }
  if (changed.statuses.length) send(changed);
}
const timer = setInterval(push, LEASE_STATUS_PUSH_MS);

// Messages come from this process's own main thread (lease-thread.ts), typed at both ends.
port.on('message', (msg: ToWorker) => {
  handle(msg).then(
    (value) => {
      // A reply carries the statuses too: `start` resolves with the host's lease visible at once.
      push();
      if ('id' in msg && msg.op !== 'fenced') send({ kind: 'reply', id: msg.id, value });
    },
    (e: unknown) => {
      if ('id' in msg && msg.op !== 'fenced') send({ kind: 'reply', id: msg.id, error: toErrorBody(e) });
    },
  );
});
send({ kind: 'ready' });
