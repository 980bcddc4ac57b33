// `vms[].cpu` and `vms[].memory.hugepages` from the spec to a VM's config, and what a change of them does (a
// restart: pinning and quota are set when QEMU starts, huge pages back its RAM from the start).
import type { VmConfig } from '../shared/model.js';
import { quotaPercent, type VmCpuSpec } from '../spec/schema-balance.js';
import type { FieldChange } from './changes.js';

/** The config fields of a VM's `cpu` and `memory` (absent when unset, so older configs hash the same). */
export function vmResourceConfig(vm: {
  cpu?: VmCpuSpec | undefined;
  memory?: { hugepages: boolean } | undefined;
}): Pick<VmConfig, 'cpu' | 'hugepages'> {
  const pin = vm.cpu?.pin;
  const quota = vm.cpu?.quota;
  const cpu = {
    ...(pin ? { pin: [...pin] } : {}),
    ...(quota ? { quotaPercent: quotaPercent(quota) } : {}),
  };
  return {
    ...(Object.keys(cpu).length ? { cpu } : {}),
    ...(vm.memory?.hugepages ? { hugepages: true } : {}),
  };
}

const pinText = (c: VmConfig) => (c.cpu?.pin ? `[${c.cpu.pin.join(', ')}]` : 'none');
const quotaText = (c: VmConfig) => (c.cpu?.quotaPercent ? `${c.cpu.quotaPercent}%` : 'none');

/** Changes of pinning, quota and huge pages between two configs (each a restart). */
export function resourceChanges(from: VmConfig, to: VmConfig): FieldChange[] {
  const out: FieldChange[] = [];
  if (pinText(from) !== pinText(to))
    out.push({ field: 'cpu', text: `cpu.pin ${pinText(from)} -> ${pinText(to)}`, how: 'restart' });
  if (quotaText(from) !== quotaText(to))
    out.push({ field: 'cpu', text: `cpu.quota ${quotaText(from)} -> ${quotaText(to)}`, how: 'restart' });
  if (!!from.hugepages !== !!to.hugepages)
    out.push({
      field: 'hugepages',
      text: `memory.hugepages ${!!from.hugepages} -> ${!!to.hugepages}`,
      how: 'restart',
    });
  return out;
}
