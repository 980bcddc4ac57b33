// Failures injected into a lab for drills: a host losing power (its agent and every QEMU of its VMs killed at
// once), a host cut off the LAN (its switch ports down, while its agent and QEMU keep running), and their repair.
// etcd members and cluster controllers are stopped and started by the lab's own exports (lab/etcd.ts,
// lab/cluster.ts). Every process is found by verified identity: a lab agent by its recorded identity and command
// line, a VM's QEMU by its uid (each VM runs under its own, recorded by its host's agent) and its command name.
import { readdir } from 'node:fs/promises';
import { basename } from 'node:path';
import { VmIds, vmIdsFile } from '../drivers/hypervisor/qemu/identity.js';
import { DEFAULT_QEMU_BINARY } from '../drivers/hypervisor/qemu/launcher.js';
import { Ip } from '../exec/ip.js';
import type { Runner } from '../exec/runner.js';
import { InvalidRequestError, InvalidStateError } from '../shared/errors.js';
import { KILL_WAIT_MS } from '../shared/limits.js';
import type { OpContext } from '../shared/op.js';
import { labHostStateDir } from '../shared/paths.js';
import {
  hasExitedState,
  isPid,
  type ProcessIdentity,
  type ProcStat,
  processArgv,
  processFromIdentityFile,
  processUid,
  procStatSync,
  signalProcess,
  waitExited,
} from '../shared/process.js';
import type { LabSpec } from '../spec/schema.js';
import type { Lab } from './lab.js';
import { labHostSwitchPorts } from './layout.js';
import { switchNs } from './names.js';
import { LAB_AGENT_PROCESS, labAgentIdentityFile } from './processes.js';

/** QEMU's command name as /proc shows it (cut to 15 characters). */
export const QEMU_COMM = basename(DEFAULT_QEMU_BINARY).slice(0, 15);
/** Most /proc entries one scan looks at (a machine has far fewer processes; a runaway one is not scanned whole). */
const PROC_SCAN_MAX = 65_536;

/** Which lab host and VM a QEMU process belongs to. */
export interface VmOwner {
  host: string;
  vm: string;
}

/** A lab VM's running QEMU, as found in /proc. */
export interface LabVmProcess extends VmOwner {
  id: ProcessIdentity;
  uid: number;
  /** The guest its command line names (`-name guest=NAME`); QEMU can rewrite its own argv, so only a cross-check. */
  argvGuest?: string;
}

/**
 * uid -> (host, VM), from every lab host's VM id file (`<host state>/vm-ids.json`, root's, written by its agent).
 * A VM restarted on another host runs under another uid (ids are claimed machine-wide), so the uid alone says which
 * host's copy a process is.
 */
export async function labVmOwners(spec: LabSpec): Promise<Map<number, VmOwner>> {
  const owners = new Map<number, VmOwner>();
  for (const h of spec.hosts) {
    const ids = await new VmIds({ file: vmIdsFile(labHostStateDir(spec.name, h.name)) }).all();
    for (const [vm, uid] of Object.entries(ids)) owners.set(uid, { host: h.name, vm });
  }
  return owners;
}

/** The guest a QEMU command line names (`-name guest=NAME,...`), or undefined. */
export function argvGuestName(argv: readonly string[]): string | undefined {
  const i = argv.indexOf('-name');
  const m = i >= 0 ? /^guest=([^,]*)/.exec(argv[i + 1] ?? '') : null;
  return m?.[1];
}

/**
 * Every running QEMU whose uid is a lab VM's (see `labVmOwners`): a scan of /proc reading each process's stat
 * (bounded), then status and cmdline of QEMU processes only. Processes of other labs, tests or users are ignored.
 */
