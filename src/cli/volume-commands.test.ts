import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { renderCapacity } from './capacity-commands.js';
import { addVmCommands } from './view-commands.js';
import {
  addVmSnapshotCommands,
  addVolumeCommands,
  formatMiB,
  parseSizeMiB,
  parseVolumeRef,
  renderPools,
  renderSnapshots,
  renderVolumes,
} from './volume-commands.js';

describe('vmlink volume, image, vm snapshot and capacity', () => {
  it('reads sizes and POOL/NAME, refusing what the API would refuse anyway', () => {
    expect(parseSizeMiB('512')).toBe(512);
    expect(parseSizeMiB('512M')).toBe(512);
    expect(parseSizeMiB('20G')).toBe(20480);
    expect(parseSizeMiB('1.5GiB')).toBe(1536);
    expect(parseSizeMiB('1T')).toBe(1048576);
    for (const bad of ['0', '-1', '12X', 'G', '99999999T'])
      expect(() => parseSizeMiB(bad), bad).toThrow(/a size is a number with M, G or T/);
    expect(parseVolumeRef('local/data')).toEqual({ pool: 'local', name: 'data' });
    for (const bad of ['data', 'local/', '/data', 'a/b/c', 'Local/data', 'local/../x'])
      expect(() => parseVolumeRef(bad), bad).toThrow(/a volume is POOL\/NAME/);
    expect([formatMiB(512), formatMiB(2048), formatMiB(3 * 1024 * 1024), formatMiB(undefined)]).toEqual([
      '512 MiB',
      '2.0 GiB',
      '3.0 TiB',
      undefined,
    ]);
  });

  it('renders pools, volumes and snapshots as tables', () => {
    expect(
      renderPools([
        {
          name: 'san',
          type: 'iscsi',
          host: 'san1',
          state: 'problems',
          inSpec: true,
          features: {
            snapshots: false,
            onlineResize: false,
            linkedClones: false,
            encryption: false,
            fence: true,
          },
          volumes: 1,
          capacityMiB: 10240,
          usedMiB: 1024,
          freeMiB: 9216,
          problems: ['tgtd not answering'],
        },
      ]),
    ).toBe(
      [
        'POOL  TYPE   HOST  STATE     VOLUMES  CAPACITY  USED     FREE     FEATURES  PROBLEMS',
        'san   iscsi  san1  problems  1        10.0 GiB  1.0 GiB  9.0 GiB  fence     tgtd not answering',
      ].join('\n'),
    );
    const text = renderVolumes([
      {
        pool: 'local',
        name: 'web2-root',
        host: 'h1',
        format: 'qcow2',
        sizeMiB: 2048,
        allocatedMiB: 12,
        encrypted: true,
        backingVolume: 'debian',
        snapshots: 2,
        usedBy: [{ vm: 'web2', disk: 'root', running: false }],
        declaredAt: 'vms[1].image',
      },
    ]);
    expect(text.split('\n')[1]).toMatch(
      /^local\s+web2-root\s+h1\s+qcow2\s+2\.0 GiB\s+12 MiB\s+2\s+web2:root \(stopped\)\s+encrypted, clone of debian, spec vms\[1\]\.image$/,
    );
    expect(renderVolumes([])).toBe('no volumes');
    expect(renderSnapshots([{ name: 'n', createdAt: 't', vmStateBytes: 268435456 }])).toMatch(
      /n\s+t\s+256 MiB/,
    );
  });

  it('renders capacity with the formula and each warning', () => {
    const text = renderCapacity({
      warnRatio: 0.8,
      pools: [
        {
          pool: 'local',
          type: 'dir',
          host: 'h1',
          capacityMiB: 10000,
          usedMiB: 8500,
          freeMiB: 1500,
          provisionedMiB: 1188,
          backupMiB: 2048,
          reserveMiB: 1000,
          projectedNeedMiB: 6178,
          usedRatio: 0.85,
          overcommit: 0.119,
          warnings: ['85 % of its filesystem is used (above 80 %): free space or grow 10000 MiB'],
        },
        {
          pool: 'nas',
          type: 'nfs',
          host: 'san1',
          provisionedMiB: 0,
          backupMiB: 0,
          reserveMiB: 0,
          projectedNeedMiB: 0,
          warnings: [],
          error: 'cannot reach san1',
        },
      ],
    });
    expect(text).toMatch(
      /^local\s+dir\s+h1\s+9\.8 GiB\s+8\.3 GiB \(85 %\)\s+1\.5 GiB\s+1\.2 GiB \(0\.119×\)\s+2\.0 GiB\s+1000 MiB\s+6\.0 GiB\s+WARN$/m,
    );
    expect(text).toMatch(/^nas\s+nfs\s+san1.*unknown$/m);
    expect(text).toContain('NEED = provisioned × 1.5 + backup × 2 + reserve × 0.3');
    expect(text).toContain('warning: pool local: 85 % of its filesystem is used');
    expect(text).toContain('pool nas: cannot reach san1');
  });

  it('adds the commands with help texts and --json; vm snapshot commands join the vm command', () => {
    const program = new Command();
    const api = () => {
      throw new Error('no API in this test');
    };
    addVmCommands(program, api);
    addVmSnapshotCommands(program, api);
    addVolumeCommands(program, api);
    const sub = (name: string) =>
      program.commands.find((c) => c.name() === name)!.commands.map((c) => c.name());
    expect(sub('volume')).toEqual([
      'list',
      'create',
      'resize',
      'clone',
      'delete',
      'snapshot',
      'snapshots',
      'rollback',
      'snapshot-delete',
    ]);
    expect(sub('vm')).toEqual(
      expect.arrayContaining(['list', 'snapshot', 'snapshots', 'rollback', 'snapshot-delete']),
    );
    expect(program.commands.filter((c) => c.name() === 'vm')).toHaveLength(1);
    expect(sub('image')).toEqual(['import']);
    const mine = program.commands
      .flatMap((c) => c.commands)
      .filter((c) => c.parent?.name() !== 'vm' || /snapshot|rollback/.test(c.name()));
    expect(mine).toHaveLength(9 + 4 + 2);
    for (const c of mine) {
      expect(c.description(), c.name()).not.toBe('');
      expect(c.options.map((o) => o.long)).toContain('--json');
    }
  });
});
