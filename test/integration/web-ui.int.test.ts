// The web console in a real browser: Debian's Chromium (headless, driven by playwright-core) against a real lab —
// one host started by `vmlink lab up`, one test guest. The daemon has no TCP listener: `vmlink ui --port` starts the
// localhost TLS one. The browser logs in through a one-time link from `vmlink ui --json` (a second use is refused),
// and every view must show the lab's real data: the topology with the guest's link coloured by the verify run before,
// the matrix, the VM list, metrics charts, the alert rule, the events (a new one arriving live), and the plan of the
// applied spec. In the VM's serial console (xterm.js over the controller's websocket) a command typed in the page is
// answered by the guest's shell. The VM is stopped and started again from its buttons (after the confirmation). A
// read-only session (a link asked for with a read-only token) sees no start/stop buttons and cannot type into the
// console. Then the serial console without a browser on the same lab (these were console.int.test.ts, with a lab
// and a guest of its own): `vmlink vm console` driven through a pipe types a command into the guest and reads its
// answer; a read-only token's websocket gets the output but its keys never reach the guest; a real HTTPS client
// (the CA checked) logs in once with a link, not twice, and its session is held to its role and the CSRF rules.
// Screenshots of each view go to test-results/web-ui/ (gitignored).
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { waitFor } from '../../src/shared/time.js';
import { runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'webui';
const PORT = 18510;
const VM = 'web1';
const SPEC = `
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: webnet, host: host1, mode: isolated, cidr: 10.185.0.0/24 }
vms:
  - name: ${VM}
    host: host1
    memoryMiB: 160
    nics: [{ network: webnet, ip: 10.185.0.10 }]
alerts:
  - name: web-host-cpu
    expr: vmlink_host_cpu_utilization{host="host1"}
    threshold: 0.99
    for: 5m
    summary: "CPU of {{host}} at {{value}}"
    actions: [{ type: log }]
lab:
  name: ${LAB}
  lan: { cidr: 192.168.185.0/24, gateway: 192.168.185.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.185 }
  hosts: [{ name: host1, address: 192.168.185.10 }]
`;

const root = mkdtempSync('/tmp/vmlink-web-');
// QEMU runs under its own uid and must reach its VM directory below this one.
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'controller.sock'),
};
const file = join(root, 'spec.yaml');
const caFile = join(env.VMLINK_STATE_DIR, 'pki', 'ca.pem');
const shots = fileURLToPath(new URL('../../test-results/web-ui/', import.meta.url));
const BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));
const children: ChildProcess[] = [];

let release: (() => Promise<void>) | undefined;
let browser: Browser | undefined;
let admin: BrowserContext;
let page: Page;
let readOnlyToken = '';
/** What the admin page reported: script errors, and the console's errors (a CSP violation is one). */
const pageErrors: string[] = [];
const consoleErrors: string[] = [];

interface UiLink {
  url: string;
  loginUrl: string;
  expiresAt: string;
}

/** A one-time login link from `vmlink ui --json`, as the CLI's caller (root socket: admin; or `extra` env). */
async function uiLink(extra: Record<string, string> = {}): Promise<UiLink> {
  const r = await runCli(['ui', '--json'], { ...env, ...extra });
  expect(r.code, r.stderr + r.stdout).toBe(0);
  return JSON.parse(r.stdout) as UiLink;
}

/** A browser context that trusts nothing but this test's self-signed controller (its CA is the lab's own). */
async function newContext(): Promise<BrowserContext> {
  // The controller's certificate chains to a CA made for this test: Chromium would refuse it; the test checks the
  // pages, not the PKI (the HTTPS client below and tls.int.test.ts check the certificate).
  return browser!.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1366, height: 768 } });
}

async function shot(p: Page, name: string): Promise<void> {
  await p.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

/** Opens a view by its nav link (keyboard-reachable links, as a user would click them). */
async function open(p: Page, view: string): Promise<void> {
  await p.click(`nav a[data-view="${view}"]`);
  await p.waitForFunction((v) => location.hash === `#/${v}`, view);
}

/** Polls `fn` until its value passes the assertion: API calls that ask the agents take a while under TCG. */
const poll = <T>(fn: () => Promise<T>, timeout = 20_000) => expect.poll(fn, { timeout, interval: 200 });

/** The text the serial console's terminal shows now. */
const terminalText = (p: Page) => p.locator('.xterm-rows').textContent();

/**
 * The test guest runs no shell on its serial console (its init only logs there): starts one through its agent,
 * waiting for the agent after a (re)boot.
 */
async function serialShell(): Promise<void> {
  await waitFor(
    async () => {
      const r = await runCli(
        [
          'vm',
          'exec',
          VM,
          '--',
          'sh',
          '-c',
          "setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1' </dev/null >/dev/null 2>&1 &",
        ],
        env,
      );
      return r.code === 0 || undefined;
    },
    { timeoutMs: 120_000, intervalMs: 250, message: 'the guest agent never answered' },
  );
}

/** One HTTPS request to the console's listener, its certificate checked against the CA for 127.0.0.1. */
function https(
  method: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: PORT, method, path, ca: readFileSync(caFile), headers, timeout: 10_000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.once('error', reject);
    req.once('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.end();
  });
}

