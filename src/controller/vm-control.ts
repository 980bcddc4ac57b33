// Acting on one VM of the applied spec now: power, guest commands, console (guest commands and console also of VMs
// made by `restore --as`, which live outside the spec).
import type { AgentAction } from '../agent/wire.js';
import type { GuestExecResult } from '../agent/wire-probe.js';
import { type UserStopRecord, userStopKey } from '../shared/cluster.js';
import { NotFoundError } from '../shared/errors.js';
import type { Spec } from '../spec/schema.js';
import { type RestoredVmRecord, restoredKey } from './backup/records.js';
import type { AgentFactory, AgentPort } from './hosts.js';
import type { SpecStore } from './spec-store.js';
import type { Store } from './store/types.js';

/** Starts, stops, runs commands in and reads the console of VMs of the applied spec. */
export class VmControl {
  constructor(
    private readonly store: Store,
    private readonly specs: SpecStore,
    private readonly agents: AgentFactory,
  ) {}

  /**
   * Starts or stops one VM of the applied spec now (the spec's desired state is unchanged). In a cluster a stop is
   * recorded (`userStopKey`, who and when) before the VM stops, so HA never starts it again, and applies keep it
   * stopped, until a user starts it: a start removes the record once the VM runs.
   */
  async power(name: string, action: 'start' | 'stop', force = false, by = 'unknown'): Promise<void> {
    const cur = await this.specs.current();
    const vm = cur?.spec.vms.find((v) => v.name === name);
    if (!cur || !vm) throw new NotFoundError('vm', name);
    const agent = this.agents(cur.spec, vm.host);
    const cluster = cur.spec.cluster !== undefined;
    if (cluster && action === 'stop')
      await this.store.put(userStopKey(name), {
        vm: name,
        at: new Date().toISOString(),
        by,
      } satisfies UserStopRecord);
    const act: AgentAction =
      action === 'start' ? { kind: 'vm.start', name } : { kind: 'vm.stop', name, force };
    await agent.act(act);
    if (cluster && action === 'start') await this.store.delete(userStopKey(name));
    await this.store.appendEvent(
      `vm.${action}`,
      `${name}${force ? ' (forced)' : ''}${cluster ? ` by ${by}` : ''}`,
    );
  }

  /** Runs argv in a VM's guest. */
  async exec(name: string, argv: string[], timeoutMs: number, input?: string): Promise<GuestExecResult> {
    return (await this.agentOf(name)).exec(name, argv, timeoutMs, input);
  }

  /** The tail of a VM's serial console log. */
  async console(name: string, tail: number): Promise<{ log: string }> {
    return (await this.agentOf(name)).console(name, tail);
  }

  /** The agent of a VM of the applied spec, or of one made by `restore --as` (kept outside the spec). */
  private async agentOf(name: string): Promise<AgentPort> {
    const p = await this.placement(name);
    return this.agents(p.spec, p.host);
  }

  /** Where VM `name` runs: the applied spec and its host (a `restore --as` VM's host from its record). */
  async placement(name: string): Promise<{ spec: Spec; host: string }> {
    const cur = await this.specs.current();
    if (!cur) throw new NotFoundError('vm', name);
    const vm = cur.spec.vms.find((v) => v.name === name);
    if (vm) return { spec: cur.spec, host: vm.host };
    const restored = await this.store.get<RestoredVmRecord>(restoredKey(name));
    if (restored && cur.spec.hosts.some((h) => h.name === restored.host))
      return { spec: cur.spec, host: restored.host };
    throw new NotFoundError('vm', name);
  }
}
