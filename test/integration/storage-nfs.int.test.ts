// NFS pools for real: rpcbind + nfs-ganesha in a storage namespace ("nas"), QEMU's NFS client (libnfs, NFSv3) in a
// compute namespace ("host") joined to it by a veth. The pool conformance suite runs through nfs:// from "host";
// then what is particular to NFS: a non-root client uid, clients that may not create files, client networks, export
// changes on the running server, an encrypted volume opened with its key through a secret object, a server that died.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDaemon } from '../../src/drivers/hypervisor/qemu/backup-daemon.js';
import type { BackupDisk } from '../../src/drivers/hypervisor/qemu/backup-disks.js';
import { openRestore } from '../../src/drivers/hypervisor/qemu/backup-offline.js';
import { describePoolConformance, type VolumeOpen } from '../../src/drivers/storage/conformance-pools.js';
import { FastLuksRunner } from '../../src/drivers/storage/fast-luks.test-util.js';
import { NFS_MOUNTD_PORT } from '../../src/drivers/storage/ganesha-config.js';
import { NfsPool } from '../../src/drivers/storage/nfs.js';
import { nfsBackingChain, nfsChainBlockdevs, nfsImageOpts } from '../../src/drivers/storage/nfs-client.js';
import { NfsServer } from '../../src/drivers/storage/nfs-server.js';
import { nfsRegistered, parseRpcinfo } from '../../src/drivers/storage/nfs-server-commands.js';
import { type Runner, type RunResult, SystemRunner } from '../../src/exec/runner.js';
import {
  processArgv,
  processFromPidfile,
  signalProcess,
  terminate,
  waitExited,
} from '../../src/shared/process.js';
import {
  nfsExportId,
  nfsPseudoPath,
  type PoolConfig,
  type VolumeFormat,
  volumeFileName,
} from '../../src/shared/storage.js';
import { nbdIo, offlineDepsIn, stopOfflineViews } from '../helpers/offline-view.js';

const runner = new SystemRunner();
const NAS = 'vltest-nfsnas';
const HOST = 'vltest-nfshost';
const VETH_NAS = 'vlt-nfsn0';
const VETH_HOST = 'vlt-nfsh0';
const NAS_IP = '172.31.213.1';
const HOST_IP = '172.31.213.2';
/** The unprivileged uid QEMU runs as on a compute host. */
const QEMU_UID = 4321;

const haveTools = [
  '/usr/bin/ganesha.nfsd',
  '/usr/sbin/rpcbind',
  '/usr/bin/qemu-io',
  '/usr/bin/setpriv',
].every(existsSync);
const haveNfsBlock = existsSync('/usr/lib/x86_64-linux-gnu/qemu/block-nfs.so');
const isRoot = process.getuid?.() === 0;

const nfsPool = (name: string, root: string, clients?: string[]): PoolConfig => ({
  name,
  type: 'nfs',
  path: join(root, 'pools', name),
  nfs: { exportId: nfsExportId(name), pseudoPath: nfsPseudoPath(name) },
  ...(clients ? { clients } : {}),
});
/** QEMU's --image-opts of a volume file of `pool` through NFS. */
const nfsOpts = (pool: string, file: string) =>
  nfsImageOpts({ server: NAS_IP, export: nfsPseudoPath(pool), file });
const nfsUrl = (pool: string, file: string) => `nfs://${NAS_IP}${nfsPseudoPath(pool)}/${file}`;
/** A command run in "host" as QEMU's unprivileged uid. */
const asQemu = (argv: string[]) =>
  runner.run(['setpriv', `--reuid=${QEMU_UID}`, `--regid=${QEMU_UID}`, '--clear-groups', ...argv], {
    netns: HOST,
    allowFailure: true,
  });
const said = (r: RunResult) => `${r.stdout}${r.stderr}`;

async function deleteNamespaces(): Promise<void> {
  for (const ns of [NAS, HOST]) await runner.run(['ip', 'netns', 'del', ns], { allowFailure: true });
}

/** Every process whose command line names `text`. */
async function processesNaming(text: string): Promise<number[]> {
  const pids = (await readdir('/proc')).filter((p) => /^\d+$/.test(p)).map(Number);
  const hits: number[] = [];
  for (const pid of pids) if ((await processArgv(pid))?.some((a) => a.includes(text))) hits.push(pid);
  return hits;
}

