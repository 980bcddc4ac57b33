// The controller's metrics page scraped by a real Prometheus server (Debian `prometheus`): a lab host (its agent
// started by `vmlink lab up`, reporting its own processes) with one test guest; the controller listens on TCP on
// 127.0.0.1 with its CA, and Prometheus scrapes `/v1/metrics` there with a read-only token made by `vmlink token
// create`, as examples/prometheus/prometheus.yml says. Prometheus' own query API must then answer the host's and the VM's
// series, and `promtool check metrics` must find nothing to say about the page.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { METRICS } from '../../src/shared/metrics.js';
import { waitFor } from '../../src/shared/time.js';
import { runArgv, runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'itmc';
const SPEC = `
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: mcnet, host: host1, mode: isolated, cidr: 10.117.0.0/24 }
vms:
  - name: mc1
    host: host1
    memoryMiB: 160
    nics: [{ network: mcnet, ip: 10.117.0.10 }]
lab:
  name: ${LAB}
  lan: { cidr: 192.168.117.0/24, gateway: 192.168.117.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.117 }
  hosts: [{ name: host1, address: 192.168.117.10 }]
`;
const EXAMPLE = fileURLToPath(new URL('../../examples/prometheus/prometheus.yml', import.meta.url));

const root = mkdtempSync('/tmp/vmlink-itmc-');
// QEMU runs under its own uid and must reach its VM directory below this one.
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const file = join(root, 'spec.yaml');
const caFile = join(env.VMLINK_STATE_DIR, 'pki', 'ca.pem');
let release: (() => Promise<void>) | undefined;
let prometheus: ChildProcess | undefined;
let apiPort = 0;
let promPort = 0;
let readOnly = '';

/** A TCP port free on 127.0.0.1 right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** GET on the controller's TCP listener, its certificate checked against the CA under its name. */
function scrape(token?: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: apiPort,
        path: '/v1/metrics',
        ca: readFileSync(caFile),
        servername: 'vmlink-controller',
        headers: token ? { authorization: `Bearer ${token}` } : {},
        timeout: 10_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          body += d;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }),
        );
      },
    );
    req.once('error', reject);
    req.once('timeout', () => req.destroy(new Error('scrape timed out')));
    req.end();
  });
}

type Sample = { metric: Record<string, string>; value: [number, string] };

/** An instant query to Prometheus' HTTP API. */
async function query(expr: string): Promise<Sample[]> {
  const r = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const j = (await r.json()) as { status: string; data: { result: Sample[] } };
  expect(j.status).toBe('success');
  return j.data.result;
}

/** The value Prometheus holds for `expr` once it has one that `ok` accepts. */
const promValue = (expr: string, ok: (v: number) => boolean) =>
  waitFor(
    async () => {
      const v = (await query(expr))[0]?.value[1];
      return v !== undefined && ok(Number(v)) ? Number(v) : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 500, message: `Prometheus has no value for ${expr}` },
  );

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  writeFileSync(file, SPEC);
  const bootstrap = join(root, 'bootstrap.token');
  writeFileSync(bootstrap, randomBytes(24).toString('hex'), { mode: 0o600 });
  apiPort = await freePort();
  promPort = await freePort();
  release = await acquireVmLock();
  const d = await runCli(
    ['daemon', '--detach', '--listen', `https://127.0.0.1:${apiPort}`, '--token-file', bootstrap],
    env,
  );
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  const a = await runCli(['apply', '-f', file], env);
  expect(a.code, a.stderr + a.stdout).toBe(0);
  // The token Prometheus scrapes with, made as the example says (over the root socket, by an admin).
  const t = await runCli(['token', 'create', 'prometheus', '--role', 'read-only', '--json'], env);
  expect(t.code, t.stderr).toBe(0);
  readOnly = (JSON.parse(t.stdout) as { token: string }).token;
  writeFileSync(join(root, 'prometheus.token'), readOnly, { mode: 0o600 });
  // The example's configuration, pointed at this test's files and port, scraping every second.
  const config = readFileSync(EXAMPLE, 'utf8')
    .replaceAll('/etc/prometheus/vmlink.token', join(root, 'prometheus.token'))
    .replaceAll('/etc/prometheus/vmlink-ca.pem', caFile)
    .replace('127.0.0.1:7070', `127.0.0.1:${apiPort}`)
    .replace('scrape_interval: 15s', 'scrape_interval: 1s')
    .replace('scrape_timeout: 10s', 'scrape_timeout: 1s');
  expect(config).toContain(`127.0.0.1:${apiPort}`);
  expect(config).toContain(`credentials_file: ${join(root, 'prometheus.token')}`);
  expect(config).toContain(`ca_file: ${caFile}`);
  writeFileSync(join(root, 'prometheus.yml'), config);
  prometheus = spawn(
    'prometheus',
    [
      `--config.file=${join(root, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(root, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  prometheus.stderr?.setEncoding('utf8').on('data', (x: string) => {
    log = (log + x).slice(-4000);
  });
  await waitFor(
    async () => (await fetch(`http://127.0.0.1:${promPort}/-/ready`).catch(() => undefined))?.ok || undefined,
    { timeoutMs: 30_000, intervalMs: 200, message: `Prometheus did not get ready:\n${log}` },
  );
}, 300_000);

