import { describe, expect, it } from 'vitest';
import {
  checkClientVersion,
  checkServerVersion,
  formatVersionHeader,
  localVersion,
  PROTOCOLS,
  parseVersionHeader,
  VERSION,
  VersionMismatchError,
  versionMismatch,
} from './version.js';

const v = (version: number, min: number, software: string) => ({ version, min, software });

describe('protocol versions', () => {
  it('this build speaks a non-empty range of each protocol and sends it in a header that reads back', () => {
    for (const p of ['wire', 'api'] as const) {
      expect(PROTOCOLS[p].min).toBeLessThanOrEqual(PROTOCOLS[p].version);
      expect(parseVersionHeader(formatVersionHeader(localVersion(p)))).toEqual({
        ...PROTOCOLS[p],
        software: VERSION,
      });
    }
    expect(formatVersionHeader(v(3, 2, '0.4.0'))).toBe('3;min=2;software=0.4.0');
  });

  it('reads a missing header as a process from before versions (version 1), and refuses malformed ones', () => {
    expect(parseVersionHeader(undefined)).toMatchObject({ version: 1, min: 1 });
    for (const bad of ['', '2', '2;min=3;software=x', '1;min=1;software=a b', 'x;min=1;software=1'])
      expect(parseVersionHeader(bad), bad).toBeUndefined();
    expect(checkClientVersion('wire', 'garbage')?.message).toMatch(
      /malformed x-vmlink-wire header "garbage"/,
    );
  });

  it('accepts overlapping ranges, whichever side is newer', () => {
    expect(versionMismatch('wire', v(2, 1, '0.2.0'), v(1, 1, '0.1.0'))).toBeUndefined();
    expect(versionMismatch('wire', v(1, 1, '0.1.0'), v(3, 1, '0.3.0'))).toBeUndefined();
    expect(versionMismatch('api', v(2, 2, '0.2.0'), v(2, 2, '0.2.0'))).toBeUndefined();
  });

  it('names both sides and says to upgrade the agent when it is too old for the controller', () => {
    const e = versionMismatch('wire', v(3, 2, '0.3.0'), v(1, 1, '0.1.0'), 'agent of host1');
    expect(e).toBeInstanceOf(VersionMismatchError);
    expect(e?.kind).toBe('unsupported');
    expect(e?.message).toBe(
      'agent wire versions differ: the controller runs vmlink 0.3.0 (agent wire 2-3), the agent of host1 runs ' +
        "vmlink 0.1.0 (agent wire 1); upgrade the agent of host1 to a vmlink that speaks agent wire 2 or later (the controller's 0.3.0 or newer)",
    );
  });

  it('says to upgrade the controller when the agent is too new for it', () => {
    const e = versionMismatch('wire', v(1, 1, '0.1.0'), v(4, 3, '0.5.0'), 'agent of host2');
    expect(e?.message).toMatch(
      /controller runs vmlink 0\.1\.0 \(agent wire 1\), the agent of host2 runs vmlink 0\.5\.0/,
    );
    expect(e?.message).toMatch(
      /upgrade the controller to a vmlink that speaks agent wire 3 or later \(the agent of host2's 0\.5\.0/,
    );
  });

  it('speaks of the CLI and the controller for the API', () => {
    expect(versionMismatch('api', v(1, 1, '0.1.0'), v(5, 4, '0.9.0'))?.message).toMatch(
      /^API versions differ: the CLI runs vmlink 0\.1\.0 \(API 1\), the controller runs vmlink 0\.9\.0 \(API 4-5\); upgrade the CLI/,
    );
  });

  it('judges a server answer without a header as version 1 (a server from before versions)', () => {
    expect(checkServerVersion('api', undefined)).toBeUndefined();
    // Wire 2 (batches) dropped wire 1: an agent from before versions is told to upgrade.
    expect(checkServerVersion('wire', undefined)?.message).toMatch(/upgrade the agent/);
    expect(
      checkServerVersion(
        'wire',
        `${PROTOCOLS.wire.version + 5};min=${PROTOCOLS.wire.version + 1};software=9.0.0`,
      )?.message,
    ).toMatch(/upgrade the controller/);
  });
});
