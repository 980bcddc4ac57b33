import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../agent/agent.js';
import { createAgentServer } from '../agent/server.js';
import type { DoctorCheck } from '../agent/wire-doctor.js';
import { RecordingRunner } from '../exec/runner.js';
import { listen } from '../shared/http/server.js';
import { loadSpec } from '../spec/load.js';
import { setAgentTrust } from './agents.js';
import { gatherDoctor } from './doctor.js';
import { Pki } from './pki/pki.js';
import { HostCredentials } from './pki/service.js';

// What the agent's prerequisite checks found on its host (the checks themselves run commands; here the agent
// hands back a fixed finding so the test is about the route, the transport and the gathering).
const FOUND: DoctorCheck[] = [
  { name: 'qemu', ok: true, detail: 'QEMU emulator version 7.2' },
  { name: 'iperf3', ok: false, detail: 'not found', fix: 'apt-get install iperf3' },
];

describe('GET /v1/doctor through real agent servers on unix sockets', () => {
  let dir: string;
  let open: FastifyInstance;
  let locked: FastifyInstance;
  let observing: FastifyInstance;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmlink-doctor-'));
    const agent = new Agent({
      host: 'host1',
      runner: new RecordingRunner(),
      networks: {},
      // The doctor route never touches the hypervisor.
      hypervisor: {} as ConstructorParameters<typeof Agent>[0]['hypervisor'],
      stateDir: dir,
    });
    open = await createAgentServer(agent, { prerequisites: async () => FOUND });
    await listen(open, `unix://${join(dir, 'host1.sock')}`);
    // host3 serves TLS with a certificate of another CA than the controller's.
    const ours = await HostCredentials.open(join(dir, 'pki'));
    const foreign = await Pki.open(join(dir, 'foreign-pki'));
    const { serial: _s, ...creds } = await foreign.issueLabHost('host3');
    locked = await createAgentServer(agent, { tls: creds, prerequisites: async () => FOUND });
    await listen(locked, `unix://${join(dir, 'host3.sock')}`);
    expect(ours.pki.caPem).not.toBe(foreign.caPem);
    // host4 observes a blocked port on the bridge of its network `lan`, and a clock 90 s ahead.
    observing = await createAgentServer(agent, {
      prerequisites: async () => FOUND,
      observe: async () => ({
        at: Date.now() + 90_000,
        bridgePorts: [{ bridge: 'vlb-lan', port: 'loop0', state: 'blocking' }],
        ovsPorts: [],
        links: [{ name: 'eth0', mtu: 1500 }],
        errors: [],
      }),
    });
    await listen(observing, `unix://${join(dir, 'host4.sock')}`);
  });
  afterAll(async () => {
    setAgentTrust(undefined);
    await open.close();
    await locked.close();
    await observing.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("gathers each host's checks, and names a host whose agent does not answer", async () => {
    const spec = loadSpec(`version: 1
hosts:
  - { name: host1, agent: "unix://${join(dir, 'host1.sock')}" }
  - { name: host2, agent: "unix://${join(dir, 'missing.sock')}" }
  - { name: host3, agent: "https+unix://${join(dir, 'host3.sock')}" }
`);
    const d = await gatherDoctor(spec, 5_000);
    expect(d.controller.find((c) => c.name === 'spec')?.detail).toBe('3 host(s) applied');
    // This agent sends no observations (as an older one): said so, as a passing check.
    expect(d.hosts[0]).toEqual({
      host: 'host1',
      reachable: true,
      checks: [...FOUND, { name: 'observations', ok: true, detail: expect.stringMatching(/^none sent/) }],
    });
    expect(d.hosts[1]).toMatchObject({ host: 'host2', reachable: false, checks: [] });
    expect(d.hosts[1]!.error).toMatch(/cannot reach agent of host2/);
    // An agent whose certificate is not of the controller's CA is reported, not trusted.
    expect(d.hosts[2]).toMatchObject({ host: 'host3', reachable: false });
    expect(d.hosts[2]!.error).toMatch(/refused TLS with agent of host3 .*not issued by this CA/);
  });

  it('diagnoses from the observations an agent sends, only for the host asked; an unknown host is refused', async () => {
    const spec = loadSpec(`version: 1
hosts:
  - { name: host2, agent: "unix://${join(dir, 'missing.sock')}" }
  - { name: host4, agent: "unix://${join(dir, 'host4.sock')}" }
networks: [{ name: lan, host: host4, mode: isolated, cidr: 10.9.0.0/24 }]
vms: [{ name: g1, host: host4, nics: [{ network: lan }] }]
`);
    const lastSeen = new Date(Date.now() - 30_000).toISOString();
    const health = { host2: { state: 'unreachable' as const, lastSeen, missed: 9, since: lastSeen } };
    const all = await gatherDoctor(spec, 5_000, [], { health });
    expect(all.diagnoses.map((d) => `${d.id} ${d.host}`).sort()).toEqual([
      'agent-unreachable host2',
      'clock-drift host4',
      'stp-blocking host4',
    ]);
    expect(all.diagnoses.find((d) => d.id === 'agent-unreachable')!.summary).toMatch(/last heard 3\d s ago/);
    expect(all.diagnoses.find((d) => d.id === 'stp-blocking')!.object).toBe('network lan port loop0');
    expect(all.controller.find((c) => c.name === 'guest memory trends')!.detail).toMatch(/^not checked/);
    const one = await gatherDoctor(spec, 5_000, [], { host: 'host4', health });
    expect(one.hosts.map((h) => h.host)).toEqual(['host4']);
    expect(one.diagnoses.map((d) => d.id).sort()).toEqual(['clock-drift', 'stp-blocking']);
    await expect(gatherDoctor(spec, 5_000, [], { host: 'host9' })).rejects.toThrow(/host "host9" not found/);
  });
});
