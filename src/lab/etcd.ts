// The lab's etcd (`lab.etcd`): each member in a namespace of its own on the lab LAN (`vl-<lab>-<member>`), mutual
// TLS for clients and between members, short raft timings for a lab, data and certificates beside the machine's
// state, started and stopped by verified identity. Drills stop and start single members through the exports here.
//
// Two CAs: clients (controllers, agents) and members' client ports use the controller's CA (a client's etcd user is
// its certificate's CN); the members' peer port trusts a lab-local CA that signed nothing but the members' peer
// certificates, so no host's certificate can speak raft to a member.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Runner } from '../exec/runner.js';
import { InvalidRequestError, TimeoutError } from '../shared/errors.js';
import { DAEMON_STOP_GRACE_MS, KILL_WAIT_MS, LAB_ETCD_START_TIMEOUT_MS } from '../shared/limits.js';
import { labHostStateDir, labRunDir, stateDir } from '../shared/paths.js';
import {
  type ExpectedProcess,
  identify,
  isRunning,
  processFromIdentityFile,
  signalProcess,
  terminate,
  waitExited,
  writeIdentityFile,
} from '../shared/process.js';
import { writeFileAtomic } from '../shared/state-file.js';
import { pollUntil } from '../shared/time.js';
import { credentialFiles } from '../shared/tls.js';
import type { LabSpec } from '../spec/schema.js';
import { machineNs } from './names.js';

/** etcd's client port on each member's LAN address. */
export const ETCD_CLIENT_PORT = 2379;
/** etcd's peer (raft) port on each member's LAN address. */
export const ETCD_PEER_PORT = 2380;
/** Raft timings for a lab LAN (ms): a lost leader is replaced within about a second. */
const HEARTBEAT_INTERVAL_MS = 100;
const ELECTION_TIMEOUT_MS = 1_000;

/** An etcd member of a lab. */
export type LabEtcdMember = LabSpec['etcd'][number];

/** The members' client URLs (`https://addr:2379`), in spec order: what agents get in `--etcd`. */
export const labEtcdEndpoints = (lab: LabSpec): string[] =>
  lab.etcd.map((m) => `https://${m.address}:${ETCD_CLIENT_PORT}`);

/** The store location of the lab's etcd (`etcd://a:2379,b:2379`): what cluster controllers get in `--store`. */
export const labEtcdLocation = (lab: LabSpec): string =>
  `etcd://${lab.etcd.map((m) => `${m.address}:${ETCD_CLIENT_PORT}`).join(',')}`;

/** Where a member keeps its data (0700), its client-side credentials and its peer credentials. */
export function labEtcdDirs(lab: string, member: string): { data: string; tls: string; peerTls: string } {
  const base = labHostStateDir(lab, member);
  return { data: join(base, 'data'), tls: join(base, 'tls'), peerTls: join(base, 'peer-tls') };
}

/** The lab-local CA of the members' peer certificates (a leading '-': no machine name can take it). */
export const labEtcdPeerCaDir = (lab: string): string => join(stateDir(), 'lab', lab, '-etcd-peer-ca');

/**
 * The management relay's socket leading to a member's client port: how the controller that brought the lab up (on
 * no lab LAN itself) reaches etcd, as a management station on the LAN would.
 */
export const labEtcdSocket = (lab: string, member: string): string =>
  join(labRunDir(lab), `${member}.etcd.sock`);

/** The member's log in the lab's run directory. */
export const labEtcdLog = (lab: string, member: string): string => join(labRunDir(lab), `${member}.etcd.log`);

/** Where a member's identity (trusted) and plain pid (for people) are recorded. */
const recordOf = (lab: string, member: string) => {
  const base = join(labRunDir(lab), `${member}.etcd`);
  return { identity: `${base}.json`, pidfile: `${base}.pid` };
};

function member(lab: LabSpec, name: string): LabEtcdMember {
  const m = lab.etcd.find((x) => x.name === name);
  if (!m)
    throw new InvalidRequestError(
      `lab ${lab.name} has no etcd member ${name} (members: ${lab.etcd.map((x) => x.name).join(', ') || 'none'})`,
      `etcd/${name}`,
    );
  return m;
}

