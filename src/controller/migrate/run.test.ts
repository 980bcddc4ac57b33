import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clusterSpec, vm } from '../../../test/helpers/cluster-spec.js';
import type { AgentAction } from '../../agent/wire.js';
import type { MigrationJob } from '../../agent/wire-migrate.js';
import { FencedError } from '../../shared/errors.js';
import type { HostReport } from '../../shared/model.js';
import { loadSpec } from '../../spec/load.js';
import type { Spec } from '../../spec/schema.js';
import type { AgentPort } from '../hosts.js';
import { OwnershipStore } from '../ownership.js';
import { SqliteStore } from '../store/sqlite.js';
import { type MigrationDeps, runMigration } from './run.js';

const spec: Spec = loadSpec(clusterSpec(vm('m', ', host: h1, memoryMiB: 256')));
/** The same VM with a disk on an iscsi pool of storage host s1 (fenced at the storage end) and one on nfs (not). */
const sharedSpec: Spec = loadSpec(
  clusterSpec(
    vm(
      'm',
      ', host: h1, memoryMiB: 256, disks: [{ name: d, pool: san, volume: m-data }, { name: f, pool: nas, volume: m-files }]',
    ),
    ['h1', 'h2', 'h3', 's1'],
  )
    .replace('agent: "unix:///fake/s1.sock",', 'role: storage, agent: "unix:///fake/s1.sock",')
    .replace(
      'vms:\n',
      `pools:
  - { name: san, type: iscsi, host: s1, clients: [10.0.0.0/24] }
  - { name: nas, type: nfs, host: s1, clients: [10.0.0.0/24] }
volumes:
  - { name: m-data, pool: san, sizeMiB: 16 }
  - { name: m-files, pool: nas, sizeMiB: 16 }
vms:
`,
    ),
);

/** A host's agent speaking the migration calls, recording them in `log` (`host call`). */
function fakeAgent(
  host: string,
  log: string[],
  opts: {
    failResume?: boolean;
    failJob?: boolean;
    failFence?: boolean;
    /** Arrival: the source fails once QEMU sent everything (paused, `sourcePaused`). */
    failHeld?: boolean;
    /** Arrival: what the target's abort answers (`ran`: it resumed on arrival; `down`: no answer). */
    abort?: 'removed' | 'ran' | 'down';
    failArm?: boolean;
  } = {},
) {
  const cfg = {
    name: 'm',
    cpus: 1,
    memoryMiB: 256,
    image: { kind: 'test-guest' as const },
    disks: [],
    nics: [
      {
        network: 'ov',
        backend: 'linux' as const,
        bridge: 'br',
        tap: 't',
        mac: '52:54:00:00:00:01',
        mtu: 1450,
      },
    ],
    state: 'running' as const,
  };
  const report: HostReport = {
    host,
    agentVersion: '1',
    capabilities: {
      accelerator: 'tcg',
      acceleratorReason: 'test',
      cpus: 4,
      memoryMiB: 4096,
      network: {},
      backends: ['linux'],
    },
    networks: [{ name: 'ov', bridge: 'br', configHash: 'x', problems: [] }],
    vms: host === 'h1' ? [{ name: 'm', state: 'running', configHash: 'c', problems: [], config: cfg }] : [],
  };
  let polls = 0;
  const job = (id: string): MigrationJob =>
    opts.failJob
      ? { id, vm: 'm', state: 'failed', error: 'Unable to write to socket: Broken pipe' }
      : opts.failHeld
        ? { id, vm: 'm', state: 'failed', error: 'the target agent went away', sourcePaused: true }
        : polls++ < 1
          ? {
              id,
              vm: 'm',
              state: 'running',
              progress: { status: 'active', transferredBytes: 1, remainingBytes: 50, totalBytes: 100 },
            }
          : {
              id,
              vm: 'm',
              state: 'completed',
              progress: {
                status: 'completed',
                transferredBytes: 300,
                remainingBytes: 0,
                totalBytes: 100,
                downtimeMs: 40,
                totalTimeMs: 900,
              },
            };
  const agent: Partial<AgentPort> = {
    report: async () => report,
    act: async (a: AgentAction) => {
      if (a.kind !== 'volume.fence') return void log.push(`${host} act ${a.kind}`);
      const o = a.owner;
      log.push(`${host} fence ${a.volume} to ${o.host}${o.peer ? `+${o.peer.host}` : ''} token ${o.token}`);
      if (opts.failFence && !o.peer) throw new FencedError('tgtd is not running');
    },
    migrationIncoming: async (req) => {
      log.push(`${host} incoming from ${req.from}`);
    },
    migrationStart: async (req) => {
      log.push(`${host} start -> ${req.to.host} ${req.to.agent}${req.holdOnceSent ? ' hold' : ''}`);
      return { id: req.id, vm: req.vm, state: 'running' };
    },
    migrationJob: async (id) => job(id),
    migrationResume: async (_id, req) => {
      log.push(`${host} ${req.onArrival ? 'arm' : 'resume'} token ${req.fence?.token}`);
      if (req.onArrival && opts.failArm)
        throw new FencedError('VM m is not started on host h2: its owner record names h1');
      if (!req.onArrival && opts.failResume)
        throw new FencedError('VM m is not started on host h2: token is stale');
    },
    migrationAbort: async () => {
      log.push(`${host} abort`);
      if (opts.abort === 'down') throw new Error('connect ECONNREFUSED');
      return { ran: opts.abort === 'ran' };
    },
    migrationRollback: async () => {
      log.push(`${host} rollback`);
    },
  };
  return agent as AgentPort;
}

