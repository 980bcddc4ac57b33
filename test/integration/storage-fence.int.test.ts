import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { createAgentServer } from '../../src/agent/server.js';
import { AgentClient } from '../../src/controller/agents.js';
import type { AgentFactory } from '../../src/controller/hosts.js';
import { fenceVmVolumes, twoWriterVolumes } from '../../src/controller/storage-fence.js';
import type { HypervisorDriver } from '../../src/drivers/hypervisor/types.js';
import { IscsiPool } from '../../src/drivers/storage/iscsi.js';
import { Tgtd } from '../../src/drivers/storage/tgtd.js';
import { SystemRunner } from '../../src/exec/runner.js';
import { FencedError, InvalidRequestError, VmlinkError } from '../../src/shared/errors.js';
import { listen } from '../../src/shared/http/server.js';
import { ISCSI_VOLUME_LUN, iscsiTargetName, type PoolConfig } from '../../src/shared/storage.js';
import { loadSpec } from '../../src/spec/load.js';

// Storage-side fencing on a real tgtd (namespace "san") with two initiator hosts, A and B, each in its own namespace
// on its own veth: QEMU's initiator (libiscsi through qemu-io, CHAP from a 0600 secret file) opens the volume's LUN.
// A holds a session; `volume.fence` to B with a larger token closes A's session, A cannot log in again, B can; a
// stale token for A is refused and changes nothing; ensurePool (an apply's repair) and a restarted tgtd keep the
// fence; a write A attempts after the fence never reaches the volume.

const runner = new SystemRunner();
const tag = String(process.pid % 100_000);
const SAN = `vlt-fsan-${tag}`;
const NS_A = `vlt-fa-${tag}`;
const NS_B = `vlt-fb-${tag}`;
const SAN_A_IP = '10.253.81.1';
const A_IP = '10.253.81.2';
const SAN_B_IP = '10.253.82.1';
const B_IP = '10.253.82.2';
const CONTROL_PORT = 21_000 + (process.pid % 9_000);
const PASSWORD = `fence-${tag}-Vq3kLm8x`;
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const MiB = 1024 * 1024;
/** How long a fenced holder gets after its sleep to (fail to) write before it is killed. */
const AWAKE_MS = 4_000;

const isRoot = process.getuid?.() === 0;
const haveTools = existsSync('/usr/sbin/tgtd') && existsSync('/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so');

let dir = '';
let tgtd: Tgtd | undefined;
const holders: AbortController[] = [];
const closers: Array<() => Promise<unknown>> = [];

