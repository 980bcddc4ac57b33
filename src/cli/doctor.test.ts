import { expect, it } from 'vitest';
import { renderDiagnoses, renderDoctor } from './doctor.js';

const caps = {
  accelerator: 'tcg' as const,
  acceleratorReason: '/dev/kvm missing',
  cpus: 2,
  memoryMiB: 2048,
  network: { vxlan: true, vlan: false },
  backends: ['linux' as const],
  confidential: {
    sev: { available: true, reason: 'sev, kvm_amd sev=Y' },
    'sev-snp': { available: false, reason: 'QEMU 7.2 is too old: sev-snp needs QEMU 9.1 or newer' },
    tdx: { available: false, reason: 'the CPU has no tdx_host_platform flag in /proc/cpuinfo' },
  },
};

it('shows this machine when no controller answers', () => {
  const checks = renderDoctor({ running: false, local: [{ name: 'qemu', ok: true, detail: '7.2' }] });
  expect(checks.map((c) => `${c.name}: ${c.detail}`)).toEqual([
    'qemu: 7.2',
    'controller: not running (start: vmlink daemon --detach)',
  ]);
});

it("folds a host's passing prerequisites into one line and lists each failing one with its fix", () => {
  const checks = renderDoctor({
    running: true,
    local: [],
    report: {
      controller: [{ name: 'spec', ok: true, detail: '2 host(s) applied' }],
      diagnoses: [],
      hosts: [
        {
          host: 'h1',
          reachable: true,
          checks: [
            { name: 'qemu', ok: true, detail: '7.2' },
            { name: 'iperf3', ok: false, detail: 'not found', fix: 'apt-get install iperf3' },
          ],
        },
        { host: 'h2', reachable: true, checks: [{ name: 'qemu', ok: true, detail: '7.2' }] },
        { host: 'h3', reachable: false, error: 'cannot reach agent of h3\nmore', checks: [] },
      ],
    },
    status: {
      hosts: [
        {
          name: 'h1',
          address: 'unix:///x',
          reachable: true,
          state: 'up',
          report: { host: 'h1', agentVersion: '0', capabilities: caps, networks: [], vms: [] },
        },
      ],
    },
  });
  expect(checks.map((c) => [c.name, c.ok, c.detail, c.fix])).toEqual([
    ['controller', true, 'running', undefined],
    ['spec', true, '2 host(s) applied', undefined],
    ['host h1', true, 'agent up; accelerator tcg: /dev/kvm missing', undefined],
    ['host h1 kernel', true, 'lacks vlan (networks needing them are refused)', undefined],
    [
      'host h1 confidential VMs',
      true,
      'sev yes; sev-snp no (QEMU 7.2 is too old: sev-snp needs QEMU 9.1 or newer); tdx no (the CPU has no tdx_host_platform flag in /proc/cpuinfo)',
      undefined,
    ],
    ['host h1 iperf3', false, 'not found', 'apt-get install iperf3'],
    ['host h2', true, 'agent up', undefined],
    ['host h2 prerequisites', true, 'all 1 present', undefined],
    ['host h3', false, 'cannot reach agent of h3', 'vmlink lab up -f SPEC restarts lab agents'],
  ]);
});

it('renders each diagnosis with its evidence and fix, or says none was found', () => {
  expect(renderDiagnoses([])).toBe('diagnoses: none (no known failure found)');
  expect(
    renderDiagnoses([
      {
        id: 'overlay-mtu',
        severity: 'critical',
        host: 'h1',
        object: 'network ov',
        summary: 'network ov on h1 has MTU 1450',
        evidence: ['ip link on h1: eth0 mtu 1400', 'network ov: vxlan 7 over eth0, mtu 1450'],
        fix: 'lower networks[ov].mtu to 1350 or less',
      },
      {
        id: 'clock-drift',
        severity: 'warning',
        object: 'host h2',
        summary: 's',
        evidence: [],
        fix: 'run NTP',
      },
    ]).split('\n'),
  ).toEqual([
    'diagnoses: 2',
    '',
    'CRITICAL overlay-mtu on h1: network ov',
    '  network ov on h1 has MTU 1450',
    '  evidence: ip link on h1: eth0 mtu 1400',
    '  evidence: network ov: vxlan 7 over eth0, mtu 1450',
    '  fix: lower networks[ov].mtu to 1350 or less',
    '',
    'WARNING clock-drift: host h2',
    '  s',
    '  fix: run NTP',
  ]);
});