export async function labVmProcesses(
  owners: ReadonlyMap<number, VmOwner>,
  opts: { argv?: boolean } = {},
): Promise<LabVmProcess[]> {
  if (owners.size === 0) return [];
  const pids = (await readdir('/proc')).slice(0, PROC_SCAN_MAX).map(Number).filter(isPid);
  // Every process's stat in one synchronous pass (a few microseconds each); only QEMU processes read on.
  const qemus = pids
    .map((pid) => procStatSync(pid))
    .filter((st): st is ProcStat => st !== undefined && st.comm === QEMU_COMM && !hasExitedState(st.state));
  const found = await Promise.all(
    qemus.map(async (st): Promise<LabVmProcess | undefined> => {
      const pid = st.pid;
      const uid = await processUid(pid);
      const owner = uid === undefined ? undefined : owners.get(uid);
      if (!owner || uid === undefined) return undefined;
      const p: LabVmProcess = { ...owner, id: { pid, startTime: st.startTime }, uid };
      if (opts.argv !== false) {
        const guest = argvGuestName((await processArgv(pid)) ?? []);
        if (guest !== undefined) p.argvGuest = guest;
      }
      return p;
    }),
  );
  return found.filter((p): p is LabVmProcess => p !== undefined);
}

/** What `killHost` killed. */
export interface HostKill {
  /** When the signals went out (ms since the epoch). */
  at: number;
  agent: ProcessIdentity;
  /** The VMs whose QEMU was killed. */
  vms: string[];
}

/** Injects host failures into a lab and repairs them. */
export class LabFaults {
  constructor(
    private readonly runner: Runner,
    private readonly spec: LabSpec,
    /** The lab, built as `lab up` builds it (its agents' arguments), to start a host's agent again. */
    private readonly lab: Lab,
  ) {}

  private host(host: string): LabSpec['hosts'][number] {
    const h = this.spec.hosts.find((x) => x.name === host);
    if (!h)
      throw new InvalidRequestError(
        `lab ${this.spec.name} has no host ${host} (hosts: ${this.spec.hosts.map((x) => x.name).join(', ')})`,
        `host/${host}`,
      );
    return h;
  }

  /**
   * A power loss: SIGKILL to `host`'s agent and to the QEMU of each of its VMs, back to back, then waits until they
   * are gone. Its namespace, links and files stay as a dead machine's disk would. `InvalidStateError` when its
   * agent is not running (the host is down already).
   */
  async killHost(host: string): Promise<HostKill> {
    this.host(host);
    const agent = await processFromIdentityFile(
      labAgentIdentityFile(this.spec.name, host),
      LAB_AGENT_PROCESS,
    );
    if (!agent)
      throw new InvalidStateError(
        `the agent of ${host} is not running (lab ${this.spec.name} records none): the host is down already; \`vmlink lab up\` starts it`,
        `host/${host}`,
      );
    const vms = (await labVmProcesses(await labVmOwners(this.spec), { argv: false })).filter(
      (p) => p.host === host,
    );
    const at = Date.now();
    const targets = [agent, ...vms.map((v) => v.id)];
    // Every signal first, every wait after: the host's processes die together, as on a power loss.
    await Promise.all(targets.map((id) => signalProcess(id, 'SIGKILL')));
    await Promise.all(targets.map((id) => waitExited(id, KILL_WAIT_MS)));
    return { at, agent, vms: vms.map((v) => v.vm).sort() };
  }

  /** Powers a killed host back on: its agent starts through the lab's own start path (no-op while it runs). */
  async restartAgent(host: string, ctx: OpContext = {}): Promise<void> {
    this.host(host);
    await this.lab.startHostAgent(host, ctx);
  }

  /** Cuts `host` off the lab LAN and its segments (its switch ports down); its agent and VMs keep running. */
  async partitionHost(host: string): Promise<{ at: number; ports: string[] }> {
    const ports = this.switchPorts(host);
    const sw = new Ip(this.runner, switchNs(this.spec.name));
    const at = Date.now();
    for (const p of ports) await sw.link.set(p, { up: false });
    return { at, ports };
  }

  /** Puts `host` back on the LAN (its switch ports up). */
  async healPartition(host: string): Promise<void> {
    const sw = new Ip(this.runner, switchNs(this.spec.name));
    for (const p of this.switchPorts(host)) await sw.link.set(p, { up: true });
  }

  /** Whether any of `host`'s switch ports is down (a partition not healed). */
  async isPartitioned(host: string): Promise<boolean> {
    const sw = new Ip(this.runner, switchNs(this.spec.name));
    for (const p of this.switchPorts(host)) if ((await sw.link.get(p))?.up === false) return true;
    return false;
  }

  private switchPorts(host: string): string[] {
    this.host(host);
    return labHostSwitchPorts(this.spec, host) ?? [];
  }
}
