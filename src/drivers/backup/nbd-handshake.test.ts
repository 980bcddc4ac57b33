// The NBD client's handshake (nbd-handshake.ts) against the fake server: a lacking dirty bitmap or export, a server
// without the fixed newstyle handshake, a socket nobody serves, and option replies that break the protocol (oversized,
// a context not asked for, GO without the export's info, silence).
import { describe, expect, it } from 'vitest';
import { NotFoundError, UnavailableError, UnsupportedError } from '../../shared/errors.js';
import { connectNbd } from './nbd-client.js';
import { DIRTY, useFakeServers } from './nbd-fake-server.test-util.js';
import { NbdOpt, NbdRep } from './nbd-protocol.js';

const { fake, unserved } = useFakeServers();

describe('the NBD handshake', () => {
  it('refuses clearly when the server lacks a dirty bitmap or the export', async () => {
    const f = await fake({ contexts: { 'base:allocation': (_o, l) => [[l, 0]] } });
    await expect(
      connectNbd({ socket: f.socket, exportName: 'disk', contexts: ['base:allocation', DIRTY] }),
    ).rejects.toThrow(
      `NBD export "disk" on ${f.socket} has no dirty bitmap vmlink-nightly-20261201T120000Z (the server does not export it)`,
    );
    await expect(connectNbd({ socket: f.socket, exportName: 'disk', contexts: [DIRTY] })).rejects.toThrow(
      UnsupportedError,
    );
    const err = await connectNbd({ socket: f.socket, exportName: 'vdb' }).catch((e) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err.message).toMatch(/NBD export "vdb" on .* not found \(unknown export: no such export\)/);
  });

  it('refuses a server without the fixed newstyle handshake, and a socket nobody serves', async () => {
    const f = await fake({ noFixed: true });
    await expect(connectNbd({ socket: f.socket, exportName: 'disk' })).rejects.toThrow(UnsupportedError);
    await expect(connectNbd({ socket: unserved(), exportName: 'disk' })).rejects.toThrow(UnavailableError);
  });

  it('handshake: an oversized option reply, a context not asked for, GO without the export info', async () => {
    const big = await fake({
      onOption: (opt, _d) => (opt === NbdOpt.STRUCTURED_REPLY ? bigReply(opt) : undefined),
    });
    function bigReply(opt: number): Buffer {
      const h = big.optReply(opt, NbdRep.ACK);
      h.writeUInt32BE(1 << 30, 16);
      return h;
    }
    await expect(connectNbd({ socket: big.socket, exportName: 'disk' })).rejects.toThrow(
      /option reply of 1073741824 bytes/,
    );
    const sneaky = await fake({
      onOption: (opt) => {
        if (opt !== NbdOpt.SET_META_CONTEXT) return undefined;
        const r = Buffer.concat([Buffer.from([0, 0, 0, 1]), Buffer.from('qemu:allocation-depth')]);
        return Buffer.concat([
          sneaky.optReply(opt, NbdRep.META_CONTEXT, r),
          sneaky.optReply(opt, NbdRep.ACK),
        ]);
      },
    });
    await expect(
      connectNbd({ socket: sneaky.socket, exportName: 'disk', contexts: ['base:allocation'] }),
    ).rejects.toThrow(/meta context "qemu:allocation-depth" was not asked for/);
    const noInfo = await fake({
      onOption: (opt) => (opt === NbdOpt.GO ? noInfo.optReply(opt, NbdRep.ACK) : undefined),
    });
    await expect(connectNbd({ socket: noInfo.socket, exportName: 'disk' })).rejects.toThrow(
      /GO acknowledged without NBD_INFO_EXPORT/,
    );
    const silent = await fake({ onOption: () => Buffer.alloc(0) });
    await expect(connectNbd({ socket: silent.socket, exportName: 'disk', timeoutMs: 300 })).rejects.toThrow(
      /no handshake within 300 ms/,
    );
  });
});
