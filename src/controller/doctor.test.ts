import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../agent/agent.js';
import { createAgentServer } from '../agent/server.js';
import type { DoctorCheck } from '../agent/wire.js';
import { RecordingRunner } from '../exec/runner.js';
import { HttpClient } from '../shared/http/client.js';
import { listen } from '../shared/http/server.js';
import { loadSpec } from '../spec/load.js';
import { gatherDoctor } from './doctor.js';
import { HealthSchema } from './wire.js';

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
    locked = await createAgentServer(agent, { token: 'a'.repeat(32), prerequisites: async () => FOUND });
    await listen(locked, `unix://${join(dir, 'host3.sock')}`);
  });
  afterAll(async () => {
    await open.close();
    await locked.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("gathers each host's checks, and names a host whose agent does not answer", async () => {
    const spec = loadSpec(`version: 1
hosts:
  - { name: host1, agent: "unix://${join(dir, 'host1.sock')}" }
  - { name: host2, agent: "unix://${join(dir, 'missing.sock')}" }
  - { name: host3, agent: "unix://${join(dir, 'host3.sock')}" }
`);
    const d = await gatherDoctor(spec, 5_000);
    expect(d.controller.find((c) => c.name === 'spec')?.detail).toBe('3 host(s) applied');
    expect(d.hosts[0]).toEqual({ host: 'host1', reachable: true, checks: FOUND });
    expect(d.hosts[1]).toMatchObject({ host: 'host2', reachable: false, checks: [] });
    expect(d.hosts[1]!.error).toMatch(/cannot reach agent of host2/);
    // An agent whose token the controller lacks answers 401: reported, not trusted.
    expect(d.hosts[2]).toMatchObject({ host: 'host3', reachable: false });
    expect(d.hosts[2]!.error).toMatch(/missing or wrong bearer token for this agent/);
  });

  it("the agent's TCP-style listener takes only its own token", async () => {
    const client = (token?: string) =>
      new HttpClient(`unix://${join(dir, 'host3.sock')}`, token ? { token } : {});
    await expect(client('b'.repeat(32)).get('/v1/health', HealthSchema.partial())).rejects.toMatchObject({
      kind: 'unauthorized',
    });
    await expect(client('short').get('/v1/health', HealthSchema.partial())).rejects.toMatchObject({
      kind: 'unauthorized',
    });
    expect((await client('a'.repeat(32)).get('/v1/health', HealthSchema)).ok).toBe(true);
  });
});
