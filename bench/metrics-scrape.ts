// (metrics) Scrape latency of the controller's metrics page for a site of 50 VMs (5 hosts x 10 VMs, each VM with
// 2 disks and 2 NICs, 3 networks and a pool per host), side by side:
//  - cold: what a scrape would cost if it collected on demand: one collection (every agent asked over its socket in
//    parallel, each answer read, bounded and parsed by the strict schema, turned into series) and the page rendered;
//  - scrape after a collection: `GET /v1/metrics` on the controller's socket, the first after a new snapshot (the
//    collected part rendered with prom-client once);
//  - cached scrape: the same request again (the collected part's text reused, the controller's own series rendered).
// The agents are HTTP servers on unix sockets answering samples of that shape whose counters move every answer: the
// agents' own reading of /proc and QMP is the agent's side (metrics-agent), not measured here.
//
// Alone: `npx tsx bench/metrics-scrape.ts [--repeat 30]` (no root needed).
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { createControllerApi } from '../src/controller/api.js';
import { Controller } from '../src/controller/controller.js';
import { SpecStore } from '../src/controller/spec-store.js';
import { SqliteStore } from '../src/controller/store/sqlite.js';
import { TaskManager } from '../src/controller/tasks.js';
import { RecordingRunner } from '../src/exec/runner.js';
import { listen } from '../src/shared/http/server.js';
import type { AgentMetrics } from '../src/shared/metrics.js';
import { formatVersionHeader, localVersion, VERSION_HEADER } from '../src/shared/version.js';
import { hostInfo, median, round } from './lib.js';

const HOSTS = 5;
const VMS_PER_HOST = 10;

const counters = (n: number) => ({
  rxBytes: 1500 * n,
  txBytes: 900 * n,
  rxPackets: n,
  txPackets: n,
  rxDropped: n % 7,
  txDropped: n % 5,
  rxErrors: 0,
  txErrors: 0,
});

/** The `n`th sample of `host`: every counter a little further. */
function sample(host: string, n: number): AgentMetrics {
  return {
    host,
    at: Date.now(),
    hostMetrics: {
      scope: 'machine',
      cpus: 32,
      cpuSecondsTotal: 1e6 + 12 * n,
      memoryTotalBytes: 256 * 2 ** 30,
      memoryUsedBytes: 100 * 2 ** 30 + n,
      filesystems: [
        { path: '/var/lib/vmlink', sizeBytes: 2e12, usedBytes: 1e12 + n },
        { path: '/srv/pool', sizeBytes: 8e12, usedBytes: 3e12 + n },
      ],
      interfaces: ['eno1', 'eno2', 'bond0', 'vl-br-a', 'vl-br-b', 'vl-br-c'].map((name, i) => ({
        name,
        ...counters(n * 1000 + i),
      })),
    },
    vms: Array.from({ length: VMS_PER_HOST }, (_, v) => ({
      name: `${host}-vm${v}`,
      running: true,
      cpuSecondsTotal: 5000 + v + n,
      memoryRssBytes: 2 * 2 ** 30 + v * 2 ** 20,
      memoryConfiguredBytes: 4 * 2 ** 30,
      disks: ['root', 'data'].map((disk, d) => ({
        disk,
        readBytes: 1e9 + n * 4096 + d,
        writeBytes: 5e8 + n * 8192,
        readOps: 1e5 + n,
        writeOps: 5e4 + n,
      })),
      nics: [0, 1].map((i) => ({ nic: `nic${i}`, tap: `vl-t${v}n${i}`, ...counters(n * 100 + v) })),
    })),
    networks: ['a', 'b', 'c'].map((x, i) => ({
      network: `net-${x}`,
      device: `vl-br-${x}`,
      ...counters(n + i),
    })),
    pools: [{ pool: 'local', sizeBytes: 8e12, usedBytes: 3e12 + n }],
  };
}

/** A fake agent answering `GET /v1/metrics` on a unix socket. */
async function agentServer(host: string, socket: string): Promise<Server> {
  let n = 0;
  // The wire version a real agent announces (the controller's client refuses an agent without it).
  const version = { [VERSION_HEADER.wire]: formatVersionHeader(localVersion('wire')) };
  const server = createServer((req, res) => {
    if (req.url !== '/v1/metrics') {
      res.writeHead(404).end();
      return;
    }
    res
      .writeHead(200, { 'content-type': 'application/json', ...version })
      .end(JSON.stringify(sample(host, ++n)));
  });
  await new Promise<void>((r) => server.listen(socket, r));
  return server;
}

