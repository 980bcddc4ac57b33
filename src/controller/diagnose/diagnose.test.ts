import { describe, expect, it } from 'vitest';
import type { DoctorObservations } from '../../agent/wire-doctor.js';
import { resolveSpec } from '../../plan/resolve.js';
import type { MetricsSource, Series } from '../../shared/metrics.js';
import type { HostCapabilities, HostReport } from '../../shared/model.js';
import { loadSpec } from '../../spec/load.js';
import { DIAGNOSIS_IDS, DiagnosisSchema } from '../wire-observe.js';
import { linearFit } from './guest-memory-growth.js';
import { DIAGNOSES, diagnose } from './index.js';
import { storageCheckHost } from './storage-path-down.js';
import type { DiagnoseInput, HostFacts } from './types.js';

const spec = loadSpec(`
version: 1
hosts: [{ name: h1 }, { name: h2 }]
networks:
  - { name: ov, mode: vxlan, vni: 1401 }
  - { name: v100, mode: vlan, vlan: 100, segment: trunk, backend: ovs, hosts: [h1] }
  - { name: v200, mode: vlan, vlan: 200, segment: trunk, backend: ovs, hosts: [h1] }
vms:
  - { name: g1, host: h1, memoryMiB: 256, nics: [{ network: ov }] }
  - { name: r1, host: h1, memoryMiB: 160, nics: [{ trunk: [v100, v200] }] }
lab:
  name: unitdr
  lan: { cidr: 192.168.74.0/24, gateway: 192.168.74.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.74 }
  segments: [{ name: trunk }]
  hosts: [{ name: h1, address: 192.168.74.10 }, { name: h2, address: 192.168.74.11 }]
`);
const desired = resolveSpec(spec);
const ov = desired.h1!.networks.find((n) => n.name === 'ov')!;
const v100 = desired.h1!.networks.find((n) => n.name === 'v100')!;
const r1Nic = desired.h1!.vms.find((v) => v.name === 'r1')!.nics[0]!;
const NOW = 1_800_000_000_000;

const caps = (over: Partial<HostCapabilities> = {}): HostCapabilities => ({
  accelerator: 'tcg',
  acceleratorReason: 'test',
  cpus: 2,
  memoryMiB: 4096,
  network: { vlan: true, vxlan: true, nftables: true, tap: true },
  backends: ['linux', 'ovs'],
  ...over,
});
const report = (host: string, c = caps()): HostReport => ({
  host,
  agentVersion: 'test',
  capabilities: c,
  networks: [],
  vms: [],
});
/** A healthy host: every port forwarding, trunks carrying their VLANs, 1500-byte underlay, clock in step. */
function healthy(): DoctorObservations {
  return {
    at: NOW,
    bridgePorts: [{ bridge: ov.bridge, port: ov.vxlan!.device, state: 'forwarding' }],
    ovsPorts: [
      { bridge: v100.bridge, port: v100.vlan!.trunk, trunks: [100, 200], vlanMode: 'trunk' },
      { bridge: r1Nic.bridge, port: r1Nic.tap, trunks: [100, 200], vlanMode: 'trunk' },
    ],
    links: [
      { name: 'eth0', mtu: 1500 },
      { name: ov.vxlan!.device, mtu: 1450, kind: 'vxlan', master: ov.bridge },
    ],
    errors: [],
  };
}
const host = (
  name: string,
  obs: DoctorObservations | undefined,
  over: Partial<HostFacts> = {},
): HostFacts => ({
  host: name,
  ...(obs ? { answer: { checks: [], observations: obs, sentAt: NOW - 20, receivedAt: NOW + 20 } } : {}),
  report: report(name),
  ...over,
});
const input = (hosts: HostFacts[], over: Partial<DiagnoseInput> = {}): DiagnoseInput => ({
  spec,
  desired,
  hosts,
  storage: [],
  now: NOW,
  ...over,
});
const ids = (i: DiagnoseInput) => diagnose(i).map((d) => d.id);

