// `vms[].cpu` and `vms[].memory` against the rest of the VM: one pinned host CPU per vCPU, each once. Whether the
// host has those CPUs, a delegated cgroup for a quota or free huge pages is the host's to say when the VM starts
// (its capability report shows the same facts beforehand).
import type { Spec } from '../schema.js';
import type { Add } from './common.js';

/** Every check of `vms[].cpu`. */
export function checkVmResources(spec: Spec, add: Add): void {
  spec.vms.forEach((vm, i) => {
    const pin = vm.cpu?.pin;
    if (!pin) return;
    if (pin.length !== vm.cpus)
      add(
        `vms[${i}].cpu.pin`,
        `VM "${vm.name}" has ${vm.cpus} vCPU(s) but pins ${pin.length}: list one host CPU per vCPU, in vCPU order`,
      );
    const seen = new Set<number>();
    for (const c of pin) {
      if (seen.has(c))
        add(`vms[${i}].cpu.pin`, `VM "${vm.name}" pins host CPU ${c} twice: give each vCPU its own host CPU`);
      seen.add(c);
    }
  });
}
