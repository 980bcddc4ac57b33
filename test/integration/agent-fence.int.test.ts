// The agent's fence on a real QEMU (TCG here): `fenceVms` stops a running guest at once, even while a graceful stop
// holds the VM. Its own file, a guest file (the VM lock): the rest of the agent's cluster membership, etcd and timers
// only, is agent-lease.int, a light file.
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { QemuDriver } from '../../src/drivers/hypervisor/qemu/driver.js';
import { defaultLauncherPath } from '../../src/drivers/hypervisor/qemu/launcher.js';
import { RecordingRunner, SystemRunner } from '../../src/exec/runner.js';
import type { VmConfig } from '../../src/shared/model.js';
import { identify } from '../../src/shared/process.js';
import { acquireVmLock } from '../helpers/vmlock.js';

// QMP quit, SIGKILL if it lingers; a graceful stop in progress (waiting on its guest) does not hold the fence back.
describe.runIf(process.getuid?.() === 0)('fenceVms on a real QEMU', () => {
  const VM = 'vltest-fence1';
  let stateDir = '';
  let driver: QemuDriver;
  let release: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    if (!existsSync(defaultLauncherPath())) await new SystemRunner().run(['bash', 'scripts/build-native.sh']);
    release = await acquireVmLock();
    stateDir = mkdtempSync(join(tmpdir(), 'vmlink-it-fence-'));
    chmodSync(stateDir, 0o711);
    driver = new QemuDriver({ runner: new SystemRunner(), stateDir });
  });
  afterAll(async () => {
    try {
      await driver?.delete(VM).catch(() => {});
      await driver?.close();
    } finally {
      if (stateDir) rmSync(stateDir, { recursive: true, force: true });
      await release?.();
    }
  });

  it('kills the running guest within about a second and reports it; a stopped VM is left alone', async () => {
    const cfg: VmConfig = {
      name: VM,
      cpus: 1,
      memoryMiB: 128,
      image: { kind: 'test-guest' },
      disks: [],
      nics: [],
      state: 'running',
    };
    await driver.create(cfg, 'fence001');
    await driver.start(VM);
    const agent = new Agent({
      host: 'fh1',
      runner: new RecordingRunner(),
      networks: {},
      hypervisor: driver,
      stateDir,
    });
    const pid = Number(readFileSync(join(stateDir, 'vms', VM, 'run', 'qemu.pid'), 'utf8').trim());
    expect(await identify(pid)).toBeDefined();
    // A graceful stop in progress holds the VM (the guest is given 30 s): the fence does not wait for it.
    const graceful = driver.stop(VM, { force: false, timeoutMs: 30_000 }).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 200));
    const t = Date.now();
    expect(await agent.fenceVms('test fence')).toEqual([VM]);
    const ms = Date.now() - t;
    console.log(`fenceVms: QEMU of ${VM} gone ${ms} ms after the fence began`);
    expect(await identify(pid)).toBeUndefined();
    await graceful;
    expect((await driver.list()).find((v) => v.name === VM)?.state).toBe('stopped');
    expect(await agent.fenceVms('again')).toEqual([]);
  });
});
