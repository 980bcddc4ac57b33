import { describe, expect, it } from 'vitest';
import { canonicalJson, configHash } from './hash.js';

describe('configHash', () => {
  it('is 16 hex digits and ignores key order and undefined members', () => {
    const h = configHash({ b: 1, a: { y: [1, 2], x: 'z' } });
    expect(h).toMatch(/^[0-9a-f]{16}$/);
    expect(configHash({ a: { x: 'z', y: [1, 2] }, b: 1, c: undefined })).toBe(h);
    expect(configHash({ a: { x: 'z', y: [2, 1] }, b: 1 })).not.toBe(h);
  });

  it('writes canonical JSON', () => {
    expect(canonicalJson({ b: [{ d: 1, c: null }], a: 'x' })).toBe('{"a":"x","b":[{"c":null,"d":1}]}');
  });
});
