// A VM's QEMU guest agent (virtio-serial socket): waiting for it after boot, running commands, reading NICs.
import { InvalidStateError, TimeoutError } from '../../../shared/errors.js';
import {
  GUEST_AGENT_CONNECT_TIMEOUT_MS,
  GUEST_EXEC_TIMEOUT_MS,
  QMP_STATUS_TIMEOUT_MS,
} from '../../../shared/limits.js';
import { sleep } from '../../../shared/time.js';
import type { GuestExecResult, GuestInterface } from '../types.js';
import { GuestAgentClient } from './qmp.js';

/** What `GuestAgents` needs from the driver. */
export interface GuestAgentHost {
  /** The guest agent socket of VM `name`. */
  socket(name: string): string;
  /** Whether VM `name`'s QEMU runs. */
  running(name: string): Promise<boolean>;
  /** Runs `fn` after every earlier call with the same key. */
  locked<T>(key: string, fn: () => Promise<T>): Promise<T>;
}

/** The guest agents of one driver's VMs. */
export class GuestAgents {
  constructor(private readonly host: GuestAgentHost) {}

  /** Waits until the guest agent answers `guest-sync`; returns the time it took. */
  async waitReady(name: string, timeoutMs: number): Promise<number> {
    const started = Date.now();
    for (;;) {
      try {
        const c = await GuestAgentClient.connect(this.host.socket(name), {
          timeoutMs: QMP_STATUS_TIMEOUT_MS,
          subject: `vm/${name}`,
        });
        c.close();
        return Date.now() - started;
      } catch (e) {
        if (Date.now() - started > timeoutMs) {
          throw new TimeoutError(
            `guest agent of VM ${name} did not answer within ${timeoutMs} ms: ${(e as Error).message}`,
            `vm/${name}`,
          );
        }
        if (!(await this.host.running(name)))
          throw new InvalidStateError(
            `guest agent requires running: VM ${name} is not running`,
            `vm/${name}`,
          );
        await sleep(200);
      }
    }
  }

  /** Runs argv in the guest. */
  exec(
    name: string,
    argv: string[],
    opts: { timeoutMs?: number; input?: string } = {},
  ): Promise<GuestExecResult> {
    return this.withAgent(name, async (c) => {
      const r = await c.exec(argv, {
        timeoutMs: opts.timeoutMs ?? GUEST_EXEC_TIMEOUT_MS,
        ...(opts.input === undefined ? {} : { input: opts.input }),
      });
      return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
    });
  }

  /** The guest's NICs and addresses. */
  interfaces(name: string): Promise<GuestInterface[]> {
    return this.withAgent(name, async (c) =>
      (await c.interfaces()).map((i) => ({
        name: i.name,
        mac: i['hardware-address'] ?? '',
        addresses: (i['ip-addresses'] ?? []).map((a) => `${a['ip-address']}/${a.prefix}`),
      })),
    );
  }

  // The guest agent's socket takes one client at a time: calls per VM run one after another.
  private withAgent<T>(name: string, fn: (c: GuestAgentClient) => Promise<T>): Promise<T> {
    return this.host.locked(`qga:${name}`, async () => {
      if (!(await this.host.running(name)))
        throw new InvalidStateError(`guest agent requires running: VM ${name} is not running`, `vm/${name}`);
      const c = await GuestAgentClient.connect(this.host.socket(name), {
        timeoutMs: GUEST_AGENT_CONNECT_TIMEOUT_MS,
        subject: `vm/${name}`,
      });
      try {
        return await fn(c);
      } finally {
        c.close();
      }
    });
  }
}