/** What a member's recorded process must be before the lab signals it: etcd, on this data dir, in its namespace. */
const expected = (lab: LabSpec, m: LabEtcdMember): ExpectedProcess => ({
  comm: 'etcd',
  args: ['--data-dir', labEtcdDirs(lab.name, m.name).data],
  netns: machineNs(lab.name, m.name),
});

/** The command line of member `m` (the same at every start: etcd ignores the initial-cluster flags once it has data). */
export function labEtcdArgv(lab: LabSpec, m: LabEtcdMember): string[] {
  const dirs = labEtcdDirs(lab.name, m.name);
  const tls = credentialFiles(dirs.tls);
  const peer = credentialFiles(dirs.peerTls);
  const client = `https://${m.address}:${ETCD_CLIENT_PORT}`;
  const peerUrl = `https://${m.address}:${ETCD_PEER_PORT}`;
  return [
    'etcd',
    '--name',
    m.name,
    '--data-dir',
    dirs.data,
    '--listen-client-urls',
    client,
    '--advertise-client-urls',
    client,
    '--listen-peer-urls',
    peerUrl,
    '--initial-advertise-peer-urls',
    peerUrl,
    '--initial-cluster',
    lab.etcd.map((x) => `${x.name}=https://${x.address}:${ETCD_PEER_PORT}`).join(','),
    '--initial-cluster-state',
    'new',
    '--initial-cluster-token',
    `vmlink-lab-${lab.name}`,
    '--client-cert-auth',
    '--trusted-ca-file',
    tls.ca,
    '--cert-file',
    tls.cert,
    '--key-file',
    tls.key,
    '--peer-client-cert-auth',
    '--peer-trusted-ca-file',
    peer.ca,
    '--peer-cert-file',
    peer.cert,
    '--peer-key-file',
    peer.key,
    '--heartbeat-interval',
    String(HEARTBEAT_INTERVAL_MS),
    '--election-timeout',
    String(ELECTION_TIMEOUT_MS),
    '--logger',
    'zap',
    '--log-outputs',
    'stderr',
  ];
}

/** Whether member `name`'s recorded etcd still runs (same process, on its data dir, in its namespace). */
export async function etcdMemberRunning(lab: LabSpec, name: string): Promise<boolean> {
  const m = member(lab, name);
  return (await processFromIdentityFile(recordOf(lab.name, name).identity, expected(lab, m))) !== undefined;
}

/**
 * Whether member `name` answers `endpoint health` over TLS from its own namespace (with its own certificate: no etcd
 * user, which etcd's health check accepts). A member is healthy only while the cluster has a leader.
 */
export async function etcdMemberHealthy(runner: Runner, lab: LabSpec, name: string): Promise<boolean> {
  const m = member(lab, name);
  const tls = credentialFiles(labEtcdDirs(lab.name, name).tls);
  const r = await runner.run(
    [
      'etcdctl',
      '--endpoints',
      `https://${m.address}:${ETCD_CLIENT_PORT}`,
      '--cacert',
      tls.ca,
      '--cert',
      tls.cert,
      '--key',
      tls.key,
      '--dial-timeout',
      '1s',
      '--command-timeout',
      '2s',
      'endpoint',
      'health',
    ],
    { netns: machineNs(lab.name, name), allowFailure: true },
  );
  return r.code === 0;
}

/** Starts member `name` unless it runs; its data and certificates must exist (`lab up` made them). */
async function spawnMember(runner: Runner, lab: LabSpec, m: LabEtcdMember): Promise<void> {
  if (await etcdMemberRunning(lab, m.name)) return;
  const dirs = labEtcdDirs(lab.name, m.name);
  // etcd refuses a data directory others may read; the lab's own directory stays traversable (hosts' VMs use it).
  mkdirSync(join(stateDir(), 'lab', lab.name), { recursive: true, mode: 0o755 });
  mkdirSync(labHostStateDir(lab.name, m.name), { recursive: true, mode: 0o700 });
  mkdirSync(dirs.data, { recursive: true, mode: 0o700 });
  mkdirSync(labRunDir(lab.name), { recursive: true, mode: 0o755 });
  const pid = await runner.spawnDetached(labEtcdArgv(lab, m), {
    netns: machineNs(lab.name, m.name),
    logFile: labEtcdLog(lab.name, m.name),
  });
  const id = await identify(pid);
  const rec = recordOf(lab.name, m.name);
  if (id) {
    await writeIdentityFile(rec.identity, id);
    await writeFileAtomic(rec.pidfile, `${pid}\n`, { mode: 0o644 });
  }
}

