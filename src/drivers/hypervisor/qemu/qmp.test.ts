import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TimeoutError, UnavailableError } from '../../../shared/errors.js';
import { GuestAgentClient, JsonObjectSplitter, QmpClient, QmpCommandError } from './qmp.js';
import { QmpPool } from './qmp-pool.js';

type Msg = { execute: string; arguments?: Record<string, unknown>; id?: unknown };

let dir = '';
let servers: Server[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-qmp-test-'));
  servers = [];
});
afterEach(async () => {
  for (const s of servers) s.close();
  await rm(dir, { recursive: true, force: true });
});

/** A unix socket server that calls `onMessage` for each JSON line a client sends. */
async function fakeServer(
  name: string,
  onConnect: (s: Socket) => void,
  onMessage: (m: Msg, s: Socket) => void,
): Promise<string> {
  const path = join(dir, name);
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    sock.on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) onMessage(JSON.parse(line) as Msg, sock);
      }
    });
    onConnect(sock);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(path, r));
  return path;
}

const send = (s: Socket, m: unknown) => s.write(`${JSON.stringify(m)}\r\n`);
const event = (name: string, data: Record<string, unknown> = {}) => ({
  event: name,
  data,
  timestamp: { seconds: 1700000000, microseconds: 1 },
});

/** A fake QEMU monitor: greeting, capabilities negotiation, a few commands, interleaved events. */
function fakeQmp(): Promise<string> {
  return fakeServer(
    'qmp.sock',
    (s) =>
      send(s, {
        QMP: {
          version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'Debian' },
          capabilities: ['oob'],
        },
      }),
    (m, s) => {
      const negotiated = (s as Socket & { ok?: boolean }).ok;
      if (m.execute === 'qmp_capabilities') {
        (s as Socket & { ok?: boolean }).ok = true;
        send(s, { return: {}, id: m.id });
      } else if (!negotiated) {
        send(s, {
          error: {
            class: 'CommandNotFound',
            desc: 'Expecting capabilities negotiation with qmp_capabilities',
          },
          id: m.id,
        });
      } else if (m.execute === 'query-status') {
        send(s, event('RESUME'));
        // reply split in two writes, with an event in between the chunks of nothing
        const text = `${JSON.stringify({ return: { status: 'running', singlestep: false, running: true }, id: m.id })}\n`;
        s.write(text.slice(0, 10));
        setTimeout(() => s.write(text.slice(10)), 5);
      } else if (m.execute === 'system_powerdown') {
        send(s, { return: {}, id: m.id });
        setTimeout(() => send(s, event('POWERDOWN')), 5);
        setTimeout(() => send(s, event('SHUTDOWN', { guest: true, reason: 'guest-shutdown' })), 10);
      } else if (m.execute === 'quit') {
        send(s, { return: {}, id: m.id });
        s.end();
      } else if (m.execute === 'slow') {
        setTimeout(() => send(s, { return: { slow: true }, id: m.id }), 300);
      } else if (m.execute === 'hang') {
        // never answers
      } else {
        send(s, {
          error: { class: 'CommandNotFound', desc: `The command ${m.execute} has not been found` },
          id: m.id,
        });
      }
    },
  );
}

describe('JsonObjectSplitter', () => {
  it('splits objects across chunks, skipping junk and respecting strings', () => {
    const sp = new JsonObjectSplitter();
    expect(sp.push('\xff\xff{"a":"}{\\"x')).toEqual([]);
    expect(sp.push('","b":[1,{"c":2}]}garbage{"d":1}\n{"e"')).toEqual([
      { a: '}{"x', b: [1, { c: 2 }] },
      { d: 1 },
    ]);
    expect(sp.push(':true}')).toEqual([{ e: true }]);
  });
});

