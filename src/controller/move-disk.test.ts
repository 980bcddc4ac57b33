import { describe, expect, it } from 'vitest';
import type { AgentAction } from '../agent/wire.js';
import { resolveSpec } from '../plan/resolve.js';
import { realised, storageSpec } from '../plan/storage.test-util.js';
import type { HostReport, ObservedVm } from '../shared/model.js';
import type { Spec } from '../spec/schema.js';
import type { AgentPort } from './hosts.js';
import { type MoveDiskDeps, moveDisk } from './move-disk.js';

// The storage fixture (web1 on host1: `scratch` in its directory, `logs` in dir pool `local`, `data` a named san
// volume; db1 on host2) plus a dir pool `fast` on host1 and `far` on host2.
// biome-ignore lint/suspicious/noExplicitAny: raw documents are edited freely by the tests.
const specWith = (edit?: (doc: any) => void): Spec =>
  storageSpec((s) => {
    s.pools.push({ name: 'fast', type: 'dir', host: 'host1' }, { name: 'far', type: 'dir', host: 'host2' });
    edit?.(s);
  });

interface World {
  deps: MoveDiskDeps;
  actions: AgentAction[];
  events: string[];
  notes: string[];
}

/** Agents answering `reports` (web1 in `state`); `vm.moveDisk` adds the volume to the target pool's report. */
function world(
  spec: Spec,
  opts: { state?: ObservedVm['state']; reports?: HostReport[]; down?: string } = {},
) {
  const reports = opts.reports ?? realised(resolveSpec(spec), opts.state);
  const w: World = { actions: [], events: [], notes: [], deps: undefined as unknown as MoveDiskDeps };
  const agent = (host: string): AgentPort =>
    ({
      report: async () => {
        if (host === opts.down) throw new Error('connect ECONNREFUSED');
        return structuredClone(reports.find((r) => r.host === host)!);
      },
      act: async (a: AgentAction) => {
        w.actions.push(a);
        if (a.kind !== 'vm.moveDisk') return;
        const pool = reports.find((r) => r.host === host)!.pools!.find((p) => p.name === a.pool)!;
        pool.volumes.push({
          name: a.volume,
          format: 'qcow2',
          sizeMiB: 128,
          allocatedMiB: 42,
          encrypted: false,
          snapshots: [],
        });
      },
    }) as unknown as AgentPort;
  w.deps = {
    agents: (_s, host) => agent(host),
    spec: async () => spec,
    event: async (k, m) => {
      w.events.push(`${k} ${m}`);
    },
    progress: (n) => w.notes.push(n),
  };
  return w;
}

const refusal = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a refusal');
    },
    (e: Error & { kind?: string }) => `${e.kind}: ${e.message}`,
  );

