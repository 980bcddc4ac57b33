// `lab up` / `lab down`: the one place the controller drives host commands itself (the lab's namespaces).

import type { Runner } from '../exec/runner.js';
import { Lab } from '../lab/lab.js';
import { labPoolDirs, removeLabPoolDirs } from '../lab/storage.js';
import { InvalidSpecError, InvalidStateError } from '../shared/errors.js';
import { LAB_PATH_CHECK_TIMEOUT_MS } from '../shared/limits.js';
import { labAgentSocket, labHostTlsDir } from '../shared/paths.js';
import type { LabSpec, Spec } from '../spec/schema.js';
import { AgentClient } from './agents.js';
import type { HostCredentials } from './pki/service.js';
import type { SpecStore } from './spec-store.js';
import type { Store } from './store/types.js';
import type { TaskContext } from './tasks.js';

/** Builds and removes a spec's lab. */
export class LabControl {
  constructor(
    private readonly store: Store,
    private readonly specs: SpecStore,
    private readonly runner: Runner,
    private readonly credentials: HostCredentials | undefined,
  ) {}

  /**
   * Builds the spec's lab (namespaces, LAN, router, agents); idempotent. Each lab host gets a certificate bound to
   * its name (kept while current), and the controller's path to every agent is checked over mutual TLS.
   */
  async up(text: string, source: string, ctx: TaskContext): Promise<{ namespaces: string[] }> {
    const spec = this.specs.parser.parse(text, source);
    const labSpec = requireLab(spec, source, 'lab up');
    const creds = this.credentials;
    if (!creds)
      throw new InvalidStateError(
        "lab up needs the controller's CA (this controller was started without one)",
      );
    const renewed: string[] = [];
    for (const h of agentMachines(labSpec))
      if (await creds.ensureLabHost(h.name, labHostTlsDir(labSpec.name, h.name))) renewed.push(h.name);
    if (renewed.length) ctx.progress?.(`issued certificates to ${renewed.join(', ')}`);
    const lab = new Lab(this.runner, labSpec, {
      uplinks: Object.fromEntries(spec.hosts.map((h) => [h.name, h.uplink])),
      restartAgents: renewed,
      reachable: (host) =>
        new AgentClient(host, `https+unix://${labAgentSocket(labSpec.name, host)}`)
          .health(LAB_PATH_CHECK_TIMEOUT_MS)
          .then(
            () => true,
            () => false,
          ),
    });
    await lab.up(ctx);
    await this.store.appendEvent('lab.up', `${labSpec.name} from ${source}`);
    return { namespaces: await lab.existingNamespaces() };
  }

  /** Removes the spec's lab and everything in it (VMs, dnsmasq, agents, namespaces, state files). */
  async down(text: string, source: string, ctx: TaskContext): Promise<{ removed: string[] }> {
    const spec = this.specs.parser.parse(text, source);
    const labSpec = requireLab(spec, source, 'lab down');
    const lab = new Lab(this.runner, labSpec);
    const removed = await lab.existingNamespaces();
    await lab.down(ctx);
    // The lab's machines share this computer's disk: their pools' files go with them (a pool's own `path` stays).
    const pools = labPoolDirs(spec);
    for (const dir of pools) ctx.progress?.(`removing pool directory ${dir}`);
    await removeLabPoolDirs(pools);
    // The lab's machines are gone: their certificates must not open any door again.
    const revoked = agentMachines(labSpec).filter((h) =>
      this.credentials?.revoke(h.name, `lab ${labSpec.name} went down`),
    );
    if (revoked.length)
      await this.store.appendEvent('host.revoked', `${revoked.map((h) => h.name).join(', ')}: lab down`);
    // The applied spec lived in this lab: nothing of it is left.
    const cur = await this.specs.current().catch(() => undefined);
    if (cur?.spec.lab?.name === labSpec.name) await this.specs.clear();
    await this.store.appendEvent('lab.down', labSpec.name);
    return { removed };
  }
}

/** The lab machines that run an agent with a certificate of their own: hosts and storage machines. */
const agentMachines = (lab: LabSpec) => [...lab.hosts, ...lab.storage];

function requireLab(spec: Spec, source: string, command: string): LabSpec {
  if (!spec.lab)
    throw new InvalidSpecError(
      [{ path: 'lab', message: `is required for \`${command}\`: the spec describes no lab` }],
      source,
    );
  return spec.lab;
}