/** The runner of the compute namespace, as a compute host's agent runs its commands. */
const hostRunner: Runner = {
  run: (argv, opts = {}) => runner.run(argv, { ...opts, netns: HOST }),
  spawnDetached: (argv, opts = {}) => runner.spawnDetached(argv, { ...opts, netns: HOST }),
};

/**
 * How QEMU on "host" opens a volume: directly through NFS; a linked clone (its chain read over NFS) with each link a
 * node of its own, served by a qemu-storage-daemon over a unix NBD socket for qemu-io (which takes a single image).
 */
async function openOverNfs(pool: string, file: string): Promise<VolumeOpen> {
  const loc = { server: NAS_IP, export: nfsPseudoPath(pool), file };
  const direct = {
    imageOpts: `driver=${file.endsWith('.img') ? 'raw' : 'qcow2'},${nfsImageOpts(loc)}`,
    netns: HOST,
  };
  if (!file.endsWith('.qcow2')) return direct;
  // A missing volume opens (and fails) as QEMU would open it.
  const chain = await nfsBackingChain(hostRunner, loc).catch(() => []);
  if (chain.length === 0) return direct;
  const dir = await mkdtemp(join(tmpdir(), 'vmlink-nfs-qsd-'));
  const pidfile = join(dir, 'qsd.pid');
  const sock = join(dir, 'nbd.sock');
  await hostRunner.run([
    'qemu-storage-daemon',
    '--daemonize',
    '--pidfile',
    pidfile,
    ...nfsChainBlockdevs(loc, chain, 'vol').flatMap((b) => ['--blockdev', JSON.stringify(b)]),
    '--nbd-server',
    `addr.type=unix,addr.path=${sock}`,
    '--export',
    'type=nbd,id=vol,node-name=vol,name=vol,writable=on',
  ]);
  return {
    imageOpts: `driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=${sock},file.export=vol`,
    close: async () => {
      const qsd = await processFromPidfile(pidfile, { args: [pidfile] });
      if (qsd) await terminate(qsd, { graceMs: 5_000, killMs: 2_000 });
      await rm(dir, { recursive: true, force: true });
    },
  };
}

