import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  BadResponseError,
  InvalidRequestError,
  TimeoutError,
  UnavailableError,
} from '../../shared/errors.js';
import { TgtClient, tgtSocketPath } from './tgt-client.js';
import { encodeTgtRequest, isTgtError, TGTADM_REQ_BYTES, TgtError, TgtMode, TgtOp } from './tgt-protocol.js';

/** A request as the fake tgtd decoded it from the wire (struct tgtadm_req, little-endian). */
interface Seen {
  mode: number;
  op: number;
  lld: string;
  len: number;
  tid: number;
  sid: bigint;
  lun: bigint;
  cid: number;
  acDir: number;
  force: number;
  params: string;
}

function decode(b: Buffer): Seen {
  return {
    mode: b.readUInt32LE(0),
    op: b.readUInt32LE(4),
    lld: b.subarray(8, 72).toString('ascii').replace(/\0+$/, ''),
    len: b.readUInt32LE(72),
    tid: b.readInt32LE(76),
    sid: b.readBigUInt64LE(80),
    lun: b.readBigUInt64LE(88),
    cid: b.readUInt32LE(96),
    acDir: b.readUInt32LE(108),
    force: b.readUInt32LE(116),
    params: b.subarray(TGTADM_REQ_BYTES).toString('utf8'),
  };
}

/** What the fake answers: an error number, text, or raw bytes (for broken answers), or nothing at all. */
type Answer = { err?: number; text?: string; raw?: Buffer; silent?: boolean; pieces?: number };

function rsp(err: number, text: string): Buffer {
  const body = text ? Buffer.from(`${text}\0`) : Buffer.alloc(0);
  const h = Buffer.alloc(8);
  h.writeUInt32LE(err, 0);
  h.writeUInt32LE(err ? 8 : 8 + body.length, 4);
  return err ? h : Buffer.concat([h, body]);
}