describe('doctor diagnoses', () => {
  it('finds nothing on healthy hosts, and every diagnosis fits the wire schema', () => {
    expect(diagnose(input([host('h1', healthy()), host('h2', healthy())]))).toEqual([]);
    expect(Object.keys(DIAGNOSES).sort()).toEqual([...DIAGNOSIS_IDS].sort());
  });

  it('stp-blocking: a port of a managed bridge blocking (critical) or listening (warning); other bridges ignored', () => {
    const o = healthy();
    o.bridgePorts = [
      { bridge: ov.bridge, port: ov.vxlan!.device, state: 'forwarding' },
      { bridge: ov.bridge, port: 'loop1', state: 'blocking' },
      { bridge: ov.bridge, port: 'loop2', state: 'listening' },
      { bridge: 'docker0', port: 'veth9', state: 'blocking' },
    ];
    const d = diagnose(input([host('h1', o)]));
    expect(d.map((x) => [x.id, x.object, x.severity])).toEqual([
      ['stp-blocking', 'network ov port loop1', 'critical'],
      ['stp-blocking', 'network ov port loop2', 'warning'],
    ]);
    expect(d[0]!.evidence[0]).toContain(`loop1 master ${ov.bridge} state blocking`);
    expect(d[0]!.fix).toContain('stp_state 0');
    for (const x of d) DiagnosisSchema.parse(x);
  });

  it('vlan-not-on-trunk: the host trunk NIC lacking a VLAN, a VM trunk port lacking one; [] means all', () => {
    const o = healthy();
    o.ovsPorts = [
      { bridge: v100.bridge, port: v100.vlan!.trunk, trunks: [100], vlanMode: 'trunk' },
      { bridge: r1Nic.bridge, port: r1Nic.tap, trunks: [200], vlanMode: 'trunk' },
    ];
    const d = diagnose(input([host('h1', o)]));
    expect(d.map((x) => x.object)).toEqual([
      `trunk ${v100.vlan!.trunk} (network v200)`,
      `vm r1 trunk port ${r1Nic.tap}`,
    ]);
    expect(d[0]!.summary).toContain('VLAN 200');
    expect(d[0]!.fix).toContain(`trunks=100,200`);
    expect(d[1]!.summary).toContain('VLAN 100');
    o.ovsPorts = [{ bridge: v100.bridge, port: v100.vlan!.trunk, trunks: [] }];
    expect(ids(input([host('h1', o)]))).toEqual([]);
    // An access port drops tagged frames: the switch's trunk carries none of the VLANs through it.
    o.ovsPorts = [{ bridge: v100.bridge, port: v100.vlan!.trunk, trunks: [], tag: 100, vlanMode: 'access' }];
    expect(diagnose(input([host('h1', o)]))[0]!.summary).toContain('VLAN 100, 200');
  });

  it('overlay-mtu: an underlay lowered below the overlay MTU + 50, on the host where it is', () => {
    const o = healthy();
    o.links[0] = { name: 'eth0', mtu: 1400 };
    const d = diagnose(input([host('h1', o), host('h2', healthy())]));
    expect(d.map((x) => [x.id, x.host, x.object])).toEqual([['overlay-mtu', 'h1', 'network ov']]);
    expect(d[0]!.summary).toContain('need 1500');
    expect(d[0]!.fix).toContain('to 1350 or less');
    // The bridge enslaving the NIC counts too.
    const b = healthy();
    b.links = [
      { name: 'eth0', mtu: 1500, master: 'vlbr' },
      { name: 'vlbr', mtu: 1480, kind: 'bridge' },
    ];
    expect(diagnose(input([host('h1', b)]))[0]!.summary).toContain('underlay vlbr has MTU 1480');
  });

  it('storage-path-down: each failed storage check, with the host it names', () => {
    const d = diagnose(
      input([host('h1', healthy())], {
        storage: [
          {
            name: 'storage portal 192.168.74.30:3260 (iscsi) from h1',
            ok: false,
            detail: 'connect ECONNREFUSED',
            fix: 'start tgtd',
          },
          { name: 'storage pool san (iscsi) on san1', ok: true, detail: 'fine' },
        ],
      }),
    );
    expect(d).toMatchObject([
      {
        id: 'storage-path-down',
        host: 'h1',
        object: 'portal 192.168.74.30:3260 (iscsi) from h1',
        fix: 'start tgtd',
      },
    ]);
    expect(storageCheckHost('storage pool san (iscsi) on san1')).toBe('san1');
    expect(storageCheckHost('storage host san1')).toBe('san1');
  });

  it('kernel-feature-missing: what the spec uses and the report lacks; unknown features not judged', () => {
    const noVxlan = host('h1', healthy(), {
      report: report('h1', caps({ network: { vlan: true, vxlan: false, nftables: true, tap: true } })),
    });
    const d = diagnose(input([noVxlan]));
    expect(d.map((x) => x.object)).toEqual(['host h1 feature vxlan']);
    expect(d[0]!.evidence).toContain('network ov uses it on h1');
    // vlan networks are on ovs: 802.1Q devices are not needed; ovs is, from the backends.
    const noOvs = host('h1', healthy(), {
      report: report('h1', caps({ backends: ['linux'], network: { vlan: false } })),
    });
    expect(diagnose(input([noOvs])).map((x) => x.object)).toEqual(['host h1 feature Open vSwitch']);
  });

  it('agent-unreachable: the error and the heartbeat age', () => {
    const d = diagnose(
      input([
        host('h2', undefined, {
          error: 'connect ECONNREFUSED /run/agent.sock',
          health: {
            state: 'unreachable',
            lastSeen: new Date(NOW - 42_000).toISOString(),
            missed: 7,
            since: '',
          },
        }),
      ]),
    );
    expect(d).toHaveLength(1);
    expect(d[0]).toMatchObject({ id: 'agent-unreachable', host: 'h2', severity: 'critical' });
    expect(d[0]!.summary).toContain('last heard 42 s ago');
    expect(d[0]!.evidence.join('\n')).toMatch(/ECONNREFUSED[\s\S]*7 missed/);
  });

  it('clock-drift: only an offset beyond 2 s across the whole round trip', () => {
    const at = (ms: number, rtt = 40) => {
      const o = healthy();
      o.at = NOW + ms;
      return {
        host: 'h1',
        answer: { checks: [], observations: o, sentAt: NOW - rtt / 2, receivedAt: NOW + rtt / 2 },
      };
    };
    expect(ids(input([at(1_900)]))).toEqual([]);
    expect(ids(input([at(90_000)]))).toEqual(['clock-drift']);
    expect(diagnose(input([at(-5_000)]))[0]!.summary).toContain('behind');
    // A slow answer (10 s round trip) never reads as 4 s of drift.
    expect(ids(input([at(4_000, 10_000)]))).toEqual([]);
  });

  it('clock-drift from the collected offset where the agent sent no stamp', () => {
    const m: MetricsSource = {
      latest: () => ({
        at: NOW,
        series: [{ name: 'vmlink_host_clock_offset_seconds', labels: { host: 'h1' }, value: -7.5 }],
      }),
      history: () => [],
    };
    const d = diagnose(
      input([{ host: 'h1', answer: { checks: [], sentAt: NOW, receivedAt: NOW } }], { metrics: m }),
    );
    expect(d.map((x) => x.id)).toEqual(['clock-drift']);
    expect(d[0]!.evidence[0]).toContain('-7.5');
  });
});

