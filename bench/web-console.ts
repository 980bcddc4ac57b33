// (web-console) First load of the web console in Chromium (Debian's, headless, through playwright-core) against a
// lab: one host, one network, one test guest, the daemon's localhost listener started by `vmlink ui`. Each repeat:
//  - cold: a fresh browser context (empty HTTP cache) carrying the session cookie opens /ui/ until the topology
//    view shows the lab's VM (HTML, the hashed JS and CSS bundles, then /v1/status, networks, vms, verify/last);
//  - warm: the same context loads /ui/ again: the hashed bundles come from the cache (served immutable), only the
//    HTML and the API calls go to the controller.
// Printed side by side with the ratio cold / warm, the bundle sizes, and the browser's own navigation timings.
//   npx tsx bench/web-console.ts [--repeat N]        (root: the lab; holds the VM lock; writes results/web-console.json)
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { acquireVmLock } from '../test/helpers/vmlock.js';
import { oneHostSpec, startCliLab, vmlinkOk } from './cli.js';
import { hostInfo, load1, median, round, runCleanups } from './lib.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  return i < 0 ? dflt : Number(process.argv[i + 1]) || dflt;
};
const repeat = arg('--repeat', 5);
const RESULTS = fileURLToPath(new URL('results/web-console.json', import.meta.url));
const ASSETS = fileURLToPath(new URL('../dist/web/assets/', import.meta.url));

const spec = (lab: string) =>
  oneHostSpec(lab, {
    networks: [{ name: 'wbnet', host: 'host1', mode: 'isolated', cidr: '10.186.0.0/24' }],
    vms: [{ name: 'wb1', host: 'host1', memoryMiB: 128, nics: [{ network: 'wbnet', ip: '10.186.0.10' }] }],
  });

interface Load {
  /** From the navigation's start until the topology shows the VM (ms, measured here). */
  ms: number;
  /** The browser's navigation timing: HTML response end and DOMContentLoaded (ms since navigation start). */
  htmlMs: number;
  domContentLoadedMs: number;
  /** Bytes fetched over the network for the page's resources (0 for a cache hit). */
  transferred: number;
}

async function main(): Promise<void> {
  const release = await acquireVmLock();
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
  try {
    const lab = await startCliLab('web', spec);
    const file = lab.specFile('spec.json', spec(lab.lab));
    await vmlinkOk(['apply', '-f', file], lab.env);
    const link = JSON.parse((await vmlinkOk(['ui', '--json'], lab.env)).stdout) as {
      url: string;
      loginUrl: string;
    };
    // Log in once; each cold run is a fresh context given that session's cookie (links are single use).
    const login = await browser.newContext({ ignoreHTTPSErrors: true });
    const lp = await login.newPage();
    await lp.goto(link.loginUrl);
    await lp.waitForSelector('[data-testid="role"]');
    const cookies = await login.cookies();
    await login.close();

    const load = async (page: import('playwright-core').Page): Promise<Load> => {
      const t0 = performance.now();
      await page.goto(link.url);
      await page.waitForSelector('[data-testid="topology"] [data-vm="wb1"]');
      const ms = performance.now() - t0;
      // Runs in the page: the browser's Navigation and Resource Timing (typed here by hand: this file has no DOM types).
      const nav = await page.evaluate(() => {
        type Entry = { responseEnd: number; domContentLoadedEventEnd: number; transferSize: number };
        const perf = performance as unknown as { getEntriesByType(t: string): Entry[] };
        const n = perf.getEntriesByType('navigation')[0]!;
        const res = perf.getEntriesByType('resource');
        return {
          htmlMs: n.responseEnd,
          domContentLoadedMs: n.domContentLoadedEventEnd,
          transferred: n.transferSize + res.reduce((a, r) => a + r.transferSize, 0),
        };
      });
      return { ms, ...nav };
    };
    const cold: Load[] = [];
    const warm: Load[] = [];
    for (let i = 0; i < repeat; i++) {
      const ctx = await browser.newContext({
        ignoreHTTPSErrors: true,
        viewport: { width: 1366, height: 768 },
      });
      await ctx.addCookies(cookies);
      const page = await ctx.newPage();
      cold.push(await load(page));
      warm.push(await load(page));
      await ctx.close();
    }
    const sizes = Object.fromEntries(
      readdirSync(ASSETS)
        .filter((f) => /\.(js|css)$/.test(f))
        .map((f) => [f, statSync(join(ASSETS, f)).size]),
    );
    const med = (xs: Load[], k: keyof Load) => round(median(xs.map((x) => x[k])), 1);
    const summary = {
      coldMs: med(cold, 'ms'),
      warmMs: med(warm, 'ms'),
      ratioColdWarm: round(median(cold.map((x) => x.ms)) / median(warm.map((x) => x.ms)), 2),
      coldTransferred: med(cold, 'transferred'),
      warmTransferred: med(warm, 'transferred'),
    };
    console.log(`web console first load, ${repeat} repeats (median; machine load ${load1()})`);
    console.log(
      `  bundle: ${Object.entries(sizes)
        .map(([f, b]) => `${f} ${round(b / 1024, 1)} KiB`)
        .join(', ')}`,
    );
    for (const [label, xs] of [
      ['cold (empty cache)', cold],
      ['warm (cached bundles)', warm],
    ] as const)
      console.log(
        `  ${label.padEnd(24)} ${String(med(xs, 'ms')).padStart(7)} ms to the topology; HTML ${med(xs, 'htmlMs')} ms, DOMContentLoaded ${med(xs, 'domContentLoadedMs')} ms, ${round(med(xs, 'transferred') / 1024, 1)} KiB over the wire   (${xs.map((x) => round(x.ms, 0)).join(' ')})`,
      );
    console.log(`  cold / warm: ${summary.ratioColdWarm}x`);
    writeFileSync(
      RESULTS,
      `${JSON.stringify({ date: new Date().toISOString(), host: hostInfo(), repeat, sizes, summary, cold, warm }, null, 1)}\n`,
    );
    await lab.close();
  } finally {
    await browser.close().catch(() => {});
    await runCleanups();
    await release();
  }
}

main().catch(async (e) => {
  console.error(e);
  await runCleanups();
  process.exit(1);
});
