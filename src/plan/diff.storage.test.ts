import { describe, expect, it } from 'vitest';
import { ConflictError, InvalidRequestError } from '../shared/errors.js';
import type { HostReport } from '../shared/model.js';
import { analyzeDestruction, formatLoss } from './destroy.js';
import { planChanges, stepPhase } from './diff.js';
import { formatPlan } from './format.js';
import { type DesiredState, resolveSpec } from './resolve.js';
import { type Step, stepTarget } from './steps.js';
import { realised, storageSpec } from './storage.test-util.js';

const base = resolveSpec(storageSpec());
const brief = (steps: Step[]) => steps.map((s) => `${s.kind} ${s.host}/${stepTarget(s)}`);
const storageOnly = (steps: Step[]) => steps.filter((s) => !s.kind.startsWith('network.'));
/** The error `fn` throws. */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a refusal');
}

describe('storage plan', () => {
  it('makes pools, then volumes, then clones, then the VMs that open them', () => {
    const steps = storageOnly(planChanges(base, []).steps);
    expect(brief(steps)).toEqual([
      'pool.create host1/local',
      'pool.create san1/nas',
      'pool.create san1/san',
      'volume.create host1/local/web1-logs',
      'volume.create san1/nas/db1-db',
      'volume.create san1/nas/tmpl',
      'volume.create san1/san/data',
      'volume.create san1/nas/web1-root',
      'vm.create host1/web1',
      'vm.create host2/db1',
      'vm.start host1/web1',
      'vm.start host2/db1',
    ]);
    const clone = steps.find((s) => s.kind === 'volume.create' && s.volume.name === 'web1-root')!;
    const tmpl = steps.find((s) => s.kind === 'volume.create' && s.volume.name === 'tmpl')!;
    expect(stepPhase(clone)).toBeGreaterThan(stepPhase(tmpl));
  });

  it('changes nothing once realised', () => {
    const plan = planChanges(base, realised(base));
    expect(plan.steps).toEqual([]);
    expect(plan.unchanged).toContain('pool san on san1');
    expect(plan.unchanged).toContain('volume san/data on san1');
    expect(plan.kept).toBeUndefined();
  });

  it('repairs a pool with problems and updates a changed one, naming the fields', () => {
    const seen = realised(base);
    const san1 = seen.find((r) => r.host === 'san1')!;
    san1.pools![0]!.problems = ['tgtd is not running'];
    const changed = resolveSpec(
      storageSpec((s) => {
        s.pools[2].clients = ['192.168.50.0/24'];
      }),
    );
    const steps = planChanges(changed, seen).steps;
    expect(steps).toContainEqual(
      expect.objectContaining({ kind: 'pool.update', host: 'san1', reason: 'repair: tgtd is not running' }),
    );
    const nas = steps.find((s) => s.kind === 'pool.update' && s.pool.name === 'nas');
    expect(nas && 'changes' in nas && nas.changes).toEqual(['clients none -> ["192.168.50.0/24"]']);
    expect(formatPlan(planChanges(changed, seen))).toContain(
      '~ pool nas on san1: clients none -> ["192.168.50.0/24"]\n~ pool san on san1: repair: tgtd is not running',
    );
  });

  it('grows a volume online through its running VM where the pool can, and stores the VM’s new config live', () => {
    const grown = resolveSpec(
      storageSpec((s) => {
        s.vms[1].disks[0].sizeMiB = 2048;
      }),
    );
    const plan = planChanges(grown, realised(base));
    expect(plan.steps).toEqual([
      expect.objectContaining({
        kind: 'vm.hotplug',
        host: 'host2',
        changes: ['disks db 1024 -> 2048 MiB (in place)'],
      }),
      {
        kind: 'volume.resize',
        host: 'host2',
        pool: 'nas',
        name: 'db1-db',
        fromMiB: 1024,
        sizeMiB: 2048,
        vm: { name: 'db1', disk: 'db' },
        reason: 'vm db1 runs: grown online',
      },
    ]);
    expect(formatPlan(plan)).toContain(
      '~ volume nas/db1-db on host2: size 1024 -> 2048 MiB (online, through vm db1)',
    );
  });

  it('refuses to grow an iSCSI LUN under a running VM ("stop vm X first"), and grows it offline while stopped', () => {
    const grown = (state: string) =>
      resolveSpec(
        storageSpec((s) => {
          s.volumes[1].sizeMiB = 1024;
          s.vms[0].state = state;
        }),
      );
    const e = thrown(() => planChanges(grown('running'), realised(base)));
    expect(e).toBeInstanceOf(ConflictError);
    expect(e.message).toContain('volumes[1].sizeMiB: volume san/data is open in running vm web1 on host1');
    expect(e.message).toContain('stop vm web1 first');
    const steps = planChanges(grown('stopped'), realised(base)).steps;
    expect(brief(steps)).toEqual(['vm.stop host1/web1', 'volume.resize san1/san/data']);
    expect(stepPhase(steps[1]!)).toBeGreaterThan(stepPhase(steps[0]!));
    expect(steps[1]).toMatchObject({ fromMiB: 512, sizeMiB: 1024, reason: 'vm web1 is stopped' });
    expect(steps[1]).not.toHaveProperty('vm');
  });

  it('an offline growth comes before the VM is started again', () => {
    const stopped = realised(base, 'stopped');
    const grown = resolveSpec(
      storageSpec((s) => {
        s.volumes[1].sizeMiB = 1024;
      }),
    );
    expect(brief(planChanges(grown, stopped).steps)).toEqual([
      'volume.resize san1/san/data',
      'vm.start host1/web1',
      'vm.start host2/db1',
    ]);
  });

  it('refuses a shrink, naming the spec path and both sizes, and changes nothing', () => {
    const shrunk = resolveSpec(
      storageSpec((s) => {
        s.volumes[1].sizeMiB = 256;
      }),
    );
    const e = thrown(() => planChanges(shrunk, realised(base)));
    expect(e).toBeInstanceOf(InvalidRequestError);
    expect(e.message).toContain(
      'volumes[1].sizeMiB: volume san/data is 512 MiB and the spec asks for 256 MiB; volumes only grow',
    );
  });

  it('a volume an alert rule grew (up to its maxMiB) is not a shrink; past maxMiB it is', () => {
    const scaled = (maxMiB: number) =>
      resolveSpec(
        storageSpec((s) => {
          s.alerts = [
            {
              name: 'full',
              expr: 'vmlink_pool_utilization',
              threshold: 0.8,
              actions: [{ type: 'scale', volume: 'local/web1-logs', growByMiB: 64, maxMiB }],
            },
          ];
        }),
      );
    const seen = realised(base);
    const logs = seen
      .flatMap((r) => r.pools ?? [])
      .flatMap((p) => p.volumes)
      .find((v) => v.name === 'web1-logs')!;
    logs.sizeMiB = 192;
    const plan = planChanges(scaled(256), seen);
    expect(plan.steps).toEqual([]);
    expect(plan.unchanged).toContain('volume local/web1-logs on host1');
    expect(() => planChanges(scaled(160), seen)).toThrow(
      /web1-logs is 192 MiB and the spec asks for 128 MiB/,
    );
    expect(() => planChanges(base, seen)).toThrow(/web1-logs is 192 MiB and the spec asks for 128 MiB/);
  });

  it('refuses to change whether an existing volume is encrypted', () => {
    const enc = resolveSpec(
      storageSpec((s) => {
        s.vms[1].disks[0].encryption = { secret: 'k' };
      }),
    );
    const e = thrown(() => planChanges(enc, realised(base)));
    expect(e).toBeInstanceOf(ConflictError);
    expect(e.message).toContain(
      'vms[1].disks[0].encryption: volume nas/db1-db was made unencrypted, and a volume keeps the encryption it was made with',
    );
  });

  it('refuses to delete a pool that still holds volumes; deletes an empty one', () => {
    const seen = realised(base);
    const noLocal = resolveSpec(
      storageSpec((s) => {
        s.pools.splice(0, 1);
        s.vms[0].disks.splice(1, 1);
      }),
    );
    const e = thrown(() => planChanges(noLocal, seen));
    expect(e).toBeInstanceOf(ConflictError);
    expect(e.message).toContain(
      'pool "local" on host "host1" is no longer in the spec but still holds volume(s) web1-logs',
    );
    seen.find((r) => r.host === 'host1')!.pools![0]!.volumes = [];
    const steps = planChanges(noLocal, seen).steps;
    expect(steps).toContainEqual(
      expect.objectContaining({ kind: 'pool.delete', host: 'host1', reason: 'not in the spec' }),
    );
  });

  it('refuses to move a pool that holds data to another path', () => {
    const moved = resolveSpec(
      storageSpec((s) => {
        s.pools[0].path = '/srv/pools/local';
      }),
    );
    expect(thrown(() => planChanges(moved, realised(base))).message).toContain(
      'pools[0].path: pool "local" on host "host1" holds 1 volume(s) in /var/lib/vmlink/pools/local (dir); changing its path would leave them behind',
    );
  });

  it('hot-plugs a pool disk into a running VM and unplugs one, keeping its volume', () => {
    const plugged = resolveSpec(
      storageSpec((s) => {
        s.vms[0].disks.push({ name: 'extra', pool: 'local', sizeMiB: 32 });
      }),
    );
    const plan = planChanges(plugged, realised(base));
    expect(brief(plan.steps)).toEqual(['volume.create host1/local/web1-extra', 'vm.hotplug host1/web1']);
    expect(plan.steps[1]).toMatchObject({ changes: ['disks +extra (hot-plug)'] });

    const unplugged = resolveSpec(
      storageSpec((s) => {
        s.vms[0].disks.splice(1, 1);
      }),
    );
    const plan2 = planChanges(unplugged, realised(base));
    expect(brief(plan2.steps)).toEqual(['vm.hotplug host1/web1']);
    expect(plan2.steps[0]).toMatchObject({ changes: ['disks -logs (hot-unplug)'] });
    expect(plan2.kept).toEqual([
      'volume local/web1-logs on host1 is no longer named by the spec and is kept with its data (delete it with `vmlink volume delete local/web1-logs`)',
    ]);
  });

  it('a VM-directory disk or a CD-ROM still needs a restart', () => {
    const changed = resolveSpec(
      storageSpec((s) => {
        s.vms[1].disks.push(
          { name: 'more', sizeMiB: 8 },
          { name: 'cd', pool: 'nas', volume: 'debian', media: 'cdrom' },
        );
      }),
    );
    const update = planChanges(changed, realised(base)).steps.find((s) => s.kind === 'vm.update');
    expect(update && 'changes' in update && update.changes).toEqual([
      'disks +more (restart)',
      'disks +cd (restart)',
    ]);
  });

  it('deletes the volumes made for a deleted VM after it, lists them as lost, and keeps the ones it only attached', () => {
    const before = base;
    const without = resolveSpec(
      storageSpec((s) => {
        s.vms.splice(0, 1);
        s.volumes.splice(1, 1);
      }),
    );
    const plan = planChanges(without, realised(before));
    expect(brief(plan.steps)).toEqual([
      'vm.delete host1/web1',
      'volume.delete host1/local/web1-logs',
      'volume.delete san1/nas/web1-root',
    ]);
    expect(formatPlan(plan).split('\n')).toEqual([
      '- vm web1 on host1 (not in the spec)',
      '- volume local/web1-logs on host1 (made for a VM that is deleted)',
      '- volume nas/web1-root on san1 (made for a VM that is deleted)',
      '',
      'Plan: 0 to create, 0 to update, 3 to delete, 0 to start, 0 to stop.',
    ]);
    const a = analyzeDestruction(plan, before, new Set());
    expect(a.losses.map(formatLoss)).toEqual([
      'vm web1 on host1 and its disks: root (volume nas/web1-root, a clone of tmpl), scratch (64 MiB), logs (volume local/web1-logs, 128 MiB)',
    ]);
    expect(a.kept).toContain(
      'volume san/data on san1 is no longer named by the spec and is kept with its data (delete it with `vmlink volume delete san/data`)',
    );
    expect(a.kept).toContain('volume san/data of vm web1 is detached, not deleted: it stays in its pool');
  });

  it('destroy removes VMs and their own volumes but leaves pools and named volumes', () => {
    const empty: DesiredState = {
      host1: { networks: [], vms: [] },
      host2: { networks: [], vms: [] },
      san1: { networks: [], vms: [] },
    };
    const plan = planChanges(empty, realised(base));
    expect(brief(storageOnly(plan.steps))).toEqual([
      'vm.delete host1/web1',
      'vm.delete host2/db1',
      'volume.delete host1/local/web1-logs',
      'volume.delete san1/nas/db1-db',
      'volume.delete san1/nas/web1-root',
    ]);
  });

  it('a VM that moves hosts keeps its volume in a shared pool', () => {
    const moved = resolveSpec(
      storageSpec((s) => {
        s.vms[1].host = 'host1';
        s.vms[1].nics = [{ network: 'iso' }];
      }),
    );
    const steps = planChanges(moved, realised(base)).steps;
    expect(brief(steps).filter((s) => s.includes('db1'))).toEqual([
      'vm.delete host2/db1',
      'vm.create host1/db1',
      'vm.start host1/db1',
    ]);
  });

  it('a clone of an imported template is made at the template’s observed size', () => {
    const desired = resolveSpec(
      storageSpec((s) => {
        s.vms[0].image = { kind: 'volume', pool: 'nas', volume: 'imported', clone: true };
      }),
    );
    const seen: HostReport[] = realised(base);
    const nas = seen.find((r) => r.host === 'san1')!.pools!.find((p) => p.name === 'nas')!;
    nas.volumes = nas.volumes.filter((v) => v.name !== 'web1-root');
    nas.volumes.push({
      name: 'imported',
      format: 'qcow2',
      sizeMiB: 4096,
      allocatedMiB: 900,
      encrypted: false,
      snapshots: [],
    });
    const create = planChanges(desired, seen).steps.find((s) => s.kind === 'volume.create');
    expect(create).toMatchObject({
      volume: { name: 'web1-root', sizeMiB: 4096, from: { volume: 'imported', linked: true } },
    });
  });

  it('formats pool and volume steps and counts them', () => {
    const text = formatPlan(planChanges(base, []));
    expect(text).toContain(
      '+ pool san on san1 (iscsi, /var/lib/vmlink/pools/san, CHAP user vmlink (secret: san-chap))',
    );
    expect(text).toContain('+ volume nas/web1-root on san1 (2048 MiB qcow2, linked clone of tmpl)');
    expect(text).toContain(
      '+ vm web1 on host1 (1 cpu, 256 MiB, volume nas/web1-root, nics: iso, disks: scratch, logs (local/web1-logs), data (san/data))',
    );
    expect(text).toContain('Plan: 12 to create, 0 to update, 0 to delete, 2 to start, 0 to stop.');
  });
});
