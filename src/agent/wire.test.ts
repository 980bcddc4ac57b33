import { expect, it } from 'vitest';
import { z } from 'zod';
import { AGENT_BATCH_MAX_ACTIONS } from '../shared/limits.js';
import type { HostReport } from '../shared/model.js';
import { AgentActionSchema, AgentBatchResultSchema, AgentBatchSchema, HostReportSchema } from './wire.js';

/** `T` with every optional field required, all the way down: a fixture of it must name every field there is. */
type Full<T> = T extends (infer U)[] ? Full<U>[] : T extends object ? { [K in keyof T]-?: Full<T[K]> } : T;

// Typed Full<HostReport>: a field added to the report's interfaces fails to compile here until it is named, and
// then the round trip below fails until the wire schema carries it (a schema drops fields it does not know).
const report: Full<HostReport> = {
  host: 'host1',
  agentVersion: '0.1.0',
  capabilities: {
    accelerator: 'tcg',
    acceleratorReason: 'KVM probe timed out',
    cpus: 2,
    memoryMiB: 2048,
    network: { vxlan: true, vlan: false },
    confidential: {
      sev: { available: true, reason: 'sev, kvm_amd sev=Y' },
      'sev-snp': { available: false, reason: 'the CPU has no sev_snp flag in /proc/cpuinfo' },
      tdx: { available: false, reason: 'the CPU has no tdx_host_platform flag in /proc/cpuinfo' },
      cbitpos: 51,
      reducedPhysBits: 1,
    },
    backends: ['linux', 'ovs'],
    tuning: {
      congestion: ['bbr', 'reno'],
      congestionAvailable: ['reno', 'bbr', 'cubic'],
      congestionAllowed: ['reno', 'bbr'],
      rootNamespace: false,
      keys: ['congestion', 'mtuProbing', 'ecn', 'fastOpen'],
      current: { congestion: 'bbr', mtuProbing: 0, ecn: 2, fastOpen: 1 },
    },
    resources: {
      onlineCpus: [0, 1, 2, 3],
      cpuQuota: { available: false, reason: 'no cgroup v2 hierarchy at /sys/fs/cgroup' },
      hugepages: {
        available: true,
        reason: '512 free',
        pageSizeKiB: 2048,
        free: 512,
        mount: '/dev/hugepages',
      },
      vmDiskFreeMiB: 20480,
    },
  },
  networks: [
    {
      name: 'lan',
      bridge: 'vlb-lan',
      configHash: 'abcdef01',
      problems: ['dnsmasq not running'],
      leases: [{ mac: '52:54:00:12:34:56', ip: '10.0.0.5', hostname: 'web1' }],
      config: {
        name: 'lan',
        mode: 'vxlan',
        backend: 'linux',
        bridge: 'vlb-lan',
        mtu: 1450,
        vxlan: {
          vni: 42,
          device: 'vlx-lan',
          local: '10.0.0.1',
          remotes: ['10.0.0.2'],
          port: 4789,
          underlay: 'eth0',
        },
        vlan: { id: 100, trunk: 'eth1' },
        nat: true,
        subnet: {
          cidr: '10.10.0.0/24',
          gateway: '10.10.0.1',
          prefixLength: 24,
          dhcpStart: '10.10.0.100',
          dhcpEnd: '10.10.0.199',
          reservations: [{ mac: '52:54:00:00:00:01', ip: '10.10.0.10', hostname: 'web1' }],
        },
        uplink: 'eth0',
        forwards: [{ protocol: 'tcp', hostPort: 8080, vm: 'web1', targetIp: '10.10.0.10', targetPort: 80 }],
        hostServices: [{ protocol: 'tcp', port: 22 }],
      },
    },
  ],
  vms: [
    {
      name: 'web1',
      state: 'running',
      pid: 1234,
      configHash: 'abcdef02',
      problems: [],
      config: {
        name: 'web1',
        cpus: 1,
        memoryMiB: 256,
        image: { kind: 'test-guest' },
        disks: [
          {
            name: 'data',
            sizeMiB: 64,
            encryption: { secret: 'data-key' },
            source: {
              kind: 'iscsi',
              pool: 'san',
              volume: 'data',
              portal: '192.168.50.20:3260',
              iqn: 'iqn.2026-12.io.vmlink:san1.san.data',
              lun: 1,
              chap: { user: 'vmlink', secret: 'san-chap' },
            },
            media: 'cdrom',
            readOnly: true,
          },
        ],
        nics: [
          {
            network: 'lan',
            backend: 'ovs',
            bridge: 'vlb-lan',
            vlan: 100,
            trunk: { networks: ['lan'], vlans: [100] },
            tap: 'vlt-web1-0',
            mac: '52:54:00:00:00:01',
            mtu: 1450,
            staticIp: { address: '10.10.0.10', prefixLength: 24, gateway: '10.10.0.1' },
            reservedIp: '10.10.0.10',
            portSecurity: false,
            allowedAddresses: ['10.10.0.50'],
            securityGroups: ['web'],
          },
        ],
        state: 'running',
        confidential: 'sev-snp',
        rootSource: {
          kind: 'nfs',
          pool: 'nas',
          volume: 'web1-root',
          server: '192.168.50.20',
          export: '/vmlink/nas',
          file: 'web1-root.qcow2',
          format: 'qcow2',
        },
        devices: [{ pci: '0000:65:00.0' }, { usb: '046d:c52b' }],
        cpu: { pin: [2], quotaPercent: 50 },
        hugepages: true,
      },
      ports: [{ network: 'prod100', tap: 'vlt-web1-1', bridge: 'vlo-eth1', trunk: ['prod100', 'test200'] }],
      vcpus: [{ vcpu: 0, thread: 4321, cpus: '2' }],
      cpuMax: '50000 100000',
    },
  ],
  securityGroups: [
    {
      name: 'web',
      configHash: 'abcdef04',
      problems: ['not on backend ovs'],
      config: {
        name: 'web',
        rules: [
          {
            direction: 'ingress',
            protocol: 'tcp',
            ports: [{ from: 80, to: 80 }],
            cidr: '0.0.0.0/0',
            group: 'web',
          },
        ],
        memberMacs: ['52:54:00:00:00:01'],
      },
    },
  ],
  pools: [
    {
      name: 'nas',
      type: 'nfs',
      configHash: 'abcdef05',
      problems: ['export missing'],
      config: {
        name: 'nas',
        type: 'nfs',
        path: '/var/lib/vmlink/pools/nas',
        clients: ['192.168.50.0/24'],
        chap: { user: 'vmlink', secret: 'san-chap' },
        nfs: { exportId: 7, pseudoPath: '/vmlink/nas' },
        iscsi: { tgtControlPort: 3 },
      },
      capacityMiB: 10240,
      usedMiB: 1024,
      freeMiB: 9216,
      volumes: [
        {
          name: 'web1-root',
          format: 'qcow2',
          sizeMiB: 512,
          allocatedMiB: 3,
          encrypted: true,
          backingVolume: 'debian',
          snapshots: [{ name: 'before', createdAt: '2026-12-01T06:00:00.000Z', vmStateBytes: 1024 }],
          sessions: [{ initiator: 'iqn.2008-11.org.linux-kvm', addresses: ['192.168.50.11'] }],
          fence: {
            host: 'host1',
            address: '192.168.50.11',
            token: '42',
            at: '2026-12-01T06:00:00.000Z',
            peer: { host: 'host2', address: '192.168.50.12' },
          },
        },
      ],
    },
  ],
  devices: {
    iommu: true,
    pci: [
      {
        address: '0000:65:00.0',
        vendorId: '10de',
        deviceId: '2335',
        vendorName: 'NVIDIA Corporation',
        deviceName: 'GH100 [H200 SXM 141GB]',
        classCode: '030200',
        className: '3D controller',
        driver: 'vfio-pci',
        iommuGroup: 12,
        numaNode: 0,
        sriov: { totalVfs: 8, numVfs: 1, vfs: ['0000:65:00.1'] },
        physfn: '0000:64:00.0',
        mdevTypes: [{ id: 'nvidia-1', name: 'GRID', available: 4 }],
        hostUse: 'uplink eth0',
      },
    ],
    usb: [
      {
        path: '1-2.3',
        busnum: 1,
        devnum: 4,
        vendorId: '046d',
        productId: 'c52b',
        manufacturer: 'Logitech',
        product: 'Unifying Receiver',
        hostUse: 'root disk sdb1 (/)',
      },
    ],
  },
  uplink: {
    device: 'eth0',
    addressDevice: 'vlb-lan',
    mtu: 1500,
    addresses: ['192.168.50.10/24'],
    gateway: '192.168.50.1',
    configHash: 'abcdef03',
  },
  loadBalancers: [
    {
      name: 'web',
      configHash: 'abc123',
      haproxy: true,
      keepalived: true,
      holdsVip: true,
      backendsUp: ['web1'],
      problems: [],
    },
  ],
};