describe('runMigration', () => {
  let store: SqliteStore;
  let own: OwnershipStore;
  let log: string[];
  beforeEach(async () => {
    store = new SqliteStore(':memory:');
    own = new OwnershipStore(store);
    await own.assign('m', 'h1', 'spec', null, 'h1');
    log = [];
  });
  afterEach(async () => store.close());

  // The switch-over on the controller's go (arrival's below).
  const deps = (
    fail: { failResume?: boolean; failJob?: boolean; failFence?: boolean } = {},
    s: Spec = spec,
  ): MigrationDeps => {
    const agents = {
      h1: fakeAgent('h1', log, { failJob: !!fail.failJob }),
      h2: fakeAgent('h2', log, { failResume: !!fail.failResume }),
      h3: fakeAgent('h3', log),
      s1: fakeAgent('s1', log, { failFence: !!fail.failFence }),
    };
    return {
      agents: (_s, h) => agents[h as 'h1'],
      spec: async () => s,
      ownership: own,
      pollMs: 1,
      resumeOnArrival: false,
    };
  };
  const arrivalDeps = (
    source: Parameters<typeof fakeAgent>[2] = {},
    target: Parameters<typeof fakeAgent>[2] = {},
  ): MigrationDeps => {
    const agents = { h1: fakeAgent('h1', log, source), h2: fakeAgent('h2', log, target) };
    return {
      agents: (_s, h) => agents[h as 'h1'],
      spec: async () => spec,
      ownership: own,
      pollMs: 1,
      resumeOnArrival: true,
    };
  };

  describe('resume on arrival', () => {
    it('moves the owner record before the stream, arms the target under the new token, then waits for its resume', async () => {
      const before = await own.get('m');
      const r = await runMigration(arrivalDeps(), { vm: 'm', to: 'h2' });
      const owner = await own.get('m');
      expect(owner).toMatchObject({ host: 'h2', from: 'h1', reason: 'user' });
      expect(BigInt(owner!.token)).toBeGreaterThan(BigInt(before!.token));
      expect(r).toMatchObject({ to: 'h2', downtimeMs: 40, token: owner!.token });
      expect(log).toEqual([
        'h2 incoming from h1',
        `h2 arm token ${owner!.token}`,
        'h1 start -> h2 https://10.0.0.2:7443 hold',
        `h2 resume token ${owner!.token}`,
        'h1 act vm.delete',
      ]);
    });

    it('a target that refuses the owner check: removed, the record back on h1, the source never started', async () => {
      await expect(runMigration(arrivalDeps({}, { failArm: true }), { vm: 'm', to: 'h2' })).rejects.toThrow(
        /rolled back; it runs on h1: VM m is not started on host h2: its owner record names h1/,
      );
      expect((await own.get('m'))?.host).toBe('h1');
      expect(log.filter((l) => l.startsWith('h1'))).toEqual([]);
      expect(log.at(-1)).toBe('h2 abort');
    });

    it("QEMU's migration fails before sending the state's end: the record goes back and the source runs on", async () => {
      await expect(runMigration(arrivalDeps({ failJob: true }), { vm: 'm', to: 'h2' })).rejects.toThrow(
        /rolled back; it runs on h1: Unable to write to socket/,
      );
      expect((await own.get('m'))?.host).toBe('h1');
      expect(log.slice(-2)).toEqual(['h2 abort', 'h1 rollback']);
      // Even with no answer from the target: a state never sent cannot have run there.
      log.length = 0;
      await expect(
        runMigration(arrivalDeps({ failJob: true }, { abort: 'down' }), { vm: 'm', to: 'h2' }),
      ).rejects.toThrow(/rolled back; it runs on h1/);
      expect((await own.get('m'))?.host).toBe('h1');
      expect(log.slice(-2)).toEqual(['h2 abort', 'h1 rollback']);
    });

    it('the source fails once it sent everything and the target proves it never ran: the source resumes', async () => {
      await expect(
        runMigration(arrivalDeps({ failHeld: true }, { abort: 'removed' }), { vm: 'm', to: 'h2' }),
      ).rejects.toThrow(/rolled back; it runs on h1: the target agent went away/);
      expect((await own.get('m'))?.host).toBe('h1');
      expect(log.slice(-2)).toEqual(['h2 abort', 'h1 rollback']);
    });

    it('the source fails once it sent everything but the target had resumed on arrival: it runs there, done', async () => {
      const r = await runMigration(arrivalDeps({ failHeld: true }, { abort: 'ran' }), { vm: 'm', to: 'h2' });
      expect(r.to).toBe('h2');
      expect((await own.get('m'))?.host).toBe('h2');
      expect(log).not.toContain('h1 rollback');
      expect(log.at(-1)).toBe('h1 act vm.delete');
    });

    it('the source fails once it sent everything and the target does not answer: nothing resumes, the record stays', async () => {
      await expect(
        runMigration(arrivalDeps({ failHeld: true }, { abort: 'down' }), { vm: 'm', to: 'h2' }),
      ).rejects.toThrow(
        /h2 did not answer \(connect ECONNREFUSED\): it may run there \(its owner record names h2\); it stays paused on h1 and nothing resumes it/,
      );
      expect((await own.get('m'))?.host).toBe('h2');
      expect(log).not.toContain('h1 rollback');
      expect(log).not.toContain('h1 act vm.delete');
    });

    it('the target fails its resume on arrival: it proves it never ran, so the source resumes', async () => {
      await expect(
        runMigration(arrivalDeps({}, { failResume: true }), { vm: 'm', to: 'h2' }),
      ).rejects.toThrow(/rolled back; it runs on h1: VM m is not started on host h2: token is stale/);
      expect((await own.get('m'))?.host).toBe('h1');
      expect(log.slice(-2)).toEqual(['h2 abort', 'h1 rollback']);
    });
  });

  it('prepares the target, migrates, moves the owner record, then resumes the target under the new token', async () => {
    const r = await runMigration(deps(), { vm: 'm', to: 'h2' });
    const owner = await own.get('m');
    expect(owner).toMatchObject({ host: 'h2', from: 'h1', reason: 'user', specHost: 'h1' });
    expect(r).toMatchObject({ from: 'h1', to: 'h2', downtimeMs: 40, qemuTotalMs: 900, token: owner!.token });
    expect(log).toEqual([
      'h2 incoming from h1',
      'h1 start -> h2 https://10.0.0.2:7443',
      `h2 resume token ${owner!.token}`,
      'h1 act vm.delete',
    ]);
  });

  it('rolls back when the target refuses to take over: record back on h1, target removed, source resumed', async () => {
    await expect(runMigration(deps({ failResume: true }), { vm: 'm', to: 'h2' })).rejects.toThrow(
      'migration of vm m failed and was rolled back; it runs on h1: VM m is not started on host h2: token is stale',
    );
    expect((await own.get('m'))?.host).toBe('h1');
    expect(log.slice(-2)).toEqual(['h2 abort', 'h1 rollback']);
    expect(log).not.toContain('h1 act vm.delete');
  });

  it("rolls back when QEMU's migration fails: the incoming VM is removed, the record never moved", async () => {
    const before = await own.get('m');
    await expect(runMigration(deps({ failJob: true }), { vm: 'm', to: 'h2' })).rejects.toThrow(
      /rolled back; it runs on h1: Unable to write to socket/,
    );
    expect(await own.get('m')).toEqual(before);
    expect(log).toEqual(['h2 incoming from h1', 'h1 start -> h2 https://10.0.0.2:7443', 'h2 abort']);
  });

  it('shared disks: the iscsi volume lets the target in beside the source for the stream, then is fenced to the target alone under the new token; nfs is skipped', async () => {
    const before = await own.get('m');
    const r = await runMigration(deps({}, sharedSpec), { vm: 'm', to: 'h2' });
    const owner = await own.get('m');
    expect(log).toEqual([
      `s1 fence m-data to h1+h2 token ${before!.token}`,
      'h2 incoming from h1',
      'h1 start -> h2 https://10.0.0.2:7443',
      `h2 resume token ${owner!.token}`,
      `s1 fence m-data to h2 token ${owner!.token}`,
      'h1 act vm.delete',
    ]);
    expect(r.storage).toEqual({ fenced: ['san/m-data'], skipped: ['nas/m-files'] });
  });

  it('shared disks, rollbacks: the fence goes back to the source alone (the token the record has then)', async () => {
    const before = await own.get('m');
    await expect(runMigration(deps({ failJob: true }, sharedSpec), { vm: 'm', to: 'h2' })).rejects.toThrow(
      /rolled back/,
    );
    expect(log.filter((l) => l.startsWith('s1'))).toEqual([
      `s1 fence m-data to h1+h2 token ${before!.token}`,
      `s1 fence m-data to h1 token ${before!.token}`,
    ]);
    log.length = 0;
    await expect(runMigration(deps({ failResume: true }, sharedSpec), { vm: 'm', to: 'h2' })).rejects.toThrow(
      /rolled back/,
    );
    const back = await own.get('m');
    expect(back?.host).toBe('h1');
    expect(BigInt(back!.token)).toBeGreaterThan(BigInt(before!.token));
    expect(log.filter((l) => l.startsWith('s1'))).toEqual([
      `s1 fence m-data to h1+h2 token ${before!.token}`,
      `s1 fence m-data to h1 token ${back!.token}`,
    ]);
  });

  it('a fence that cannot move to the target: the VM runs there all the same, the report says why', async () => {
    const r = await runMigration(deps({ failFence: true }, sharedSpec), { vm: 'm', to: 'h2' });
    expect(r.to).toBe('h2');
    expect(r.storage?.error).toMatch(/VM m: cannot fence its storage to h2 .*tgtd is not running/);
    expect(log).toContain('h1 act vm.delete');
  });

  it('refuses while the explain has a blocker, and without a cluster spec', async () => {
    await expect(runMigration(deps(), { vm: 'm', to: 'h1' })).rejects.toThrow(/vm m already runs on h1/);
    const plain = loadSpec(clusterSpec(vm('m', ', host: h1')).replace(/^cluster:.*$/m, ''));
    await expect(runMigration({ ...deps(), spec: async () => plain }, { vm: 'm', to: 'h2' })).rejects.toThrow(
      /add "cluster: \{ store: sqlite \}"/,
    );
    expect(log).toEqual([]);
  });
});
