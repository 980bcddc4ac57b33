import { describe, expect, it } from 'vitest';
import { parseDuration } from './host-commands.js';

describe('parseDuration', () => {
  it('reads seconds, minutes and hours, and refuses anything else naming the option', () => {
    expect(parseDuration('90')).toBe(90);
    expect(parseDuration('90s')).toBe(90);
    expect(parseDuration('15m')).toBe(900);
    expect(parseDuration('1h')).toBe(3600);
    expect(parseDuration('30d', '--expires')).toBe(2_592_000);
    for (const bad of ['', '1w', '-5m', '1.5h', 'soon']) expect(() => parseDuration(bad)).toThrow(/--ttl/);
  });
});