describe('QmpClient against a fake QMP server', () => {
  it('negotiates, runs commands with ids, and delivers interleaved events', async () => {
    const qmp = await QmpClient.connect(await fakeQmp());
    expect(qmp.version).toBe('7.2.22');
    const events: string[] = [];
    qmp.onEvent((e) => events.push(e.event));
    expect(await qmp.execute('query-status')).toEqual({
      status: 'running',
      singlestep: false,
      running: true,
    });
    const shutdown = qmp.waitEvent('SHUTDOWN', 1000);
    await qmp.execute('system_powerdown');
    expect((await shutdown).data).toEqual({ guest: true, reason: 'guest-shutdown' });
    expect(events).toEqual(['RESUME', 'POWERDOWN', 'SHUTDOWN']);
    qmp.close();
  });

  it('turns error replies into QmpCommandError and keeps working', async () => {
    const qmp = await QmpClient.connect(await fakeQmp(), { subject: 'vm/x' });
    const err = await qmp.execute('nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpCommandError);
    expect((err as QmpCommandError).errorClass).toBe('CommandNotFound');
    expect((err as Error).message).toMatch(/nope failed: CommandNotFound/);
    expect(await qmp.execute('query-status')).toMatchObject({ status: 'running' });
    qmp.close();
  });

  it('times out a command that gets no answer, with TimeoutError', async () => {
    const qmp = await QmpClient.connect(await fakeQmp());
    await expect(qmp.execute('hang', undefined, 100)).rejects.toBeInstanceOf(TimeoutError);
    qmp.close();
  });

  it('a shared connection opened by an impatient caller keeps the command limit for everyone after', async () => {
    // vm-start opens the pool's connection with a 100 ms-ish connect limit; a migration's query-migrate on it later
    // must still wait QMP_TIMEOUT_MS (a 1 s limit rolled back a migration on a loaded host).
    const path = await fakeQmp();
    const pool = new QmpPool(() => path);
    const first = await pool.get('vm1', 100);
    expect(await first.execute('slow')).toEqual({ slow: true });
    expect(await pool.get('vm1')).toBe(first);
    pool.closeAll();
  });

  it('reports a closed connection as UnavailableError', async () => {
    const qmp = await QmpClient.connect(await fakeQmp());
    await qmp.execute('quit');
    await qmp.closed();
    await expect(qmp.execute('query-status')).rejects.toBeInstanceOf(UnavailableError);
  });

  it('fails to connect to a missing socket with UnavailableError, and to a silent one with TimeoutError', async () => {
    await expect(QmpClient.connect(join(dir, 'missing.sock'))).rejects.toBeInstanceOf(UnavailableError);
    const silent = await fakeServer(
      'silent.sock',
      () => {},
      () => {},
    );
    await expect(QmpClient.connect(silent, { timeoutMs: 100 })).rejects.toThrow(
      /greeting got no answer within 100 ms/,
    );
  });
});

/** A fake qemu-ga: stale replies on connect, guest-sync, guest-exec with polling, interfaces. */
function fakeQga(opts: { silent?: boolean } = {}): Promise<string> {
  const procs = new Map<number, { polls: number; out: string; code: number }>();
  return fakeServer(
    'qga.sock',
    (s) => {
      // what a previous client left behind: a stale reply and the 0xff of guest-sync-delimited
      s.write('{"return": 77}\n\xff{"return": {"pid": 3}}\n');
    },
    (m, s) => {
      if (opts.silent) return;
      const a = m.arguments ?? {};
      switch (m.execute) {
        case 'guest-sync':
          send(s, { return: a.id });
          break;
        case 'guest-exec': {
          const pid = 100 + procs.size;
          const input = a['input-data'] ? Buffer.from(String(a['input-data']), 'base64').toString() : '';
          const args = a.arg as string[];
          procs.set(pid, {
            polls: 0,
            out: `${a.path} ${args.join(' ')}|${input}`,
            code: a.path === 'false' ? 1 : 0,
          });
          send(s, { return: { pid } });
          break;
        }
        case 'guest-exec-status': {
          const p = procs.get(a.pid as number)!;
          if (p.polls++ < 2) send(s, { return: { exited: false } });
          else
            send(s, {
              return: {
                exited: true,
                exitcode: p.code,
                'out-data': Buffer.from(p.out).toString('base64'),
                'err-data': Buffer.from('warn\n').toString('base64'),
              },
            });
          break;
        }
        case 'guest-network-get-interfaces':
          send(s, {
            return: [
              {
                name: 'lo',
                'hardware-address': '00:00:00:00:00:00',
                'ip-addresses': [{ 'ip-address-type': 'ipv4', 'ip-address': '127.0.0.1', prefix: 8 }],
              },
              {
                name: 'eth0',
                'hardware-address': '52:54:00:98:00:02',
                'ip-addresses': [{ 'ip-address-type': 'ipv4', 'ip-address': '10.98.0.2', prefix: 24 }],
              },
            ],
          });
          break;
        default:
          send(s, {
            error: { class: 'CommandNotFound', desc: `The command ${m.execute} has not been found` },
          });
      }
    },
  );
}

describe('GuestAgentClient against a fake guest agent', () => {
  it('syncs past stale replies, then runs a command with stdin and polls it to the end', async () => {
    const qga = await GuestAgentClient.connect(await fakeQga());
    const r = await qga.exec(['ping', '-c1', '10.0.0.1'], { input: 'data', pollMs: 1 });
    expect(r).toEqual({ exitCode: 0, stdout: 'ping -c1 10.0.0.1|data', stderr: 'warn\n', truncated: false });
    expect((await qga.exec(['false'], { pollMs: 1 })).exitCode).toBe(1);
    qga.close();
  });

  it('lists interfaces', async () => {
    const qga = await GuestAgentClient.connect(await fakeQga());
    const ifs = await qga.interfaces();
    expect(ifs.map((i) => i.name)).toEqual(['lo', 'eth0']);
    qga.close();
  });

  it('reports unknown commands as QmpCommandError', async () => {
    const qga = await GuestAgentClient.connect(await fakeQga());
    await expect(qga.execute('guest-nope')).rejects.toBeInstanceOf(QmpCommandError);
    qga.close();
  });

  it('times out when the guest agent is not running', async () => {
    await expect(
      GuestAgentClient.connect(await fakeQga({ silent: true }), { timeoutMs: 100 }),
    ).rejects.toThrow(/guest-sync got no answer within 100 ms/);
  });
});
