import { describe, expect, it } from 'vitest';
import { parseScopes, parseSince } from './token-commands.js';

describe('token command options', () => {
  it('reads repeated --scope options, adding up a kind given twice', () => {
    expect(parseScopes(['hosts=h1,h2', 'vms=web*', 'hosts=h3'])).toEqual({
      hosts: ['h1', 'h2', 'h3'],
      vms: ['web*'],
    });
    expect(parseScopes([])).toEqual({});
    for (const bad of ['disks=d1', 'hosts', 'hosts=']) expect(() => parseScopes([bad])).toThrow(/--scope/);
  });

  it('reads --since as a time or a duration back from now', () => {
    const now = Date.parse('2026-01-02T00:00:00Z');
    expect(parseSince('1d', now)).toBe('2026-01-01T00:00:00.000Z');
    expect(parseSince('2026-01-01T12:00:00+01:00', now)).toBe('2026-01-01T11:00:00.000Z');
    expect(() => parseSince('yesterday', now)).toThrow(/--since/);
  });
});