it('carries every field of a host report across the wire, both ways', () => {
  // The agent's side (encode, as its serializer does) and the controller's side (parse, as HttpClient does).
  const sent = JSON.parse(JSON.stringify(z.encode(HostReportSchema, report)));
  expect(sent).toEqual(report);
  expect(HostReportSchema.parse(sent)).toEqual(report);
});

it('takes a batch of plain actions and refuses a commit-confirmed one, an empty batch and too many', () => {
  const start = { kind: 'vm.start' as const, name: 'web1' };
  expect(AgentBatchSchema.safeParse({ actions: [start, { ...start, name: 'web2' }] }).success).toBe(true);
  const risky = {
    kind: 'network.delete' as const,
    name: 'lan',
    confirm: { id: '6f1c2c1e-8a4b-4a8e-9a51-2f7d6c9b0e11', timeoutMs: 30_000 },
  };
  const refused = AgentBatchSchema.safeParse({ actions: [start, risky] });
  expect(refused.success).toBe(false);
  expect(refused.error?.issues[0]?.message).toMatch(/commit-confirmed actions cannot be batched/);
  expect(AgentBatchSchema.safeParse({ actions: [] }).success).toBe(false);
  expect(
    AgentBatchSchema.safeParse({ actions: Array(AGENT_BATCH_MAX_ACTIONS + 1).fill(start) }).success,
  ).toBe(false);
  // Results: ok, or an error body; nothing else.
  expect(
    AgentBatchResultSchema.safeParse({
      results: [{ ok: true }, { ok: false, error: { kind: 'exec', message: 'x' } }],
    }).success,
  ).toBe(true);
  expect(AgentBatchResultSchema.safeParse({ results: [{ ok: false }] }).success).toBe(false);
});

it('carries secret values on VM actions, bounded and base64 only', () => {
  const start = (secrets: unknown) =>
    AgentActionSchema.safeParse({ kind: 'vm.start', name: 'web1', secrets });
  expect(start([{ name: 'k', value: 'c2VjcmV0' }]).success).toBe(true);
  expect(start(undefined).success).toBe(true);
  expect(start([{ name: 'k', value: 'not base64!' }]).success).toBe(false);
  expect(start([{ name: 'K!', value: 'c2VjcmV0' }]).success).toBe(false);
  expect(start([{ name: 'k', value: 'A'.repeat(6000) }]).success).toBe(false);
  expect(start(Array.from({ length: 17 }, (_, i) => ({ name: `k${i}`, value: 'c2VjcmV0' }))).success).toBe(
    false,
  );
  // Other actions take none.
  expect(AgentActionSchema.safeParse({ kind: 'vm.stop', name: 'w', force: false, secrets: [] }).success).toBe(
    false,
  );
});
