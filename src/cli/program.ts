// The `vmlink` command tree, a client of the controller API (its command modules: command-groups.ts, each loaded when
// the command line names one of its commands).
// The processes some commands run (daemon, agent, lab relay) and the checks `doctor` runs on a machine with no
// controller are handed in by the composition root (src/main.ts).
import { Command, Option } from 'commander';
import { type DoctorCheck, HealthSchema } from '../controller/wire.js';
import { errorStatus, VmlinkError } from '../shared/errors.js';
import { controllerDb, controllerSocket } from '../shared/paths.js';
import { sleep } from '../shared/time.js';
import { VERSION } from '../shared/version.js';
import { controllerClient, explainUnavailable } from './client.js';
import { groupsFor } from './command-groups.js';
import { out } from './io.js';

/** `vmlink daemon` as parsed: what the controller process needs. */
export interface DaemonArgs {
  socket: string;
  db: string;
  heartbeatMs: number;
  listen?: string;
  tokenFile?: string;
  /** `sqlite://PATH` (default: the --db file) or `etcd://ADDR:PORT[,...]` (`etcd+http://` without TLS: tests). */
  store?: string;
  /** This controller's name in the cluster (default: the machine's hostname). */
  name?: string;
  /** The CA's directory (default: `pki/` beside the database). */
  pkiDir?: string;
  /** The secrets sealing key (default: `secrets.key` beside the database). */
  secretsKey?: string;
}

/** `vmlink agent` as parsed: what the agent process needs. */
export interface AgentArgs {
  host: string;
  listen: string;
  listenTcp?: string;
  tlsDir?: string;
  join?: string;
  joinToken?: string;
  uplink: string;
  stateDir: string;
  role?: 'compute' | 'storage';
  tgtControlPort?: number;
  nfsDir?: string;
  poolRoots?: string[];
  /** etcd client URLs (`https://` with the host's certificate, `http://` for tests): the host joins the cluster. */
  etcd?: string[];
  /** Seconds between lease renewals (the lease lives twice as long). */
  clusterHeartbeatS?: number;
  /** What the host's CPU and memory metrics cover (a lab host: its own processes). */
  metricsScope?: 'machine' | 'processes';
}

/** What the composition root wires into the command tree: the process bodies and the local checks. */
export interface Processes {
  /** Runs the controller in this process until it is stopped. */
  daemon(args: DaemonArgs): Promise<void>;
  /** Starts `vmlink daemon` with `args` in the background; returns its pid and log file. */
  spawnDaemon(args: DaemonArgs): Promise<{ pid: number; logFile: string }>;
  /** Stops a controller started with `--detach`; says what it did. */
  stopDaemon(): Promise<string>;
  /** Runs a host's agent in this process until it is stopped. */
  agent(args: AgentArgs): Promise<void>;
  /** Runs the lab's management relay: each `listen` socket leads to the matching `to` address. */
  relay(listen: string[], to: string[]): Promise<void>;
  /** This machine's prerequisite checks, for `doctor` where no controller (hence no agent) can be asked. */
  localChecks(): Promise<DoctorCheck[]>;
}

/**
 * The `vmlink` program with `processes` wired in. Given the command line after `node vmlink`, only the modules of the
 * top-level command it names are loaded (command-groups.ts); without it, the whole tree.
 */
