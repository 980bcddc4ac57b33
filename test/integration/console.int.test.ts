// The serial console end to end: a lab host with one test guest; `vmlink vm console` driven through a pipe types a
// command into the guest's serial console and reads its answer; a read-only token's websocket gets the output but its
// keys never reach the guest; `vmlink ui` starts the localhost TLS listener and its one-time link logs a real HTTPS
// client in once, not twice, and the session it opens is held to its role and to the CSRF rules.
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { waitFor } from '../../src/shared/time.js';
import { runCli } from '../helpers/cli.js';
import { acquireVmLock } from '../helpers/vmlock.js';

const LAB = 'con1';
const VM = 'convm';
const SPEC = `
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: connet, host: host1, mode: isolated, cidr: 10.118.0.0/24 }
vms:
  - name: ${VM}
    host: host1
    memoryMiB: 160
    nics: [{ network: connet, ip: 10.118.0.10 }]
lab:
  name: ${LAB}
  lan: { cidr: 192.168.118.0/24, gateway: 192.168.118.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.118 }
  hosts: [{ name: host1, address: 192.168.118.10 }]
`;
const BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));
const PORT = 18_400;

const root = mkdtempSync('/tmp/vmlink-con-');
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
const children: ChildProcess[] = [];

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
  writeFileSync(file, SPEC);
  release = await acquireVmLock();
  const d = await runCli(['daemon', '--detach'], env);
  expect(d.code, d.stderr).toBe(0);
  const up = await runCli(['lab', 'up', '-f', file], env);
  expect(up.code, up.stderr + up.stdout).toBe(0);
  const a = await runCli(['apply', '-f', file], env);
  expect(a.code, a.stderr + a.stdout).toBe(0);
  // The test guest runs no shell on its serial port: one is started there through the guest agent.
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
    { timeoutMs: 120_000, intervalMs: 1000, message: 'the guest agent never answered' },
  );
}, 300_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await runCli(['lab', 'down', '-f', file], env).catch(() => {});
  await runCli(['daemon', '--stop'], env).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  await release?.();
});

describe('the serial console', () => {
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
    const ui = await runCli(['ui', '--json', '--port', String(PORT)], env);
    expect(ui.code, ui.stderr).toBe(0);
    const t = await runCli(['token', 'create', 'watcher', '--role', 'read-only', '--json'], env);
    expect(t.code, t.stderr).toBe(0);
    const token = (JSON.parse(t.stdout) as { token: string }).token;
    const ws = new WebSocket(`wss://127.0.0.1:${PORT}/v1/vms/${VM}/console/stream`, {
      ca: readFileSync(caFile),
      headers: { authorization: `Bearer ${token}` },
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
});

describe('browser sessions', () => {
  it('logs a real HTTPS client in once with a link, holds the session to CSRF rules, and logs it out', async () => {
    const ui = await runCli(['ui', '--json'], env);
    expect(ui.code, ui.stderr).toBe(0);
    const r = JSON.parse(ui.stdout) as { url: string; loginUrl: string; ca: string };
    expect(r.url).toBe(`https://127.0.0.1:${PORT}/ui/`);
    expect(r.ca).toBe(caFile);
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
