// Storage: pools, volumes and storage hosts (lab.storage). VM disks, boot volumes and devices: ./storage-disks.ts.
import { nfsExportId } from '../../shared/storage.js';
import type { PoolSpec, Spec } from '../schema.js';
import { featureRefusal, poolAddress, poolCan } from '../storage.js';
import { type Add, dupes } from './common.js';
import { checkDevices, checkDisks } from './storage-disks.js';

/** First index of each pool name (later duplicates are reported once). */
export function poolIndex(spec: Spec): Map<string, number> {
  const out = new Map<string, number>();
  spec.pools.forEach((p, i) => {
    if (!out.has(p.name)) out.set(p.name, i);
  });
  return out;
}

/** Pools, volumes, disks, boot volumes, devices and storage hosts of a schema-valid spec. */
export function checkStorage(spec: Spec, hostIdx: Map<string, number>, add: Add) {
  const pools = poolIndex(spec);
  checkStorageHosts(spec, add);
  checkPools(spec, hostIdx, add);
  checkVolumes(spec, pools, add);
  checkDisks(spec, pools, add);
  checkDevices(spec, add);
}

/** Storage hosts run no VMs or networks, and in a lab each is a `lab.storage` machine (and only those are). */
function checkStorageHosts(spec: Spec, add: Add) {
  const storage = new Set(spec.hosts.filter((h) => h.role === 'storage').map((h) => h.name));
  const why = 'a storage host (role: storage) only serves pools; its agent runs no VMs or networks';
  spec.vms.forEach((vm, i) => {
    if (storage.has(vm.host))
      add(`vms[${i}].host`, `"${vm.host}" is ${why}; put VM "${vm.name}" on a compute host`);
  });
  spec.networks.forEach((n, i) => {
    if ('host' in n && storage.has(n.host))
      add(`networks[${i}].host`, `"${n.host}" is ${why}; put network "${n.name}" on a compute host`);
    if ('hosts' in n)
      (n.hosts ?? []).forEach((h, k) => {
        if (storage.has(h)) add(`networks[${i}].hosts[${k}]`, `"${h}" is ${why}; remove it from the list`);
      });
  });
  const lab = spec.lab;
  if (!lab) return;
  spec.hosts.forEach((h, i) => {
    if (h.role === 'storage' && !lab.storage.some((m) => m.name === h.name))
      add(
        `hosts[${i}].name`,
        `storage host "${h.name}" has no machine in lab.storage; add { name: ${h.name}, address: <ip in ${lab.lan.cidr}> } there`,
      );
  });
  lab.storage.forEach((m, i) => {
    const h = spec.hosts.find((x) => x.name === m.name);
    if (!h)
      add(
        `lab.storage[${i}].name`,
        `lab storage machine "${m.name}" is not in hosts; add { name: ${m.name}, role: storage } to hosts`,
      );
    else if (h.role !== 'storage')
      add(
        `lab.storage[${i}].name`,
        `host "${m.name}" is role: compute; a lab.storage machine runs a storage agent: set role: storage on it (or move it to lab.hosts)`,
      );
  });
}

/** Pools: unique names, a host of the right role, type-specific fields, CHAP on iscsi, nfs export ids, paths. */
function checkPools(spec: Spec, hostIdx: Map<string, number>, add: Add) {
  dupes(
    spec.pools,
    (p) => p.name,
    (i) => `pools[${i}].name`,
    'pool name',
    add,
  );
  const hostList = spec.hosts.map((h) => h.name).join(', ');
  const exportIds = new Map<string, { pool: string; i: number }>();
  const paths: Array<{ host: string; path: string; i: number }> = [];
  spec.pools.forEach((p, i) => {
    const base = `pools[${i}]`;
    const hi = hostIdx.get(p.host);
    const host = hi === undefined ? undefined : spec.hosts[hi];
    if (!host) add(`${base}.host`, `unknown host "${p.host}" (hosts: ${hostList})`);
    else if (p.type === 'dir' && host.role === 'storage')
      add(
        `${base}.host`,
        `"${p.host}" is a storage host; a dir pool lives on the compute host whose VMs use it (storage hosts serve iscsi and nfs pools)`,
      );
    else if (p.type !== 'dir' && host.role !== 'storage')
      add(
        `${base}.host`,
        `${p.type} pools are served by a storage host; "${p.host}" is role: compute (set role: storage on a host that runs no VMs, or use type: dir)`,
      );
    checkPoolFields(spec, p, base, add);
    if (p.type === 'nfs') {
      const id = nfsExportId(p.name);
      const key = `${p.host}\0${id}`;
      const first = exportIds.get(key);
      if (first !== undefined)
        add(
          `${base}.name`,
          `nfs pools "${first.pool}" (pools[${first.i}]) and "${p.name}" get the same export id ${id} on host "${p.host}" (derived from their names); rename one`,
        );
      else exportIds.set(key, { pool: p.name, i });
    }
    const path = p.path ?? `/var/lib/vmlink/pools/${p.name}`;
    for (const o of paths) {
      if (o.host !== p.host) continue;
      if (o.path === path || path.startsWith(`${o.path}/`) || o.path.startsWith(`${path}/`))
        add(
          `${base}.path`,
          `${path} overlaps pool "${spec.pools[o.i]?.name}" (pools[${o.i}], ${o.path}) on host "${p.host}"; each pool needs a directory of its own`,
        );
    }
    paths.push({ host: p.host, path: path.replace(/\/+$/, ''), i });
  });
}