export async function createCli(processes: Processes, args?: readonly string[]): Promise<Command> {
  const program = new Command('vmlink')
    .description(
      'Virtualization control plane: describe hosts, networks and VMs in one spec, apply it, and prove the connectivity.',
    )
    .version(VERSION)
    .addOption(
      new Option(
        '--socket <path>',
        'controller API socket (or https://host:port with VMLINK_TOKEN, an API token or the bootstrap token, and VMLINK_CA); cluster controllers: a comma-separated list, tried in order (a standby sends the CLI to the active one)',
      )
        .default(controllerSocket())
        .env('VMLINK_SOCKET'),
    )
    .showHelpAfterError();

  const api = () => controllerClient(program.opts<{ socket: string }>().socket);
  program
    .command('daemon')
    .description(
      'run the controller (REST API on a unix socket, optionally TCP over TLS with a bearer token); its CA lives in pki/ beside the database',
    )
    .option('--db <path>', 'SQLite database', controllerDb())
    .option(
      '--listen <url>',
      "also listen on TCP over TLS, e.g. https://127.0.0.1:7070 (requires --token-file; clients trust the CA's pki/ca.pem)",
    )
    .option(
      '--token-file <path>',
      'file holding the bootstrap (admin) bearer token of the TCP listener; `vmlink token create` makes scoped ones',
    )
    .option('--heartbeat-ms <ms>', 'host heartbeat period; a host missing 3 in a row is unreachable', '5000')
    .option(
      '--store <location>',
      "state store: sqlite://PATH (default: the --db file) or etcd://ADDR:PORT[,ADDR:PORT...] (a cluster: one active controller, the others stand by; TLS with the pki dir's controller certificate)",
    )
    .option('--name <name>', "this controller's name in the cluster (default: the hostname)")
    .option('--pki-dir <dir>', "the CA's directory (default: pki/ beside the database)")
    .option('--secrets-key <file>', 'the secrets sealing key (default: secrets.key beside the database)')
    .option('--detach', 'start in the background and return once the API answers')
    .option('--stop', 'stop a controller started with --detach (VMs and lab keep running)')
    .action(async (o: DaemonCliOptions) => {
      const socket = program.opts<{ socket: string }>().socket;
      if (socket.includes(','))
        throw new VmlinkError(
          'invalid',
          `a controller listens on one socket: --socket ${socket} is a list (lists are for clients)`,
        );
      if (o.stop) {
        out(await processes.stopDaemon());
        return;
      }
      if (o.listen && !o.tokenFile)
        throw new VmlinkError(
          'invalid',
          '--listen requires --token-file: the TCP API is never open without a token',
        );
      const heartbeatMs = Number(o.heartbeatMs);
      if (!Number.isInteger(heartbeatMs) || heartbeatMs < 100)
        throw new VmlinkError(
          'invalid',
          `--heartbeat-ms must be a whole number >= 100, got ${o.heartbeatMs}`,
        );
      const args: DaemonArgs = {
        socket,
        db: o.db,
        heartbeatMs,
        ...(o.listen ? { listen: o.listen } : {}),
        ...(o.tokenFile ? { tokenFile: o.tokenFile } : {}),
        ...daemonClusterArgs(o),
      };
      if (o.detach) return detachDaemon(args, processes);
      await processes.daemon(args);
    });

  program
    .command('agent')
    .description("run a host's agent (the lab starts one per host inside its namespace)")
    .requiredOption('--host <name>', 'host name as in the spec')
    .requiredOption('--listen <url>', 'local admin socket, unix:///path.sock (root only, no TLS)')
    .option(
      '--listen-tcp <url>',
      "the controller's listener, https://ADDR:7443 (mutual TLS with the host's certificate)",
    )
    .option('--tls-dir <dir>', "the host's key, certificate and CA (default: STATE-DIR/tls)")
    .option('--join <url>', 'first join the controller at https://ADDR:PORT (its key is made here)')
    .addOption(
      new Option('--join-token <token>', 'the token `vmlink host join NAME` printed').env(
        'VMLINK_JOIN_TOKEN',
      ),
    )
    .option(
      '--uplink <nic>',
      "the host's uplink NIC (reported, and managed when the spec sets hosts[].network)",
      'eth0',
    )
    .requiredOption('--state-dir <dir>', 'where VMs and networks keep their files')
    .addOption(
      new Option(
        '--role <role>',
        'compute runs VMs, networks and dir pools; storage serves iscsi and nfs pools only (no KVM probe, no Open vSwitch)',
      )
        .choices(['compute', 'storage'])
        .default('compute'),
    )
    .option(
      '--tgt-control-port <n>',
      "control port of the tgtd serving this host's iscsi pools (tgtadm -C N; 0: the host's own tgtd)",
    )
    .option('--nfs-dir <dir>', "the nfs-ganesha instance directory of this host's nfs pools")
    .option(
      '--etcd <urls>',
      "the cluster's etcd, https://ADDR:2379[,...] (the host's certificate is its etcd identity; http:// for tests): the agent holds a lease and checks VM ownership",
    )
    .option('--cluster-heartbeat-s <n>', 'seconds between lease renewals (the lease lives twice that)', '5')
    .option(
      '--pool-root <dir>',
      'a directory pools may be made below (repeatable; default /var/lib/vmlink/pools)',
      (v: string, all: string[] = []) => [...all, v],
    )
    .addOption(
      new Option(
        '--metrics-scope <scope>',
        "what the host's CPU and memory metrics cover: the machine, or the host's own processes (a lab host, which shares its kernel)",
      )
        .choices(['machine', 'processes'])
        .default('machine'),
    )
    .action(
      async (o: {
        host: string;
        listen: string;
        listenTcp?: string;
        tlsDir?: string;
        join?: string;
        joinToken?: string;
        uplink: string;
        stateDir: string;
        role: 'compute' | 'storage';
        tgtControlPort?: string;
        nfsDir?: string;
        poolRoot?: string[];
        etcd?: string;
        clusterHeartbeatS: string;
        metricsScope: 'machine' | 'processes';
      }) => {
        if (!o.listen.startsWith('unix://'))
          throw new VmlinkError(
            'invalid',
            `--listen must be unix:///path.sock, got ${o.listen} (TCP: --listen-tcp)`,
          );
        if (o.listenTcp && !o.listenTcp.startsWith('https://'))
          throw new VmlinkError('invalid', `--listen-tcp must be https://ADDR:PORT, got ${o.listenTcp}`);
        if (o.join && !o.joinToken)
          throw new VmlinkError('invalid', '--join requires --join-token (or VMLINK_JOIN_TOKEN)');
        const tgtControlPort = o.tgtControlPort === undefined ? undefined : Number(o.tgtControlPort);
        if (
          tgtControlPort !== undefined &&
          !(Number.isInteger(tgtControlPort) && tgtControlPort >= 0 && tgtControlPort <= 1023)
        )
          throw new VmlinkError(
            'invalid',
            `--tgt-control-port must be a whole number 0-1023, got ${o.tgtControlPort}`,
          );
        for (const d of [o.nfsDir, ...(o.poolRoot ?? [])])
          if (d !== undefined && !/^\/[\w./-]{1,200}$/.test(d))
            throw new VmlinkError(
              'invalid',
              `${d}: --nfs-dir and --pool-root take an absolute path of letters, digits, ., _, - and /`,
            );
        const etcd = o.etcd?.split(',').map((u) => u.trim());
        for (const u of etcd ?? [])
          if (!/^https?:\/\/[\w.-]+:\d{1,5}$/.test(u) || u.split(':')[0] !== etcd![0]!.split(':')[0])
            throw new VmlinkError(
              'invalid',
              `--etcd takes https://ADDR:PORT[,https://ADDR:PORT...] (all https, or all http:// for tests), got ${o.etcd}`,
            );
        const clusterHeartbeatS = Number(o.clusterHeartbeatS);
        if (!(Number.isInteger(clusterHeartbeatS) && clusterHeartbeatS >= 3 && clusterHeartbeatS <= 60))
          throw new VmlinkError(
            'invalid',
            `--cluster-heartbeat-s must be a whole number of seconds 3-60 (the lease lives two, the agent fences 2 s before it ends), got ${o.clusterHeartbeatS}`,
          );
        await processes.agent({
          host: o.host,
          listen: o.listen,
          stateDir: o.stateDir,
          uplink: o.uplink,
          role: o.role,
          metricsScope: o.metricsScope,
          ...(tgtControlPort === undefined ? {} : { tgtControlPort }),
          ...(o.nfsDir ? { nfsDir: o.nfsDir } : {}),
          ...(o.poolRoot?.length ? { poolRoots: o.poolRoot } : {}),
          ...(o.listenTcp ? { listenTcp: o.listenTcp } : {}),
          ...(o.tlsDir ? { tlsDir: o.tlsDir } : {}),
          ...(o.join ? { join: o.join } : {}),
          ...(o.joinToken ? { joinToken: o.joinToken } : {}),
          ...(etcd ? { etcd, clusterHeartbeatS } : {}),
        });
      },
    );
  for (const add of await Promise.all(groupsFor(args).map((g) => g.load()))) add(program, api, processes);
  return program;
}

