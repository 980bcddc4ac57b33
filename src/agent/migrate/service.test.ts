import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import type { HypervisorMigrations } from '../../drivers/hypervisor/types.js';
import { MigrationService } from './service.js';

const id = '0b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c111';
const vm = {
  name: 'web',
  cpus: 1,
  memoryMiB: 16,
  image: { kind: 'test-guest' as const },
  disks: [],
  nics: [],
  state: 'running' as const,
};

/** Every directory a test made (one test may set up twice). */
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** An incoming side whose "QEMU" is a unix socket server collecting what it is sent. */
async function setup(
  extra: Partial<HypervisorMigrations> = {},
  deps: Partial<ConstructorParameters<typeof MigrationService>[0]> = {},
) {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-mig-svc-'));
  dirs.push(dir);
  const path = join(dir, 'in.sock');
  const got: Buffer[] = [];
  const server = createServer((s) => s.on('data', (d: Buffer) => got.push(d)));
  await new Promise<void>((r) => server.listen(path, r));
  const deleted: string[] = [];
  /** The secrets each step of the target's preparation was handed (the VM's create, its QEMU's launch). */
  const secretsSeen: Array<[string, unknown]> = [];
  const halves: Partial<HypervisorMigrations> = {
    migrateIn: (_name, _ctx, secrets) =>
      new Promise<{ stream: Socket }>((resolve) => {
        secretsSeen.push(['migrateIn', secrets]);
        const s: Socket = connect(path, () => resolve({ stream: s }));
      }),
    ...extra,
  };
  const svc = new MigrationService({
    host: 'host2',
    migrations: () => halves as HypervisorMigrations,
    prepareIncoming: async (_vm, _hash, _ctx, secrets) => {
      secretsSeen.push(['prepareIncoming', secrets]);
    },
    assertMayRun: async () => {},
    deleteVm: async (n) => {
      deleted.push(n);
    },
    tls: () => undefined,
    ...deps,
  });
  return { svc, got, deleted, secretsSeen, close: () => server.close() };
}

describe('MigrationService (target)', () => {
  it('takes the stream only from the source host named by the controller, once, into QEMU', async () => {
    const { svc, got, close } = await setup();
    await svc.prepare({ id, vm, configHash: 'h', from: 'host1' });
    await expect(svc.receive(id, 'host3', Readable.from([Buffer.from('x')]))).rejects.toThrow(
      'migration 0b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c111 of vm web comes from host1, not host3',
    );
    const n = await svc.receive(id, 'host1', Readable.from([Buffer.from('QEVM'), Buffer.from('data')]));
    expect(n).toBe(8);
    await new Promise((r) => setTimeout(r, 50));
    expect(Buffer.concat(got).toString()).toBe('QEVMdata');
    await expect(svc.receive(id, 'host1', Readable.from([]))).rejects.toThrow(/already receiving/);
    close();
  });

  it('refuses a second migration of the same VM, and an unknown id; abort removes the prepared VM', async () => {
    const { svc, deleted, close } = await setup();
    await svc.prepare({ id, vm, configHash: 'h', from: 'host1' });
    await expect(
      svc.prepare({ id: '1b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c111', vm, configHash: 'h', from: 'host1' }),
    ).rejects.toThrow('vm web is already migrating on host2');
    await expect(
      svc.receive('2b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c111', 'host1', Readable.from([])),
    ).rejects.toThrow(/not found/);
    expect(await svc.abortIncoming(id, 'test')).toEqual({ removed: true, ran: false });
    expect(deleted).toEqual(['web']);
    close();
  });

  it('hands the secrets the disks need (CHAP passwords, keys) to the VM and its QEMU, and keeps none', async () => {
    const { svc, secretsSeen, close } = await setup();
    const secrets = [{ name: 'san-chap', value: 'c2VjcmV0' }];
    const req = { id, vm, configHash: 'h', from: 'host1', secrets };
    await svc.prepare(req);
    expect(secretsSeen).toEqual([
      ['prepareIncoming', secrets],
      ['migrateIn', secrets],
    ]);
    // The prepared migration (kept until the stream and the resume) no longer holds them.
    expect(req).not.toHaveProperty('secrets');
    expect(await svc.abortIncoming(id, 'test')).toEqual({ removed: true, ran: false });
    close();
  });

  it('refuses to send without a host certificate', async () => {
    const { svc, close } = await setup();
    expect(() =>
      svc.start({
        id,
        vm: 'web',
        to: { host: 'host2', agent: 'https://10.0.0.2:7443' },
        downtimeLimitMs: 300,
      }),
    ).toThrow(/has no host certificate: migrations travel only over mutual TLS/);
    close();
  });
});

