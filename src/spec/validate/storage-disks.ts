// VM disks from pools, boot volumes and passthrough devices: the forms a disk may take, which pools a VM can reach,
// who may attach a volume, and which host devices a VM may take.
import { NAME_PATTERN, type Spec } from '../schema.js';
import { featureRefusal, poolCan, specVolumeEncryption, vmVolumeUses } from '../storage.js';
import type { Add } from './common.js';

/**
 * Disks are `{ sizeMiB }`, `{ pool, sizeMiB }` or `{ pool, volume }`; pools exist and a dir pool is on the VM's host;
 * a CD-ROM is an imported ISO; a volume is attached by one VM (ISOs as CD-ROMs by any number); a template is only
 * cloned; the names of volumes made for VMs collide with nothing.
 */
export function checkDisks(spec: Spec, pools: Map<string, number>, add: Add) {
  const poolList = spec.pools.map((p) => p.name).join(', ') || 'none defined';
  const poolOf = (name: string) => {
    const i = pools.get(name);
    return i === undefined ? undefined : spec.pools[i];
  };
  const specVolume = (pool: string, name: string) =>
    spec.volumes.findIndex((v) => v.pool === pool && v.name === name);
  /** A pool the VM can open: known, and on its host when it is a dir pool. */
  const reachable = (pool: string, vm: { name: string; host: string }, path: string): boolean => {
    const p = poolOf(pool);
    if (!p) {
      add(path, `unknown pool "${pool}" (pools: ${poolList})`);
      return false;
    }
    if (p.type === 'dir' && p.host !== vm.host) {
      add(
        path,
        `dir pool "${pool}" is on host "${p.host}" but VM "${vm.name}" runs on "${vm.host}"; a dir pool is opened only on its own host: move the VM, or use an iscsi or nfs pool`,
      );
      return false;
    }
    return true;
  };

  spec.vms.forEach((vm, vi) => {
    vm.disks.forEach((d, j) => {
      const base = `vms[${vi}].disks[${j}]`;
      const cdrom = d.media === 'cdrom';
      if (d.pool === undefined) {
        if (d.volume !== undefined)
          add(`${base}.volume`, `a volume lives in a pool: add pool: <name> (pools: ${poolList})`);
        else if (cdrom)
          add(
            `${base}.media`,
            'a CD-ROM shows an ISO image: give pool and volume of an imported ISO (`vmlink image import FILE.iso`)',
          );
        else if (d.sizeMiB === undefined)
          add(`${base}.sizeMiB`, "a disk in the VM's directory needs sizeMiB (or give pool and volume)");
        return;
      }
      if (!reachable(d.pool, vm, `${base}.pool`)) return;
      const pool = poolOf(d.pool)!;
      if (d.volume !== undefined && d.sizeMiB !== undefined)
        add(
          `${base}.sizeMiB`,
          `the size of volume "${d.volume}" is the volume's own: remove sizeMiB here (grow it with volumes[].sizeMiB)`,
        );
      if (d.volume === undefined && d.sizeMiB === undefined)
        add(
          `${base}`,
          `give sizeMiB (a volume made for this VM in pool "${d.pool}") or volume (one of volumes: or an imported image)`,
        );
      if (d.volume === undefined) {
        if (cdrom)
          add(
            `${base}.media`,
            'a CD-ROM shows an ISO image: name an imported ISO with volume: <name>, not a size',
          );
        if (d.encryption && !poolCan(pool.type, 'encryption'))
          add(`${base}.encryption`, featureRefusal(pool.type, 'encryption', 'encrypt volumes'));
        return;
      }
      const k = specVolume(d.pool, d.volume);
      if (d.encryption)
        add(
          `${base}.encryption`,
          k >= 0
            ? `volume "${d.volume}" keeps its own key: set encryption on volumes[${k}] instead of on the disk`
            : `an imported volume keeps the encryption it was imported with; remove encryption here`,
        );
      if (cdrom && k >= 0)
        add(
          `${base}.media`,
          `volume "${d.volume}" (volumes[${k}]) is a ${pool.type === 'iscsi' ? 'raw' : 'qcow2'} disk, not an ISO; a CD-ROM shows an imported ISO (\`vmlink image import FILE.iso --pool ${d.pool}\`)`,
        );
    });
    const img = vm.image;
    if (img.kind === 'volume' && reachable(img.pool, vm, `vms[${vi}].image.pool`)) {
      const pool = poolOf(img.pool)!;
      // The boot disk has no key of its own in a VM's config: an encrypted volume is attached as a data disk.
      if (specVolumeEncryption(spec, img.pool, img.volume))
        add(
          `vms[${vi}].image.volume`,
          `volume "${img.volume}" is encrypted; a VM cannot boot from an encrypted volume yet: boot from an unencrypted one and attach this one as a disk`,
        );
      if (img.clone && !poolCan(pool.type, 'linkedClones'))
        add(
          `vms[${vi}].image.clone`,
          `${featureRefusal(pool.type, 'linkedClones', 'make linked clones')}; boot from the volume itself (clone: false) or keep templates in a dir or nfs pool`,
        );
    }
  });
  checkVolumeUse(spec, add);
}