/** Fields that only some pool types take, and CHAP on iscsi. */
function checkPoolFields(spec: Spec, p: PoolSpec, base: string, add: Add) {
  if (p.type === 'dir') {
    if (p.clients !== undefined)
      add(
        `${base}.clients`,
        'a dir pool is opened on its own host only; remove clients (iscsi and nfs pools take them)',
      );
    if (p.address !== undefined)
      add(
        `${base}.address`,
        'a dir pool is opened on its own host only; remove address (iscsi and nfs pools take it)',
      );
  } else if (poolAddress(spec, p) === undefined)
    add(
      `${base}.address`,
      `VM hosts need an address to reach ${p.type} pool "${p.name}": set address here or hosts[].address of "${p.host}"`,
    );
  if (p.type !== 'iscsi' && p.chap !== undefined)
    add(`${base}.chap`, `CHAP is iSCSI's login; ${p.type} pools do not take it: remove chap`);
  // CHAP is what keeps other initiators on the LAN off the LUNs: required unless the pool is restricted to clients.
  if (p.type === 'iscsi' && p.chap === undefined && !p.clients?.length)
    add(
      `${base}.chap`,
      `iscsi pool "${p.name}" is open to any initiator on the network: add chap: { user: <name>, secret: <secret name> } (create the secret with \`vmlink secret set NAME\`), or restrict it with clients: [<network>]`,
    );
}

/**
 * Volumes: a known pool, names unique per pool, a size (or a template that gives one), templates in the same pool
 * without cycles, linked clones and encryption only where the pool's backend has them.
 */
function checkVolumes(spec: Spec, pools: Map<string, number>, add: Add) {
  const poolList = spec.pools.map((p) => p.name).join(', ') || 'none defined';
  const byKey = new Map<string, number>();
  spec.volumes.forEach((v, i) => {
    const key = `${v.pool}/${v.name}`;
    const first = byKey.get(key);
    if (first !== undefined)
      add(
        `volumes[${i}].name`,
        `duplicate volume "${v.name}" in pool "${v.pool}" (already at volumes[${first}]); names must be unique per pool`,
      );
    else byKey.set(key, i);
  });
  spec.volumes.forEach((v, i) => {
    const base = `volumes[${i}]`;
    const pi = pools.get(v.pool);
    const pool = pi === undefined ? undefined : spec.pools[pi];
    if (!pool) {
      add(`${base}.pool`, `unknown pool "${v.pool}" (pools: ${poolList})`);
      return;
    }
    if (v.encryption && !poolCan(pool.type, 'encryption'))
      add(`${base}.encryption`, `${featureRefusal(pool.type, 'encryption', 'encrypt volumes')}`);
    if (!v.from) {
      if (v.sizeMiB === undefined)
        add(
          `${base}.sizeMiB`,
          `volume "${v.name}" needs a size: set sizeMiB, or from: { volume: <template> } to copy one`,
        );
      return;
    }
    const from = v.from;
    if (from.volume === v.name) {
      add(`${base}.from.volume`, `volume "${v.name}" cannot be a clone of itself; name a template volume`);
      return;
    }
    const ti = byKey.get(`${v.pool}/${from.volume}`);
    if (ti === undefined) {
      const elsewhere = spec.volumes.find((x) => x.name === from.volume);
      add(
        `${base}.from.volume`,
        elsewhere
          ? `template "${from.volume}" is in pool "${elsewhere.pool}", not "${v.pool}"; a clone lives in its template's pool (import a copy with \`vmlink image import --from-volume\`)`
          : `unknown volume "${from.volume}" in pool "${v.pool}"; declare it under volumes: first`,
      );
      return;
    }
    if (from.linked && !poolCan(pool.type, 'linkedClones'))
      add(
        `${base}.from.linked`,
        `${featureRefusal(pool.type, 'linkedClones', 'make linked clones')}; set linked: false for a full copy`,
      );
    if (v.encryption)
      add(
        `${base}.encryption`,
        `a clone keeps its template's encryption; encrypt the template "${from.volume}" instead, or make a fresh volume with sizeMiB`,
      );
    // A cycle of templates never ends: report it once, on the volume that closes it.
    const chain = [v.name];
    let cur = spec.volumes[ti];
    while (cur?.from && cur.pool === v.pool) {
      if (cur.name === v.name) {
        add(
          `${base}.from.volume`,
          `templates form a cycle: ${[...chain, v.name].join(' <- ')}; one of them needs sizeMiB and no from`,
        );
        break;
      }
      if (chain.includes(cur.name)) break;
      chain.push(cur.name);
      const next = byKey.get(`${v.pool}/${cur.from.volume}`);
      cur = next === undefined ? undefined : spec.volumes[next];
    }
    const template = spec.volumes[ti];
    if (v.sizeMiB !== undefined && template?.sizeMiB !== undefined && v.sizeMiB < template.sizeMiB)
      add(
        `${base}.sizeMiB`,
        `${v.sizeMiB} MiB is smaller than template "${from.volume}" (${template.sizeMiB} MiB); a clone can only be as big or bigger: leave sizeMiB out or raise it`,
      );
  });
}
