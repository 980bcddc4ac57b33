import { describe, expect, it } from 'vitest';
import { InvalidStateError } from '../../shared/errors.js';
import { ETCD_RESPONSE_MAX_BYTES, ETCD_VALUE_MAX_BYTES } from '../../shared/limits.js';
import {
  counterKey,
  parseCounter,
  parseSequenceKey,
  RANGE_PAGE_KEYS,
  RANGE_PAGE_TARGET_BYTES,
  rangePageKeys,
  SEQUENCE_DIGITS,
  SMALL_VALUE_PREFIXES,
  sequenceKey,
  valueMaxBytes,
} from './etcd.js';

describe('etcd store: log keys', () => {
  it('pads sequences so that keys sort as numbers do', () => {
    expect(sequenceKey('/vmlink/events/', 42)).toBe('/vmlink/events/0000000000000042');
    const keys = [1, 9, 10, 99, 100, 123456789].map((n) => sequenceKey('p/', n));
    expect([...keys].sort()).toEqual(keys);
    expect(sequenceKey('p/', Number.MAX_SAFE_INTEGER)).toHaveLength(2 + SEQUENCE_DIGITS);
    expect(() => sequenceKey('p/', -1)).toThrow(RangeError);
    expect(() => sequenceKey('p/', 1.5)).toThrow(RangeError);
  });

  it('reads back only its own entry keys', () => {
    expect(parseSequenceKey('p/', sequenceKey('p/', 7))).toBe(7);
    expect(parseSequenceKey('p/', counterKey('p/'))).toBeUndefined();
    expect(parseSequenceKey('p/', 'q/0000000000000007')).toBeUndefined();
    expect(parseSequenceKey('p/', 'p/000000000000007')).toBeUndefined(); // 15 digits
    expect(parseSequenceKey('p/', 'p/9999999999999999')).toBeUndefined(); // beyond a safe integer
  });

  it('keeps the counter key outside the entries key range', () => {
    const c = counterKey('p/');
    expect(c > sequenceKey('p/', Number.MAX_SAFE_INTEGER)).toBe(true);
  });

  it('accepts a well-formed counter and refuses anything else', () => {
    expect(parseCounter('{"last":5,"first":2}', 'k')).toEqual({ last: 5, first: 2 });
    expect(parseCounter('{"last":0,"first":1}', 'k')).toEqual({ last: 0, first: 1 });
    for (const bad of [
      '',
      'x',
      '5',
      '{"last":5}',
      '{"last":-1,"first":1}',
      '{"last":5,"first":0}',
      '{"last":5,"first":7}',
      '{"last":1e300,"first":1}',
      `{"last":5,"first":1,"pad":"${'x'.repeat(200)}"}`,
    ])
      expect(() => parseCounter(bad, 'k'), bad).toThrow(InvalidStateError);
  });
});

describe('etcd store: range pages', () => {
  it('never asks for more than fits the client’s largest response, at the value limit', () => {
    expect(RANGE_PAGE_KEYS * (ETCD_VALUE_MAX_BYTES + 4 * 4096)).toBeLessThanOrEqual(ETCD_RESPONSE_MAX_BYTES);
    for (const seen of [0, 1, 100, 10_000, 1 << 20, ETCD_VALUE_MAX_BYTES + 20_000]) {
      const n = rangePageKeys(seen);
      expect(n).toBeGreaterThanOrEqual(1);
      expect(n).toBeLessThanOrEqual(RANGE_PAGE_KEYS);
    }
  });

  it('starts small (values unknown), takes many small values at once, few large ones', () => {
    expect(rangePageKeys(0) * ETCD_VALUE_MAX_BYTES).toBeLessThanOrEqual(RANGE_PAGE_TARGET_BYTES);
    expect(rangePageKeys(200)).toBe(RANGE_PAGE_KEYS);
    expect(rangePageKeys(1 << 20)).toBe(Math.floor(RANGE_PAGE_TARGET_BYTES / ((1 << 20) + 256)));
  });

  it('reads a prefix of small bounded values (owner records) thousands a page, still within the largest response', () => {
    const ownerMax = valueMaxBytes('owners/');
    expect(ownerMax).toBeLessThan(ETCD_VALUE_MAX_BYTES);
    expect(valueMaxBytes('owners/web-1')).toBe(ownerMax);
    expect(valueMaxBytes('hosts/h1')).toBe(ETCD_VALUE_MAX_BYTES);
    for (const { valueMaxBytes: max } of SMALL_VALUE_PREFIXES)
      for (const seen of [0, 1, 300, max + 4 * 4096 + 1000]) {
        const n = rangePageKeys(seen, max);
        expect(n * (max + 4 * 4096)).toBeLessThanOrEqual(ETCD_RESPONSE_MAX_BYTES);
        expect(n).toBeGreaterThan(RANGE_PAGE_KEYS);
      }
    // 20,000 owner records of ~250 bytes: at most 10 requests (was ~318 at RANGE_PAGE_KEYS a page).
    expect(Math.ceil(20_000 / rangePageKeys(300, ownerMax))).toBeLessThanOrEqual(10);
    // A bound above the value limit changes nothing.
    expect(rangePageKeys(0, 1 << 30)).toBe(rangePageKeys(0));
  });
});