afterAll(async () => {
  for (const h of holders) h.abort();
  for (const c of closers) await c().catch(() => {});
  await tgtd?.stop().catch(() => {});
  for (const ns of [SAN, NS_A, NS_B]) await runner.run(['ip', 'netns', 'del', ns], { allowFailure: true });
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe.runIf(isRoot && haveTools)('storage fencing on a real tgtd, two initiator hosts', () => {
  let backend: IscsiPool;
  let pool: PoolConfig;
  let secret = '';

  const portalOf = (ns: string) => (ns === NS_A ? SAN_A_IP : SAN_B_IP);
  const opts = (ns: string, volume: string) =>
    [
      'driver=iscsi',
      'transport=tcp',
      `portal=${portalOf(ns)}:3260`,
      `target=${iscsiTargetName('san1', pool.name, volume)}`,
      `lun=${ISCSI_VOLUME_LUN}`,
      'user=fenceuser',
      'password-secret=chap',
    ].join(',');
  const qemuIo = (ns: string, volume: string, cmds: string[], signal?: AbortSignal, timeoutMs = 60_000) =>
    runner.run(
      [
        'qemu-io',
        '--object',
        `secret,id=chap,file=${secret}`,
        '--image-opts',
        opts(ns, volume),
        ...cmds.flatMap((c) => ['-c', c]),
      ],
      { netns: ns, allowFailure: true, timeoutMs, ...(signal ? { signal } : {}) },
    );
  /** Whether a fresh login from `ns` can read the volume. */
  const canRead = async (ns: string, volume = 'disk1') =>
    (await qemuIo(ns, volume, ['read 0 4k'])).code === 0;
  const target = async (volume = 'disk1') =>
    (await tgtd!.client.showTargets()).find((t) => t.name === iscsiTargetName('san1', pool.name, volume));
  const sessionAddresses = async (volume = 'disk1') =>
    (await target(volume))?.sessions.flatMap((s) => s.addresses).sort() ?? [];
  const waitFor = async (what: string, cond: () => Promise<boolean>, ms = 30_000) => {
    const until = Date.now() + ms;
    while (!(await cond())) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  /**
   * A qemu-io in `ns` holding the LUN open (a VM's QEMU): it sleeps `sleepMs`, then writes `byte` at 1 MiB. `done`:
   * how it ended. A fenced one's initiator keeps trying to log in again (libiscsi reconnects) and never ends by
   * itself: `cutOff` gives it AWAKE_MS after its sleep to write (a write that is let through takes milliseconds),
   * then kills it; a write that had not landed by then never will (the process is gone): that counts as a failed
   * write. The 25 s timeout is a backstop only.
   */
  const holder = (ns: string, byte: string, sleepMs: number, volume = 'disk1') => {
    const ac = new AbortController();
    holders.push(ac);
    const started = performance.now();
    const done = qemuIo(ns, volume, [`sleep ${sleepMs}`, `write -P ${byte} 1M 64k`], ac.signal, 25_000).then(
      (r) => ({ ...r, ms: performance.now() - started }),
      (e: unknown) => ({ code: -1, stdout: '', stderr: String(e), ms: performance.now() - started }),
    );
    const cutOff = async () => {
      const awake = started + sleepMs + AWAKE_MS - performance.now();
      await Promise.race([done, new Promise((r) => setTimeout(r, Math.max(0, awake)))]);
      ac.abort();
      return done;
    };
    return { done, cutOff };
  };
  /** Bytes of the volume's file on the storage side (what any initiator's write reached). */
  const fileBytes = async (offset: number, length: number) => {
    const fh = await open(join(pool.path, 'disk1.img'), 'r');
    try {
      const b = Buffer.alloc(length);
      await fh.read(b, 0, length, offset);
      return b;
    } finally {
      await fh.close();
    }
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-fence-int-'));
    for (const ns of [SAN, NS_A, NS_B]) {
      await runner.run(['ip', 'netns', 'add', ns]);
      await runner.run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
    }
    for (const [ns, sanIp, ip, k] of [
      [NS_A, SAN_A_IP, A_IP, 'a'],
      [NS_B, SAN_B_IP, B_IP, 'b'],
    ] as const) {
      const sanDev = `vlfs${k}${tag}`;
      const dev = `vlf${k}${tag}`;
      await runner.run([
        'ip',
        'link',
        'add',
        sanDev,
        'netns',
        SAN,
        'type',
        'veth',
        'peer',
        'name',
        dev,
        'netns',
        ns,
      ]);
      await runner.run(['ip', 'addr', 'add', `${sanIp}/24`, 'dev', sanDev], { netns: SAN });
      await runner.run(['ip', 'link', 'set', sanDev, 'up'], { netns: SAN });
      await runner.run(['ip', 'addr', 'add', `${ip}/24`, 'dev', dev], { netns: ns });
      await runner.run(['ip', 'link', 'set', dev, 'up'], { netns: ns });
    }
    // No portal address: tgtd listens on every address of "san", so each host reaches it on its own link.
    tgtd = new Tgtd({ runner, controlPort: CONTROL_PORT, dir: join(dir, 'tgtd'), netns: SAN });
    await tgtd.start();
    backend = new IscsiPool({
      runner,
      stateDir: join(dir, 'state'),
      storageHost: 'san1',
      tgtControlPort: CONTROL_PORT,
    });
    pool = {
      name: 'fp',
      type: 'iscsi',
      path: join(dir, 'pool'),
      chap: { user: 'fenceuser', secret: 'fp-chap' },
      clients: ['10.253.81.0/24', '10.253.82.0/24'],
      // No `iscsi.tgtControlPort`: the wire allows 0-1023 (a lab numbers its machines' tgtds from 1); this test's
      // tgtd has a high port not to meet another's, which the backend takes as its default.
    };
    secret = join(dir, 'chap.secret');
    await writeFile(secret, PASSWORD, { mode: 0o600 });
    await backend.ensurePool(pool, 'hash-1', undefined, [{ name: 'fp-chap', value: b64(PASSWORD) }]);
    await backend.createVolume(pool, { pool: 'fp', name: 'disk1', sizeMiB: 16, format: 'raw' });
  }, 120_000);

  it('before any fence both hosts may log in; the report lists who is logged in', async () => {
    expect(await canRead(NS_A)).toBe(true);
    expect(await canRead(NS_B)).toBe(true);
    const h = holder(NS_A, '0x11', 2_000);
    await waitFor('A to hold a session', async () => (await sessionAddresses()).includes(A_IP));
    const [p] = await backend.listPools();
    expect(p!.volumes.find((v) => v.name === 'disk1')).toMatchObject({
      sessions: [{ initiator: expect.stringMatching(/^iqn\./), addresses: [A_IP] }],
    });
    expect(p!.volumes[0]!.fence).toBeUndefined();
    expect((await h.done).code).toBe(0);
    expect((await fileBytes(MiB, 64 * 1024)).every((x) => x === 0x11)).toBe(true);
  }, 120_000);

  it("fencing to B closes A's session, A cannot log in again and its late write never lands; B can", async () => {
    const h = holder(NS_A, '0xaa', 6_000);
    await waitFor('A to hold a session', async () => (await sessionAddresses()).includes(A_IP));
    const t0 = performance.now();
    await backend.fenceVolume(pool, 'disk1', { host: 'hostb', address: B_IP, token: '100' });
    const fenceMs = performance.now() - t0;
    console.log(`fence with one foreign session closed: ${fenceMs.toFixed(0)} ms`);
    expect(await sessionAddresses()).toEqual([]);
    expect((await target())!.acls).toEqual([B_IP]);
    expect(await canRead(NS_A)).toBe(false);
    // B writes its data; A's holder wakes up after the fence and tries to write over it.
    const w = await qemuIo(NS_B, 'disk1', ['write -P 0xbb 1M 64k']);
    expect(w.code, w.stderr).toBe(0);
    const late = await h.cutOff();
    console.log(
      `A's late write after the fence: exit ${late.code} after ${late.ms.toFixed(0)} ms: ${late.stderr.trim().slice(0, 200)}`,
    );
    expect(late.code === 0 && /wrote/.test(late.stdout)).toBe(false);
    expect((await fileBytes(MiB, 64 * 1024)).every((x) => x === 0xbb)).toBe(true);
    expect(await sessionAddresses()).toEqual([]); // A never got back in
    const [p] = await backend.listPools();
    expect(p!.problems).toEqual([]);
    expect(p!.volumes[0]!.fence).toMatchObject({ host: 'hostb', address: B_IP, token: '100' });
  }, 180_000);

  it('refuses a stale token for A and changes nothing; the same token again is idempotent', async () => {
    const h = holder(NS_B, '0xbc', 3_000);
    await waitFor('B to hold a session', async () => (await sessionAddresses()).includes(B_IP));
    const e = await backend
      .fenceVolume(pool, 'disk1', { host: 'hosta', address: A_IP, token: '99' })
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(FencedError);
    expect((e as Error).message).toMatch(/fencing token 99 \(for host hosta\) is older than token 100/);
    expect((await target())!.acls).toEqual([B_IP]);
    expect(await sessionAddresses()).toEqual([B_IP]); // B's session untouched
    await backend.fenceVolume(pool, 'disk1', { host: 'hostb', address: B_IP, token: '100' });
    expect(await sessionAddresses()).toEqual([B_IP]);
    expect((await h.done).code).toBe(0);
    const state = await readFile(join(dir, 'state', 'fence', 'fp.json'), 'utf8');
    expect(JSON.parse(state).volumes.disk1).toMatchObject({ host: 'hostb', token: '100' });
    expect(await canRead(NS_A)).toBe(false);
  }, 120_000);

  it('refuses an owner outside the pool clients, changing nothing', async () => {
    await expect(
      backend.fenceVolume(pool, 'disk1', { host: 'hostc', address: '10.253.83.5', token: '500' }),
    ).rejects.toThrow(InvalidRequestError);
    expect((await target())!.acls).toEqual([B_IP]);
    const [p] = await backend.listPools();
    expect(p!.volumes[0]!.fence).toMatchObject({ token: '100' });
  });

  it('keeps the fence through ensurePool and a tgtd restart; fencing back to A with a newer token', async () => {
    await backend.ensurePool(pool, 'hash-2', undefined, [{ name: 'fp-chap', value: b64(PASSWORD) }]);
    expect((await target())!.acls).toEqual([B_IP]);
    await tgtd!.stop();
    await tgtd!.start();
    expect((await backend.listPools())[0]!.problems).toEqual(
      expect.arrayContaining([expect.stringMatching(/target .*san1\.fp\.disk1 is missing/)]),
    );
    await backend.ensurePool(pool, 'hash-3', undefined, [{ name: 'fp-chap', value: b64(PASSWORD) }]);
    expect((await target())!.acls).toEqual([B_IP]);
    expect(await canRead(NS_A)).toBe(false);
    expect(await canRead(NS_B)).toBe(true);

    const h = holder(NS_B, '0xcc', 6_000);
    await waitFor('B to hold a session', async () => (await sessionAddresses()).includes(B_IP));
    await backend.fenceVolume(pool, 'disk1', { host: 'hosta', address: A_IP, token: '101' });
    expect(await sessionAddresses()).toEqual([]);
    expect(await canRead(NS_B)).toBe(false);
    const w = await qemuIo(NS_A, 'disk1', ['write -P 0xdd 1M 64k']);
    expect(w.code, w.stderr).toBe(0);
    const late = await h.cutOff();
    expect(late.code === 0 && /wrote/.test(late.stdout)).toBe(false);
    expect((await fileBytes(MiB, 64 * 1024)).every((x) => x === 0xdd)).toBe(true);
  }, 180_000);

  it('from the controller: fenceVmVolumes over a real storage agent, the report shows two writers, then one', async () => {
    // The storage host's agent (role storage, this iscsi backend) served over a unix socket, reached by the
    // controller's AgentClient: the wire schema, the agent's dispatch and the error's way back are the real ones.
    const agent = new Agent({
      host: 'san1',
      runner,
      networks: {},
      hypervisor: { list: async () => [] } as unknown as HypervisorDriver,
      stateDir: join(dir, 'state'),
      storage: { role: 'storage', pools: { iscsi: backend }, poolRoots: [dir] },
    });
    const app = await createAgentServer(agent, { prerequisites: async () => [] });
    closers.push(() => app.close());
    const sock = join(dir, 'san1.sock');
    await listen(app, `unix://${sock}`);
    const client = new AgentClient('san1', `unix://${sock}`);
    const agents: AgentFactory = (_spec, host) => {
      if (host !== 'san1') throw new Error(`no agent for ${host} in this test`);
      return client;
    };
    const spec = loadSpec(
      `version: 1
hosts:
  - { name: ha, agent: "unix:///fake/ha.sock", address: ${A_IP} }
  - { name: hb, agent: "unix:///fake/hb.sock", address: ${B_IP} }
  - { name: san1, agent: "unix://${sock}", role: storage, address: ${SAN_A_IP} }
networks: [{ name: natnet, host: ha, mode: nat, cidr: 10.10.0.0/24 }]
pools: [{ name: fp, type: iscsi, host: san1, clients: [10.253.81.0/24, 10.253.82.0/24] }]
volumes: [{ name: disk2, pool: fp, sizeMiB: 16 }]
vms:
  - { name: web, host: ha, nics: [{ network: natnet }], disks: [{ name: d, pool: fp, volume: disk2 }] }
`,
      'fence.yaml',
    );
    const owner = (host: string, token: string) => ({
      vm: 'web',
      host,
      reason: 'ha-restart' as const,
      since: new Date().toISOString(),
      token,
    });
    // A fresh volume both hosts may open; both hold a session: the drills' check sees two writers on one disk.
    await backend.createVolume(pool, { pool: 'fp', name: 'disk2', sizeMiB: 16, format: 'raw' });
    const ha = holder(NS_A, '0x21', 4_000, 'disk2');
    const hb = holder(NS_B, '0x22', 4_000, 'disk2');
    await waitFor('both hosts to hold a session', async () => (await sessionAddresses('disk2')).length === 2);
    expect(twoWriterVolumes([await client.report()])).toEqual([
      expect.objectContaining({ host: 'san1', pool: 'fp', volume: 'disk2', addresses: [A_IP, B_IP] }),
    ]);
    const out = await fenceVmVolumes(spec, 'web', owner('hb', '300'), { agents });
    expect(out.fenced).toEqual([{ pool: 'fp', volume: 'disk2', storageHost: 'san1' }]);
    expect(await sessionAddresses('disk2')).toEqual([B_IP]);
    const report = await client.report();
    expect(twoWriterVolumes([report])).toEqual([]);
    expect(report.pools?.[0]?.volumes.find((v) => v.name === 'disk2')).toMatchObject({
      sessions: [{ addresses: [B_IP] }],
      fence: { host: 'hb', address: B_IP, token: '300' },
    });
    // An old active controller, late, with the token it read before: refused at the storage host, over the wire.
    const e = await fenceVmVolumes(spec, 'web', owner('ha', '250'), { agents }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(VmlinkError);
    expect(e).toMatchObject({ kind: 'fenced', subject: 'volume/fp/disk2' });
    expect((e as Error).message).toMatch(
      /^VM web: cannot fence its storage to ha \(token 250\), so it must not start there: volume disk2 of pool fp \(on san1\): .*token 250 \(for host ha\) is older than token 300/,
    );
    expect((await target('disk2'))!.acls).toEqual([B_IP]);
    expect(await sessionAddresses('disk2')).toEqual([B_IP]);
    expect((await hb.done).code).toBe(0);
    await ha.cutOff();
  }, 180_000);

  it('deleting the volume forgets its fence; deleting the pool its fence file', async () => {
    await backend.deleteVolume(pool, 'disk2'); // the case above's (a missing one is fine)
    await backend.deleteVolume(pool, 'disk1');
    expect(existsSync(join(dir, 'state', 'fence', 'fp.json'))).toBe(false);
    await backend.createVolume(pool, { pool: 'fp', name: 'disk1', sizeMiB: 8, format: 'raw' });
    expect((await target())!.acls.sort()).toEqual(['10.253.81.0/24', '10.253.82.0/24']);
    await backend.fenceVolume(pool, 'disk1', { host: 'hosta', address: A_IP, token: '7' });
    await backend.deleteVolume(pool, 'disk1');
    await backend.deletePool(pool);
    expect(existsSync(join(dir, 'state', 'fence', 'fp.json'))).toBe(false);
    expect(await backend.listPools()).toEqual([]);
  }, 120_000);
});
