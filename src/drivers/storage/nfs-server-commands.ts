// The commands an NFS server instance runs and what their output says: rpcbind in a private mount namespace with
// its own /run, ganesha entered into it, `rpcinfo -p` read back, and the outcome of an export reload in ganesha's log.
import { NFS_PORT } from '../../shared/storage.js';
import { NFS_MOUNTD_PORT } from './ganesha-config.js';
import type { NfsServerPaths } from './nfs-server-state.js';

// rpcbind runs with a tmpfs of its own on /run (its socket and lock file live there); "$@" passes argv unparsed.
const RUN_TMPFS = 'mount -t tmpfs -o mode=0755,size=1m,nosuid,nodev,noexec vmlink-nfs-run /run && exec "$@"';

/** argv that starts rpcbind (foreground) in a new private mount namespace with its own /run. */
export function rpcbindArgv(): string[] {
  return [
    'unshare',
    '--mount',
    '--propagation',
    'private',
    '--',
    'sh',
    '-c',
    RUN_TMPFS,
    'sh',
    'rpcbind',
    '-f',
  ];
}

/** argv that starts ganesha (foreground) in rpcbind's mount and network namespaces. */
export function ganeshaArgv(paths: NfsServerPaths, rpcbindPid: number): string[] {
  return [
    ...nsenterArgv(rpcbindPid),
    'ganesha.nfsd',
    '-F',
    '-f',
    paths.conf,
    '-L',
    paths.log,
    '-p',
    paths.ganeshaPidFile,
  ];
}

/** argv prefix that runs a command in rpcbind's mount and network namespaces (its /run, its ports). */
export function nsenterArgv(rpcbindPid: number): string[] {
  return ['nsenter', `--target=${rpcbindPid}`, '--mount', '--net', '--'];
}

/** One registration `rpcinfo -p` lists. */
export interface RpcRegistration {
  program: number;
  version: number;
  proto: string;
  port: number;
}

/** Parses `rpcinfo -p` output (header and odd lines skipped). */
export function parseRpcinfo(text: string): RpcRegistration[] {
  const out: RpcRegistration[] = [];
  for (const line of text.split('\n').slice(0, 1024)) {
    const m = /^\s*(\d+)\s+(\d+)\s+(tcp|udp|tcp6|udp6)\s+(\d+)/.exec(line);
    if (m) out.push({ program: Number(m[1]), version: Number(m[2]), proto: m[3]!, port: Number(m[4]) });
  }
  return out;
}

/** RPC program numbers of NFS and MOUNT. */
export const RPC_PROGRAM = { nfs: 100_003, mount: 100_005 } as const;

/** Whether NFSv3 and MOUNTv3 over TCP are registered at vmlink's fixed ports. */
export function nfsRegistered(regs: readonly RpcRegistration[]): boolean {
  const has = (program: number, port: number) =>
    regs.some((r) => r.program === program && r.version === 3 && r.proto === 'tcp' && r.port === port);
  return has(RPC_PROGRAM.nfs, NFS_PORT) && has(RPC_PROGRAM.mount, NFS_MOUNTD_PORT);
}

/** What a reload's stretch of ganesha's log says: done (with the errors it logged, if any) or not yet. */
export function reloadOutcome(logText: string): { done: boolean; errors: string[] } {
  const lines = logText.split('\n');
  const start = lines.findIndex((l) => l.includes('initiating export list reload'));
  const mine = start < 0 ? [] : lines.slice(start);
  return {
    done: mine.some((l) => l.includes('Reread exports complete')),
    errors: mine
      .filter((l) => /:(CRIT|MAJ|FATAL) :/.test(l) || l.includes('Configuration syntax errors'))
      .map((l) => l.replace(/^.*?\] /, '').trim())
      .slice(0, 20),
  };
}
