import { X509Certificate } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Server as TlsServer } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import { DirChunkStore } from '../drivers/backup/chunk-store.js';
import { connectNbd } from '../drivers/backup/nbd-client.js';
import { startQemuNbd, stopQemuNbd } from '../drivers/backup/qemu-nbd.js';
import { deviceInventoryReader } from '../drivers/devices/inventory.js';
import { hypervisorDrivers } from '../drivers/hypervisor/registry.js';
import { LbDriver } from '../drivers/lb/driver.js';
import { OvsNetworkDriver } from '../drivers/network/ovs/driver.js';
import { networkDrivers } from '../drivers/network/registry.js';
import type { NetworkDriver } from '../drivers/network/types.js';
import { NfsServer } from '../drivers/storage/nfs-server.js';
import { type PoolBackendOptions, poolBackends } from '../drivers/storage/registry.js';
import type { PoolBackend } from '../drivers/storage/types.js';
import { type Runner, SystemRunner } from '../exec/runner.js';
import { BackupKeySet } from '../shared/backup-crypto.js';
import { applyRetention } from '../shared/backup-retention.js';
import { CLUSTER_HEARTBEAT_S_DEFAULT } from '../shared/cluster.js';
import { InvalidRequestError } from '../shared/errors.js';
import { listen } from '../shared/http/server.js';
import { log } from '../shared/log.js';
import type { NetworkBackend } from '../shared/model.js';
import type { PoolType } from '../shared/storage.js';
import { Agent } from './agent.js';
import { BackupService } from './backup/service.js';
import { BackupStores } from './backup/stores.js';
import { EtcdMembership } from './cluster/membership.js';
import type { FenceVms } from './cluster/types.js';
import { hostPrerequisites, storageHostPrerequisites } from './doctor.js';
import { observeForDoctor } from './doctor-observe.js';
import { joinController } from './join.js';
import { AgentMetricsCollector } from './metrics/collector.js';
import type { MetricsScope } from './metrics/host.js';
import { MigrationService } from './migrate/service.js';
import { createAgentServer } from './server.js';
import type { HostRole } from './storage.js';
import { CertRotation, loadHostCredentials } from './tls.js';
import { HostTuner } from './tuning.js';
import { linuxUplinkControl } from './uplink.js';
import { DEFAULT_POOL_ROOT } from './wire-checks.js';

/** Options of `vmlink agent`. */
export interface AgentOptions {
  host: string;
  /** Local admin socket, `unix:///path.sock` (no token). */
  listen: string;
  /** The controller's listener, `https://addr:port` (mutual TLS with the credentials in `tlsDir`). */
  listenTcp?: string;
  /** Where the host's key, certificate and CA live (default `<stateDir>/tls`). */
  tlsDir?: string;
  /** Join the controller at this `https://` address with `joinToken` first (makes the credentials). */
  join?: string;
  joinToken?: string;
  stateDir: string;
  /** The host's uplink NIC. */
  uplink: string;
  /** `storage`: serves iscsi and nfs pools only (no VMs, networks, KVM probe or Open vSwitch); default compute. */
  role?: HostRole;
  /** The control port of the tgtd serving this host's iscsi pools (`tgtadm -C N`; the lab runs one per machine). */
  tgtControlPort?: number;
  /** The nfs-ganesha instance directory of this host's nfs pools (config, state, pid files). */
  nfsDir?: string;
  /** Directories pools may be made below (default /var/lib/vmlink/pools). */
  poolRoots?: string[];
  /**
   * The cluster's etcd (`https://addr:port`, the host's certificate as its etcd identity; `http://` for tests): the
   * agent holds a lease, fences its VMs when it cannot, and starts VMs only for their owner record's token.
   */
  etcd?: string[];
  /** Seconds between lease renewals (default CLUSTER_HEARTBEAT_S_DEFAULT). */
  clusterHeartbeatS?: number;
  /** What the host's CPU and memory metrics cover (default `machine`; a lab host: `processes`). */
  metricsScope?: MetricsScope;
}