describe('MigrationService (dirty rate, for the explain)', () => {
  it('measures through the hypervisor, says nothing where it cannot, and never while the VM migrates', async () => {
    const asked: Array<[string, number]> = [];
    const { svc, close } = await setup({
      dirtyRate: async (name, seconds) => {
        asked.push([name, seconds]);
        return 12.5;
      },
    });
    expect(await svc.dirtyRate('web', 2)).toBe(12.5);
    expect(asked).toEqual([['web', 2]]);
    // A VM with a migration under way (here an incoming one) is not measured.
    await svc.prepare({ id, vm, configHash: 'h', from: 'host1' });
    await expect(svc.dirtyRate('web', 1)).rejects.toThrow('vm web is migrating on host2');
    expect(asked).toHaveLength(1);
    close();
    // A hypervisor without the measurement: no figure, no error.
    const blind = new MigrationService({
      host: 'host1',
      migrations: () => ({}) as HypervisorMigrations,
      prepareIncoming: async () => {},
      assertMayRun: async () => {},
      deleteVm: async () => {},
      tls: () => undefined,
    });
    expect(await blind.dirtyRate('web', 1)).toBeUndefined();
  });
});

describe('MigrationService (target resume)', () => {
  it("points this host's bridges at the arrived VM as it runs, and a failure to do so does not stop it", async () => {
    const order: string[] = [];
    let fail = false;
    const { svc, close } = await setup(
      {
        awaitArrived: async () => {
          order.push('arrived');
        },
        resumeTarget: async () => {
          order.push('cont');
        },
      },
      {
        claimPorts: async (name) => {
          order.push(`claim ${name}`);
          if (fail) throw new Error('bridge: Operation not permitted');
        },
      },
    );
    await svc.prepare({ id, vm, configHash: 'h', from: 'host1' });
    await svc.resume(id, undefined, 1000);
    expect(order).toEqual(['arrived', 'claim web', 'cont']);
    fail = true;
    order.length = 0;
    await svc.prepare({ id: '1b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c111', vm, configHash: 'h', from: 'host1' });
    await svc.resume('1b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c111', undefined, 1000);
    expect(order).toEqual(['arrived', 'claim web', 'cont']);
    close();
  });

  it('runs the guest without waiting for the bridge claim to end', async () => {
    const order: string[] = [];
    let claimed!: () => void;
    const { svc, close } = await setup(
      {
        awaitArrived: async () => {
          order.push('arrived');
        },
        resumeTarget: async () => {
          order.push('cont');
        },
      },
      {
        claimPorts: async () => {
          order.push('claim started');
          await new Promise<void>((r) => {
            claimed = r;
          });
          order.push('claim done');
        },
      },
    );
    await svc.prepare({ id, vm, configHash: 'h', from: 'host1' });
    const resumed = svc.resume(id, undefined, 1000);
    await new Promise((r) => setTimeout(r, 20));
    // `cont` ran while the claim was still going; the resume answers once both ended.
    expect(order).toEqual(['arrived', 'claim started', 'cont']);
    claimed();
    await resumed;
    expect(order).toEqual(['arrived', 'claim started', 'cont', 'claim done']);
    close();
  });
});