/** Waits until every member in `names` answers health (so the cluster has its quorum and a leader). */
async function waitHealthy(runner: Runner, lab: LabSpec, names: readonly string[]): Promise<void> {
  const left = new Set(names);
  const done = await pollUntil(
    async () => {
      for (const n of [...left]) {
        if (await etcdMemberHealthy(runner, lab, n)) left.delete(n);
        else if (!(await etcdMemberRunning(lab, n))) return 'exited';
      }
      return left.size === 0 ? 'up' : undefined;
    },
    { timeoutMs: LAB_ETCD_START_TIMEOUT_MS, intervalMs: 250 },
  );
  if (done === 'up') return;
  const which = [...left];
  throw new TimeoutError(
    `etcd member${which.length > 1 ? 's' : ''} ${which.join(', ')} of lab ${lab.name} did not become healthy${done === 'exited' ? ' (it exited)' : ''}; see ${which.map((n) => labEtcdLog(lab.name, n)).join(', ')}`,
    `etcd/${which[0]}`,
  );
}

/** Starts member `name` again (same data, same certificates) and waits until it answers health. For drills. */
export async function startEtcdMember(runner: Runner, lab: LabSpec, name: string): Promise<void> {
  await spawnMember(runner, lab, member(lab, name));
  await waitHealthy(runner, lab, [name]);
}

/**
 * Stops member `name` (SIGTERM, SIGKILL after the grace; `hard`: SIGKILL at once, as a crash), only while it is
 * still the recorded etcd; its data stays for `startEtcdMember`. For drills and `lab down`.
 */
export async function stopEtcdMember(
  _runner: Runner,
  lab: LabSpec,
  name: string,
  opts: { hard?: boolean } = {},
): Promise<void> {
  const m = member(lab, name);
  const rec = recordOf(lab.name, name);
  const id = await processFromIdentityFile(rec.identity, expected(lab, m));
  if (id) {
    if (opts.hard) {
      if (await signalProcess(id, 'SIGKILL')) await waitExited(id, KILL_WAIT_MS);
    } else await terminate(id, { graceMs: DAEMON_STOP_GRACE_MS, killMs: KILL_WAIT_MS });
  }
  if (!id || !(await isRunning(id))) {
    rmSync(rec.identity, { force: true });
    rmSync(rec.pidfile, { force: true });
  }
}

/** The lab's etcd cluster. */
export class LabEtcd {
  constructor(
    private readonly runner: Runner,
    readonly spec: LabSpec,
  ) {}

  /**
   * Starts every member that is not running (`restart`: these are stopped first, e.g. after new certificates), then
   * waits until all answer health. Idempotent.
   */
  async up(say: (m: string) => void, restart: readonly string[] = []): Promise<void> {
    const { spec } = this;
    if (spec.etcd.length === 0) return;
    for (const name of restart) await stopEtcdMember(this.runner, spec, name);
    const started: string[] = [];
    for (const m of spec.etcd) {
      if (await etcdMemberRunning(spec, m.name)) continue;
      say(`starting etcd member ${m.name} in ${machineNs(spec.name, m.name)} (${m.address})`);
      await spawnMember(this.runner, spec, m);
      started.push(m.name);
    }
    await waitHealthy(
      this.runner,
      spec,
      spec.etcd.map((m) => m.name),
    );
    if (started.length) say(`etcd is healthy: ${spec.etcd.length} member(s), TLS, ${labEtcdLocation(spec)}`);
  }

  /** Stops every member (their data goes with the lab's state directory). */
  async down(say: (m: string) => void): Promise<void> {
    for (const m of this.spec.etcd) {
      if (!(await etcdMemberRunning(this.spec, m.name))) continue;
      say(`stopping etcd member ${m.name}`);
      await stopEtcdMember(this.runner, this.spec, m.name);
    }
  }
}
