import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ipv4 } from './schema-primitives.js';

// The rule the single regex stands for: four dotted decimal octets, each 0-255, written without leading zeros.
const byRule = (s: string): boolean =>
  /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(s) &&
  s.split('.').every((o) => Number(o) <= 255 && String(Number(o)) === o);

describe('ipv4', () => {
  it('takes dotted quads of 0-255 and refuses leading zeros, out-of-range octets and anything else', () => {
    for (const good of ['0.0.0.0', '10.0.0.5', '255.255.255.255', '192.168.1.100', '1.22.199.249'])
      expect(ipv4.safeParse(good).success, good).toBe(true);
    for (const bad of [
      '',
      '10.0.0',
      '10.0.0.5.1',
      '256.0.0.1',
      '10.0.0.05',
      '01.2.3.4',
      '1.2.3.4 ',
      ' 1.2.3.4',
      '1.2.3.-4',
      '1..2.3',
      'a.b.c.d',
      '1.2.3.4\n',
      '1000.1.1.1',
    ])
      expect(ipv4.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
  });

  it('agrees with the rule on arbitrary dotted strings', () => {
    const part = fc.oneof(
      fc.integer({ min: 0, max: 300 }).map(String),
      fc.stringMatching(/^[0-9]{1,4}$/),
      fc.string({ maxLength: 3 }),
    );
    fc.assert(
      fc.property(fc.array(part, { minLength: 1, maxLength: 5 }), (parts) => {
        const s = parts.join('.');
        expect(ipv4.safeParse(s).success).toBe(byRule(s));
      }),
      { numRuns: 5_000 },
    );
  });
});
