import { describe, expect, it } from 'vitest';
import type { HostReport, ObservedVm, VmConfig } from '../../shared/model.js';
import { explainMigration, type MigrationFacts } from './explain.js';

const nic = (network: string) => ({
  network,
  backend: 'linux' as const,
  bridge: `br-${network}`,
  tap: `t-${network}`,
  mac: '52:54:00:00:00:01',
  mtu: 1500,
});

const cfg = (over: Partial<VmConfig> = {}): VmConfig => ({
  name: 'web',
  cpus: 1,
  memoryMiB: 256,
  image: { kind: 'test-guest' },
  disks: [],
  nics: [nic('lan')],
  state: 'running',
  ...over,
});

const vmOn = (c: VmConfig, state: ObservedVm['state'] = 'running'): ObservedVm => ({
  name: c.name,
  state,
  configHash: 'h',
  problems: [],
  config: c,
});

const report = (host: string, over: Partial<HostReport> = {}): HostReport => ({
  host,
  agentVersion: '1',
  capabilities: {
    accelerator: 'tcg',
    acceleratorReason: 'KVM unusable',
    cpus: 4,
    memoryMiB: 2048,
    network: {},
    backends: ['linux'],
  },
  networks: [{ name: 'lan', bridge: 'br-lan', configHash: 'n', problems: [] }],
  vms: [],
  ...over,
});

const facts = (over: Partial<MigrationFacts> = {}, vm: VmConfig = cfg()): MigrationFacts => ({
  vm: 'web',
  from: 'host1',
  to: 'host2',
  hosts: ['host1', 'host2', 'host3'],
  source: report('host1', { vms: [vmOn(vm)] }),
  target: report('host2'),
  ...over,
});

const failed = (f: MigrationFacts) =>
  explainMigration(f)
    .checks.filter((c) => !c.ok && c.severity === 'blocker')
    .map((c) => c.id);

