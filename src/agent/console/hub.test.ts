import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ConsoleServerMessage } from '../../shared/console-wire.js';
import { waitFor } from '../../shared/time.js';
import { assertConsoleSocket, ConsoleHub, type ConsolePeer } from './hub.js';

// A real unix socket server stands in for QEMU's serial chardev (one client at a time, as QEMU's).

/** A client as the hub sees it, recording what it is sent; `backlog` is what it pretends to have queued. */
function peer(backlog = 0) {
  const p = {
    out: '',
    controls: [] as ConsoleServerMessage[],
    closed: undefined as { code: number; reason: string } | undefined,
    backlog,
  };
  const port: ConsolePeer = {
    output: (d) => {
      p.out += d.toString();
    },
    control: (m) => p.controls.push(m),
    queued: () => p.backlog,
    close: (code, reason) => {
      p.closed = { code, reason };
    },
  };
  return { p, port };
}

let dir: string;
let server: Server;
let serial: Socket | undefined;
let typed = '';
let accepted = 0;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vmlink-hub-'));
  typed = '';
  accepted = 0;
  server = createServer((s) => {
    accepted++;
    serial = s;
    s.on('data', (d) => {
      typed += d.toString();
    });
  });
  await new Promise<void>((r) => server.listen(join(dir, 'console.sock'), r));
});

afterEach(async () => {
  serial?.destroy();
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const hubFor = () => new ConsoleHub({ host: 'host1', socketPath: () => join(dir, 'console.sock') });
const until = (ok: () => boolean, message: string) =>
  waitFor(async () => ok() || undefined, { timeoutMs: 5000, intervalMs: 5, message });

describe('the console hub', () => {
  it('shares one serial connection: output to every client, keys from the writer only', async () => {
    const hub = hubFor();
    const w = peer();
    const r = peer();
    const writer = await hub.attach('vm1', w.port, 'write');
    const reader = await hub.attach('vm1', r.port, 'read');
    expect(w.p.controls[0]).toEqual({ type: 'hello', vm: 'vm1', host: 'host1', mode: 'write' });
    expect(r.p.controls[0]).toEqual({ type: 'hello', vm: 'vm1', host: 'host1', mode: 'read' });
    await until(() => serial !== undefined, 'no connection');
    expect(accepted).toBe(1);
    serial!.write('login: ');
    await until(() => w.p.out === 'login: ' && r.p.out === 'login: ', 'output not shared');
    writer.keys(Buffer.from('root\n'));
    reader.keys(Buffer.from('rm -rf /\n'));
    reader.keys(Buffer.from('again\n'));
    await until(() => typed === 'root\n', 'keys not written');
    // A reader is told once that its keys go nowhere.
    expect(r.p.controls.filter((c) => c.type === 'notice')).toEqual([
      { type: 'notice', message: expect.stringMatching(/attached read-only/) },
    ]);
    writer.detach();
    reader.detach();
    await until(
      () => serial!.destroyed || serial!.readableEnded,
      'the last detach did not close the connection',
    );
  });

  it('lets a new writer take over; the previous one becomes a reader and may take the keyboard back', async () => {
    const hub = hubFor();
    const a = peer();
    const b = peer();
    const first = await hub.attach('vm1', a.port, 'write');
    const second = await hub.attach('vm1', b.port, 'write');
    expect(a.p.controls).toContainEqual({ type: 'mode', mode: 'read' });
    first.keys(Buffer.from('x'));
    expect(a.p.controls.at(-1)).toMatchObject({ type: 'notice', message: expect.stringMatching(/takeover/) });
    first.takeover();
    expect(a.p.controls).toContainEqual({ type: 'mode', mode: 'write' });
    expect(b.p.controls).toContainEqual({ type: 'mode', mode: 'read' });
    first.keys(Buffer.from('mine\n'));
    second.keys(Buffer.from('theirs\n'));
    await until(() => typed === 'mine\n', 'the writer after takeover is not the one typing');
    await hub.close();
  });

  it('drops output for a slow client with a notice instead of queueing it', async () => {
    const hub = hubFor();
    const slow = peer(300 * 1024);
    const fast = peer();
    await hub.attach('vm1', slow.port, 'read');
    await hub.attach('vm1', fast.port, 'read');
    await until(() => serial !== undefined, 'no connection');
    serial!.write('lost');
    await until(() => fast.p.out === 'lost', 'no output');
    expect(slow.p.out).toBe('');
    slow.p.backlog = 0;
    serial!.write('seen');
    await until(() => slow.p.out === 'seen', 'no output after draining');
    expect(slow.p.controls.at(-1)).toEqual({
      type: 'notice',
      message: '4 bytes of console output were dropped: this client reads too slowly',
    });
    await hub.close();
  });

  it('closes every client when the serial socket closes (the VM stopped), and opens afresh later', async () => {
    const hub = hubFor();
    const a = peer();
    await hub.attach('vm1', a.port, 'read');
    await until(() => serial !== undefined, 'no connection');
    serial!.destroy();
    await until(() => a.p.closed !== undefined, 'client not closed');
    expect(a.p.closed).toEqual({ code: 1000, reason: expect.stringMatching(/VM stopped/) });
    const b = peer();
    await hub.attach('vm1', b.port, 'read');
    await until(() => accepted === 2, 'no new connection');
    await hub.close();
  });

  it('refuses more clients than its bound, and an oversized keys frame', async () => {
    const hub = new ConsoleHub({ host: 'h', socketPath: () => join(dir, 'console.sock'), maxClients: 1 });
    const a = peer();
    const w = await hub.attach('vm1', a.port, 'write');
    await expect(hub.attach('vm1', peer().port, 'read')).rejects.toThrow(/1 clients attached already/);
    w.keys(Buffer.alloc(5000));
    expect(a.p.controls.at(-1)).toMatchObject({ message: expect.stringMatching(/5000 bytes was refused/) });
    await hub.close();
  });
});

describe('the serial socket check', () => {
  it('refuses a link, a regular file and a missing socket, naming the VM', async () => {
    symlinkSync(join(dir, 'console.sock'), join(dir, 'link.sock'));
    writeFileSync(join(dir, 'file.sock'), '');
    await expect(assertConsoleSocket(join(dir, 'console.sock'), 'vm1')).resolves.toBeUndefined();
    await expect(assertConsoleSocket(join(dir, 'link.sock'), 'vm1')).rejects.toThrow(
      /vm1's serial console .* is a symbolic link: refused/,
    );
    await expect(assertConsoleSocket(join(dir, 'file.sock'), 'vm1')).rejects.toThrow(/is not a unix socket/);
    await expect(assertConsoleSocket(join(dir, 'none.sock'), 'vm1')).rejects.toThrow(/is it running/);
  });
});