/** Network backends this host can drive: linux always, ovs only where Open vSwitch is installed. */
export async function availableNetworks(
  runner: Runner,
  stateDir: string,
): Promise<Partial<Record<NetworkBackend, NetworkDriver>>> {
  const out: Partial<Record<NetworkBackend, NetworkDriver>> = {};
  for (const [name, make] of Object.entries(networkDrivers) as Array<
    [NetworkBackend | 'fake', (o: { runner: Runner; stateDir: string }) => NetworkDriver]
  >) {
    // The in-memory backend is the simulated fleet's (src/fleet-sim/): a real host realises nothing with it.
    if (name === 'fake') continue;
    if (name === 'ovs') {
      const r = await runner.run(['ovs-vsctl', '--version'], { allowFailure: true }).catch(() => undefined);
      if (r?.code !== 0) {
        log.info('ovs-vsctl not found: the ovs network backend is not available on this host');
        continue;
      }
    }
    out[name] = make({ runner, stateDir });
  }
  return out;
}

/** Runs an agent until SIGTERM/SIGINT; VMs and networks keep running when it exits. */
export async function runAgent(opts: AgentOptions): Promise<void> {
  if (opts.listenTcp && !opts.listenTcp.startsWith('https://'))
    throw new InvalidRequestError(
      `--listen-tcp must be https://ADDR:PORT (the controller's listener is mutual TLS), got ${opts.listenTcp}`,
    );
  mkdirSync(opts.stateDir, { recursive: true, mode: 0o755 });
  const tlsDir = opts.tlsDir ?? join(opts.stateDir, 'tls');
  if (opts.join) {
    if (!opts.joinToken) throw new InvalidRequestError('--join requires --join-token');
    const creds = await joinController({
      host: opts.host,
      url: opts.join,
      token: opts.joinToken,
      dir: tlsDir,
    });
    log.info(
      { host: opts.host, controller: opts.join, serial: serialOf(creds.cert) },
      'joined the controller',
    );
  }
  const creds = opts.listenTcp ? loadHostCredentials(opts.host, tlsDir) : undefined;
  const cluster: EtcdMembership | undefined = opts.etcd?.length
    ? clusterMembership(opts, tlsDir, (r: string): Promise<string[]> => agent.fenceVms(r))
    : undefined;
  const runner = new SystemRunner();
  const role = opts.role ?? 'compute';
  // A storage host drives no networks: Open vSwitch is not even looked for.
  const networks = role === 'storage' ? {} : await availableNetworks(runner, opts.stateDir);
  const uplink = linuxUplinkControl(networks.linux, runner);
  const hypervisor = hypervisorDrivers.qemu({
    runner,
    stateDir: opts.stateDir,
    // Stopped VMs' backups and restores serve their disks through qemu-nbd.
    nbdServers: {
      start: (o) => startQemuNbd(runner, o),
      stopLeft: async (dir, name) => {
        await stopQemuNbd(dir, name);
      },
    },
  });
  const agent: Agent = new Agent({
    host: opts.host,
    runner,
    networks,
    hypervisor,
    uplinkDevice: opts.uplink,
    ...(uplink ? { uplink } : {}),
    stateDir: opts.stateDir,
    devices: deviceInventoryReader(opts.uplink ? { uplink: opts.uplink } : {}),
    storage: {
      role,
      pools: hostPoolBackends(role, {
        runner,
        stateDir: opts.stateDir,
        storageHost: opts.host,
        ...(opts.tgtControlPort === undefined ? {} : { tgtControlPort: opts.tgtControlPort }),
        // The rpcbind + nfs-ganesha instance of this storage host (the lab starts it; ensurePool starts it if down).
        ...(opts.nfsDir ? { ganesha: new NfsServer({ runner, dir: opts.nfsDir }) } : {}),
      }),
      ...(opts.poolRoots?.length ? { poolRoots: opts.poolRoots } : {}),
    },
    ...(cluster ? { cluster } : {}),
    // TCP tuning of the agent's own network namespace (a lab host's, a real host's root one).
    ...(role === 'storage' ? {} : { tuning: new HostTuner({ host: opts.host, runner }) }),
    // Load balancers in namespaces of their own; the state directory tells this host's apart from another agent's.
    ...(role === 'storage'
      ? {}
      : { lb: new LbDriver({ runner, stateDir: opts.stateDir, hostKey: `${opts.host}@${opts.stateDir}` }) }),
  });
  // A promise nobody awaited (a peer's error surfacing late) is logged: it must not take the host's agent down.
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection (agent keeps running)'));
  await agent.start();
  // Backups (docs/backup.md): the stores this host serves, and its backup and restore jobs. Other hosts' stores are
  // reached with this host's certificate.
  let hostCreds = creds;
  const backup = new BackupService({
    host: opts.host,
    stateDir: opts.stateDir,
    runner,
    hypervisor,
    stores: new BackupStores({
      host: opts.host,
      stateDir: opts.stateDir,
      poolRoots: opts.poolRoots?.length ? opts.poolRoots : [DEFAULT_POOL_ROOT],
      open: (config) => DirChunkStore.open(config),
    }),
    tls: () => hostCreds,
    connect: connectNbd,
    keys: (k) => BackupKeySet.fromBase64(k.value, k.name),
    retention: applyRetention,
  });
  await backup.start();
  // Live migrations (docs/mobility.md): the stream goes to the target's agent with this host's certificate.
  const migration = new MigrationService({
    host: opts.host,
    migrations: () => hypervisor.migrations,
    prepareIncoming: (vm, hash, ctx, secrets) => agent.prepareIncoming(vm, hash, ctx, secrets),
    assertMayRun: (name, fence) => agent.assertMayRun(name, fence),
    deleteVm: (name) => agent.execute({ kind: 'vm.delete', name }),
    claimPorts: (name) => agent.claimPorts(name),
    ...(cluster ? { leaseHeld: () => cluster.status().mode === 'held' } : {}),
    tls: () => hostCreds,
  });
  if (cluster) {
    // Before listening: the running VMs are adopted, and the lease is held (or the host fenced or in hold).
    await cluster.start();
    // VMs this host ran before its agent went away may have been started elsewhere since: never two copies.
    if (cluster.status().mode === 'held')
      await agent
        .stopVmsOwnedElsewhere()
        .catch((e: unknown) =>
          log.error({ err: (e as Error).message }, 'cannot check the owners of the running VMs'),
        );
    log.info({ host: opts.host, etcd: opts.etcd, lease: cluster.status() }, 'agent joined the cluster');
  }
  const collector = new AgentMetricsCollector({
    host: opts.host,
    scope: opts.metricsScope ?? 'machine',
    runner,
    stateDir: opts.stateDir,
    networks,
    hypervisor,
  });
  const metrics = () => collector.sample();
  const prerequisites = () =>
    role === 'storage' ? storageHostPrerequisites(runner) : hostPrerequisites(runner);
  const ovsDriver = networks.ovs instanceof OvsNetworkDriver ? networks.ovs : undefined;
  const observe = () => observeForDoctor({ runner, ...(ovsDriver ? { ovs: ovsDriver.daemons } : {}) });
  let tcpApp: FastifyInstance | undefined;
  const rotation = creds
    ? new CertRotation(opts.host, tlsDir, creds, (next) => {
        // New connections get the new certificate; open ones finish with the old.
        (tcpApp?.server as unknown as TlsServer | undefined)?.setSecureContext({
          key: next.key,
          cert: next.cert,
          ca: next.ca,
        });
        hostCreds = next;
        log.info({ serial: serialOf(next.cert) }, 'agent certificate rotated');
      })
    : undefined;
  const apps: FastifyInstance[] = [
    await createAgentServer(agent, {
      prerequisites,
      observe,
      backup,
      migration,
      metrics,
      ...(rotation ? { rotation } : {}),
    }),
  ];
  await listen(apps[0]!, opts.listen);
  log.info(
    { host: opts.host, role, listen: opts.listen, stateDir: opts.stateDir, backends: agent.backends },
    'agent listening',
  );
  let stopping = false;
  if (opts.listenTcp) {
    const tcp = opts.listenTcp;
    // The address may be missing right now (a rollback pending, a bridge being built): keep trying.
    const tryTcp = async (): Promise<void> => {
      if (stopping) return;
      const app = await createAgentServer(agent, {
        tls: creds!,
        rotation: rotation!,
        prerequisites,
        observe,
        backup,
        migration,
        metrics,
      });
      try {
        await listen(app, tcp);
        apps.push(app);
        tcpApp = app;
        log.info({ listen: tcp }, 'agent listening on TCP');
      } catch (e) {
        await app.close().catch(() => {});
        log.warn({ listen: tcp, err: (e as Error).message }, 'cannot listen on TCP yet; retrying in 2 s');
        setTimeout(() => void tryTcp(), 2_000).unref();
      }
    };
    await tryTcp();
  }
  const stop = () => {
    stopping = true;
    agent.stop();
    // A clean stop revokes the lease: the host is failed at once (its VMs keep running until the HA manager acts).
    void Promise.all([
      cluster
        ?.stop()
        .catch((e: unknown) => log.warn({ err: (e as Error).message }, 'could not revoke the lease')),
      ...apps.map((a) => a.close()),
      // The driver's QMP connections, and the backup spare storage daemon (no daemon outlives the agent).
      hypervisor
        .close()
        .catch((e: unknown) => log.warn({ err: (e as Error).message }, 'could not close the driver')),
    ]).then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

/**
 * The host's cluster membership on `opts.etcd`: over TLS its etcd identity and its peers' client certificate are the
 * host's credentials in `tlsDir` (CN = host = etcd user); `http://` endpoints (tests) use none.
 */
function clusterMembership(opts: AgentOptions, tlsDir: string, fenceVms: FenceVms): EtcdMembership {
  const endpoints = opts.etcd ?? [];
  const tls = endpoints[0]!.startsWith('https://');
  if (endpoints.some((e) => e.startsWith('https://') !== tls || !/^https?:\/\/[\w.-]+:\d{1,5}$/.test(e)))
    throw new InvalidRequestError(
      `--etcd takes https://ADDR:PORT[,...] (or all http:// for tests), got ${endpoints.join(',')}`,
    );
  const creds = tls ? loadHostCredentials(opts.host, tlsDir) : undefined;
  return new EtcdMembership({
    host: opts.host,
    connection: { endpoints, ...(creds ? { tls: creds } : {}) },
    heartbeatSeconds: opts.clusterHeartbeatS ?? CLUSTER_HEARTBEAT_S_DEFAULT,
    stateDir: opts.stateDir,
    fenceVms,
    ...(creds ? { peerTls: creds } : {}),
  });
}

/**
 * The pool backends of a host of `role`: a compute host holds dir pools, a storage host iscsi and nfs pools. A type
 * this build has no backend for is left out (its pools are refused, naming the host's role and what it serves).
 */
export function hostPoolBackends(
  role: HostRole,
  opts: PoolBackendOptions,
  registry: Partial<Record<PoolType, (o: PoolBackendOptions) => PoolBackend>> = poolBackends,
): Partial<Record<PoolType, PoolBackend>> {
  const types: PoolType[] = role === 'storage' ? ['iscsi', 'nfs'] : ['dir'];
  const out: Partial<Record<PoolType, PoolBackend>> = {};
  for (const t of types) {
    const make = registry[t];
    if (make) out[t] = make(opts);
    else log.warn({ type: t, role }, 'this build has no backend for these pools: they are refused');
  }
  return out;
}

const serialOf = (cert: string) => new X509Certificate(cert).serialNumber.toLowerCase();
