// Fake host agents for controller unit tests: they keep observed state the way a real agent reports it, run
// commit-confirm through the agent's real ConfirmManager, and can fail a step, lose their management path, or go down.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfirmManager } from '../../src/agent/confirm.js';
import type { ActionResult, AgentAction, ConfirmState } from '../../src/agent/wire.js';
import type { GuestInterface } from '../../src/agent/wire-probe.js';
import type { AgentFactory, AgentPort } from '../../src/controller/hosts.js';
import { NotFoundError, toErrorBody, UnavailableError, VmlinkError } from '../../src/shared/errors.js';
import type { HostReport, ObservedLease, ObservedNetwork, ObservedVm } from '../../src/shared/model.js';

type Snapshot = { networks: Map<string, ObservedNetwork>; uplink: HostReport['uplink'] };

/** One fake host: its observed state, the actions it received, and switches for failures. */
export class FakeHost {
  readonly networks = new Map<string, ObservedNetwork>();
  readonly vms = new Map<string, ObservedVm>();
  uplink: HostReport['uplink'];
  /** The host's devices as its agent would read them (reported; absent: an agent from before passthrough). */
  devices: HostReport['devices'];
  /** Every action received, in order (commit-confirm ids stripped). */
  readonly actions: AgentAction[] = [];
  /** Sizes of the batch requests this agent answered. */
  readonly batches: number[] = [];
  /** The agent does not answer at all. */
  down = false;
  /** Replaces fields of the reported capabilities (accelerator, confidential support, ...). */
  capabilities: Partial<HostReport['capabilities']> = {};
  /** Makes an action fail (the agent's own revert leaves nothing behind, so state is unchanged). */
  failOn: ((a: AgentAction) => string | undefined) | undefined;
  /** An action that cuts the management path: the host is unreachable until it rolls the change back. */
  cutsPath: ((a: AgentAction) => boolean) | undefined;
  /** Guest agent answers, by VM. */
  readonly guests = new Map<string, GuestInterface[]>();
  /** DHCP leases this host serves, by network. */
  readonly leases = new Map<string, ObservedLease[]>();
  /** Rolling a commit-confirmed change back fails with this message (the host answers again). */
  failRevert: string | undefined;
  private cut = false;
  private readonly dir = mkdtempSync(join(tmpdir(), 'vmlink-fake-agent-'));
  private readonly snapshots = new Map<string, Snapshot>();
  readonly confirms = new ConfirmManager({
    dir: this.dir,
    revert: async (undo) => {
      if (this.failRevert) {
        // The rollback failed but the path came back (e.g. the address was restored, the MTU not).
        this.cut = false;
        throw new Error(this.failRevert);
      }
      const key = undo.kind === 'network' ? undo.name : undo.kind === 'uplink' ? undo.device : 'tuning';
      const snap = this.snapshots.get(key);
      if (snap) {
        this.networks.clear();
        for (const [k, v] of snap.networks) this.networks.set(k, v);
        this.uplink = snap.uplink;
      }
      this.cut = false;
    },
  });

  constructor(readonly name: string) {}

  /** The fake's client, as the controller's factory hands it out. */
  client(): AgentPort {
    const reachable = () => {
      if (this.down || this.cut)
        throw new UnavailableError(`cannot reach the agent of ${this.name}: ECONNREFUSED`);
    };
    return {
      health: async () => {
        reachable();
        return { ok: true, version: 'fake' };
      },
      report: async () => {
        reachable();
        return this.report();
      },
      act: async (action) => {
        reachable();
        await this.act(action);
        // The answer of a change that cut the path never arrives.
        reachable();
      },
      // As the real agent: in order, stopping after the first failure, whose error travels as an error body.
      actBatch: async (actions) => {
        reachable();
        const results: ActionResult[] = [];
        for (const a of actions) {
          try {
            await this.act(a);
            results.push({ ok: true });
          } catch (e) {
            results.push({ ok: false, error: toErrorBody(e).error });
            break;
          }
        }
        this.batches.push(actions.length);
        reachable();
        return results;
      },
      confirm: async (id): Promise<ConfirmState> => {
        reachable();
        return this.confirms.confirm(id);
      },
      confirmState: async (id): Promise<ConfirmState> => {
        reachable();
        return this.confirms.get(id);
      },
      exec: async () => {
        throw new VmlinkError('unsupported', 'the fake agent runs no guest commands');
      },
      interfaces: async (vm) => {
        reachable();
        const ifs = this.guests.get(vm);
        if (!ifs) throw new VmlinkError('timeout', `guest agent of ${vm} did not answer`);
        return ifs;
      },
      console: async () => ({ log: '' }),
      flows: async () => ({ backend: 'linux', flows: '' }),
    };
  }

