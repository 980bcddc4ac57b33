import { describe, expect, it } from 'vitest';
import {
  ganeshaArgv,
  nfsRegistered,
  parseRpcinfo,
  reloadOutcome,
  rpcbindArgv,
} from './nfs-server-commands.js';
import { nfsServerPaths } from './nfs-server-state.js';

const RPCINFO = `   program vers proto   port  service
    100000    4   tcp    111  portmapper
    100000    2   udp    111  portmapper
    100003    3   tcp   2049  nfs
    100005    3   tcp  20048  mountd
    100003    4   tcp   2049  nfs
`;

describe('nfs server commands', () => {
  it('starts rpcbind in a new private mount namespace with a tmpfs on /run, argv passed as "$@"', () => {
    const argv = rpcbindArgv();
    expect(argv.slice(0, 5)).toEqual(['unshare', '--mount', '--propagation', 'private', '--']);
    expect(argv.slice(5, 7)).toEqual(['sh', '-c']);
    expect(argv[7]).toMatch(/^mount -t tmpfs .* \/run && exec "\$@"$/);
    expect(argv.slice(8)).toEqual(['sh', 'rpcbind', '-f']);
  });

  it("enters ganesha into rpcbind's mount and network namespaces with its own config, log and pidfile", () => {
    const p = nfsServerPaths('/srv/nfs');
    expect(ganeshaArgv(p, 4242)).toEqual([
      'nsenter',
      '--target=4242',
      '--mount',
      '--net',
      '--',
      'ganesha.nfsd',
      '-F',
      '-f',
      '/srv/nfs/ganesha.conf',
      '-L',
      '/srv/nfs/ganesha.log',
      '-p',
      '/srv/nfs/ganesha.pid',
    ]);
  });

  it('reads rpcinfo -p and wants NFSv3 and MOUNTv3 over TCP at the fixed ports', () => {
    const regs = parseRpcinfo(RPCINFO);
    expect(regs).toHaveLength(5);
    expect(regs[2]).toEqual({ program: 100_003, version: 3, proto: 'tcp', port: 2049 });
    expect(nfsRegistered(regs)).toBe(true);
    expect(nfsRegistered(regs.filter((r) => r.program !== 100_005))).toBe(false);
    expect(nfsRegistered(parseRpcinfo(RPCINFO.replace('20048', '33030')))).toBe(false);
    expect(parseRpcinfo("rpcinfo: can't contact portmapper")).toEqual([]);
  });

  it("reads a reload's outcome from ganesha's log: done, and the errors it logged", () => {
    const head = '01/12/2026 06:32:08 : epoch 1 : vm : nfs-ganesha-1[sigmgr]';
    const ok = [
      `${head} sigmgr_thread :MAIN :EVENT :SIGHUP_HANDLER: Received SIGHUP.... initiating export list reload`,
      `${head} reread_exports :CONFIG :EVENT :Reread exports complete`,
    ].join('\n');
    expect(reloadOutcome('')).toEqual({ done: false, errors: [] });
    expect(reloadOutcome(ok.split('\n')[0]!)).toEqual({ done: false, errors: [] });
    expect(reloadOutcome(ok)).toEqual({ done: true, errors: [] });
    const bad = `${ok}\n${head} config_errs_to_log :CONFIG :CRIT :Config File (/x:3): Errors processing block (EXPORT)`;
    expect(reloadOutcome(bad)).toEqual({
      done: true,
      errors: ['config_errs_to_log :CONFIG :CRIT :Config File (/x:3): Errors processing block (EXPORT)'],
    });
    // Errors logged before the reload began are not its own.
    expect(reloadOutcome(`${head} x :FSAL :CRIT :old\n${ok}`).errors).toEqual([]);
  });
});
