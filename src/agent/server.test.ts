import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RecordingRunner } from '../exec/runner.js';
import { Agent } from './agent.js';
import { createAgentServer } from './server.js';

let dir: string;
let app: FastifyInstance;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vmlink-agent-api-'));
  const agent = new Agent({
    host: 'host1',
    runner: new RecordingRunner(),
    networks: {},
    // The OpenAPI document is built from the routes alone; no route runs here.
    hypervisor: {} as ConstructorParameters<typeof Agent>[0]['hypervisor'],
    stateDir: dir,
  });
  app = await createAgentServer(agent, { prerequisites: async () => [] });
});
afterAll(async () => {
  await app.close();
  rmSync(dir, { recursive: true, force: true });
});

it("lists each route's response schema in the agent's OpenAPI document", async () => {
  const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as {
    info: { title: string };
    paths: Record<
      string,
      Record<
        string,
        { responses: Record<string, { content?: Record<string, { schema: { properties?: object } }> }> }
      >
    >;
  };
  expect(doc.info.title).toBe('vmlink agent API');
  const props = (path: string, method: string) =>
    Object.keys(
      doc.paths[path]?.[method]?.responses['200']?.content?.['application/json']?.schema.properties ?? {},
    );
  expect(props('/v1/report', 'get')).toEqual([
    'host',
    'agentVersion',
    'capabilities',
    'networks',
    'vms',
    'uplink',
  ]);
  expect(props('/v1/probe', 'post')).toEqual(['reachable', 'rttMs', 'detail', 'unmeasured']);
  expect(props('/v1/doctor', 'get')).toEqual(['checks']);
  expect(props('/v1/vms/{name}/exec', 'post')).toEqual(['exitCode', 'stdout', 'stderr']);
  for (const [path, methods] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(methods))
      expect(Object.keys(op.responses), `${method} ${path}`).toEqual(
        expect.arrayContaining(['200', '4XX', '5XX']),
      );
});
