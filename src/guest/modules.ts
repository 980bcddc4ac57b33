import { VmlinkError } from '../shared/errors.js';

/**
 * Kernel modules the test guest loads: virtio devices, ACPI power button and its input events, and 802.1Q so a
 * router VM on a trunk NIC can add VLAN sub-interfaces (`ip link add link eth0 name eth0.100 type vlan id 100`).
 */
export const GUEST_MODULES = [
  'virtio_pci',
  'virtio_net',
  'virtio_console',
  'virtio_blk',
  'virtio_rng',
  'af_packet',
  'button',
  'evdev',
  '8021q',
] as const;

/** A parsed `modules.dep`: module name -> its file (relative to the modules dir) and direct dependencies. */
export type ModuleDeps = Map<string, { file: string; deps: string[] }>;

/** Module name of a path such as `kernel/drivers/net/virtio_net.ko(.xz)`; `-` and `_` are the same to the kernel. */
export function moduleName(file: string): string {
  const base = file.slice(file.lastIndexOf('/') + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, '').replaceAll('-', '_');
}

/** Parses the text of `modules.dep` (`file: dep dep ...` per line). */
export function parseModulesDep(text: string): ModuleDeps {
  const out: ModuleDeps = new Map();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const file = line.slice(0, colon).trim();
    const deps = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(moduleName);
    out.set(moduleName(file), { file, deps });
  }
  return out;
}

/** Names listed in `modules.builtin` (compiled into the kernel, nothing to load). */
export function parseModulesBuiltin(text: string): Set<string> {
  return new Set(
    text
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .map(moduleName),
  );
}

/**
 * Files to `insmod`, dependencies first, for the wanted modules; built-in ones are skipped.
 * Throws if a wanted module is neither modular nor built in, or if dependencies form a cycle.
 */
export function moduleLoadOrder(
  dep: ModuleDeps,
  wanted: readonly string[],
  builtin = new Set<string>(),
): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, from: string[]) => {
    const s = state.get(name);
    if (s === 'done') return;
    if (s === 'visiting')
      throw new VmlinkError('invalid', `module dependency cycle: ${[...from, name].join(' -> ')}`);
    const m = dep.get(name);
    if (!m) {
      if (builtin.has(name)) {
        state.set(name, 'done');
        return;
      }
      throw new VmlinkError('not-found', `kernel module ${name} not found in modules.dep or modules.builtin`);
    }
    state.set(name, 'visiting');
    for (const d of m.deps) visit(d, [...from, name]);
    state.set(name, 'done');
    order.push(m.file);
  };
  for (const w of wanted) visit(w.replaceAll('-', '_'), []);
  return order;
}
