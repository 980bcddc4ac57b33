import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { compress } from 'zstd-napi';
import { InvalidRequestError, InvalidStateError } from '../../shared/errors.js';
import {
  ETCD_VALUE_MAX_BYTES,
  STORE_COMPRESS_MIN_BYTES,
  STORE_VALUE_MAX_BYTES,
} from '../../shared/limits.js';
import { isZstdFrame } from '../../shared/zstd.js';
import { fleetLikeText } from './conformance.js';
import { decodeEtcdValue, encodeEtcdPlain, encodeEtcdValue, storeValueText } from './value-codec.js';

const raw = (v: string | Buffer) => (typeof v === 'string' ? Buffer.from(v) : v);

describe('store values in etcd', () => {
  it('keeps small values plain JSON (agents read owner records straight from etcd)', () => {
    const owner = { host: 'h0001', token: '42', reason: 'spec' };
    const e = encodeEtcdValue(owner, 'owners/web');
    expect(e).toBe(JSON.stringify(owner));
    expect(decodeEtcdValue(raw(e), 'owners/web')).toEqual(owner);
  });

  it('compresses a spec-sized value into one frame under the etcd limit, and reads it back', () => {
    const spec = {
      text: fleetLikeText(1_400_000),
      source: 'fleet.yaml',
      appliedAt: '2026-12-02T00:00:00.000Z',
    };
    const e = encodeEtcdValue(spec, 'spec/current');
    expect(Buffer.isBuffer(e)).toBe(true);
    expect(isZstdFrame(e as Buffer)).toBe(true);
    expect((e as Buffer).length).toBeLessThan(ETCD_VALUE_MAX_BYTES / 4);
    expect(decodeEtcdValue(e as Buffer, 'spec/current')).toEqual(spec);
    // Just under the threshold stays plain; at it, compressed.
    const under = 'a'.repeat(STORE_COMPRESS_MIN_BYTES - 3);
    expect(typeof encodeEtcdValue(under, 'k')).toBe('string');
    expect(Buffer.isBuffer(encodeEtcdValue(`${under}a`, 'k'))).toBe(true);
  });

  it('still reads values stored plain before (a large spec text of an older vmlink)', () => {
    const old = JSON.stringify({ text: fleetLikeText(200_000), source: 's' });
    expect(decodeEtcdValue(Buffer.from(old), 'spec/current')).toEqual(JSON.parse(old));
  });

  it('refuses what does not fit, naming the key, before writing', () => {
    expect(() => encodeEtcdValue('x'.repeat(STORE_VALUE_MAX_BYTES), 'spec/current')).toThrow(
      InvalidRequestError,
    );
    expect(() => storeValueText('x'.repeat(STORE_VALUE_MAX_BYTES), 'spec/current')).toThrow(/spec\/current/);
    // Incompressible: over the etcd limit even compressed.
    const noise = randomBytes(ETCD_VALUE_MAX_BYTES).toString('base64');
    expect(() => encodeEtcdValue(noise, 'blob')).toThrow(/blob is \d+ bytes of JSON, \d+ compressed/);
    expect(() => storeValueText(undefined, 'k')).toThrow(/not JSON-serialisable/);
    // Keys agents read are never compressed and keep the etcd limit as plain text.
    expect(encodeEtcdPlain({ hosts: [] }, 'members')).toBe('{"hosts":[]}');
    expect(() => encodeEtcdPlain('y'.repeat(ETCD_VALUE_MAX_BYTES), 'members')).toThrow(/read by agents/);
  });

  it('refuses planted values: too large as stored, a zip bomb, a broken frame, not JSON', () => {
    expect(() => decodeEtcdValue(Buffer.alloc(ETCD_VALUE_MAX_BYTES + 1, 0x20), 'k')).toThrow(/over the/);
    // A few KiB that would expand past the store's value limit: refused by its declared size, never expanded.
    const bomb = compress(Buffer.alloc(STORE_VALUE_MAX_BYTES + 1, 0x20));
    expect(bomb.length).toBeLessThan(4096);
    expect(() => decodeEtcdValue(bomb, 'spec/current')).toThrow(InvalidStateError);
    expect(() => decodeEtcdValue(bomb, 'spec/current')).toThrow(/spec\/current .*declares/);
    // A frame that hides its size (content size field cut out by a broken header) or lies: refused.
    const good = compress(Buffer.from(JSON.stringify('hello '.repeat(20_000))));
    const cut = Buffer.from(good.subarray(0, good.length - 20));
    expect(() => decodeEtcdValue(cut, 'k')).toThrow(/not a readable compressed value/);
    const garbage = Buffer.concat([good.subarray(0, 4), randomBytes(64)]);
    expect(() => decodeEtcdValue(garbage, 'k')).toThrow(InvalidStateError);
    expect(() => decodeEtcdValue(compress(Buffer.from('{not json')), 'k')).toThrow(/not JSON/);
  });
});