/** Who uses which volume: one VM per volume (CD-ROM ISOs excepted), templates only cloned, no name collisions. */
function checkVolumeUse(spec: Spec, add: Add) {
  const specNames = new Map<string, string>();
  spec.volumes.forEach((v, i) => {
    specNames.set(`${v.pool}/${v.name}`, `volumes[${i}]`);
  });
  const users = new Map<string, { vm: string; path: string; shared: boolean; template: boolean }>();
  const made = new Map<string, string>();
  const seenVm = new Set<string>();
  spec.vms.forEach((vm, vi) => {
    if (seenVm.has(vm.name)) return; // a duplicate VM is reported already
    seenVm.add(vm.name);
    for (const use of vmVolumeUses(vm, vi)) {
      const key = `${use.pool}/${use.volume}`;
      if (use.kind === 'made') {
        // The volume's name is a spec name on the wire and in the pool: the same pattern and length.
        if (!NAME_PATTERN.test(use.volume)) {
          add(
            use.path,
            `the volume made for it would be named "${use.volume}" (<vm>-<disk>), longer than the 31 characters a volume name may have; shorten the VM's or the disk's name`,
          );
          continue;
        }
        const clash = specNames.get(key) ?? made.get(key);
        if (clash !== undefined)
          add(
            use.path,
            `VM "${vm.name}" makes volume "${use.volume}" in pool "${use.pool}" (<vm>-<disk>), but ${clash} already names it; rename the disk or that volume`,
          );
        else made.set(key, use.path);
        continue;
      }
      const shared = use.kind === 'named' && use.disk?.media === 'cdrom';
      const template = use.kind === 'template';
      const first = users.get(key);
      if (!first) {
        users.set(key, { vm: vm.name, path: use.path, shared, template });
        continue;
      }
      if (first.template && template) continue; // many clones of one template
      if (first.shared && shared) continue; // one ISO in many CD-ROM drives: read-only
      if (first.vm === vm.name && !first.template && !template) {
        add(use.path, `VM "${vm.name}" already uses volume "${use.volume}" at ${first.path}; attach it once`);
        continue;
      }
      const how = (t: boolean) => (t ? 'clones it as a template' : 'attaches it');
      add(
        use.path,
        first.template || template
          ? `volume "${use.volume}" of pool "${use.pool}" is a template (VM "${first.template ? first.vm : vm.name}" ${how(true)}), and VM "${first.template ? vm.name : first.vm}" ${how(false)} (${first.template ? use.path : first.path}); a template must not change under its clones: clone it everywhere, or attach a copy`
          : `volume "${use.volume}" of pool "${use.pool}" is attached by VM "${first.vm}" (${first.path}) and VM "${vm.name}"; a volume is attached by one VM at a time (a CD-ROM ISO excepted): give each VM its own`,
      );
    }
  });
}

/** Passthrough: a device goes to one VM of its host; USB devices only from the host's allow-list. */
export function checkDevices(spec: Spec, add: Add) {
  const taken = new Map<string, string>();
  const hosts = new Map(spec.hosts.map((h) => [h.name, h] as const));
  spec.vms.forEach((vm, vi) => {
    vm.devices.forEach((dev, k) => {
      const path = `vms[${vi}].devices[${k}]`;
      const id = 'pci' in dev ? `pci ${dev.pci}` : `usb ${dev.usb}`;
      const key = `${vm.host}\0${id}`;
      const first = taken.get(key);
      if (first !== undefined) {
        add(path, `${id} on host "${vm.host}" is already passed to ${first}; a host device goes to one VM`);
        return;
      }
      taken.set(key, `VM "${vm.name}" (${path})`);
      if (!('usb' in dev)) return;
      const allowed = hosts.get(vm.host)?.passthrough?.usb ?? [];
      const [vendor] = dev.usb.split(':');
      if (!allowed.some((a) => a === dev.usb || a === `${vendor}:*`)) {
        const hi = spec.hosts.findIndex((h) => h.name === vm.host);
        add(
          `${path}.usb`,
          `USB device ${dev.usb} is not in host "${vm.host}"'s allow-list (hosts[${hi}].passthrough.usb: ${allowed.join(', ') || 'empty'}); add "${dev.usb}" there to let VMs take it`,
        );
      }
    });
  });
}
