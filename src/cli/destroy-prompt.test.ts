// The CLI's interactive consent to a destructive apply, end to end: the real `vmlink` CLI on a pseudo-terminal
// (util-linux `script`), talking to a real controller API whose agents are fakes (no host is touched).
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../test/helpers/cli.js';
import { FakeFleet } from '../../test/helpers/fake-agents.js';
import { createControllerApi } from '../controller/api.js';
import { Controller } from '../controller/controller.js';
import { SqliteStore } from '../controller/store/sqlite.js';
import { TaskManager } from '../controller/tasks.js';
import { RecordingRunner } from '../exec/runner.js';
import { listen } from '../shared/http/server.js';

const BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));

const spec = (vms: string) => `version: 1
hosts:
  - { name: h1, agent: "unix:///fake/h1.sock" }
networks:
  - { name: natnet, host: h1, mode: nat, cidr: 10.10.0.0/24 }
vms:
${vms}
`;
const WITH_VM = spec(
  '  - { name: web1, host: h1, nics: [{ network: natnet }], disks: [{ name: data, sizeMiB: 64 }] }',
);
const WITHOUT_VM = spec('  []');

/** Runs `vmlink ARGS` on a pseudo-terminal, typing `answer` once it asks; returns what the terminal showed. */
function onTerminal(
  args: string[],
  env: Record<string, string>,
  answer: string,
): Promise<{ code: number; screen: string }> {
  const cmd = [process.execPath, BIN, ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let screen = '';
    let answered = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      screen += d;
      if (!answered && screen.includes("Only 'yes' goes ahead")) {
        answered = true;
        child.stdin.write(`${answer}\n`);
      }
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, screen });
    });
  });
}

describe('apply asks before destroying, at a terminal only', () => {
  let dir: string;
  let fleet: FakeFleet;
  let store: SqliteStore;
  let app: FastifyInstance;
  let env: Record<string, string>;
  let file: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-prompt-'));
    fleet = new FakeFleet();
    store = new SqliteStore(':memory:');
    const controller = new Controller(store, new RecordingRunner(), { agents: fleet.agents });
    app = await createControllerApi(controller, new TaskManager());
    const socket = join(dir, 'controller.sock');
    await listen(app, `unix://${socket}`);
    env = { VMLINK_SOCKET: socket };
    file = join(dir, 'site.yaml');
    await writeFile(file, WITH_VM);
    const first = await runCli(['apply', '-f', file], env, 60_000);
    expect(first.code, first.stderr).toBe(0);
    await writeFile(file, WITHOUT_VM);
    fleet.clearSent();
  });

  afterAll(async () => {
    await app?.close();
    await store?.close();
    fleet?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('without a terminal, refuses and names what would be lost', async () => {
    const r = await runCli(['apply', '-f', file], env, 60_000);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/web1/);
    expect(r.stderr).toMatch(/--allow-destroy/);
    expect(fleet.sent()).toEqual([]);
  });

  it('at a terminal, shows what would be lost and changes nothing unless the answer is yes', async () => {
    const r = await onTerminal(['apply', '-f', file], env, 'y');
    expect(r.screen).toMatch(/web1/);
    expect(r.screen).toMatch(/Destroy this\? Only 'yes' goes ahead/);
    expect(r.code).not.toBe(0);
    expect(fleet.sent()).toEqual([]);
  });

  it('at a terminal, goes ahead on yes', async () => {
    const r = await onTerminal(['apply', '-f', file], env, 'yes');
    expect(r.code, r.screen).toBe(0);
    expect(r.screen).toMatch(/Apply complete/);
    expect(fleet.sent()).toContain('h1: vm.delete web1');
  });
});
