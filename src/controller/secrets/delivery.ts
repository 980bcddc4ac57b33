// Delivery: secret values join a step (a VM's, an iscsi pool's, an encrypted volume's) only as the controller sends
// it to its host (over mutual TLS), so the plan, tasks, events, logs and API answers carry secret names alone.
import type { AgentAction } from '../../agent/wire.js';
import { InvalidStateError } from '../../shared/errors.js';
import type { VmConfig } from '../../shared/model.js';
import type { Spec } from '../../spec/schema.js';
import type { AgentFactory, AgentPort } from '../hosts.js';
import { secretsOfVm, volumeKeySecret } from './usage.js';
import type { SecretVault } from './vault.js';

/**
 * The secrets `action` needs on its host: a VM's encrypted disks' keys and its iscsi disks' CHAP passwords, an iscsi
 * pool's CHAP password, an encrypted volume's key (none for other actions).
 */
export function secretsOfAction(spec: Spec, action: AgentAction): string[] {
  switch (action.kind) {
    case 'vm.start':
      return secretsOfVm(spec, action.name);
    case 'vm.create':
    case 'vm.hotplug':
      return secretsOfConfig(spec, action.vm);
    case 'pool.ensure':
      return action.pool.chap ? [action.pool.chap.secret] : [];
    case 'volume.ensure':
      return action.volume.encryption ? [action.volume.encryption.secret] : [];
    // An encrypted volume's key, to grow or snapshot it: named by the action (volumes made through the API), else
    // by the spec (plan steps).
    case 'volume.resize':
    case 'volume.snapshot':
    case 'volume.rollback':
    case 'volume.snapshotDelete': {
      const key = action.encryption?.secret ?? volumeKeySecret(spec, action.pool, action.name);
      return key ? [key] : [];
    }
    default:
      return [];
  }
}

/**
 * The secrets VM config `vm` needs to open its disks on a host: its encrypted disks' keys, its iscsi disks' CHAP
 * passwords, its pool volumes' keys (a `vm.create`'s, and a live migration's incoming VM's).
 */
export function secretsOfConfig(spec: Spec, vm: VmConfig): string[] {
  const sources = [...vm.disks.map((d) => d.source), vm.rootSource];
  return [
    ...new Set([
      ...vm.disks.flatMap((d) => (d.encryption ? [d.encryption.secret] : [])),
      ...sources.flatMap((s) => (s?.kind === 'iscsi' && s.chap ? [s.chap.secret] : [])),
      // A pool volume's key as the spec declares it, whether or not the disk repeats it.
      ...sources.flatMap((s) => {
        const key = s ? volumeKeySecret(spec, s.pool, s.volume) : undefined;
        return key ? [key] : [];
      }),
    ]),
  ];
}

/**
 * `agents` whose `act` and `actBatch` attach the values each VM action needs, read from `vault` at that moment
 * (so a VM moved to another host, or restarted anywhere, gets its keys there). Without a vault an action that
 * needs a secret is refused.
 */
export function withSecrets(agents: AgentFactory, vault: SecretVault | undefined): AgentFactory {
  return (spec, host) => {
    const agent = agents(spec, host);
    const values = async (names: string[]) => {
      if (!vault)
        throw new InvalidStateError(
          'this controller has no secrets key, so it cannot deliver CHAP passwords or disk keys',
          'secrets',
        );
      return vault.values(names);
    };
    const attach = async (action: AgentAction): Promise<AgentAction> => {
      const names = secretsOfAction(spec, action);
      if (!names.length) return action;
      return { ...action, secrets: await values(names) } as AgentAction;
    };
    // The agent client keeps its other methods (and fields) through the prototype.
    const wrapped: AgentPort = Object.create(agent);
    wrapped.act = async (action, ...rest) => agent.act(await attach(action), ...rest);
    wrapped.actBatch = async (actions) => agent.actBatch(await Promise.all(actions.map(attach)));
    // A live migration's target opens the VM's disks as a start does: it needs the same values.
    const incoming = agent.migrationIncoming;
    if (incoming)
      wrapped.migrationIncoming = async (req) => {
        const names = secretsOfConfig(spec, req.vm);
        return incoming.call(agent, names.length ? { ...req, secrets: await values(names) } : req);
      };
    return wrapped;
  };
}