describe('vm move-disk (controller)', () => {
  it('moves a pool disk into a dir pool of its host as <vm>-<disk>, and says what the spec must say next', async () => {
    const w = world(specWith());
    const r = await moveDisk(w.deps, { vm: 'web1', disk: 'logs', pool: 'fast' });
    expect(w.actions).toEqual([
      { kind: 'vm.moveDisk', name: 'web1', disk: 'logs', pool: 'fast', volume: 'web1-logs' },
    ]);
    expect(r).toMatchObject({
      vm: 'web1',
      disk: 'logs',
      host: 'host1',
      from: 'pool local',
      pool: 'fast',
      volume: 'web1-logs',
      allocatedMiB: 42,
      specSays: false,
    });
    expect(r.next).toContain('edit the spec (vms web1 disks logs pool: fast) before the next apply');
    expect(w.events).toEqual(['vm.disk.moved web1/logs: pool local -> pool fast on host1']);
    expect(w.notes).toEqual(['copying disk logs of VM web1 from pool local to pool fast on host1']);
  });

  it('moves a VM-directory disk; the spec already naming the pool needs nothing more', async () => {
    // The applied spec names fast, but the host still has the disk in the VM's directory (an apply was refused).
    const applied = specWith((s) => {
      s.vms[0].disks[0].pool = 'fast';
    });
    const w = world(applied, { reports: realised(resolveSpec(specWith())) });
    const r = await moveDisk(w.deps, { vm: 'web1', disk: 'scratch', pool: 'fast' });
    expect(r).toMatchObject({ from: 'the VM directory', volume: 'web1-scratch', specSays: true });
    expect(r.next).toBe('the applied spec already puts the disk there: nothing more to do');
  });

  it('refuses what it cannot move, naming the fix, before any action', async () => {
    const w = world(specWith());
    const cases: Array<[Parameters<typeof moveDisk>[1], string]> = [
      [{ vm: 'nope', disk: 'logs', pool: 'fast' }, 'not-found: vm "nope" not found'],
      [
        { vm: 'web1', disk: 'swap', pool: 'fast' },
        'not-found: VM web1 has no disk swap in the applied spec (its disks: scratch, logs, data)',
      ],
      [
        { vm: 'web1', disk: 'data', pool: 'fast' },
        'unsupported: VM web1: disk data is volume san/data of `volumes:`',
      ],
      [{ vm: 'web1', disk: 'logs', pool: 'nope' }, 'not-found: pool "nope" not found'],
      [
        { vm: 'web1', disk: 'logs', pool: 'nas' },
        'unsupported: pool nas is nfs: a disk moves only into a dir pool',
      ],
      [{ vm: 'web1', disk: 'logs', pool: 'far' }, 'invalid: pool far is on host2 but VM web1 runs on host1'],
      [{ vm: 'web1', disk: 'logs', pool: 'local' }, 'conflict: VM web1: disk logs is in pool local already'],
    ];
    for (const [req, text] of cases) expect(await refusal(moveDisk(w.deps, req))).toContain(text);
    expect(w.actions).toEqual([]);
  });

  it("moves a stopped VM's disk (a copy on the agent), and refuses a crashed one naming the fix", async () => {
    const w = world(specWith(), { state: 'stopped' });
    const r = await moveDisk(w.deps, { vm: 'web1', disk: 'logs', pool: 'fast' });
    expect(r).toMatchObject({
      vm: 'web1',
      host: 'host1',
      from: 'pool local',
      pool: 'fast',
      volume: 'web1-logs',
    });
    expect(w.actions).toEqual([
      { kind: 'vm.moveDisk', name: 'web1', disk: 'logs', pool: 'fast', volume: 'web1-logs' },
    ]);
    expect(w.notes[0]).toContain('copying disk logs of stopped VM web1 from pool local to pool fast');
    expect(
      await refusal(
        moveDisk(world(specWith(), { state: 'crashed' }).deps, { vm: 'web1', disk: 'logs', pool: 'fast' }),
      ),
    ).toBe(
      'invalid-state: VM web1 is crashed on host1: stop it (`vmlink vm stop web1`) or start it, then move its disk',
    );
  });

  it('refuses an unrealised pool, a taken volume name and a silent host', async () => {
    const noFast = realised(resolveSpec(specWith()));
    noFast[0]!.pools = noFast[0]!.pools!.filter((p) => p.name !== 'fast');
    expect(
      await refusal(
        moveDisk(world(specWith(), { reports: noFast }).deps, { vm: 'web1', disk: 'logs', pool: 'fast' }),
      ),
    ).toContain('conflict: pool fast is not realised on host1 yet: apply the spec that declares it first');
    const taken = realised(resolveSpec(specWith()));
    taken[0]!
      .pools!.find((p) => p.name === 'fast')!
      .volumes.push({
        name: 'web1-logs',
        format: 'qcow2',
        sizeMiB: 1,
        allocatedMiB: 1,
        encrypted: false,
        snapshots: [],
      });
    expect(
      await refusal(
        moveDisk(world(specWith(), { reports: taken }).deps, { vm: 'web1', disk: 'logs', pool: 'fast' }),
      ),
    ).toContain('conflict: volume fast/web1-logs exists already');
    expect(
      await refusal(
        moveDisk(world(specWith(), { down: 'host1' }).deps, { vm: 'web1', disk: 'logs', pool: 'fast' }),
      ),
    ).toContain(
      'unavailable: the agent of host1, where VM web1 runs, did not answer: connect ECONNREFUSED; nothing was changed',
    );
    const none = world(specWith());
    none.deps.spec = async () => undefined;
    expect(await refusal(moveDisk(none.deps, { vm: 'web1', disk: 'logs', pool: 'fast' }))).toContain(
      'no spec has been applied yet',
    );
  });
});