describe.runIf(isRoot && haveTools && haveNfsBlock)(
  'nfs pools: rpcbind + nfs-ganesha in a namespace, QEMU NFS client',
  () => {
    let root = '';
    let server: NfsServer;
    let backend: NfsPool;
    const hostRpcbindSocket = existsSync('/run/rpcbind.sock');

    beforeAll(async () => {
      await deleteNamespaces();
      root = await mkdtemp(join(tmpdir(), 'vmlink-nfs-int-'));
      await chmod(root, 0o711);
      for (const ns of [NAS, HOST]) {
        await runner.run(['ip', 'netns', 'add', ns]);
        await runner.run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
      }
      await runner.run([
        'ip',
        'link',
        'add',
        VETH_NAS,
        'netns',
        NAS,
        'type',
        'veth',
        'peer',
        'name',
        VETH_HOST,
        'netns',
        HOST,
      ]);
      await runner.run(['ip', 'addr', 'add', `${NAS_IP}/24`, 'dev', VETH_NAS], { netns: NAS });
      await runner.run(['ip', 'addr', 'add', `${HOST_IP}/24`, 'dev', VETH_HOST], { netns: HOST });
      await runner.run(['ip', 'link', 'set', VETH_NAS, 'up'], { netns: NAS });
      await runner.run(['ip', 'link', 'set', VETH_HOST, 'up'], { netns: HOST });
      server = new NfsServer({ runner, dir: join(root, 'nfs'), netns: NAS });
      expect(await server.start()).toBe('started');
      // LUKS volumes made with a short key derivation (fast-luks.test-util.ts): each open of one is quick.
      backend = new NfsPool({ runner: new FastLuksRunner(), stateDir: join(root, 'state'), ganesha: server });
    });

    afterAll(async () => {
      await server?.stop();
      await deleteNamespaces();
      if (root) await rm(root, { recursive: true, force: true });
    });

    it("serves NFSv3 and MOUNT over TCP from its own rpcbind in the namespace; the machine's /run is left alone", async () => {
      expect(await server.start()).toBe('running');
      const { rpcbind, ganesha } = await server.processes();
      expect(rpcbind && ganesha).toBeTruthy();
      // As a client on the LAN finds them.
      const list = await runner.run(['rpcinfo', '-p', NAS_IP], { netns: HOST });
      const regs = parseRpcinfo(list.stdout);
      expect(nfsRegistered(regs)).toBe(true);
      expect(regs.some((r) => r.program === 100_005 && r.port === NFS_MOUNTD_PORT)).toBe(true);
      expect(regs.some((r) => r.proto.startsWith('udp') && r.program === 100_003)).toBe(false);
      // rpcbind's socket is in the servers' own /run, not the machine's.
      expect(existsSync('/run/rpcbind.sock')).toBe(hostRpcbindSocket);
      expect(existsSync(`/proc/${ganesha!.pid}/root/run/rpcbind.sock`)).toBe(true);
      const [mine, theirs] = await Promise.all([
        stat('/proc/self/ns/mnt'),
        stat(`/proc/${rpcbind!.pid}/ns/mnt`),
      ]);
      expect(theirs.ino).not.toBe(mine.ino);
    });

    describePoolConformance('nfs', async () => ({
      backend,
      pool: nfsPool('conf', root),
      volumeUrl: (v: { name: string; format: VolumeFormat }) =>
        openOverNfs('conf', volumeFileName(v.name, v.format)),
    }));

    describe('what is particular to NFS', () => {
      let pool: PoolConfig;
      beforeAll(async () => {
        pool = nfsPool('cl', root, [`${HOST_IP}/32`]);
        await backend.ensurePool(pool, 'h1');
        await backend.createVolume(pool, { pool: 'cl', name: 'disk1', sizeMiB: 16, format: 'qcow2' });
      });
      afterAll(async () => {
        for (const v of ['disk1', 'vault']) await backend?.deleteVolume(pool, v).catch(() => {});
        await backend?.deletePool(pool).catch(() => {});
      });

      it('a non-root QEMU reads and writes a volume the agent made; it cannot create files in the pool', async () => {
        const owner = server.ownerSync();
        const st = await stat(join(pool.path, 'disk1.qcow2'));
        expect({ uid: st.uid, gid: st.gid, mode: st.mode & 0o777 }).toEqual({ ...owner, mode: 0o600 });
        const dir = await stat(pool.path);
        expect({ uid: dir.uid, mode: dir.mode & 0o777 }).toEqual({ uid: 0, mode: 0o711 });
        const rw = await asQemu([
          'qemu-io',
          '-f',
          'qcow2',
          '-c',
          'write -P 0xab 0 1M',
          '-c',
          'read -P 0xab 0 1M',
          nfsUrl('cl', 'disk1.qcow2'),
        ]);
        expect(rw.code, said(rw)).toBe(0);
        expect(rw.stdout).toContain('read 1048576/1048576');
        const create = await asQemu([
          'qemu-img',
          'create',
          '-f',
          'qcow2',
          nfsUrl('cl', 'planted.qcow2'),
          '1M',
        ]);
        expect(create.code).not.toBe(0);
        expect(said(create)).toMatch(/ACCES|Permission denied/);
        expect(existsSync(join(pool.path, 'planted.qcow2'))).toBe(false);
        // Root on a client is squashed like anyone else.
        const asRoot = await runner.run(
          ['qemu-img', 'create', '-f', 'qcow2', nfsUrl('cl', 'planted.qcow2'), '1M'],
          {
            netns: HOST,
            allowFailure: true,
          },
        );
        expect(asRoot.code).not.toBe(0);
      });

      it("a stopped VM's volume: backup views through the storage daemon over NFS keep its bitmap, a restore writes it", async () => {
        const loc = { server: NAS_IP, export: nfsPseudoPath('cl'), file: 'disk1.qcow2' };
        const disk: BackupDisk = {
          name: 'data',
          node: 'disk0',
          index: 0,
          qcow2: true,
          encrypted: false,
          image: nfsUrl('cl', 'disk1.qcow2'),
          source: 'nfs',
          volume: { kind: 'nfs', pool: 'cl', volume: 'disk1', format: 'qcow2', ...loc },
        };
        const socketDir = join(root, 'bk-nbd');
        const deps = offlineDepsIn(runner, HOST, socketDir);
        const open = (base: string | undefined, next: string) =>
          openDaemon(deps, [disk], {
            bitmaps: { ...(base ? { base } : {}), next },
            freeze: false,
            full: false,
          });
        try {
          const first = await open(undefined, 'vmlink-b1');
          expect(first.disks[0]).toMatchObject({
            sizeBytes: 16 * 1024 * 1024,
            changed: { fullReason: 'first' },
          });
          const read = await nbdIo(runner, first.disks[0]!.socket, 'data', 'read -P 0xab 0 1M');
          expect(read.stdout + read.stderr).not.toMatch(/verification failed|error/i);
          await first.end('commit');
          // The VM (stopped now) wrote 64 KiB since: the next view reads exactly that through the kept bitmap.
          const w = await asQemu([
            'qemu-io',
            '-f',
            'qcow2',
            '-c',
            'write -P 0xcd 4M 64k',
            nfsUrl('cl', 'disk1.qcow2'),
          ]);
          expect(w.code, said(w)).toBe(0);
          const next = await open('vmlink-b1', 'vmlink-b2');
          expect(next.disks[0]!.changed).toEqual({ context: 'qemu:dirty-bitmap:vmlink-b1' });
          const map = await runner.run([
            'qemu-img',
            'map',
            '--output=json',
            '--image-opts',
            `driver=nbd,export=data,server.type=unix,server.path=${next.disks[0]!.socket},x-dirty-bitmap=qemu:dirty-bitmap:vmlink-b1`,
          ]);
          const dirty = (JSON.parse(map.stdout) as Array<{ start: number; data: boolean }>)
            .filter((e) => !e.data)
            .map((e) => e.start);
          expect(dirty).toEqual([4 * 1024 * 1024]);
          await next.end('commit');
          // A restore writes the volume through qemu-nbd over NFS; the VM's uid reads it back.
          const restore = await openRestore(deps, [disk]);
          const rw = await nbdIo(runner, restore.disks[0]!.socket, 'data', 'write -P 0x6b 2M 64k', true);
          expect(rw.stdout + rw.stderr).not.toMatch(/error|fail/i);
          await restore.close();
          const back = await asQemu([
            'qemu-io',
            '-f',
            'qcow2',
            '-c',
            'read -P 0x6b 2M 64k',
            nfsUrl('cl', 'disk1.qcow2'),
          ]);
          expect(back.code, said(back)).toBe(0);
          expect(back.stdout).not.toContain('verification failed');
          const info = await asQemu(['qemu-img', 'info', '--output=json', nfsUrl('cl', 'disk1.qcow2')]);
          const names = (
            JSON.parse(info.stdout) as { 'format-specific': { data: { bitmaps?: Array<{ name: string }> } } }
          )['format-specific'].data.bitmaps?.map((b) => b.name);
          expect(names).toEqual(['vmlink-b2']); // committed: the base went, the next one counts from this snapshot
        } finally {
          // A failed check leaves no daemon or server behind (they outlive their caller by design).
          await stopOfflineViews(socketDir, HOST);
        }
      });

      it('export changes reach the running server: a client network that leaves the host out, then the pool path again', async () => {
        const read = () =>
          asQemu(['qemu-io', '-f', 'qcow2', '-c', 'read -P 0xab 0 64k', nfsUrl('cl', 'disk1.qcow2')]);
        await backend.ensurePool({ ...pool, clients: ['172.31.213.99/32'] }, 'h2');
        const refused = await read();
        expect(refused.code).not.toBe(0);
        expect(said(refused)).toMatch(/MNT3ERR_ACCES|Permission denied/);
        await backend.ensurePool(pool, 'h3');
        const back = await read();
        expect(back.code, said(back)).toBe(0);
        expect((await backend.listPools()).find((p) => p.name === 'cl')).toMatchObject({
          configHash: 'h3',
          problems: [],
        });
      });

      it('an export ganesha refuses is an error naming why, and is taken back: the others stay served', async () => {
        const before = await server.exports();
        const gone = { exportId: 4242, path: join(root, 'no-such-dir'), pseudoPath: '/vmlink/ghost' };
        await expect(server.putExport(gone)).rejects.toThrow(/refused its new exports[\s\S]*no-such-dir/);
        expect(await server.exports()).toEqual(before);
        const r = await asQemu([
          'qemu-io',
          '-f',
          'qcow2',
          '-c',
          'read -P 0xab 0 64k',
          nfsUrl('cl', 'disk1.qcow2'),
        ]);
        expect(r.code, said(r)).toBe(0);
      });

      it('an encrypted volume opens with its key through a secret object and is refused without it; the key is on no command line and in no file of the server', async () => {
        // LUKS passphrases are UTF-8 text to QEMU: the key is base64 of one.
        const key = Buffer.from(randomBytes(24).toString('hex')).toString('base64');
        await backend.createVolume(
          pool,
          { pool: 'cl', name: 'vault', sizeMiB: 16, format: 'qcow2', encryption: { secret: 'vault-key' } },
          undefined,
          [{ name: 'vault-key', value: key }],
        );
        const keys = join(root, 'keys');
        await mkdir(keys, { mode: 0o711 });
        const keyFile = join(keys, 'vault.b64');
        await writeFile(keyFile, key, { mode: 0o400 });
        await chown(keyFile, QEMU_UID, QEMU_UID);
        const withKey = (cmds: string[]) =>
          asQemu([
            'qemu-io',
            '--object',
            `secret,id=k0,file=${keyFile},format=base64`,
            '--image-opts',
            `driver=qcow2,encrypt.key-secret=k0,${nfsOpts('cl', 'vault.qcow2')}`,
            ...cmds.flatMap((c) => ['-c', c]),
          ]);
        // While a client holds it open (qemu-io sleeps between its write and read), no process's argv holds the key.
        const running = withKey(['write -P 0x5c 0 1M', 'sleep 1500', 'read -P 0x5c 0 1M']);
        await new Promise((r) => setTimeout(r, 700));
        // The scan sees the client (it names the key file), and no process naming the key itself.
        expect((await processesNaming(keyFile)).length).toBeGreaterThan(0);
        expect(await processesNaming(key)).toEqual([]);
        const r = await running;
        expect(r.code, said(r)).toBe(0);
        expect(r.stdout).toContain('read 1048576/1048576');
        const without = await asQemu([
          'qemu-io',
          '-f',
          'qcow2',
          '-c',
          'read 0 64k',
          nfsUrl('cl', 'vault.qcow2'),
        ]);
        expect(without.code).not.toBe(0);
        expect(said(without)).toMatch(/encrypt|key|secret/i);
        const raw = await readFile(join(pool.path, 'vault.qcow2'));
        expect(raw.includes(Buffer.alloc(4096, 0x5c))).toBe(false);
        for (const f of Object.values(server.paths)) {
          const st = await stat(f).catch(() => undefined);
          if (st?.isFile()) expect((await readFile(f, 'utf8')).includes(key), f).toBe(false);
        }
      });

      it('a server that died is reported, and ensurePool brings it back with its exports', async () => {
        const { ganesha } = await server.processes();
        await signalProcess(ganesha!, 'SIGKILL');
        expect(await waitExited(ganesha!, 5_000)).toBe(true);
        const seen = (await backend.listPools()).find((p) => p.name === 'cl');
        expect(seen?.problems.join('\n')).toMatch(/not running/);
        await backend.ensurePool(pool, 'h3');
        expect(await server.ready()).toBe(true);
        const r = await asQemu([
          'qemu-io',
          '-f',
          'qcow2',
          '-c',
          'read -P 0xab 0 64k',
          nfsUrl('cl', 'disk1.qcow2'),
        ]);
        expect(r.code, said(r)).toBe(0);
      });
    });

    it('stops both servers by their identity, leaving no process of the instance', async () => {
      const { rpcbind, ganesha } = await server.processes();
      await server.stop();
      expect(await server.processes()).toEqual({});
      for (const p of [rpcbind!, ganesha!]) expect(await waitExited(p, 1_000)).toBe(true);
      expect(await processesNaming(server.paths.dir)).toEqual([]);
      const list = await runner.run(['rpcinfo', '-p', NAS_IP], {
        netns: HOST,
        allowFailure: true,
        timeoutMs: 10_000,
      });
      expect(list.code).not.toBe(0);
    });
  },
);