/** Starts the controller in the background and returns once its API answers. */
async function detachDaemon(args: DaemonArgs, processes: Processes): Promise<void> {
  const client = controllerClient(args.socket, 2_000);
  const answers = () =>
    client.get('/v1/health', HealthSchema).then(
      () => true,
      () => false,
    );
  if (await answers()) {
    out(`controller already running at ${args.socket}`);
    return;
  }
  const { pid, logFile } = await processes.spawnDaemon(args);
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (await answers()) {
      out(`controller started (pid ${pid}, socket ${args.socket}, log ${logFile})`);
      return;
    }
    await sleep(200);
  }
  throw new VmlinkError('timeout', `the controller did not come up within 20 s; see ${logFile}`);
}

/** Options of `vmlink daemon`. */
interface DaemonCliOptions {
  db: string;
  store?: string;
  name?: string;
  pkiDir?: string;
  secretsKey?: string;
  listen?: string;
  tokenFile?: string;
  heartbeatMs: string;
  detach?: boolean;
  stop?: boolean;
}

/** The cluster flags of `vmlink daemon`, checked: a store location vmlink knows, a controller name. */
export function daemonClusterArgs(
  o: Pick<DaemonCliOptions, 'store' | 'name' | 'pkiDir' | 'secretsKey'>,
): Pick<DaemonArgs, 'store' | 'name' | 'pkiDir' | 'secretsKey'> {
  if (o.store !== undefined && !/^(sqlite:\/\/.+|etcd(\+http)?:\/\/.+)$/.test(o.store))
    throw new VmlinkError(
      'invalid',
      `--store must be sqlite://PATH, etcd://ADDR:PORT[,ADDR:PORT...] or etcd+http://ADDR:PORT (tests), got ${o.store}`,
    );
  if (o.name !== undefined && !/^[a-z0-9][a-z0-9-]{0,62}$/.test(o.name))
    throw new VmlinkError(
      'invalid',
      `--name must be 1-63 lowercase letters, digits and dashes (starting with a letter or digit), got ${o.name}`,
    );
  return {
    ...(o.store ? { store: o.store } : {}),
    ...(o.name ? { name: o.name } : {}),
    ...(o.pkiDir ? { pkiDir: o.pkiDir } : {}),
    ...(o.secretsKey ? { secretsKey: o.secretsKey } : {}),
  };
}

/** Runs the `vmlink` program on `argv`; an error is printed and sets the exit code its kind maps to. */
export async function runCli(processes: Processes, argv: string[] = process.argv): Promise<void> {
  const program = await createCli(processes, argv.slice(2));
  try {
    await program.parseAsync(argv);
  } catch (e) {
    const err = explainUnavailable(e, program.opts<{ socket: string }>().socket);
    const kind = err instanceof VmlinkError ? err.kind : 'internal';
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = errorStatus[kind].exit;
  }
}
