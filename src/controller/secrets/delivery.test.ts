// A live migration's target opens the VM's disks like a start: the incoming request leaves the controller with the
// CHAP password of its iscsi disk and nothing it does not use.
import { describe, expect, it } from 'vitest';
import type { IncomingRequest } from '../../agent/wire-migrate.js';
import type { VmConfig } from '../../shared/model.js';
import { loadSpec } from '../../spec/load.js';
import type { AgentFactory, AgentPort } from '../hosts.js';
import { secretsOfConfig, withSecrets } from './delivery.js';
import type { SecretVault } from './vault.js';

const spec = loadSpec(`
version: 1
hosts:
  - { name: host1, address: 192.168.70.11 }
  - { name: host2, address: 192.168.70.12 }
  - { name: san1, role: storage, address: 192.168.70.30 }
networks:
  - { name: app, mode: vxlan, vni: 1070, hosts: [host1, host2], cidr: 10.70.0.0/24 }
pools:
  - { name: san, type: iscsi, host: san1, chap: { user: init, secret: san-chap }, clients: [192.168.70.0/24] }
volumes:
  - { name: web-data, pool: san, sizeMiB: 16 }
vms:
  - { name: web, host: host1, memoryMiB: 128, nics: [{ network: app }], disks: [{ name: data, pool: san, volume: web-data }] }
  - { name: plain, host: host1, memoryMiB: 128, nics: [{ network: app }] }
`);

const vm = (disks: VmConfig['disks']): VmConfig => ({
  name: 'web',
  cpus: 1,
  memoryMiB: 128,
  image: { kind: 'test-guest' },
  disks,
  nics: [],
  state: 'running',
});
const iscsiDisk = {
  name: 'data',
  source: {
    kind: 'iscsi',
    pool: 'san',
    volume: 'web-data',
    portal: '192.168.70.30:3260',
    iqn: 'iqn.2024-01.io.vmlink:san.web-data',
    lun: 1,
    chap: { user: 'init', secret: 'san-chap' },
  },
} as unknown as VmConfig['disks'][number];

function setup() {
  const sent: IncomingRequest[] = [];
  const agent = {
    migrationIncoming: async (req: IncomingRequest) => {
      sent.push(req);
    },
  } as unknown as AgentPort;
  const vault = {
    values: async (names: readonly string[]) => names.map((name) => ({ name, value: 'c2VjcmV0' })),
  } as unknown as SecretVault;
  const agents: AgentFactory = () => agent;
  return { sent, agents: withSecrets(agents, vault) };
}

describe('secrets of a live migration', () => {
  it('the incoming request carries the CHAP password its iscsi disk needs, as a vm.create would', async () => {
    expect(secretsOfConfig(spec, vm([iscsiDisk]))).toEqual(['san-chap']);
    const { sent, agents } = setup();
    const req = {
      id: '0b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c111',
      vm: vm([iscsiDisk]),
      configHash: 'h',
      from: 'host1',
    };
    await agents(spec, 'host2').migrationIncoming!(req);
    expect(sent).toEqual([{ ...req, secrets: [{ name: 'san-chap', value: 'c2VjcmV0' }] }]);
    // The caller's request is left as it was (progress and errors never see the values).
    expect(req).not.toHaveProperty('secrets');
  });

  it('a VM whose disks need no secret: the request goes as it is', async () => {
    const { sent, agents } = setup();
    const req = { id: '0b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c111', vm: vm([]), configHash: 'h', from: 'host1' };
    await agents(spec, 'host2').migrationIncoming!(req);
    expect(sent).toEqual([req]);
    expect(sent[0]).not.toHaveProperty('secrets');
  });
});
