import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../exec/runner.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { NFS_FILE_OWNER_DEFAULT } from './ganesha-config.js';
import {
  ganeshaArgv,
  NfsServer,
  nfsRegistered,
  nfsServerPaths,
  parseRpcinfo,
  reloadOutcome,
  rpcbindArgv,
} from './nfs-server.js';

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

describe('NfsServer exports while stopped', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-nfs-server-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('records exports in its state file and renders them into ganesha.conf, mode 0600, running nothing', async () => {
    const runner = new RecordingRunner();
    const s = new NfsServer({ runner, dir: join(dir, 'inst'), owner: { uid: 1234, gid: 1235 } });
    await s.putExport({ exportId: 7, path: '/srv/p7', pseudoPath: '/vmlink/p7' });
    await s.putExport({ exportId: 3, path: '/srv/p3', pseudoPath: '/vmlink/p3', clients: ['10.1.0.0/16'] });
    await s.putExport({ exportId: 7, path: '/srv/p7b', pseudoPath: '/vmlink/p7' });
    expect((await s.exports()).map((e) => [e.exportId, e.path])).toEqual([
      [3, '/srv/p3'],
      [7, '/srv/p7b'],
    ]);
    const conf = await readFile(s.paths.conf, 'utf8');
    expect(conf).toContain('Path = "/srv/p7b";');
    expect(conf).toContain('Anonymous_Uid = 1234;');
    expect(conf).toContain('Clients = 10.1.0.0/16;');
    expect((await stat(s.paths.conf)).mode & 0o777).toBe(0o600);
    expect((await stat(s.paths.dir)).mode & 0o777).toBe(0o700);
    // A pool whose export id changed replaces its export (same pseudo path), not adds a second one.
    await s.putExport({ exportId: 9, path: '/srv/p7b', pseudoPath: '/vmlink/p7' });
    expect((await s.exports()).map((e) => e.exportId)).toEqual([3, 9]);
    await s.putExport({ exportId: 7, path: '/srv/p7b', pseudoPath: '/vmlink/p7' });
    await s.removeExport(7);
    await s.removeExport(99);
    expect((await s.exports()).map((e) => e.exportId)).toEqual([3]);
    expect(await readFile(s.paths.conf, 'utf8')).not.toContain('/srv/p7b');
    expect(runner.calls).toEqual([]);
    // Opened again without an owner, the recorded one holds.
    expect(await new NfsServer({ runner, dir: s.paths.dir }).owner()).toEqual({ uid: 1234, gid: 1235 });
    expect(new NfsServer({ runner, dir: s.paths.dir }).ownerSync()).toEqual({ uid: 1234, gid: 1235 });
  });

  it('refuses an export ganesha could not be given, writing nothing', async () => {
    const s = new NfsServer({ runner: new RecordingRunner(), dir });
    await expect(s.putExport({ exportId: 1, path: '/srv/"x', pseudoPath: '/vmlink/x' })).rejects.toThrow(
      InvalidRequestError,
    );
    expect(await s.exports()).toEqual([]);
    expect(await s.owner()).toEqual(NFS_FILE_OWNER_DEFAULT);
  });

  it('refuses a state file that is not what it wrote', async () => {
    const s = new NfsServer({ runner: new RecordingRunner(), dir });
    await writeFile(s.paths.state, JSON.stringify({ owner: { uid: 0, gid: 0 }, exports: [] }));
    await expect(s.exports()).rejects.toThrow(/unexpected content/);
  });

  it('has no processes when none were recorded, so it is not ready', async () => {
    const s = new NfsServer({ runner: new RecordingRunner(), dir });
    expect(await s.processes()).toEqual({});
    expect(await s.ready()).toBe(false);
  });
});
