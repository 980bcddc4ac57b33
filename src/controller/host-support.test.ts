// The controller refuses what a host says it cannot do, from the host's own capability report: a fake agent
// serves the real agent API's report on a unix socket, claiming or denying 802.1Q VLAN devices.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingRunner } from '../exec/runner.js';
import { InvalidSpecError } from '../shared/errors.js';
import type { HostReport } from '../shared/model.js';
import { formatVersionHeader, localVersion, VERSION_HEADER } from '../shared/version.js';
import { Controller } from './controller.js';
import { SqliteStore } from './store/sqlite.js';

const dir = mkdtempSync(join(tmpdir(), 'vmlink-caps-'));
/** What each fake agent's host kernel can do. */
const vlan: Record<string, boolean> = { h1: true, h2: true };
const servers: Server[] = [];

const report = (host: string): HostReport => ({
  host,
  agentVersion: 'test',
  capabilities: {
    accelerator: 'tcg',
    acceleratorReason: 'test',
    cpus: 4,
    memoryMiB: 4096,
    network: { vlan: vlan[host]!, vxlan: true, bridgeVlanFiltering: false },
    backends: ['linux', 'ovs'],
  },
  networks: [],
  vms: [],
});

const spec = (backend: string) => `version: 1
hosts:
  - { name: h1, address: 10.0.0.1, agent: "unix://${dir}/h1.sock" }
  - { name: h2, address: 10.0.0.2, agent: "unix://${dir}/h2.sock" }
networks:
  - { name: v100, mode: vlan, vlan: 100, backend: ${backend}, cidr: 10.100.0.0/24 }
`;

beforeAll(async () => {
  for (const host of ['h1', 'h2']) {
    const server = createServer((req, res) => {
      const body =
        req.url === '/v1/report' ? report(host) : { error: { kind: 'not_found', message: req.url } };
      res.writeHead(req.url === '/v1/report' ? 200 : 404, {
        'content-type': 'application/json',
        // It speaks this build's wire, as a real agent of the same release does.
        [VERSION_HEADER.wire]: formatVersionHeader(localVersion('wire')),
      });
      res.end(JSON.stringify(body));
    });
    await new Promise<void>((resolve) => server.listen(join(dir, `${host}.sock`), resolve));
    servers.push(server);
  }
});

afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  rmSync(dir, { recursive: true, force: true });
});

describe('host capabilities in the plan', () => {
  const controller = new Controller(new SqliteStore(':memory:'), new RecordingRunner());

  it('plans a linux vlan network where every member host reports 802.1Q', async () => {
    vlan.h1 = true;
    vlan.h2 = true;
    const plan = await controller.plan(spec('linux'), 'site.yaml');
    expect(plan.text).toMatch(/\+ network v100 on h1/);
    expect(plan.text).toMatch(/\+ network v100 on h2/);
  });

  it('refuses it, naming the host and ovs, where a member host reports no 802.1Q', async () => {
    vlan.h1 = true;
    vlan.h2 = false;
    const err = await controller.plan(spec('linux'), 'site.yaml').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidSpecError);
    expect((err as InvalidSpecError).issues).toEqual([
      {
        path: 'networks[0].backend',
        message: expect.stringMatching(/^host "h2"'s kernel has no 802\.1Q .*backend: ovs/),
      },
    ]);
  });

  it('plans the same network on the ovs backend, which needs no 802.1Q devices', async () => {
    vlan.h1 = false;
    vlan.h2 = false;
    const plan = await controller.plan(spec('ovs'), 'site.yaml');
    expect(plan.text).toMatch(/\+ network v100 on h2/);
  });
});
