import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../controller/agents.js';
import { RecordingRunner } from '../../exec/runner.js';
import { BadResponseError } from '../../shared/errors.js';
import { createHttpApp, listen } from '../../shared/http/server.js';
import { addVersionGate } from '../../shared/http/version-gate.js';
import { type AgentMetrics, METRICS_BODY_MAX_BYTES } from '../../shared/metrics.js';
import { Agent } from '../agent.js';
import { createAgentServer } from '../server.js';

const counters = {
  rxBytes: 10,
  txBytes: 20,
  rxPackets: 1,
  txPackets: 2,
  rxDropped: 0,
  txDropped: 0,
  rxErrors: 0,
  txErrors: 0,
};
const sample: AgentMetrics = {
  host: 'host1',
  at: 1_700_000_000_000,
  hostMetrics: {
    scope: 'processes',
    cpus: 2,
    cpuSecondsTotal: 12.5,
    memoryTotalBytes: 8 << 30,
    memoryUsedBytes: 1 << 30,
    filesystems: [{ path: '/var/lib/vmlink', sizeBytes: 100, usedBytes: 40 }],
    interfaces: [{ name: 'eth0', ...counters }],
  },
  vms: [
    {
      name: 'web1',
      running: true,
      cpuSecondsTotal: 3.25,
      memoryRssBytes: 200 << 20,
      memoryConfiguredBytes: 256 << 20,
      disks: [{ disk: 'root', readBytes: 1, writeBytes: 2, readOps: 3, writeOps: 4 }],
      nics: [{ nic: 'nic0', tap: 'vl-web1-0', ...counters }],
    },
  ],
  networks: [{ network: 'lan', device: 'vlbr-lan', ...counters }],
  pools: [{ pool: 'p1', sizeBytes: 100, usedBytes: 50 }],
};

let dir: string;
const apps: FastifyInstance[] = [];
const sock = (n: string) => `unix://${join(dir, `${n}.sock`)}`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vmlink-agent-metrics-'));
  const agent = new Agent({
    host: 'host1',
    runner: new RecordingRunner(),
    networks: {},
    hypervisor: {} as ConstructorParameters<typeof Agent>[0]['hypervisor'],
    stateDir: dir,
  });
  // The real agent server with a sample source; and a route that answers what a hostile agent could.
  const real = await createAgentServer(agent, { prerequisites: async () => [], metrics: async () => sample });
  const hostile = createHttpApp();
  addVersionGate(hostile, 'wire', 'agent of host1');
  let answer: unknown;
  hostile.get('/v1/metrics', async (_req, reply) => reply.type('application/json').send(answer));
  await listen(real, sock('real'));
  await listen(hostile, sock('hostile'));
  apps.push(real, hostile);
  setAnswer = (a) => {
    answer = a;
  };
});
let setAnswer: (a: unknown) => void = () => {};
afterAll(async () => {
  for (const a of apps) await a.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('GET /v1/metrics through AgentClient.metrics()', () => {
  it("carries the agent's sample whole, and the agent's OpenAPI document describes it", async () => {
    expect(await new AgentClient('host1', sock('real')).metrics()).toEqual(sample);
    const doc = (await apps[0]!.inject({ method: 'GET', url: '/openapi.json' })).json() as {
      paths: Record<
        string,
        { get: { responses: Record<string, { content: Record<string, { schema: object }> }> } }
      >;
    };
    const answers = doc.paths['/v1/metrics']!.get.responses;
    expect(Object.keys(answers)).toEqual(['200', '4XX', '5XX']);
    expect(Object.keys(answers['200']!.content['application/json']!.schema)).toContain('properties');
  });

  it('refuses a sample with a field the contract lacks, a negative counter, or too many VMs', async () => {
    const client = new AgentClient('host1', sock('hostile'));
    setAnswer(JSON.stringify({ ...sample, extra: 1 }));
    await expect(client.metrics()).rejects.toThrow(BadResponseError);
    setAnswer(JSON.stringify({ ...sample, vms: [{ ...sample.vms[0], cpuSecondsTotal: -1 }] }));
    await expect(client.metrics()).rejects.toThrow(BadResponseError);
    setAnswer(JSON.stringify({ ...sample, vms: Array.from({ length: 4097 }, () => sample.vms[0]) }));
    await expect(client.metrics()).rejects.toThrow(BadResponseError);
  });

  it('stops reading a sample past METRICS_BODY_MAX_BYTES', async () => {
    const client = new AgentClient('host1', sock('hostile'));
    setAnswer(`{"host":"${'x'.repeat(METRICS_BODY_MAX_BYTES)}"}`);
    await expect(client.metrics()).rejects.toThrow(
      new RegExp(`more than ${METRICS_BODY_MAX_BYTES} bytes; refused`),
    );
  });
});
