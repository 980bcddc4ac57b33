import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { HypervisorDriver, VmStats } from '../../drivers/hypervisor/types.js';
import type { NetworkDriver } from '../../drivers/network/types.js';
import { PoolStateStore } from '../../drivers/storage/pool-state.js';
import { RecordingRunner } from '../../exec/runner.js';
import { AgentMetricsSchema } from '../../shared/metrics.js';
import { AgentMetricsCollector } from './collector.js';

const dir = mkdtempSync(join(tmpdir(), 'vmlink-metrics-collector-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Captured `ip -json -stats link show`: lo, bridge vlbr-lan, tap vl-web1-0, and a veth pair eth0/eth0p.
const links = readFileSync(new URL('../../exec/__fixtures__/ip-link-stats.json', import.meta.url), 'utf8');

const web1: VmStats = {
  name: 'web1',
  running: true,
  pid: process.pid,
  cpuSecondsTotal: 12.5,
  memoryRssBytes: 100 << 20,
  memoryConfiguredBytes: 256 << 20,
  disks: [{ disk: 'data', readBytes: 1, writeBytes: 2, readOps: 3, writeOps: 4 }],
  nics: [
    { nic: 'nic0', tap: 'eth0' },
    { nic: 'nic1', tap: 'vl-gone-1' },
  ],
};

function collector(opts: { vmStats?: () => Promise<VmStats[]>; listNetworks?: () => Promise<unknown[]> }) {
  const runner = new RecordingRunner().on(['ip', '-json', '-stats', 'link', 'show'], { stdout: links });
  const network = {
    listNetworks: opts.listNetworks ?? (async () => [{ name: 'lan', bridge: 'vlbr-lan' }]),
  } as unknown as NetworkDriver;
  return new AgentMetricsCollector({
    host: 'host1',
    scope: 'machine',
    runner,
    stateDir: dir,
    networks: { linux: network },
    hypervisor: { vmStats: opts.vmStats } as unknown as HypervisorDriver,
    now: () => 1_700_000_000_000,
    partTimeoutMs: 300,
  });
}

describe('AgentMetricsCollector', () => {
  it("puts the host's, VMs', networks' and pools' figures in one sample the controller accepts", async () => {
    const poolDir = join(dir, 'p1');
    mkdirSync(poolDir);
    await new PoolStateStore(dir).write({
      config: { name: 'p1', type: 'dir', path: poolDir },
      configHash: 'h',
    });
    const s = await collector({ vmStats: async () => [web1] }).sample();
    expect(AgentMetricsSchema.parse(s)).toEqual(s);
    expect(s).toMatchObject({ host: 'host1', at: 1_700_000_000_000 });
    expect(s.hostMetrics.scope).toBe('machine');
    // Loopback is not an interface of the host's.
    expect(s.hostMetrics.interfaces.map((i) => i.name)).toEqual(['vlbr-lan', 'vl-web1-0', 'eth0p', 'eth0']);
    expect(s.hostMetrics.filesystems.map((f) => f.path)).toEqual([dir, poolDir]);
    expect(s.pools).toEqual([{ pool: 'p1', sizeBytes: expect.any(Number), usedBytes: expect.any(Number) }]);
    expect(s.pools[0]!.sizeBytes).toBeGreaterThan(s.pools[0]!.usedBytes);
    expect(s.networks).toEqual([
      expect.objectContaining({ network: 'lan', device: 'vlbr-lan', txDropped: 2, rxBytes: 0 }),
    ]);
    // The NIC is seen from the guest: its tap (eth0) received 516 and sent 600 bytes. A NIC whose tap is gone is
    // left out rather than reported as zeros.
    const vm = s.vms[0]!;
    expect(vm).toMatchObject({ name: 'web1', running: true, cpuSecondsTotal: 12.5, disks: web1.disks });
    expect(vm).not.toHaveProperty('pid');
    expect(vm.nics).toEqual([
      expect.objectContaining({ nic: 'nic0', tap: 'eth0', rxBytes: 600, txBytes: 516 }),
    ]);
  });

  it('still answers when a part cannot be read, and a hypervisor without vmStats reports no VMs', async () => {
    const s = await collector({
      vmStats: async () => {
        throw new Error('QMP gone');
      },
      listNetworks: async () => {
        throw new Error('ovsdb down');
      },
    }).sample();
    expect(s.vms).toEqual([]);
    expect(s.networks).toEqual([]);
    expect(s.hostMetrics.cpuSecondsTotal).toBeGreaterThan(0);
    expect((await collector({}).sample()).vms).toEqual([]);
  });

  it('answers without a part that hangs (a QEMU or a command that never answers), and the next sample too', async () => {
    const c = collector({ vmStats: () => new Promise(() => {}) });
    expect((await c.sample()).vms).toEqual([]);
    expect((await c.sample()).hostMetrics.interfaces.length).toBe(4);
  });

  it('serves overlapping requests from one sample', async () => {
    let calls = 0;
    const c = collector({
      vmStats: async () => {
        calls++;
        return [];
      },
    });
    const [a, b] = await Promise.all([c.sample(), c.sample()]);
    expect(a).toBe(b);
    expect(calls).toBe(1);
    await c.sample();
    expect(calls).toBe(2);
  });
});