/** `vmlink vm console VM` with a pipe for stdin, collecting what it prints. */
function attachCli(): { child: ChildProcess; out: () => string; err: () => string; exited: Promise<number> } {
  const child = spawn(process.execPath, [BIN, 'vm', 'console', VM], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<number>((r) => child.once('close', (code) => r(code ?? 1)));
  return { child, out: () => out, err: () => err, exited };
}

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  mkdirSync(shots, { recursive: true });
  writeFileSync(file, SPEC);
  release = await acquireVmLock();
  const d = await runCli(['daemon', '--detach'], env);
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  const a = await runCli(['apply', '-f', file], env);
  expect(a.code, a.stderr + a.stdout).toBe(0);
  // The matrix the topology is coloured by (verify waits for the guest's address, so the rest of the set-up runs
  // meanwhile).
  const verified = runCli(['verify'], env);
  const t = await runCli(['token', 'create', 'viewer', '--role', 'read-only', '--json'], env);
  expect(t.code, t.stderr).toBe(0);
  readOnlyToken = (JSON.parse(t.stdout) as { token: string }).token;
  // The controller has no TCP listener: `vmlink ui` starts the localhost TLS one, on the port asked for.
  const ui = await runCli(['ui', '--json', '--port', String(PORT)], env);
  expect(ui.code, ui.stderr + ui.stdout).toBe(0);
  expect(JSON.parse(ui.stdout)).toMatchObject({ url: `https://127.0.0.1:${PORT}/ui/`, ca: caFile });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    // As root Chromium needs --no-sandbox; nothing but this lab's controller on loopback is opened.
    args: ['--no-sandbox'],
  });
  admin = await newContext();
  page = await admin.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  const v = await verified;
  expect(v.code, v.stderr + v.stdout).toBe(0);
}, 300_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await browser?.close().catch(() => {});
  await runCli(['lab', 'down', '-f', file], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
}, 120_000);