  /** What the agent reports now. */
  report(): HostReport {
    return {
      host: this.name,
      agentVersion: 'fake',
      capabilities: {
        accelerator: 'tcg',
        acceleratorReason: 'fake',
        cpus: 8,
        memoryMiB: 8192,
        network: { vxlan: true, vlan: true },
        backends: ['linux'],
        ...this.capabilities,
      },
      networks: [...this.networks.values()].map((n) => {
        const leases = this.leases.get(n.name);
        return structuredClone(leases ? { ...n, leases } : n);
      }),
      vms: [...this.vms.values()].map((v) => structuredClone(v)),
      ...(this.uplink ? { uplink: structuredClone(this.uplink) } : {}),
      ...(this.devices ? { devices: structuredClone(this.devices) } : {}),
    };
  }

  /** Removes the fake's commit-confirm records. */
  close(): void {
    this.confirms.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async act(action: AgentAction): Promise<void> {
    const { confirm, ...plain } = action as AgentAction & { confirm?: { id: string; timeoutMs: number } };
    this.actions.push(plain as AgentAction);
    const failure = this.failOn?.(action);
    if (failure) throw new VmlinkError('exec', failure);
    const key =
      action.kind === 'uplink.configure'
        ? action.uplink.device
        : action.kind === 'network.ensure'
          ? action.network.name
          : action.kind === 'network.delete'
            ? action.name
            : undefined;
    if (confirm && key !== undefined) {
      this.confirms.assertNonePending();
      this.snapshots.set(key, { networks: new Map(this.networks), uplink: this.uplink });
    }
    this.apply(action);
    if (confirm && key !== undefined) {
      const undo =
        action.kind === 'uplink.configure'
          ? { kind: 'uplink' as const, device: key, snapshot: null }
          : { kind: 'network' as const, name: key };
      this.confirms.arm(confirm.id, confirm.timeoutMs, `${action.kind} ${key}`, undo);
      if (this.cutsPath?.(action)) this.cut = true;
    }
  }

  private apply(a: AgentAction): void {
    const vm = (name: string) => {
      const v = this.vms.get(name);
      if (!v) throw new NotFoundError('vm', name);
      return v;
    };
    switch (a.kind) {
      case 'network.ensure':
        this.networks.set(a.network.name, {
          name: a.network.name,
          bridge: a.network.bridge,
          configHash: a.configHash,
          problems: [],
          config: structuredClone(a.network),
        });
        return;
      case 'network.delete':
        this.networks.delete(a.name);
        return;
      case 'uplink.configure':
        this.uplink = {
          device: a.uplink.device,
          addressDevice: a.uplink.device,
          mtu: a.uplink.mtu ?? 1500,
          addresses: a.uplink.addresses ?? [],
          configHash: a.configHash,
        };
        return;
      case 'vm.create': {
        const old = this.vms.get(a.vm.name);
        if (old && old.state !== 'stopped')
          throw new VmlinkError('invalid-state', `reconfiguring VM ${a.vm.name} requires it stopped`);
        this.vms.set(a.vm.name, {
          name: a.vm.name,
          state: 'stopped',
          configHash: a.configHash,
          problems: [],
          config: structuredClone(a.vm),
        });
        return;
      }
      case 'vm.hotplug': {
        // NICs plugged or unplugged in place: the VM keeps running.
        const v = vm(a.vm.name);
        v.configHash = a.configHash;
        v.config = structuredClone(a.vm);
        return;
      }
      case 'vm.start':
        vm(a.name).state = 'running';
        return;
      case 'vm.stop':
        vm(a.name).state = 'stopped';
        return;
      case 'vm.delete':
        this.vms.delete(a.name);
        return;
      case 'volume.fence':
        return; // recorded in `actions`; a storage host's answer (storage-fence.ts sends it before a VM starts)
      default:
        throw new VmlinkError('unsupported', `the fake agent does not know ${(a as AgentAction).kind}`);
    }
  }
}

/** A set of fake hosts by name, and the agent factory that reaches them. */
export class FakeFleet {
  readonly hosts = new Map<string, FakeHost>();

  /** The fake host called `name` (made on first use). */
  host(name: string): FakeHost {
    let h = this.hosts.get(name);
    if (!h) {
      h = new FakeHost(name);
      this.hosts.set(name, h);
    }
    return h;
  }

  /** The factory to inject into the controller. */
  readonly agents: AgentFactory = (_spec, host) => this.host(host).client();

  /** Every action sent to any host, as `host: kind name`. */
  sent(): string[] {
    return [...this.hosts.values()].flatMap((h) =>
      h.actions.map((a) => `${h.name}: ${a.kind} ${actionTarget(a)}`),
    );
  }

  /** Forgets the actions sent so far. */
  clearSent(): void {
    for (const h of this.hosts.values()) h.actions.length = 0;
  }

  /** Removes every fake's files. */
  close(): void {
    for (const h of this.hosts.values()) h.close();
  }
}

function actionTarget(a: AgentAction): string {
  switch (a.kind) {
    case 'network.ensure':
      return a.network.name;
    case 'uplink.configure':
      return a.uplink.device;
    case 'vm.create':
      return a.vm.name;
    default:
      return 'name' in a ? String(a.name) : '';
  }
}
