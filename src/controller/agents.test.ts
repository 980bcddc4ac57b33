import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpApp, listen } from '../shared/http/server.js';
import { addVersionGate } from '../shared/http/version-gate.js';
import { PROTOCOLS } from '../shared/version.js';
import { loadSpec } from '../spec/load.js';
import { gatherReports, httpAgents } from './hosts.js';

const dir = mkdtempSync(join(tmpdir(), 'vmlink-agents-'));
const future = PROTOCOLS.wire.version + 1;
// host1: an agent too old for the controller (its gate is shown a controller that needs wire N+1) refuses the
// request; host2: an agent too new for this controller, whose answer this controller refuses.
const refusing = createHttpApp();
const tooNew = createHttpApp();
const spec = loadSpec(`
version: 1
hosts:
  - { name: host1, agent: "unix://${join(dir, 'a1.sock')}" }
  - { name: host2, agent: "unix://${join(dir, 'a2.sock')}" }
`);

beforeAll(async () => {
  refusing.addHook('onRequest', async (req) => {
    // Stands in for a newer controller's header, which this build's gate (an older agent) must refuse.
    req.headers['x-vmlink-wire'] = `${future};min=${future};software=9.0.0`;
  });
  addVersionGate(refusing, 'wire', 'agent of host1');
  refusing.get('/v1/report', async () => ({}));
  tooNew.addHook('onRequest', async (_req, reply) => {
    void reply.header('x-vmlink-wire', `${future};min=${future};software=9.1.0`);
  });
  tooNew.get('/v1/report', async () => ({}));
  await listen(refusing, `unix://${join(dir, 'a1.sock')}`);
  await listen(tooNew, `unix://${join(dir, 'a2.sock')}`);
});
afterAll(async () => {
  await refusing.close();
  await tooNew.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('gathering reports from agents of other versions', () => {
  it('says which versions differ and what to upgrade, not that the agents are unreachable', async () => {
    const e = await gatherReports(spec, httpAgents).catch((x: Error) => x);
    expect(e).toBeInstanceOf(Error);
    expect((e as Error).message).not.toMatch(/cannot reach/);
    expect((e as Error).message).toMatch(/nothing was planned or changed/);
    expect((e as Error).message).toMatch(/agent of host1 runs vmlink .*; upgrade the agent of host1/);
    expect((e as Error).message).toMatch(/agent of host2 runs vmlink 9\.1\.0 .*; upgrade the controller/);
  });
});
