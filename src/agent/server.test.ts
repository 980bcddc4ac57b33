import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LinuxNetworkDriver } from '../drivers/network/linux/driver.js';
import { eth0, isolatedNet } from '../drivers/network/linux/fixtures.test-util.js';
import { RecordingRunner } from '../exec/runner.js';
import type { NetworkConfig } from '../shared/model.js';
import { bridgeName } from '../spec/net.js';
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
    'securityGroups',
    'pools',
    'devices',
    'loadBalancers',
  ]);
  expect(props('/v1/probe', 'post')).toEqual(['reachable', 'rttMs', 'detail', 'unmeasured']);
  expect(props('/v1/doctor', 'get')).toEqual(['checks', 'observations']);
  expect(props('/v1/vms/{name}/exec', 'post')).toEqual(['exitCode', 'stdout', 'stderr']);
  expect(props('/v1/vms/{name}/disks', 'get')).toEqual(['disks']);
  for (const [path, methods] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(methods))
      expect(Object.keys(op.responses), `${method} ${path}`).toEqual(
        expect.arrayContaining(['200', '4XX', '5XX']),
      );
});

describe('POST /v1/actions refuses what a spec could not produce, before any command', () => {
  let state: string;
  let runner: RecordingRunner;
  let api: FastifyInstance;
  beforeAll(async () => {
    state = mkdtempSync(join(tmpdir(), 'vmlink-agent-wire-'));
    runner = new RecordingRunner().on(['ip', '-json', '-details', 'link', 'show'], {
      stdout: JSON.stringify([eth0]),
    });
    const agent = new Agent({
      host: 'host1',
      runner,
      networks: { linux: new LinuxNetworkDriver({ runner, stateDir: state }) },
      hypervisor: {} as ConstructorParameters<typeof Agent>[0]['hypervisor'],
      stateDir: state,
    });
    api = await createAgentServer(agent, { prerequisites: async () => [] });
  });
  afterAll(async () => {
    await api.close();
    rmSync(state, { recursive: true, force: true });
  });
  const web: NetworkConfig = { ...isolatedNet, name: 'web', bridge: bridgeName('web') };
  const post = (network: NetworkConfig) =>
    api.inject({
      method: 'POST',
      url: '/v1/actions',
      payload: { kind: 'network.ensure', network, configHash: 'abcdef01' },
    });

  it.each([
    ['the host NIC eth0 as its bridge', { ...web, bridge: 'eth0' }, /\/network\/bridge .*own bridge vlb-web/],
    ['a bad CIDR', { ...web, subnet: { ...web.subnet!, cidr: '172.16.5.0/33' } }, /\/network\/subnet\/cidr /],
    [
      'a bad MAC',
      {
        ...web,
        subnet: { ...web.subnet!, reservations: [{ mac: 'zz:54', ip: '172.16.5.9', hostname: 'a' }] },
      },
      /\/network\/subnet\/reservations\/0\/mac /,
    ],
    ['an MTU out of range', { ...web, mtu: 65_000 }, /\/network\/mtu /],
  ])('%s: 422 naming the field, nothing run', async (_what, network, message) => {
    runner.calls.length = 0;
    const res = await post(network as NetworkConfig);
    expect(res.statusCode).toBe(422);
    expect(res.json().error).toMatchObject({ kind: 'invalid', message: expect.stringMatching(message) });
    expect(runner.calls).toEqual([]);
  });

  it('takes the same network on its own bridge to the driver', async () => {
    runner.calls.length = 0;
    await post(web);
    expect(runner.lines().join('\n')).toMatch(/vlb-web/);
  });
});

describe("GET /v1/vms/:name/disks: what a VM's QEMU has open", () => {
  const open = [{ disk: 'data', target: 'iscsi://192.168.50.30:3260/iqn.x/1', readOnly: false }];
  const serve = async (openDisks?: () => Promise<typeof open>) => {
    const state = mkdtempSync(join(tmpdir(), 'vmlink-agent-disks-'));
    const hypervisor = {
      list: async () => [{ name: 'db', state: 'running' }],
      ...(openDisks ? { openDisks } : {}),
    } as unknown as ConstructorParameters<typeof Agent>[0]['hypervisor'];
    const agent = new Agent({
      host: 'host1',
      runner: new RecordingRunner(),
      networks: {},
      hypervisor,
      stateDir: state,
    });
    const api = await createAgentServer(agent, { prerequisites: async () => [] });
    const done = async () => {
      await api.close();
      rmSync(state, { recursive: true, force: true });
    };
    return { api, done };
  };

  it('answers the open disks of a known VM, 404 for another, and says when the hypervisor cannot tell', async () => {
    const a = await serve(async () => open);
    try {
      expect((await a.api.inject({ method: 'GET', url: '/v1/vms/db/disks' })).json()).toEqual({
        disks: open,
      });
      expect((await a.api.inject({ method: 'GET', url: '/v1/vms/nope/disks' })).statusCode).toBe(404);
    } finally {
      await a.done();
    }
    const b = await serve();
    try {
      const res = await b.api.inject({ method: 'GET', url: '/v1/vms/db/disks' });
      expect(res.statusCode).toBe(422);
      expect(res.json().error).toMatchObject({ kind: 'unsupported' });
    } finally {
      await b.done();
    }
  });
});