describe('MigrationService (target resume on arrival)', () => {
  const id2 = '1b7f3c1e-9a55-4c61-9a8e-5b8f4ad0c111';
  /** A target whose QEMU "arrives" when told, recording the steps. */
  async function armedSetup(o: { refuse?: boolean; lease?: () => boolean } = {}) {
    const order: string[] = [];
    let arrive!: () => void;
    const arrived = new Promise<void>((r) => {
      arrive = r;
    });
    const t = await setup(
      {
        awaitArrived: async () => {
          await arrived;
          order.push('arrived');
        },
        resumeTarget: async () => {
          order.push('cont');
        },
      },
      {
        assertMayRun: async (_name, fence) => {
          order.push(`owner check ${fence?.token}`);
          if (o.refuse) throw new Error('VM web is not started on host host2: its owner record names host1');
        },
        claimPorts: async (name) => {
          order.push(`claim ${name}`);
        },
        ...(o.lease ? { leaseHeld: o.lease } : {}),
      },
    );
    return { ...t, order, arrive };
  }
  const tick = () => new Promise((r) => setTimeout(r, 20));

  it('checks the owner when armed, runs the guest once the stream ended cleanly and the state arrived, and then refuses an abort', async () => {
    const { svc, order, arrive, deleted, close } = await armedSetup();
    await svc.prepare({ id, vm, configHash: 'h', from: 'host1' });
    await svc.resume(id, { token: '7' }, 1000, true);
    expect(order).toEqual(['owner check 7']);
    // The state arrived, but the stream has not ended: nothing runs yet.
    arrive();
    await tick();
    expect(order).toEqual(['owner check 7']);
    await svc.receive(id, 'host1', Readable.from([Buffer.from('QEVM')]));
    await tick();
    // The bridges are pointed at the taps after the arrival, as the guest runs.
    expect(order).toEqual(['owner check 7', 'arrived', 'claim web', 'cont']);
    // The controller's second call waits for (here: has) the outcome, with no second owner check.
    await svc.resume(id, { token: '7' }, 1000);
    expect(order).toHaveLength(4);
    expect(await svc.abortIncoming(id, 'test')).toEqual({ removed: false, ran: true });
    expect(deleted).toEqual([]);
    close();
  });

  it('a stream that fails (the source agent went away): the guest never runs, an abort removes it', async () => {
    const { svc, order, arrive, deleted, close } = await armedSetup();
    await svc.prepare({ id, vm, configHash: 'h', from: 'host1' });
    await svc.resume(id, { token: '7' }, 1000, true);
    const body = new Readable({ read() {} });
    const got = svc.receive(id, 'host1', body);
    body.push(Buffer.from('QEVM'));
    body.destroy(new Error('aborted'));
    await expect(got).rejects.toThrow('aborted');
    arrive();
    await tick();
    expect(order).toEqual(['owner check 7']);
    // The controller's second call hears why.
    await expect(svc.resume(id, { token: '7' }, 50)).rejects.toThrow('aborted');
    expect(await svc.abortIncoming(id, 'test')).toEqual({ removed: true, ran: false });
    expect(deleted).toEqual(['web']);
    await expect(svc.resume(id, { token: '7' }, 50)).rejects.toThrow(/rolled back here: its guest never ran/);
    close();
  });

  it('refused by the owner check: not armed; a host that lost its lease by the arrival runs nothing', async () => {
    const refused = await armedSetup({ refuse: true });
    await refused.svc.prepare({ id, vm, configHash: 'h', from: 'host1' });
    await expect(refused.svc.resume(id, { token: '7' }, 1000, true)).rejects.toThrow(
      /owner record names host1/,
    );
    refused.close();
    let held = true;
    const { svc, order, arrive, close } = await armedSetup({ lease: () => held });
    await svc.prepare({ id: id2, vm, configHash: 'h', from: 'host1' });
    await svc.resume(id2, { token: '8' }, 1000, true);
    held = false;
    await svc.receive(id2, 'host1', Readable.from([Buffer.from('QEVM')]));
    arrive();
    await tick();
    expect(order).toEqual(['owner check 8', 'arrived']);
    await expect(svc.resume(id2, { token: '8' }, 1000)).rejects.toThrow(/no longer holds its cluster lease/);
    expect(await svc.abortIncoming(id2, 'test')).toEqual({ removed: true, ran: false });
    close();
  });
});
