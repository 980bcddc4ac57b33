// The QEMU driver's per-VM accessors (the `VmAccess` its split-out modules share): a VM's paths and stored record,
// its live QEMU (pidfile checked against the process), its shared QMP connection, its fd channel and its lock.
// Own properties, not methods, because the driver hands them on spread into each module's dependencies.
import type { Runner } from '../../../exec/runner.js';
import { NotFoundError } from '../../../shared/errors.js';
import { QMP_TIMEOUT_MS } from '../../../shared/limits.js';
import type { ProcessIdentity } from '../../../shared/process.js';
import { KeyedQueue } from '../../../shared/queue.js';
import { type VmPaths, vmPaths } from './cmdline.js';
import type { VmIdentity } from './identity.js';
import type { FdChannel } from './pass-fd.js';
import type { QmpClient } from './qmp.js';
import { QmpPool } from './qmp-pool.js';
import type { VmAccess } from './vm-access.js';
import type { VmProcesses } from './vm-process.js';
import { readStoredVm, type StoredVm, storedVmNames, writeStoredVm } from './vm-store.js';

/** What the accessors are built from. */
export interface VmAccessorsOptions {
  runner: Runner;
  /** The driver's state directory (resolved). */
  stateDir: string;
  netns?: string;
  /** build/vmlink-qmp-fd, which passes descriptors to a VM's QMP fd socket. */
  qmpFdHelper: string;
  procs: VmProcesses;
}

/** Every VM's accessors, keyed by VM name; holds the QMP connections and the per-VM locks. */
export class VmAccessors implements VmAccess {
  private readonly qmpPool = new QmpPool((name) => this.paths(name).qmpSocket);
  private readonly locks = new KeyedQueue();

  constructor(private readonly o: VmAccessorsOptions) {}

  /** Paths of a VM's files. */
  readonly paths = (name: string): VmPaths => vmPaths(this.o.stateDir, name);

  readonly stored = (name: string): Promise<StoredVm | undefined> =>
    readStoredVm(this.paths(name).configFile);

  readonly mustStored = async (name: string): Promise<StoredVm> => {
    const vm = await this.stored(name);
    if (!vm) throw new NotFoundError('vm', name);
    return vm;
  };

  readonly writeStored = (name: string, vm: StoredVm): Promise<void> =>
    writeStoredVm(this.paths(name).configFile, vm);

  /** This VM's running QEMU with its start time, or undefined (see `VmProcesses.live`). */
  readonly liveProcess = (name: string): Promise<ProcessIdentity | undefined> =>
    this.o.procs.live(name, this.paths(name).pidfile);

  /** The pid from the VM's pidfile when that process is alive and is this VM's QEMU. */
  readonly livePid = async (name: string): Promise<number | undefined> => (await this.liveProcess(name))?.pid;

  readonly running = async (name: string): Promise<boolean> => (await this.livePid(name)) !== undefined;

  /** The ids VM `name`'s QEMU runs as (its own uid/gid, allocated and recorded on first use). */
  readonly identity = (name: string): Promise<VmIdentity> => this.o.procs.identity(name);

  /** The VM's shared QMP connection; `connectTimeoutMs` bounds opening it only (qmp-pool.ts). */
  readonly qmp = (name: string, connectTimeoutMs = QMP_TIMEOUT_MS): Promise<QmpClient> =>
    this.qmpPool.get(name, connectTimeoutMs);

  readonly dropQmp = (name: string): Promise<void> => this.qmpPool.drop(name);

  readonly fdChannel = (name: string): FdChannel => ({
    runner: this.o.runner,
    helper: this.o.qmpFdHelper,
    qmpFdSocket: this.paths(name).qmpFdSocket,
    ...(this.o.netns ? { netns: this.o.netns } : {}),
  });

  /** Runs `fn` under the VM's lock (one operation per VM at a time). */
  readonly locked = <T>(name: string, fn: () => Promise<T>): Promise<T> => this.locks.run(name, fn);

  /** Names of the VMs with a stored record. */
  readonly names = (): Promise<string[]> => storedVmNames(this.o.stateDir);

  /** Closes every QMP connection (QEMU keeps running). */
  closeAll(): void {
    this.qmpPool.closeAll();
  }
}
