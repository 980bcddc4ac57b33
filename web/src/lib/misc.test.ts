import { describe, expect, it } from 'vitest';
import { Backoff } from './backoff.js';
import { readControl } from './control.js';
import { ApiError, apiErrorOf } from './errors.js';

describe('backoff', () => {
  it('doubles per failure up to the cap and resets on success', () => {
    const b = new Backoff(1000, 8000, () => 0);
    expect(b.next()).toBe(1000);
    b.failed();
    expect(b.next()).toBe(2000);
    for (let i = 0; i < 50; i++) b.failed();
    expect(b.next()).toBe(8000);
    b.succeeded();
    expect(b.next()).toBe(1000);
    expect(new Backoff(1000, 1050, () => 1).next()).toBe(1050);
  });
});

describe('API errors in words', () => {
  it("uses the controller's message and lists a spec's issues", () => {
    const e = apiErrorOf(
      422,
      JSON.stringify({
        error: {
          kind: 'invalid-spec',
          message: 'spec is invalid',
          issues: [{ path: 'vms.0.name', message: 'bad' }],
        },
      }),
      'Planning the spec',
    );
    expect(e).toBeInstanceOf(ApiError);
    expect(e.message).toBe('Planning the spec failed: spec is invalid\nvms.0.name: bad');
    expect(e.kind).toBe('invalid-spec');
    expect(e.status).toBe(422);
  });

  it('says what a bare status means', () => {
    expect(apiErrorOf(401, '', 'Reading the VMs').message).toMatch(/session has expired.*vmlink ui/);
    expect(apiErrorOf(403, '<html>', 'Stopping a').message).toBe(
      'Stopping a failed: your role does not allow this',
    );
    expect(apiErrorOf(418, 'x', 'X').message).toBe('X failed: the controller answered HTTP 418');
  });

  it('cuts a very long message', () => {
    const e = apiErrorOf(
      500,
      JSON.stringify({ error: { kind: 'internal', message: 'x'.repeat(10_000) } }),
      'Y',
    );
    expect(e.message.length).toBeLessThan(2100);
  });
});

describe('console control frames', () => {
  it('reads hello and mode changes', () => {
    expect(readControl('{"type":"hello","vm":"a","host":"h1","mode":"write"}')).toEqual({
      type: 'mode',
      mode: 'write',
      text: 'attached: keys go to the guest on host h1',
    });
    expect(readControl('{"type":"mode","mode":"read"}')).toMatchObject({ type: 'mode', mode: 'read' });
  });

  it('shows notices bounded and ignores what it does not know', () => {
    expect(readControl('{"type":"notice","message":"output dropped"}')).toEqual({
      type: 'notice',
      text: 'output dropped',
    });
    expect(readControl(JSON.stringify({ type: 'notice', message: 'y'.repeat(9000) }))).toMatchObject({
      type: 'notice',
    });
    expect(
      (readControl(JSON.stringify({ type: 'notice', message: 'y'.repeat(9000) })) as { text: string }).text,
    ).toHaveLength(500);
    expect(readControl('{"type":"other"}')).toEqual({ type: 'ignored' });
    expect(readControl('null')).toEqual({ type: 'ignored' });
    expect(readControl('x'.repeat(20_000))).toEqual({ type: 'ignored' });
    expect(readControl('plain words')).toEqual({ type: 'notice', text: 'plain words' });
  });
});
