// Volume create + attach to a running VM: vmlink (a qcow2 volume made by the dir pool backend, then
// `QemuDriver.hotplug` with the disk added: the descriptor passed by root, blockdev-add, device_add into its slot)
// vs the raw commands that reach the same state (`qemu-img create`, then vmlink-qmp-fd's add-fd and the same
// blockdev-add/device_add sent by hand). One booted test guest; each attach is undone (untimed) before the next.
//
//   tsx bench/volume-attach.ts [--repeat N]      (root; holds the VM lock while the guest runs)
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { diskSlotIds } from '../src/drivers/hypervisor/qemu/disk-slots.js';
import { diskAttachCommands } from '../src/drivers/hypervisor/qemu/disk-sources.js';
import { QemuDriver } from '../src/drivers/hypervisor/qemu/driver.js';
import { defaultLauncherPath, qmpFdHelperBeside } from '../src/drivers/hypervisor/qemu/launcher.js';
import { QmpClient } from '../src/drivers/hypervisor/qemu/qmp.js';
import { poolBackends } from '../src/drivers/storage/registry.js';
import { SystemRunner } from '../src/exec/runner.js';
import type { DiskConfig, VmConfig } from '../src/shared/model.js';
import type { PoolConfig } from '../src/shared/storage.js';
import { acquireVmLock } from '../test/helpers/vmlock.js';
import { benchNsName, deleteNamespace, median, round, side, since } from './lib.js';

const VM = 'vlbench-vol1';
const TAP = 'vlb-vol00001';
const BRIDGE = 'vlb-volbr';
const SIZE_MIB = 64;

/** One run split: volume made, then attached (ms). */
export interface Phases {
  createMs: number;
  attachMs: number;
}

/** Result of the volume attach bench. */
export interface VolumeAttachResult {
  what: string;
  vmlink: ReturnType<typeof side> & { phases: Phases[] };
  raw: ReturnType<typeof side> & { phases: Phases[] };
  pairedRatios: number[];
  /** median(vmlink) / median(raw). */
  ratio: number;
}

export async function benchVolumeAttach(repeat: number): Promise<VolumeAttachResult> {
  const runner = new SystemRunner();
  const ns = benchNsName();
  const release = await acquireVmLock();
  const stateDir = mkdtempSync('/tmp/vmlink-bench-vol-');
  chmodSync(stateDir, 0o711);
  const pool = join(stateDir, 'pool');
  const driver = new QemuDriver({ runner, stateDir, netns: ns });
  const backend = poolBackends.dir!({ runner, stateDir, storageHost: 'bench' });
  const poolCfg: PoolConfig = { name: 'bench', type: 'dir', path: pool };
  const helper = qmpFdHelperBeside(defaultLauncherPath());
  const volume = (name: string): DiskConfig => ({
    name,
    source: { kind: 'file', pool: 'bench', volume: name, path: join(pool, `${name}.qcow2`), format: 'qcow2' },
  });
  const cfg = (disks: DiskConfig[]): VmConfig => ({
    name: VM,
    cpus: 1,
    memoryMiB: 256,
    image: { kind: 'test-guest' },
    disks,
    nics: [{ network: 'n', backend: 'linux', bridge: BRIDGE, tap: TAP, mac: '52:54:00:b0:00:01', mtu: 1500 }],
    state: 'running',
  });
  let hash = 0;
  try {
    await runner.run(['ip', 'netns', 'add', ns]);
    for (const line of [
      `link add ${BRIDGE} type bridge`,
      `link set ${BRIDGE} up`,
      `tuntap add dev ${TAP} mode tap vnet_hdr`,
      `link set ${TAP} master ${BRIDGE}`,
      `link set ${TAP} up`,
    ])
      await runner.run(['ip', '-n', ns, ...line.split(' ')]);
    await backend.ensurePool(poolCfg, 'bench');
    await driver.create(cfg([]), `h${hash++}`);
    await driver.start(VM);
    await driver.waitForGuestAgent(VM);
    const vmlinkMs: number[] = [];
    const rawMs: number[] = [];
    const vmlinkPhases: Phases[] = [];
    const rawPhases: Phases[] = [];
    const pairedRatios: number[] = [];
    for (let i = 0; i < repeat; i++) {
      const runVmlink = async () => {
        const name = `v${i}`;
        await driver.openDisks(VM); // its QMP connection is up, as in a running agent
        const t0 = performance.now();
        await backend.createVolume(poolCfg, { pool: 'bench', name, sizeMiB: SIZE_MIB, format: 'qcow2' });
        const created = since(t0);
        await driver.hotplug(cfg([volume(name)]), `h${hash++}`);
        vmlinkMs.push(since(t0));
        vmlinkPhases.push({ createMs: created, attachMs: round(vmlinkMs.at(-1)! - created, 1) });
        await driver.hotplug(cfg([]), `h${hash++}`);
      };
      const runRaw = async () => {
        const name = `r${i}`;
        const path = join(pool, `${name}.qcow2`);
        const ids = diskSlotIds(15);
        // QEMU's monitor takes one client: the driver lets go of it while the raw side has it.
        await driver.close();
        const qmp = await QmpClient.connect(driver.paths(VM).qmpSocket, { timeoutMs: 30_000 });
        const c = diskAttachCommands({
          disk: { name },
          origin: { kind: 'source', source: volume(name).source! },
          ids,
        });
        const t0 = performance.now();
        await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path, `${SIZE_MIB}M`]);
        const created = since(t0);
        await runner.run(
          [
            helper,
            '--qmp',
            driver.paths(VM).qmpFdSocket,
            '--file',
            path,
            '--read-write',
            '--fdset',
            String(ids.fdset),
            JSON.stringify(c.protocol),
          ],
          { netns: ns },
        );
        for (const x of c.rest) await qmp.execute(x.execute, x.arguments);
        rawMs.push(since(t0));
        rawPhases.push({ createMs: created, attachMs: round(rawMs.at(-1)! - created, 1) });
        const gone = qmp.waitEvent('DEVICE_DELETED', 30_000);
        await qmp.execute('device_del', { id: ids.node });
        await gone;
        for (const n of [ids.node, ids.file]) await qmp.execute('blockdev-del', { 'node-name': n });
        await qmp.execute('remove-fd', { 'fdset-id': ids.fdset });
        qmp.close();
      };
      // The order flips every repeat, so that background noise hits both sides.
      if (i % 2 === 0) {
        await runVmlink();
        await runRaw();
      } else {
        await runRaw();
        await runVmlink();
      }
      pairedRatios.push(round(vmlinkMs[i]! / rawMs[i]!));
    }
    const ratio = round(median(vmlinkMs) / median(rawMs));
    return {
      what: `create a ${SIZE_MIB} MiB qcow2 volume in a dir pool and attach it to a running test guest (TCG)`,
      vmlink: { ...side('vmlink', vmlinkMs), phases: vmlinkPhases },
      raw: { ...side('raw', rawMs), phases: rawPhases },
      pairedRatios,
      ratio,
    };
  } finally {
    await driver.delete(VM).catch(() => {});
    await driver.close();
    await deleteNamespace(ns);
    rmSync(stateDir, { recursive: true, force: true });
    await release();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { repeat: { type: 'string', default: '5' } } });
  const r = await benchVolumeAttach(Number(values.repeat));
  console.log(JSON.stringify(r, null, 2));
  console.log(
    `volume create + attach: vmlink ${median(r.vmlink.runsMs)} ms, raw ${median(r.raw.runsMs)} ms, ratio ${r.ratio}`,
  );
}
