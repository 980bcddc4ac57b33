// `lab up` / `lab down`: the one place the controller drives host commands itself (the lab's namespaces).
import type { Runner } from '../exec/runner.js';
import { Lab } from '../lab/lab.js';
import { InvalidSpecError } from '../shared/errors.js';
import type { LabSpec, Spec } from '../spec/schema.js';
import type { SpecStore } from './spec-store.js';
import type { Store } from './store/types.js';
import type { TaskContext } from './tasks.js';

/** Builds and removes a spec's lab. */
export class LabControl {
  constructor(
    private readonly store: Store,
    private readonly specs: SpecStore,
    private readonly runner: Runner,
  ) {}

  /** Builds the spec's lab (namespaces, LAN, router, agents); idempotent. */
  async up(text: string, source: string, ctx: TaskContext): Promise<{ namespaces: string[] }> {
    const spec = this.specs.parser.parse(text, source);
    const labSpec = requireLab(spec, source, 'lab up');
    const lab = new Lab(this.runner, labSpec, {
      uplinks: Object.fromEntries(spec.hosts.map((h) => [h.name, h.uplink])),
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
    // The applied spec lived in this lab: nothing of it is left.
    const cur = await this.specs.current().catch(() => undefined);
    if (cur?.spec.lab?.name === labSpec.name) await this.specs.clear();
    await this.store.appendEvent('lab.down', labSpec.name);
    return { removed };
  }
}

function requireLab(spec: Spec, source: string, command: string): LabSpec {
  if (!spec.lab)
    throw new InvalidSpecError(
      [{ path: 'lab', message: `is required for \`${command}\`: the spec describes no lab` }],
      source,
    );
  return spec.lab;
}