// A fake tgtd: reads the header, then `len - 120` more bytes, as mgmt.c does, then answers.
describe('TgtClient against a fake tgtd socket', () => {
  let dir = '';
  let server: Server;
  const seen: Seen[] = [];
  let answer: Answer = {};
  let client: TgtClient;
  const prefix = () => join(dir, 'socket');

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-tgt-'));
    server = createServer((s: Socket) => {
      let buf = Buffer.alloc(0);
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < TGTADM_REQ_BYTES) return;
        const len = buf.readUInt32LE(72);
        if (buf.length < len) return;
        seen.push(decode(buf.subarray(0, len)));
        if (answer.silent) return;
        const out = answer.raw ?? rsp(answer.err ?? 0, answer.text ?? '');
        if (!answer.pieces) {
          s.end(out);
          return;
        }
        // In small pieces, each its own write after a pause: the header itself arrives split.
        const size = Math.ceil(out.length / answer.pieces);
        void (async () => {
          for (let at = 0; at < out.length; at += size) {
            s.write(out.subarray(at, at + size));
            await new Promise((r) => setTimeout(r, 2));
          }
          s.end();
        })();
      });
    });
    await new Promise<void>((r) => server.listen(tgtSocketPath(9, prefix()), r));
    client = new TgtClient({
      controlPort: 9,
      socketPrefix: prefix(),
      timeoutMs: 500,
      maxResponseBytes: 4096,
    });
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    seen.length = 0;
    answer = {};
  });

  it('sends the header tgtadm sends, with the parameters NUL-terminated after it', async () => {
    await client.newLun(3, 1, '/pools/p/v1.img');
    expect(seen).toEqual([
      {
        mode: TgtMode.device,
        op: TgtOp.new,
        lld: 'iscsi',
        len: TGTADM_REQ_BYTES + 'path=/pools/p/v1.img,bstype=rdwr\0'.length,
        tid: 3,
        sid: 0n,
        lun: 1n,
        cid: 0,
        acDir: 0,
        force: 0,
        params: 'path=/pools/p/v1.img,bstype=rdwr\0',
      },
    ]);
  });

  it('asks for all targets with tid -1 and no LUN, and parses the answer', async () => {
    answer = { text: 'Target 4: iqn.2026-12.io.vmlink:h.p.v\n    ACL information:\n        ALL\n' };
    const targets = await client.showTargets();
    expect(seen[0]).toMatchObject({ mode: TgtMode.target, op: TgtOp.show, tid: -1, len: TGTADM_REQ_BYTES });
    expect(seen[0]!.lun).toBe(0xffff_ffff_ffff_ffffn);
    expect(targets).toMatchObject([{ tid: 4, name: 'iqn.2026-12.io.vmlink:h.p.v', acls: ['ALL'] }]);
  });

  it('puts the CHAP password only in the request body, user first, as tgtd parses it', async () => {
    await client.newAccount('chap-user', 'S3cret,with=odd');
    expect(seen[0]).toMatchObject({ mode: TgtMode.account, op: TgtOp.new });
    expect(seen[0]!.params).toBe('user=chap-user,password=S3cret,with=odd\0');
  });

  it('names tgtd refusals with tgtadm wording and a kind, never the password', async () => {
    answer = { err: 14 };
    const e = await client.newAccount('u1', 'topsecret12').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TgtError);
    expect(isTgtError(e, 'USER_EXIST')).toBe(true);
    expect((e as TgtError).kind).toBe('conflict');
    expect((e as Error).message).toBe('tgtd refused to create account u1: this account already exists');
    expect((e as Error).message).not.toContain('topsecret12');

    answer = { err: 4 };
    const nf = await client.deleteTarget(7).catch((x: unknown) => x);
    expect((nf as TgtError).kind).toBe('not-found');
    expect((nf as Error).message).toContain("can't find the target");

    answer = { err: 19 };
    expect(isTgtError(await client.deleteTarget(7).catch((x: unknown) => x), 'TARGET_ACTIVE')).toBe(true);
    answer = { err: 99 };
    expect(((await client.deleteTarget(7).catch((x: unknown) => x)) as Error).message).toContain(
      'tgtadm error 99',
    );
  });

  it('sends force, account direction and initiator addresses where asked', async () => {
    await client.deleteTarget(5, true);
    await client.bindAccount(5, 'u1');
    await client.bindInitiatorAddress(5, '192.168.10.0/24');
    expect(seen.map((s) => [s.mode, s.op, s.tid, s.force, s.params])).toEqual([
      [TgtMode.target, TgtOp.delete, 5, 1, ''],
      [TgtMode.account, TgtOp.bind, 5, 0, 'user=u1\0'],
      [TgtMode.target, TgtOp.bind, 5, 0, 'initiator-address=192.168.10.0/24\0'],
    ]);
  });

  it('closes one connection of one session (tgtadm --op delete --mode conn --tid --sid --cid)', async () => {
    await client.closeConnection(4, 258, 1);
    expect(seen).toEqual([
      {
        mode: TgtMode.connection,
        op: TgtOp.delete,
        lld: 'iscsi',
        len: TGTADM_REQ_BYTES,
        tid: 4,
        sid: 258n,
        lun: 0xffff_ffff_ffff_ffffn,
        cid: 1,
        acDir: 0,
        force: 0,
        params: '',
      },
    ]);
    answer = { err: 6 };
    const e = await client.closeConnection(4, 9, 0).catch((x: unknown) => x);
    expect(isTgtError(e, 'NO_SESSION')).toBe(true);
    expect((e as Error).message).toBe(
      "tgtd refused to close connection 0 of session 9 on target 4: can't find the session",
    );
    // A session id is a 16-bit TSIH, never 0; ids out of range never reach tgtd.
    seen.length = 0;
    await expect(client.closeConnection(4, 0, 0)).rejects.toThrow(InvalidRequestError);
    await expect(client.closeConnection(4, 70_000, 0)).rejects.toThrow(InvalidRequestError);
    await expect(client.closeConnection(4, 1, -1)).rejects.toThrow(InvalidRequestError);
    await expect(client.closeConnection(0, 1, 0)).rejects.toThrow(InvalidRequestError);
    expect(seen).toEqual([]);
  });

  it('refuses values tgtd would misparse, before connecting', async () => {
    await expect(client.newLun(1, 1, '/pools/a,b.img')).rejects.toThrow(InvalidRequestError);
    await expect(client.newTarget(1, 'not an iqn')).rejects.toThrow(InvalidRequestError);
    await expect(client.newTarget(0, 'iqn.2026-12.io.vmlink:a')).rejects.toThrow(InvalidRequestError);
    await expect(client.newAccount('u,1', 'password12')).rejects.toThrow(InvalidRequestError);
    const e = await client.newAccount('u1', 'has space').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(InvalidRequestError);
    expect((e as Error).message).not.toContain('has space');
    await expect(client.bindInitiatorAddress(1, '10.0.0.1,ALL')).rejects.toThrow(InvalidRequestError);
    expect(seen).toEqual([]);
    expect(() => encodeTgtRequest({ mode: 0, op: 0, params: [['x', 'y'.repeat(9000)]] })).toThrow(/8192/);
  });

  it('refuses an answer longer than its cap or than it said, and a truncated one', async () => {
    answer = { text: 'x'.repeat(5000) };
    await expect(client.showSystem()).rejects.toThrow(BadResponseError);
    const h = Buffer.alloc(8);
    h.writeUInt32LE(0, 0);
    h.writeUInt32LE(12, 4);
    answer = { raw: Buffer.concat([h, Buffer.from('abcdefgh')]) };
    await expect(client.showSystem()).rejects.toThrow(/longer than it said/);
    h.writeUInt32LE(100, 4);
    answer = { raw: Buffer.concat([h, Buffer.from('abc')]) };
    await expect(client.showSystem()).rejects.toThrow(/before answering/);
    h.writeUInt32LE(4, 4);
    answer = { raw: h };
    await expect(client.showSystem()).rejects.toThrow(/bad length 4/);
  });

  it('reassembles an answer that arrives in pieces', async () => {
    answer = { text: 'System:\n    State: ready\n', pieces: 7 };
    expect(await client.showSystem()).toBe('System:\n    State: ready\n');
  });

  it('times out when tgtd never answers', async () => {
    answer = { silent: true };
    await expect(client.showSystem()).rejects.toThrow(TimeoutError);
  });

  it('says tgtd is not answering when nothing listens', async () => {
    const none = new TgtClient({ controlPort: 10, socketPrefix: prefix() });
    await expect(none.showSystem()).rejects.toThrow(UnavailableError);
  });

  it('checks the control port', () => {
    expect(tgtSocketPath(3)).toBe('/var/run/tgtd/socket.3');
    expect(() => tgtSocketPath(40_000)).toThrow(InvalidRequestError);
    expect(() => tgtSocketPath(-1)).toThrow(InvalidRequestError);
  });
});