describe('the web console in Chromium', () => {
  it('logs in once through a one-time link from `vmlink ui --json`; the link does not work twice', async () => {
    const link = await uiLink();
    expect(link.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/ui\/$/);
    await page.goto(link.loginUrl);
    await page.waitForURL(/\/ui\/(#.*)?$/);
    await poll(() => page.locator('[data-testid="role"]').textContent()).toMatch(/\(admin\)/);
    // The same link in a fresh browser: refused, and that browser has no session.
    const other = await newContext();
    try {
      const p2 = await other.newPage();
      const r = await p2.goto(link.loginUrl);
      expect(r?.status()).toBe(401);
      const session = await other.request.get(new URL('/v1/ui/session', link.url).href);
      expect(session.status()).toBe(401);
    } finally {
      await other.close();
    }
  });

  it("topology: the lab's host, network and VM, the VM's link coloured by the last verify", async () => {
    await open(page, 'topology');
    const topo = page.locator('[data-testid="topology"]');
    await poll(() => topo.locator(`[data-vm="${VM}"]`).count()).toBe(1);
    expect(await topo.locator('[data-host="host1"]').count()).toBe(1);
    expect(await topo.locator('[data-network="webnet"]').count()).toBe(1);
    // The verify before the test measured the guest's cells as expected: its link is "ok", not uncoloured.
    expect(await topo.locator(`line[data-link="${VM}->webnet"]`).getAttribute('data-status')).toBe('ok');
    await poll(() => page.locator('p.meta').first().textContent()).toMatch(/0 mismatch/);
    await shot(page, 'topology');
  });

  it('matrix: the measured cells of the guest, as expected', async () => {
    await open(page, 'matrix');
    const m = page.locator('[data-testid="matrix"]');
    await poll(() => m.locator(`td[data-from="host1"][data-to="${VM}"]`).count()).toBe(1);
    expect(await m.locator(`td[data-from="host1"][data-to="${VM}"]`).getAttribute('data-status')).toBe('ok');
    expect(await m.locator('td[data-status="mismatch"]').count()).toBe(0);
    await shot(page, 'matrix');
  });

  it('VMs: the guest running on its host with its address; start/stop buttons for an admin', async () => {
    await open(page, 'vms');
    const row = page.locator(`tr[data-vm="${VM}"]`);
    await poll(() => row.locator('[data-testid="vm-state"]').textContent()).toBe('running');
    expect(await row.textContent()).toContain('host1');
    expect(await row.textContent()).toContain('10.185.0.10');
    expect(await row.locator('button[data-action="stop"]').isEnabled()).toBe(true);
    expect(await row.locator('button[data-action="start"]').isDisabled()).toBe(true);
    await shot(page, 'vms');
  });

  it("serial console: a command typed in the page is answered by the guest's shell", async () => {
    await serialShell();
    await page.click(`tr[data-vm="${VM}"] a[data-action="console"]`);
    await page.waitForSelector('[data-testid="terminal"][data-connected="true"]');
    await page.waitForSelector('[data-testid="terminal"][data-mode="write"]');
    await page.click('[data-testid="terminal"]');
    // Enter first: a fresh prompt whatever the console held; the answer is computed by the guest, not echoed.
    await page.keyboard.press('Enter');
    await page.keyboard.type('echo web-$((6*7))-ok');
    await page.keyboard.press('Enter');
    await poll(() => terminalText(page), 30_000).toContain('web-42-ok');
    await shot(page, 'console');
  });

  it('metrics: charts drawn from /v1/metrics', async () => {
    await open(page, 'metrics');
    const chart = page.locator('figure[data-metric="vmlink_host_cpu_utilization"]');
    await poll(() => chart.locator('path').count(), 45_000).toBeGreaterThan(0);
    expect(await chart.textContent()).toContain('host1');
    const rss = page.locator('figure[data-metric="vmlink_vm_memory_rss_bytes"]');
    await poll(() => rss.textContent(), 45_000).toContain(VM);
    await shot(page, 'metrics');
  });

  it("alerts: the applied spec's rule", async () => {
    await open(page, 'alerts');
    await poll(() => page.locator('[data-testid="alerts"]').textContent()).toContain('web-host-cpu');
    await shot(page, 'alerts');
  });

  it('plan: the applied spec pasted in plans no change', async () => {
    await open(page, 'plan');
    await page.fill('#spec-text', SPEC);
    await page.click('form.plan-form button[type="submit"]');
    await poll(() => page.locator('[data-testid="plan"]').textContent()).toMatch(/0 to create/);
    // A broken spec: the API's complaint in words.
    await page.fill('#spec-text', 'version: 1\nvms: [{ name: "Bad Name" }]\n');
    await page.click('form.plan-form button[type="submit"]');
    await poll(() => page.locator('p.error[role="alert"]').textContent()).toMatch(/Planning the spec failed/);
    await shot(page, 'plan');
  });

  it('stop and start the VM from its buttons, after the confirmation; events arrive live', async () => {
    await open(page, 'events');
    await poll(() => page.locator('[data-testid="events"] li[data-kind="verify"]').count()).toBeGreaterThan(
      0,
    );
    const before = await page.locator('[data-testid="events"] li').count();
    await open(page, 'vms');
    const row = page.locator(`tr[data-vm="${VM}"]`);
    await row.locator('button[data-action="stop"]').click();
    // Cancel first: nothing happens.
    await page.click('dialog.confirm button:not([data-confirm])');
    expect(await row.locator('[data-testid="vm-state"]').textContent()).toBe('running');
    await row.locator('button[data-action="stop"]').click();
    await page.click('dialog.confirm button[data-confirm]');
    await poll(() => row.locator('[data-testid="vm-state"]').textContent(), 90_000).toBe('stopped');
    await row.locator('button[data-action="start"]').click();
    await page.click('dialog.confirm button[data-confirm]');
    await poll(() => row.locator('[data-testid="vm-state"]').textContent(), 90_000).toBe('running');
    // The stop and start were appended as events: the events view shows them without a reload.
    await open(page, 'events');
    await poll(() => page.locator('[data-testid="events"] li').count(), 30_000).toBeGreaterThan(before);
    await shot(page, 'events');
  });

  it('a read-only session sees no start/stop buttons and its console takes no keys', async () => {
    const link = await uiLink({
      VMLINK_SOCKET: `https://127.0.0.1:${PORT}`,
      VMLINK_CA: caFile,
      VMLINK_TOKEN: readOnlyToken,
    });
    const ctx = await newContext();
    try {
      const p = await ctx.newPage();
      await p.goto(link.loginUrl);
      await poll(() => p.locator('[data-testid="role"]').textContent()).toMatch(/\(read-only\)/);
      await open(p, 'vms');
      const row = p.locator(`tr[data-vm="${VM}"]`);
      await poll(() => row.count()).toBe(1);
      expect(await row.locator('button').count()).toBe(0);
      await row.locator('a[data-action="console"]').click();
      await p.waitForSelector('[data-testid="terminal"][data-mode="read"]');
      await shot(p, 'read-only-console');
    } finally {
      await ctx.close();
    }
  });

  it("ran without a script error or a Content-Security-Policy violation under the controller's headers", () => {
    expect(pageErrors).toEqual([]);
    expect(consoleErrors.filter((t) => /Content Security Policy|Refused to/i.test(t))).toEqual([]);
  });
});

describe('the serial console without a browser', () => {
  beforeAll(async () => {
    // The VM was stopped and started above: a new shell on its serial port.
    await serialShell();
  }, 150_000);

  it('`vmlink vm console` through a pipe types into the guest and reads its answer; Ctrl-] detaches', async () => {
    const c = attachCli();
    await waitFor(async () => c.err().includes('attached to') || undefined, {
      timeoutMs: 30_000,
      intervalMs: 100,
      message: 'no hello',
    });
    expect(c.err()).toContain(`attached to ${VM}'s serial console on host1 (read-write)`);
    // The answer holds the computed value, which the typed line (echoed by the tty) does not.
    c.child.stdin!.write('echo con-$((6*7))\n');
    await waitFor(async () => c.out().includes('con-42') || undefined, {
      timeoutMs: 30_000,
      intervalMs: 100,
      message: `the guest did not answer; output so far: ${c.out()}`,
    });
    c.child.stdin!.write('\x1d');
    expect(await c.exited).toBe(0);
    expect(c.err()).toContain('detached');
  }, 90_000);

  it("gives a read-only token's websocket the output and refuses its keys", async () => {
    const ws = new WebSocket(`wss://127.0.0.1:${PORT}/v1/vms/${VM}/console/stream`, {
      ca: readFileSync(caFile),
      headers: { authorization: `Bearer ${readOnlyToken}` },
    });
    const texts: string[] = [];
    let output = '';
    ws.on('message', (d, binary) => {
      if (binary) output += d.toString();
      else texts.push(d.toString());
    });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    await waitFor(async () => texts.find((x) => x.includes('"hello"')), {
      timeoutMs: 15_000,
      intervalMs: 50,
      message: 'no hello',
    });
    expect(JSON.parse(texts[0]!)).toEqual({ type: 'hello', vm: VM, host: 'host1', mode: 'read' });
    ws.send(Buffer.from('echo ro-$((5*5))\n'));
    await waitFor(async () => texts.find((x) => x.includes('keys refused')), {
      timeoutMs: 10_000,
      intervalMs: 50,
      message: `keys not refused: ${texts.join(' ')}`,
    });
    // An operator's command after it: its answer reaches the reader, and the reader's command never ran before it.
    const c = attachCli();
    await waitFor(async () => c.err().includes('attached to') || undefined, {
      timeoutMs: 30_000,
      intervalMs: 100,
      message: 'no hello',
    });
    c.child.stdin!.write('echo op-$((3*3))\n');
    await waitFor(async () => output.includes('op-9') || undefined, {
      timeoutMs: 30_000,
      intervalMs: 100,
      message: `the reader got no output; it has: ${output}`,
    });
    expect(output).not.toContain('ro-25');
    c.child.stdin!.end();
    expect(await c.exited).toBe(0);
    ws.close();
  }, 90_000);

  it('logs a real HTTPS client in once with a link, holds the session to CSRF rules, and logs it out', async () => {
    const r = await uiLink();
    const path = new URL(r.loginUrl).pathname + new URL(r.loginUrl).search;
    const first = await https('GET', path);
    expect(first.status, first.body).toBe(200);
    expect(first.headers['content-security-policy']).toContain("default-src 'none'");
    const setCookie = String(first.headers['set-cookie']);
    expect(setCookie).toMatch(
      /^vmlink_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; Secure; SameSite=Strict/,
    );
    const cookie = setCookie.split(';')[0]!;
    const again = await https('GET', path);
    expect(again.status).toBe(401);
    expect(again.headers['set-cookie']).toBeUndefined();

    const me = await https('GET', '/v1/ui/session', { cookie });
    expect(me.status, me.body).toBe(200);
    expect(JSON.parse(me.body)).toMatchObject({ who: 'local-socket', role: 'admin' });
    // A write without the CSRF header, or from another origin, is refused; with both it passes.
    const origin = `https://127.0.0.1:${PORT}`;
    const bare = await https('POST', '/v1/ui/logout', { cookie, origin });
    expect(bare.status).toBe(403);
    const foreign = await https('POST', '/v1/ui/logout', {
      cookie,
      origin: 'https://evil.example',
      'x-vmlink-csrf': '1',
    });
    expect(foreign.status).toBe(403);
    const out = await https('POST', '/v1/ui/logout', { cookie, origin, 'x-vmlink-csrf': '1' });
    expect(out.status, out.body).toBe(200);
    expect((await https('GET', '/v1/ui/session', { cookie })).status).toBe(401);
  }, 60_000);
});
