// `vmlink alerts` end to end in this process: the real controller API on a unix socket (SQLite in memory, the alert
// engine fed a synthetic snapshot), the CLI's commands through the real HTTP client.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createControllerApi } from '../controller/api.js';
import { Controller } from '../controller/controller.js';
import { SpecStore } from '../controller/spec-store.js';
import { SqliteStore } from '../controller/store/sqlite.js';
import { TaskManager } from '../controller/tasks.js';
import { RecordingRunner } from '../exec/runner.js';
import { HttpClient } from '../shared/http/client.js';
import { listen } from '../shared/http/server.js';
import { addAlertCommands, parseLabels } from './alert-commands.js';

const SPEC = `version: 1
hosts: [{ name: h1, agent: "unix:///nonexistent/agent.sock" }, { name: h2, agent: "unix:///nonexistent/agent2.sock" }]
alerts:
  - { name: host-cpu, expr: vmlink_host_cpu_utilization, threshold: 0.85, for: 5m, severity: critical }
`;

describe('vmlink alerts', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-alerts-cli-'));
  const socket = join(dir, 'api.sock');
  let app: FastifyInstance;
  let controller: Controller;
  let now = Date.parse('2026-12-01T10:00:00Z');

  /** Runs `vmlink ...args` and returns what it printed. */
  async function run(...args: string[]): Promise<string> {
    const program = new Command().exitOverride();
    addAlertCommands(program, () => new HttpClient(`unix://${socket}`));
    let printed = '';
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s) => {
      printed += String(s);
      return true;
    });
    try {
      await program.parseAsync(['node', 'vmlink', ...args]);
    } finally {
      spy.mockRestore();
    }
    return printed;
  }

  beforeAll(async () => {
    const store = new SqliteStore(':memory:');
    await new SpecStore(store).recordAttempt(SPEC, 'site.yaml');
    controller = new Controller(store, new RecordingRunner(), { alerts: { now: () => now } });
    app = await createControllerApi(controller, new TaskManager());
    await listen(app, `unix://${socket}`);
  });
  afterAll(async () => {
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('parses --label pairs and refuses malformed ones', () => {
    expect(parseLabels(['host=h1', 'vm=a=b'])).toEqual({ host: 'h1', vm: 'a=b' });
    expect(() => parseLabels(['Host=h1'])).toThrow(/--label must be NAME=VALUE/);
  });

  it('lists instances, silences one host, acks, unsilences; refuses unknown rules and labels', async () => {
    expect(await run('alerts')).toMatch(/^no alerts \(1 rule, not evaluated yet\)/);
    const cpu = (host: string, value: number) => ({
      name: 'vmlink_host_cpu_utilization',
      labels: { host },
      value,
    });
    await controller.alerts.evaluate({ at: now, series: [cpu('h1', 0.9), cpu('h2', 0.95)] });
    now += 5 * 60_000;
    await controller.alerts.evaluate({ at: now, series: [cpu('h1', 0.9), cpu('h2', 0.95)] });

    const silenced = JSON.parse(
      await run(
        'alerts',
        'silence',
        'host-cpu',
        '--for',
        '2h',
        '--label',
        'host=h1',
        '--comment',
        'burn test',
        '--json',
      ),
    );
    expect(silenced).toMatchObject({
      rule: 'host-cpu',
      labels: { host: 'h1' },
      until: '2026-12-01T12:05:00.000Z',
      createdBy: 'local-socket',
      comment: 'burn test',
    });
    expect(await run('alerts', 'ack', 'host-cpu', '--label', 'host=h2')).toBe(
      '1 firing instance(s) of host-cpu acknowledged\n',
    );
    const table = await run('alerts');
    expect(table).toMatch(/RULE\s+STATE\s+SEVERITY\s+LABELS\s+VALUE\s+SINCE\s+NOTE/);
    expect(table).toMatch(
      new RegExp(
        `host-cpu\\s+firing\\s+critical\\s+host=h1\\s+0\\.9\\s+\\S+\\s+silenced \\(${silenced.id}\\)`,
      ),
    );
    expect(table).toMatch(/host-cpu\s+firing\s+critical\s+host=h2\s+0\.95\s+\S+\s+acked by local-socket/);
    expect(table).toContain(`silences:`);
    expect(table).toMatch(/burn test/);
    const view = JSON.parse(await run('alerts', '--json'));
    expect(view.instances.map((i: { state: string }) => i.state)).toEqual(['firing', 'firing']);

    expect(await run('alerts', 'unsilence', silenced.id)).toBe(`silence ${silenced.id} ended\n`);
    await expect(run('alerts', 'unsilence', silenced.id)).rejects.toThrow(/silence .* not found/);
    await expect(run('alerts', 'silence', 'disk-full', '--for', '1h')).rejects.toThrow(
      /alert rule "disk-full" is not in the applied spec \(its rules: host-cpu\)/,
    );
    await expect(run('alerts', 'ack', 'host-cpu', '--label', 'vm=x')).rejects.toThrow(/have no label vm/);
    await expect(run('alerts', 'silence', 'host-cpu', '--for', 'soon')).rejects.toThrow(
      /--for must be a duration/,
    );
    // A silence is bounded: at most 30 days.
    await expect(run('alerts', 'silence', 'host-cpu', '--for', '31d')).rejects.toThrow(/forSeconds/);
  });
});