describe('guest-memory-growth from a recorded history', () => {
  const MiB = 1024 * 1024;
  const history = (values: number[], stepMs = 15_000): MetricsSource => {
    const pts = values.map((v, i) => ({ at: NOW - (values.length - 1 - i) * stepMs, value: v }));
    const series: Series[] = [
      { name: 'vmlink_vm_memory_configured_bytes', labels: { host: 'h1', vm: 'g1' }, value: 256 * MiB },
    ];
    return {
      latest: () => ({ at: NOW, series }),
      history: (name, labels, since) =>
        name === 'vmlink_vm_memory_rss_bytes' && labels.vm === 'g1' ? pts.filter((p) => p.at >= since) : [],
    };
  };
  const grow = (n: number, perSample: number, jitter = 0) =>
    Array.from({ length: n }, (_, i) => (100 + i * perSample + (i % 2 ? jitter : -jitter)) * MiB);

  it('a steady rise of >= 64 MiB over 10 minutes is a leak', () => {
    const d = diagnose(input([host('h1', healthy())], { metrics: history(grow(41, 2.5, 1)) }));
    expect(d.map((x) => [x.id, x.object])).toEqual([['guest-memory-growth', 'vm g1']]);
    expect(d[0]!.summary).toMatch(/grew 100 MiB in 10\.0 min \(10\.0 MiB\/min/);
    expect(d[0]!.evidence[1]).toMatch(/R² 0\.99/);
  });

  it('not a leak: too little growth, a noisy series, one step, a flat one, too short a history', () => {
    const no = (values: number[], stepMs?: number) =>
      expect(ids(input([host('h1', healthy())], { metrics: history(values, stepMs) }))).toEqual([]);
    no(grow(41, 1)); // 40 MiB
    no(Array.from({ length: 41 }, (_, i) => (100 + (i % 2) * 150 + i) * MiB)); // R² far below 0.9
    no(Array.from({ length: 41 }, (_, i) => (i < 20 ? 100 : 300) * MiB)); // a step fits a line poorly
    no(grow(41, 0));
    no(grow(12, 10)); // 110 MiB in under 3 minutes: no trend yet
  });

  it('fits a line exactly', () => {
    const f = linearFit([0, 1, 2, 3].map((i) => ({ at: i * 1000, value: 5 + 2 * i })));
    expect(f.slope).toBeCloseTo(0.002);
    expect(f.r2).toBeCloseTo(1);
    expect(f.spanMs).toBe(3000);
  });
});