/** GET on the controller's unix socket; the body's length. */
function get(socket: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    request({ socketPath: socket, path }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => {
        bytes += d.length;
      });
      res.on('end', () =>
        res.statusCode === 200 ? resolve(bytes) : reject(new Error(`HTTP ${res.statusCode}`)),
      );
    })
      .once('error', reject)
      .end();
  });
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { medianMs: round(median(xs), 2), p95Ms: round(s[Math.floor(0.95 * (s.length - 1))]!, 2) };
};

/** What the bench reports. */
export interface MetricsScrapeResult {
  vms: number;
  hosts: number;
  series: number;
  pageBytes: number;
  repeat: number;
  cold: { medianMs: number; p95Ms: number };
  scrapeAfterCollection: { medianMs: number; p95Ms: number };
  cachedScrape: { medianMs: number; p95Ms: number };
}

export async function benchMetricsScrape(repeat: number): Promise<MetricsScrapeResult> {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-bench-metrics-'));
  const servers: Server[] = [];
  const store = new SqliteStore(':memory:');
  const controller = new Controller(store, new RecordingRunner());
  const api = await createControllerApi(controller, new TaskManager());
  try {
    const hosts = Array.from({ length: HOSTS }, (_, i) => `host${i + 1}`);
    for (const h of hosts) servers.push(await agentServer(h, join(dir, `${h}.sock`)));
    const spec = `version: 1\nhosts:\n${hosts.map((h) => `  - { name: ${h}, agent: "unix://${join(dir, `${h}.sock`)}" }`).join('\n')}\n`;
    await new SpecStore(store).recordAttempt(spec, 'bench.yaml');
    const socket = join(dir, 'controller.sock');
    await listen(api, `unix://${socket}`);
    // Warm-up: connections, JIT, prom-client's first registries.
    for (let i = 0; i < 5; i++) {
      await controller.metrics.collectNow();
      await get(socket, '/v1/metrics');
    }
    const cold: number[] = [];
    const after: number[] = [];
    const cached: number[] = [];
    let pageBytes = 0;
    for (let i = 0; i < repeat; i++) {
      let t0 = performance.now();
      await controller.metrics.collectNow();
      await controller.metrics.render();
      cold.push(performance.now() - t0);
      // A new snapshot, then the first scrape of it and a second one.
      await controller.metrics.collectNow();
      t0 = performance.now();
      pageBytes = await get(socket, '/v1/metrics');
      after.push(performance.now() - t0);
      t0 = performance.now();
      await get(socket, '/v1/metrics');
      cached.push(performance.now() - t0);
    }
    const snap = controller.metrics.latest();
    if (snap.series.filter((s) => s.name === 'vmlink_host_up' && s.value === 1).length !== HOSTS)
      throw new Error('bench: not every fake agent answered');
    return {
      vms: HOSTS * VMS_PER_HOST,
      hosts: HOSTS,
      series: snap.series.length,
      pageBytes,
      repeat,
      cold: stats(cold),
      scrapeAfterCollection: stats(after),
      cachedScrape: stats(cached),
    };
  } finally {
    await api.close();
    for (const s of servers) await new Promise((r) => s.close(r));
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { repeat: { type: 'string', default: '30' } } });
  const repeat = Math.max(1, Number(values.repeat));
  const info = hostInfo();
  console.log(
    `machine: ${info.cpuModel}, ${info.cores} cores, node ${info.node}, load ${info.loadavgAtStart.join(' ')}`,
  );
  const r = await benchMetricsScrape(repeat);
  console.log(
    `site: ${r.hosts} hosts, ${r.vms} VMs, ${r.series} series, page ${r.pageBytes} bytes; ${r.repeat} repeats (median / p95)`,
  );
  console.log(`  cold (collect every agent + render): ${r.cold.medianMs} ms / ${r.cold.p95Ms} ms`);
  console.log(
    `  scrape, first after a collection:    ${r.scrapeAfterCollection.medianMs} ms / ${r.scrapeAfterCollection.p95Ms} ms`,
  );
  console.log(
    `  scrape, cached:                      ${r.cachedScrape.medianMs} ms / ${r.cachedScrape.p95Ms} ms`,
  );
  console.log(JSON.stringify(r));
}