afterAll(async () => {
  if (prometheus?.pid && prometheus.exitCode === null) {
    const exited = new Promise((r) => prometheus!.once('exit', r));
    prometheus.kill('SIGTERM');
    await exited;
  }
  await runCli(['lab', 'down', '-f', file], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

describe('the metrics page scraped by Prometheus', () => {
  it("holds the host's and the VM's series, the derived shares and the apply's outcome", async () => {
    expect(await promValue('up{job="vmlink"}', (v) => v === 1)).toBe(1);
    expect(await promValue('vmlink_host_up{host="host1"}', (v) => v === 1)).toBe(1);
    // The guest's QEMU: its CPU seconds, its memory as configured and as resident.
    expect(
      await promValue('vmlink_vm_cpu_seconds_total{host="host1",vm="mc1"}', (v) => v > 0),
    ).toBeGreaterThan(0);
    expect(await promValue('vmlink_vm_memory_configured_bytes{host="host1",vm="mc1"}', (v) => v > 0)).toBe(
      160 * 2 ** 20,
    );
    expect(await promValue('vmlink_vm_memory_rss_bytes{vm="mc1"}', (v) => v > 0)).toBeGreaterThan(2 ** 20);
    expect(
      await promValue('vmlink_network_receive_bytes_total{host="host1",network="mcnet"}', (v) => v >= 0),
    ).toBeGreaterThanOrEqual(0);
    // A share needs two samples of the host; the lab host's own processes use some CPU and some memory, never all.
    const cpu = await promValue('vmlink_host_cpu_utilization{host="host1"}', (v) => v >= 0);
    expect(cpu).toBeLessThanOrEqual(1);
    const mem = await promValue('vmlink_host_memory_utilization{host="host1"}', (v) => v > 0);
    expect(mem).toBeLessThan(1);
    expect(await promValue('vmlink_apply_duration_seconds_count{outcome="succeeded"}', (v) => v >= 1)).toBe(
      1,
    );
    expect(await promValue('vmlink_host_heartbeat_age_seconds{host="host1"}', (v) => v >= 0)).toBeLessThan(
      60,
    );
  }, 120_000);

  it('is clean for promtool, names only catalog metrics, and is closed to a caller without a token', async () => {
    const page = await scrape(readOnly);
    expect(page.status, page.body).toBe(200);
    expect(page.type).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(page.body).toContain('vmlink_vm_running{host="host1",vm="mc1"} 1');
    const pageFile = join(root, 'page.txt');
    writeFileSync(pageFile, page.body);
    const check = await runArgv(['sh', '-c', 'promtool check metrics < "$0"', pageFile], {}, 30_000);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect((check.stdout + check.stderr).trim()).toBe('');
    const names = [...page.body.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!);
    expect(names.length).toBeGreaterThan(20);
    for (const n of names) expect(Object.keys(METRICS), n).toContain(n);
    expect((await scrape()).status).toBe(401);
    expect((await scrape('not-a-token')).status).toBe(401);
  }, 60_000);
});
