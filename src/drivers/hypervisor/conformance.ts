// Conformance suite every hypervisor backend must pass: the lifecycle contract of HypervisorDriver (create, start,
// stop, kill, delete, list, config, hot-plug refusal) as the agent relies on it, asserted through the interface only.
// Call it from a test:
//   hypervisorConformance('fake', async () => ({ driver: new FakeHypervisorDriver(), vm: (n) => cfgOf(n) }));
// A backend's own tests check what it realises (QEMU's processes, files); this checks what the agent sees.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidStateError, NotFoundError, VmlinkError } from '../../shared/errors.js';
import type { VmConfig } from '../../shared/model.js';
import type { HypervisorDriver } from './types.js';

/** What a suite run gets from the backend under test. */
export interface HypervisorConformanceEnv {
  driver: HypervisorDriver;
  /** A small VM config named `name` this backend can start (its taps exist, its image is there). */
  vm(name: string): VmConfig;
  /** Removes what the env made (taps, namespaces, directories); VMs are deleted by the suite. */
  cleanup?(): Promise<void>;
}

/** Registers the hypervisor conformance suite for the backend `make` builds (vitest describe/it). */
export function hypervisorConformance(
  name: string,
  make: () => Promise<HypervisorConformanceEnv>,
  opts: { timeoutMs?: number; prefix?: string } = {},
): void {
  const t = opts.timeoutMs ?? 30_000;
  const a = `${opts.prefix ?? 'hvc'}-a`;
  describe(`hypervisor driver conformance: ${name}`, () => {
    let env: HypervisorConformanceEnv;
    let d: HypervisorDriver;
    const seen = async (n: string) => (await d.list()).find((v) => v.name === n);

    beforeAll(async () => {
      env = await make();
      d = env.driver;
    }, t);

    afterAll(async () => {
      try {
        if (d) await d.delete(a).catch(() => undefined);
      } finally {
        await env?.cleanup?.();
      }
    }, t);

    it('reports an accelerator with a reason', async () => {
      const acc = await d.accelerator();
      expect(['kvm', 'tcg']).toContain(acc.accelerator);
      expect(acc.acceleratorReason.length).toBeGreaterThan(0);
    });

    it('lists nothing of a VM it never created; starting or stopping one is NotFound', async () => {
      expect(await seen(a)).toBeUndefined();
      expect(await d.config(a)).toBeUndefined();
      await expect(d.start(a)).rejects.toBeInstanceOf(NotFoundError);
      await expect(d.stop(a, { force: true })).rejects.toBeInstanceOf(NotFoundError);
      // A missing VM is not an error to delete, nor to fence.
      await d.delete(a);
      expect(d.kill ? await d.kill(a) : false).toBe(false);
    });

    it('refuses an invalid VM name before anything is made', async () => {
      const bad = { ...env.vm(a), name: '../escape' };
      await expect(d.create(bad, 'h0')).rejects.toBeInstanceOf(VmlinkError);
      expect(await seen('../escape')).toBeUndefined();
    });

    it('creates a VM stopped, with its config and hash; a second create with the same hash changes nothing', async () => {
      const cfg = env.vm(a);
      await d.create(cfg, 'h1');
      expect(await seen(a)).toMatchObject({ name: a, state: 'stopped', configHash: 'h1' });
      expect(await d.config(a)).toEqual(cfg);
      await d.create(cfg, 'h1');
      expect((await d.list()).filter((v) => v.name === a)).toHaveLength(1);
      expect(await d.canHotplug(a)).toBe(false);
    });

    it('reconfigures a stopped VM in place', async () => {
      const cfg = { ...env.vm(a), cpus: 2 };
      await d.create(cfg, 'h2');
      expect(await seen(a)).toMatchObject({ state: 'stopped', configHash: 'h2' });
      expect((await d.config(a))?.cpus).toBe(2);
      await d.create(env.vm(a), 'h1');
    });

    it(
      'starts it; a second start is InvalidState; a running VM is not reconfigured',
      async () => {
        await d.start(a);
        expect((await seen(a))?.state).toBe('running');
        await expect(d.start(a)).rejects.toBeInstanceOf(InvalidStateError);
        await expect(d.create({ ...env.vm(a), cpus: 2 }, 'h3')).rejects.toBeInstanceOf(InvalidStateError);
        expect(await seen(a)).toMatchObject({ state: 'running', configHash: 'h1' });
      },
      t,
    );

    it(
      'stops it (forced); stopping a stopped VM is no error',
      async () => {
        await d.stop(a, { force: true });
        expect((await seen(a))?.state).toBe('stopped');
        await d.stop(a, { force: true });
        expect((await seen(a))?.state).toBe('stopped');
      },
      t,
    );

    it(
      'fences a running VM at once (kill: true), a stopped one not (false)',
      async () => {
        if (!d.kill) return;
        await d.start(a);
        expect(await d.kill(a)).toBe(true);
        // QEMU's files go a moment later, under the VM's lock: the state follows within a poll.
        const end = Date.now() + 10_000;
        while ((await seen(a))?.state === 'running' && Date.now() < end)
          await new Promise((r) => setTimeout(r, 50));
        expect((await seen(a))?.state).not.toBe('running');
        expect(await d.kill(a)).toBe(false);
      },
      t,
    );

    it(
      'deletes a VM, running or not, and forgets it',
      async () => {
        await d.start(a).catch((e: unknown) => {
          // A fenced QEMU may still be being reaped: the VM must be startable once it is.
          if (!(e instanceof InvalidStateError)) throw e;
        });
        await d.delete(a);
        expect(await seen(a)).toBeUndefined();
        expect(await d.config(a)).toBeUndefined();
        await d.delete(a);
      },
      t,
    );
  });
}
