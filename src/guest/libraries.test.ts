import { describe, expect, it } from 'vitest';
import { parseReadelf } from './libraries.js';

describe('readelf output parser', () => {
  it('reads NEEDED libraries and the interpreter', () => {
    const out = `Program Headers:
      [Requesting program interpreter: /lib64/ld-linux-x86-64.so.2]
Dynamic section at offset 0x10 contains 30 entries:
 0x0000000000000001 (NEEDED)             Shared library: [libglib-2.0.so.0]
 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]
`;
    expect(parseReadelf(out)).toEqual({
      needed: ['libglib-2.0.so.0', 'libc.so.6'],
      interp: '/lib64/ld-linux-x86-64.so.2',
    });
    expect(parseReadelf('')).toEqual({ needed: [] });
  });
});
