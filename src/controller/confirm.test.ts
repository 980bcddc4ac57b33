import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeHost } from '../../test/helpers/fake-agents.js';
import type { AgentAction } from '../agent/wire.js';
import { InvalidStateError } from '../shared/errors.js';
import { actConfirmed, type ConfirmTiming, RolledBackError } from './confirm.js';
import type { AgentPort } from './hosts.js';
import type { TaskContext } from './tasks.js';

const timing: ConfirmTiming = {
  minSendMs: 50,
  queryMs: 50,
  retryMs: 20,
  rollbackGraceMs: 50,
  rollbackPollMs: 2_000,
  progressEveryMs: 100,
};
const action: AgentAction = {
  kind: 'uplink.configure',
  uplink: { device: 'eth0', mtu: 9000 },
  configHash: 'abcdef12',
};
const WINDOW_MS = 1_000;

function task(): TaskContext & { lines: string[] } {
  const lines: string[] = [];
  return { lines, progress: (m) => lines.push(m), signal: new AbortController().signal };
}

describe('commit-confirm from the controller', () => {
  let host: FakeHost;
  beforeEach(() => {
    host = new FakeHost('h1');
  });
  afterEach(() => host.close());

  it('confirms a change whose host answers, and the host keeps it', async () => {
    await actConfirmed(host.client(), 'h1', action, WINDOW_MS, task(), timing);
    expect(host.uplink?.mtu).toBe(9000);
    await new Promise((r) => setTimeout(r, WINDOW_MS + 200));
    expect(host.uplink?.mtu).toBe(9000);
  });

  it('confirms through the normal path when only the answer to the change was lost', async () => {
    const real = host.client();
    const lossy: AgentPort = {
      ...real,
      act: async (a, t) => {
        await real.act(a, t);
        throw new Error('socket hang up');
      },
    };
    const t = task();
    await actConfirmed(lossy, 'h1', action, WINDOW_MS, t, timing);
    expect(t.lines).toEqual([
      'h1 did not answer: socket hang up',
      expect.stringMatching(/^waiting for h1/),
      'h1 answers again; change confirmed',
    ]);
    await new Promise((r) => setTimeout(r, WINDOW_MS + 200));
    expect(host.uplink?.mtu).toBe(9000);
  });

  it('reports the rollback when the change cut the host off until it reverted by itself', async () => {
    host.cutsPath = () => true;
    const t = task();
    const err = await actConfirmed(host.client(), 'h1', action, WINDOW_MS, t, timing).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RolledBackError);
    expect((err as Error).message).toBe("cut h1's management path; h1 rolled it back by itself after 1 s.");
    expect(host.uplink).toBeUndefined();
    expect(t.lines).toContain(
      'h1 did not confirm within 1 s; waiting for it to roll the change back by itself',
    );
  });

  it('says when the host failed to roll back', async () => {
    host.cutsPath = () => true;
    host.failRevert = 'RTNETLINK answers: Device or resource busy';
    const err = await actConfirmed(host.client(), 'h1', action, WINDOW_MS, task(), timing).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ kind: 'exec', subject: 'host/h1' });
    expect((err as Error).message).toBe(
      "cut h1's management path; h1 tried to roll it back by itself after 1 s and failed: uplink.configure eth0 was not confirmed within 1 s and rolling it back failed: RTNETLINK answers: Device or resource busy.",
    );
  });

  it('gives up, pointing at the console, when the host never answers again', async () => {
    host.cutsPath = () => {
      host.down = true;
      return true;
    };
    const err = await actConfirmed(host.client(), 'h1', action, WINDOW_MS, task(), {
      ...timing,
      rollbackPollMs: 300,
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'unavailable', subject: 'host/h1' });
    expect((err as Error).message).toMatch(/has not answered since; .* check the host's console/);
  });

  it("passes on the agent's refusal when the change was never armed", async () => {
    const real = host.client();
    const refusing: AgentPort = {
      ...real,
      act: async () => {
        throw new InvalidStateError('commit-confirmed change x is still pending');
      },
    };
    await expect(actConfirmed(refusing, 'h1', action, WINDOW_MS, task(), timing)).rejects.toThrow(
      'commit-confirmed change x is still pending',
    );
    expect(host.uplink).toBeUndefined();
  });
});
