// Who a VM's QEMU is: the ids it runs as (its own uid/gid, the shared QEMU group, kvm) and, from its untrusted
// pidfile, whether the process it names is really this VM's live QEMU.
import { basename } from 'node:path';
import type { Runner } from '../../../exec/runner.js';
import { type ProcessIdentity, processArgv, processFromPidfile } from '../../../shared/process.js';
import type { VmIdentity, VmIds } from './identity.js';
import { lookupQemuUser, type QemuUser } from './launcher.js';

/** Looks up and caches the host's QEMU identities; checks pidfiles against them. */
export class VmProcesses {
  private user: Promise<QemuUser> | undefined;
  private kvmGid: Promise<number | undefined> | undefined;

  constructor(private readonly opts: { runner: Runner; userName: string; qemuBinary: string; ids: VmIds }) {}

  /** The shared unprivileged QEMU user; `UnsupportedError` ("run npm run setup") when missing. */
  qemuUser(): Promise<QemuUser> {
    if (!this.user) {
      this.user = lookupQemuUser(this.opts.runner, this.opts.userName);
      this.user.catch(() => {
        this.user = undefined;
      });
    }
    return this.user;
  }

  /**
   * The ids VM `name`'s QEMU runs as: its own uid and gid (allocated and recorded on first use), with the shared
   * QEMU group (base images may be readable by it) and `kvm` (for /dev/kvm on stock Debian) as supplementary groups.
   */
  async identity(name: string): Promise<VmIdentity> {
    const shared = (await this.qemuUser()).gid;
    const id = await this.opts.ids.allocate(name);
    const kvm = await this.kvmGroup();
    return { uid: id, gid: id, groups: [shared, ...(kvm === undefined ? [] : [kvm])] };
  }

  private kvmGroup(): Promise<number | undefined> {
    this.kvmGid ??= this.opts.runner.run(['getent', 'group', 'kvm'], { allowFailure: true }).then((r) => {
      const gid = Number(r.stdout.split(':')[2]);
      return r.code === 0 && Number.isInteger(gid) && gid > 0 ? gid : undefined;
    });
    return this.kvmGid;
  }

  /**
   * VM `name`'s running QEMU with its start time, or undefined: `pidfile` (written by QEMU's uid, so untrusted)
   * must name a live QEMU whose command line is this guest's and whose uid is this VM's own (or the shared QEMU
   * user's, for a VM an older vmlink started: it runs so until its next start).
   */
  async live(name: string, pidfile: string): Promise<ProcessIdentity | undefined> {
    const uids = [await this.opts.ids.get(name), (await this.qemuUser().catch(() => undefined))?.uid];
    for (const uid of uids) {
      if (uid === undefined) continue;
      const id = await processFromPidfile(pidfile, {
        comm: basename(this.opts.qemuBinary).slice(0, 15),
        argv: (argv) => argvNamesGuest(argv, name),
        uid,
      });
      if (id) return id;
    }
    return undefined;
  }
}

/** Whether a QEMU command line names guest `name` (`-name guest=NAME,...`). */
function argvNamesGuest(argv: readonly string[], name: string): boolean {
  return argv.some((a) => a === `guest=${name}` || a.startsWith(`guest=${name},`));
}

/** Whether `pid` is alive (not a zombie: its command line would be empty) and its command line names guest `name`. */
export async function processMatches(pid: number, name: string): Promise<boolean> {
  return argvNamesGuest((await processArgv(pid)) ?? [], name);
}
