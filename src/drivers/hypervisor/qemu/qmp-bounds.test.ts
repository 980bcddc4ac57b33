// A hostile QEMU or guest agent that sends 128 MiB of unterminated JSON: the client closes the connection at its
// message cap with a typed error, and the process that runs the client (a child, as the agent is) lives on.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GUEST_AGENT_MESSAGE_MAX_BYTES, QMP_MESSAGE_MAX_BYTES } from '../../../shared/limits.js';
import { JsonObjectSplitter, MessageTooLargeError } from './qmp.js';

const FLOOD_BYTES = 128 * 1024 * 1024;
const QMP_JS = fileURLToPath(new URL('../../../../dist/drivers/hypervisor/qemu/qmp.js', import.meta.url));

let dir = '';
let servers: Server[] = [];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-qmp-bounds-'));
  servers = [];
});
afterEach(async () => {
  for (const s of servers) s.close();
  await rm(dir, { recursive: true, force: true });
});

/** Writes `{"return": "AAAA...` (never closed) until FLOOD_BYTES or until the peer hangs up; resolves with bytes sent. */
function flood(sock: Socket): Promise<number> {
  return new Promise((resolve) => {
    const chunk = Buffer.alloc(1024 * 1024, 'A');
    let sent = 0;
    let closed = false;
    sock.on('error', () => {});
    sock.once('close', () => {
      closed = true;
      resolve(sent);
    });
    const pump = () => {
      if (sent === 0) {
        sock.write('{"return": "');
        sent = 12;
      }
      while (!closed && sent < FLOOD_BYTES) {
        sent += chunk.length;
        if (!sock.write(chunk)) return void sock.once('drain', pump);
      }
      if (sent >= FLOOD_BYTES) resolve(sent);
    };
    pump();
  });
}

/** A unix socket server that greets like QEMU (QMP) or waits for guest-sync (guest agent), then floods. */
async function hostile(kind: 'qmp' | 'qga'): Promise<{ path: string; sent: Promise<number> }> {
  const path = join(dir, `${kind}.sock`);
  let report: (n: number) => void = () => {};
  const sent = new Promise<number>((r) => {
    report = r;
  });
  const server = createServer((sock) => {
    if (kind === 'qmp') {
      sock.write(
        '{"QMP": {"version": {"qemu": {"micro": 2, "minor": 2, "major": 7}}, "capabilities": []}}\r\n',
      );
      sock.once('data', () => void flood(sock).then(report));
    } else {
      sock.once('data', () => void flood(sock).then(report));
    }
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(path, r));
  return { path, sent };
}

/** Runs the compiled QMP and guest-agent clients in a child process against `qmp` and `qga`; its report and exit. */
function clientProcess(qmp: string, qga: string): Promise<{ code: number | null; out: string; err: string }> {
  const script = `
    import { QmpClient, GuestAgentClient } from ${JSON.stringify(QMP_JS)};
    const outcome = async (f) => {
      try { await f(); return 'connected'; } catch (e) { return e.constructor.name + ': ' + e.message; }
    };
    const qmp = await outcome(() => QmpClient.connect(${JSON.stringify(qmp)}, { timeoutMs: 60000 }));
    const qga = await outcome(() => GuestAgentClient.connect(${JSON.stringify(qga)}, { timeoutMs: 60000 }));
    // Alive after both: the event loop still runs timers.
    await new Promise((r) => setTimeout(r, 100));
    console.log(JSON.stringify({ qmp, qga, alive: true }));
  `;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'pipe' });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
    });
    child.once('close', (code) => resolve({ code, out, err }));
  });
}

describe('QMP and guest-agent clients against a peer sending 128 MiB of unterminated JSON', () => {
  it('close the connection at the cap with a typed error, and the process lives', async () => {
    const qmp = await hostile('qmp');
    const qga = await hostile('qga');
    const r = await clientProcess(qmp.path, qga.path);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as { qmp: string; qga: string; alive: boolean };
    expect(report.qmp).toBe(
      `MessageTooLargeError: QMP ${qmp.path}: a message exceeds ${QMP_MESSAGE_MAX_BYTES} bytes; connection closed`,
    );
    expect(report.qga).toBe(
      `MessageTooLargeError: guest agent ${qga.path}: a message exceeds ${GUEST_AGENT_MESSAGE_MAX_BYTES} bytes; connection closed`,
    );
    expect(report.alive).toBe(true);
    // The peers were cut off near the caps (plus what socket buffers hold), far from the 128 MiB they had.
    expect(await qmp.sent).toBeLessThan(QMP_MESSAGE_MAX_BYTES + 8 * 1024 * 1024);
    expect(await qga.sent).toBeLessThan(GUEST_AGENT_MESSAGE_MAX_BYTES + 8 * 1024 * 1024);
  });
});

describe('JsonObjectSplitter with a cap', () => {
  it('passes objects up to the cap, split anywhere (UTF-8 included), and refuses one byte more', () => {
    const obj = { return: 'é'.repeat(20), id: 1 };
    const text = Buffer.from(JSON.stringify(obj));
    const sp = new JsonObjectSplitter(text.length, 'test');
    const got = [];
    // Byte by byte: a multi-byte character is cut in two.
    for (let i = 0; i < text.length; i++) got.push(...sp.push(text.subarray(i, i + 1)));
    expect(got).toEqual([obj]);
    // Junk between objects is not counted; a longer object is refused, whether cut or whole.
    expect(sp.push(Buffer.concat([Buffer.from('xxxx'), text]))).toEqual([obj]);
    const longer = Buffer.from(JSON.stringify({ ...obj, id: 10 }));
    expect(() => new JsonObjectSplitter(text.length).push(longer)).toThrow(MessageTooLargeError);
    const cut = new JsonObjectSplitter(text.length);
    cut.push(longer.subarray(0, text.length));
    expect(() => cut.push(longer.subarray(text.length))).toThrow(MessageTooLargeError);
  });
});