describe('explainMigration', () => {
  it('passes a running test guest between two TCG hosts with its network, no block migration', () => {
    const e = explainMigration(facts());
    expect(e.ok).toBe(true);
    expect(e.blockMigration).toBe(false);
    expect(e.checks.map((c) => c.id)).toEqual(['vm-running', 'cpu', 'network:lan', 'memory', 'estimate']);
    expect(e.estimate).toMatchObject({ transferMiB: 256, bandwidthAssumed: true, converges: true });
  });

  it('blocks a missing network on the target, naming it and the fix', () => {
    const e = explainMigration(facts({ target: report('host2', { networks: [] }) }));
    expect(e.ok).toBe(false);
    const c = e.checks.find((x) => x.id === 'network:lan')!;
    expect(c.message).toBe('network lan is not on host2');
    expect(c.fix).toMatch(/add host2 to network lan's hosts/);
  });

  it('blocks a network with problems on the target', () => {
    const t = report('host2', {
      networks: [{ name: 'lan', bridge: 'br-lan', configHash: 'n', problems: ['bridge missing'] }],
    });
    expect(failed(facts({ target: t }))).toEqual(['network:lan']);
  });

  it('blocks when the target lacks memory, counting its running VMs but not stopped ones', () => {
    const other = (name: string, memoryMiB: number, state: ObservedVm['state']) =>
      vmOn(cfg({ name, memoryMiB }), state);
    const full = report('host2', { vms: [other('a', 1024, 'running'), other('b', 800, 'running')] });
    const e = explainMigration(facts({ target: full }));
    expect(e.checks.find((c) => c.id === 'memory')?.message).toMatch(
      /host2 has 224 MiB of memory free .* needs 256 MiB \+ 64 MiB headroom/,
    );
    const roomy = report('host2', { vms: [other('a', 1024, 'running'), other('b', 800, 'stopped')] });
    expect(failed(facts({ target: roomy }))).toEqual([]);
  });

  it('blocks between accelerators and a stopped VM', () => {
    const kvm = report('host2');
    kvm.capabilities = { ...kvm.capabilities, accelerator: 'kvm' };
    expect(failed(facts({ target: kvm }))).toEqual(['accelerator']);
    const stopped = facts({ source: report('host1', { vms: [vmOn(cfg(), 'stopped')] }) });
    expect(explainMigration(stopped).checks[0]).toMatchObject({
      id: 'vm-running',
      ok: false,
      message: 'vm web is stopped on host1: live migration moves a running VM',
    });
  });

  it('blocks a TCG guest on huge pages (its RAM cannot take the pad against lost TCG writes), not a KVM one', () => {
    const vm = cfg({ hugepages: true });
    expect(failed(facts({}, vm))).toEqual(['tcg-memory']);
    expect(explainMigration(facts({}, vm)).checks.find((c) => c.id === 'tcg-memory')?.fix).toMatch(
      /start it on host2 .* or drop memory.hugepages/,
    );
    const kvm = (r: HostReport): HostReport => ({
      ...r,
      capabilities: { ...r.capabilities, accelerator: 'kvm' },
    });
    expect(
      failed(facts({ source: kvm(report('host1', { vms: [vmOn(vm)] })), target: kvm(report('host2')) }, vm)),
    ).toEqual([]);
  });

  it('blocks passthrough devices, confidential VMs and local CD-ROMs; an encrypted local disk is copied', () => {
    const vm = cfg({
      devices: [{ pci: '0000:03:00.0' }],
      confidential: 'sev',
      disks: [
        { name: 'data', sizeMiB: 100, encryption: { secret: 'k' } },
        { name: 'iso', media: 'cdrom' },
      ],
    });
    expect(failed(facts({}, vm))).toEqual(['confidential', 'passthrough', 'disk:iso']);
    const e = explainMigration(facts({}, vm));
    expect(e.blockMigration).toBe(true);
    expect(e.checks.find((c) => c.id === 'disk:data')).toMatchObject({ ok: false, severity: 'warning' });
  });

  it('copies VM-directory disks and an image overlay (block migration); a dir-pool volume blocks, naming the fix', () => {
    const file = {
      kind: 'file' as const,
      pool: 'local',
      volume: 'v1',
      path: '/p/v1.qcow2',
      format: 'qcow2' as const,
    };
    const vm = cfg({
      disks: [
        { name: 'scratch', sizeMiB: 64 },
        { name: 'vol', sizeMiB: 500, source: file },
      ],
    });
    const blocked = explainMigration(facts({}, vm));
    expect(failed(facts({}, vm))).toEqual(['disk:vol']);
    expect(blocked.checks.find((c) => c.id === 'disk:vol')).toMatchObject({
      severity: 'blocker',
      message:
        "disk vol is volume local/v1 of dir pool local, local to host1: block migration copies disks in the VM's directory and image overlays, not dir-pool volumes",
      fix: 'keep vm web on host1, or give it the disk on a shared pool (iSCSI or NFS) to move live: vm move-disk moves disks only between dir pools of one host',
    });
    const ok = explainMigration(facts({}, cfg({ disks: [{ name: 'scratch', sizeMiB: 64 }] })));
    expect(ok.ok).toBe(true);
    expect(ok.blockMigration).toBe(true);
    expect(ok.copiedDisks).toEqual([{ disk: 'scratch', sizeMiB: 64 }]);
    expect(ok.checks.find((c) => c.id === 'disk:scratch')).toMatchObject({ severity: 'warning' });
    expect(ok.estimate.transferMiB).toBe(256 + 64);
    const overlay = explainMigration(
      facts({}, cfg({ image: { kind: 'qcow2', path: '/img/base.qcow2' } as never, disks: [] })),
    );
    expect(overlay).toMatchObject({
      ok: true,
      blockMigration: true,
      copiedDisks: [{ disk: 'root', sizeMiB: 0 }],
    });
  });

  it("weighs the copied disks against the target's free space for VM disks (a warning: local disks are thin)", () => {
    const resources = (vmDiskFreeMiB?: number) => ({
      ...report('host2').capabilities,
      resources: {
        onlineCpus: [0, 1],
        cpuQuota: { available: false, reason: 'none' },
        hugepages: { available: false, reason: 'none', pageSizeKiB: 2048, free: 0 },
        ...(vmDiskFreeMiB === undefined ? {} : { vmDiskFreeMiB }),
      },
    });
    const vm = cfg({
      disks: [
        { name: 'scratch', sizeMiB: 64 },
        { name: 'logs', sizeMiB: 36 },
      ],
    });
    const tight = explainMigration(facts({ target: report('host2', { capabilities: resources(80) }) }, vm));
    expect(tight.ok).toBe(true);
    expect(tight.checks.find((c) => c.id === 'disk-space')).toEqual({
      id: 'disk-space',
      ok: false,
      severity: 'warning',
      message:
        'host2 has 80 MiB free for VM disks; the copied disks are up to 100 MiB (thin: they take what the guest wrote)',
      fix: 'free space on host2, or move the disks to a shared pool first (vmlink vm move-disk)',
    });
    const roomy = explainMigration(facts({ target: report('host2', { capabilities: resources(100) }) }, vm));
    expect(roomy.checks.find((c) => c.id === 'disk-space')).toMatchObject({ ok: true, severity: 'info' });
    // Nothing copied, or an agent that does not say: no check at all.
    const noDisks = explainMigration(facts({ target: report('host2', { capabilities: resources(1) }) }));
    expect(noDisks.checks.some((c) => c.id === 'disk-space')).toBe(false);
    const older = explainMigration(facts({ target: report('host2', { capabilities: resources() }) }, vm));
    expect(older.checks.some((c) => c.id === 'disk-space')).toBe(false);
  });

  it('keeps shared (iSCSI, NFS) disks in place', () => {
    const nfs = {
      kind: 'nfs' as const,
      pool: 'shared',
      volume: 'v',
      server: '10.0.0.9',
      export: '/e',
      file: 'v.qcow2',
      format: 'qcow2' as const,
    };
    const e = explainMigration(facts({}, cfg({ disks: [{ name: 'd', source: nfs }] })));
    expect(e.ok).toBe(true);
    expect(e.blockMigration).toBe(false);
    expect(e.checks.find((c) => c.id === 'disk:d')?.message).toMatch(
      /nfs volume shared\/v, shared: it stays/,
    );
  });

  it('refuses the same host, an unknown host, an unreachable agent and a VM already on the target', () => {
    expect(failed(facts({ to: 'host1', target: report('host1') }))).toContain('target-host');
    expect(explainMigration(facts({ to: 'nope' })).checks[0]?.message).toBe(
      'host nope is not in the applied spec (hosts: host1, host2, host3)',
    );
    const down = facts({ target: undefined, targetError: 'connect ECONNREFUSED' });
    expect(explainMigration(down).checks[0]?.message).toBe(
      'the agent of host2 does not answer: connect ECONNREFUSED',
    );
    expect(failed(facts({ target: report('host2', { vms: [vmOn(cfg(), 'stopped')] }) }))).toEqual([
      'target-host',
    ]);
  });

  it('warns when the dirty rate reaches the bandwidth, and stretches the estimate below it', () => {
    const slow = explainMigration(facts({ dirtyRateMiBps: 120, bandwidthMiBps: 100 }));
    expect(slow.ok).toBe(true);
    expect(slow.estimate.converges).toBe(false);
    expect(slow.checks.at(-1)).toMatchObject({ id: 'estimate', severity: 'warning' });
    const half = explainMigration(facts({ dirtyRateMiBps: 50, bandwidthMiBps: 100 }));
    expect(half.estimate).toMatchObject({ converges: true, seconds: 5.1 });
  });
});
