// Backups (issue 12, docs/backup.md): `backupStores:` and `backups:` against the rest of the spec. Each object alone is
// checked by spec/schema-backup.ts; here: names unique, references exist, offsite stores pull from an on-site one on
// another machine, a VM is backed up by one policy per store, restore tests boot on an isolated network their VM's
// host has, and the declared objectives can be met by what is declared (3-2-1 needs an offsite store; an RPO under
// the schedule's interval could never hold; an RTO needs a restore test to be measured). The encryption key's secret
// is checked at plan time, against the vault.
import type { Spec } from '../schema.js';
import { parseSchedule } from '../schema-backup.js';
import { type Add, dupes } from './common.js';

export function checkBackups(spec: Spec, hostIdx: Map<string, number>, add: Add) {
  checkStores(spec, hostIdx, add);
  checkPolicies(spec, hostIdx, add);
}

function checkStores(spec: Spec, hostIdx: Map<string, number>, add: Add) {
  const stores = spec.backupStores;
  const hostList = spec.hosts.map((h) => h.name).join(', ');
  dupes(
    stores,
    (s) => s.name,
    (i) => `backupStores[${i}].name`,
    'backup store name',
    add,
  );
  const byName = new Map(stores.map((s, i) => [s.name, { s, i }] as const));
  const paths = new Map<string, number>();
  stores.forEach((s, i) => {
    const at = `backupStores[${i}]`;
    if (!hostIdx.has(s.host)) add(`${at}.host`, `unknown host "${s.host}" (hosts: ${hostList})`);
    if (s.path !== undefined) {
      const key = `${s.host}\0${s.path.replace(/\/+$/, '')}`;
      const first = paths.get(key);
      if (first !== undefined)
        add(
          `${at}.path`,
          `store "${s.name}" uses the directory ${s.path} on ${s.host} like backupStores[${first}] ("${stores[first]?.name}"); give each store its own path`,
        );
      else paths.set(key, i);
    }
    if (s.offsite) {
      if (s.pullFrom === undefined) {
        const onsite = stores.find((x) => !x.offsite)?.name ?? '<an on-site store>';
        add(`${at}.pullFrom`, `offsite store "${s.name}" is filled only by pulls: add pullFrom: ${onsite}`);
        return;
      }
      const src = byName.get(s.pullFrom);
      if (!src) {
        const names = stores.filter((x) => !x.offsite).map((x) => x.name);
        add(
          `${at}.pullFrom`,
          `unknown backup store "${s.pullFrom}" (on-site stores: ${names.length > 0 ? names.join(', ') : 'none'})`,
        );
      } else if (src.s.offsite) {
        add(
          `${at}.pullFrom`,
          `offsite store "${s.name}" pulls from "${s.pullFrom}", which is offsite too; pull from an on-site store (the one the policies write to)`,
        );
      } else if (src.s.host === s.host) {
        add(
          `${at}.host`,
          `offsite store "${s.name}" is on ${s.host} like its source "${src.s.name}": an offsite copy must be on another machine`,
        );
      }
    } else {
      if (s.pullFrom !== undefined)
        add(
          `${at}.pullFrom`,
          `only an offsite store pulls (set offsite: true on "${s.name}", or remove pullFrom: policies write to on-site stores)`,
        );
      if (s.retention !== undefined)
        add(
          `${at}.retention`,
          `store retention applies to offsite stores only; on-site store "${s.name}" keeps what its policies' retention keeps`,
        );
    }
  });
}

function checkPolicies(spec: Spec, hostIdx: Map<string, number>, add: Add) {
  const policies = spec.backups;
  const stores = new Map(spec.backupStores.map((s) => [s.name, s] as const));
  const vms = new Map(spec.vms.map((v) => [v.name, v] as const));
  const nets = new Map(spec.networks.map((n) => [n.name, n] as const));
  const hostList = spec.hosts.map((h) => h.name).join(', ');
  dupes(
    policies,
    (p) => p.name,
    (i) => `backups[${i}].name`,
    'backup policy name',
    add,
  );
  /** `<store>\0<vm>` -> where that VM was first listed for that store. */
  const backedUp = new Map<string, string>();
  policies.forEach((p, i) => {
    const at = `backups[${i}]`;
    p.vms.forEach((vm, k) => {
      if (!vms.has(vm)) {
        add(
          `${at}.vms[${k}]`,
          `unknown VM "${vm}" (vms: ${spec.vms.map((v) => v.name).join(', ') || 'none'})`,
        );
        return;
      }
      const key = `${p.store}\0${vm}`;
      const first = backedUp.get(key);
      if (first !== undefined)
        add(
          `${at}.vms[${k}]`,
          `VM "${vm}" is already backed up to store "${p.store}" by ${first}; one policy per VM and store (their bitmaps and retention would fight)`,
        );
      else backedUp.set(key, `${at}.vms[${k}] ("${p.name}")`);
    });

    const store = stores.get(p.store);
    if (!store) {
      const names = spec.backupStores.filter((s) => !s.offsite).map((s) => s.name);
      add(
        `${at}.store`,
        `unknown backup store "${p.store}" (${names.length > 0 ? `on-site stores: ${names.join(', ')}` : 'add one to backupStores'})`,
      );
    } else if (store.offsite) {
      add(
        `${at}.store`,
        `store "${p.store}" is offsite: it is filled only by its own pulls; write to its source${store.pullFrom ? ` "${store.pullFrom}"` : ''} instead`,
      );
    } else if (p.rule === '3-2-1' && !spec.backupStores.some((s) => s.offsite && s.pullFrom === p.store)) {
      const other = spec.hosts.find((h) => h.name !== store.host)?.name ?? '<another host>';
      add(
        `${at}.rule`,
        `rule 3-2-1 needs an offsite copy of store "${p.store}": add { name: ${p.store}-offsite, host: ${other}, offsite: true, pullFrom: ${p.store} } to backupStores`,
      );
    }

    // Objectives the declaration could never meet.
    if (p.rpoMinutes !== undefined) {
      const s = parseSchedule(p.schedule);
      const intervalMinutes = s.kind === 'every' ? s.intervalMs / 60_000 : 1440;
      if (p.rpoMinutes <= intervalMinutes)
        add(
          `${at}.rpoMinutes`,
          `rpoMinutes ${p.rpoMinutes} can never hold with schedule "${p.schedule}" (a snapshot up to ${intervalMinutes} min old is normal): run more often than every ${p.rpoMinutes} min, or raise rpoMinutes`,
        );
    }
    if (p.rtoMinutes !== undefined && p.restoreTest === undefined)
      add(
        `${at}.rtoMinutes`,
        `rtoMinutes is measured by restore tests: add restoreTest: { schedule: "every 1d", network: <an isolated network> }`,
      );

    const test = p.restoreTest;
    if (test) {
      if (test.host !== undefined && !hostIdx.has(test.host))
        add(`${at}.restoreTest.host`, `unknown host "${test.host}" (hosts: ${hostList})`);
      const net = nets.get(test.network);
      if (!net) {
        const iso = spec.networks.filter((n) => n.mode === 'isolated').map((n) => n.name);
        add(
          `${at}.restoreTest.network`,
          `unknown network "${test.network}" (isolated networks: ${iso.length > 0 ? iso.join(', ') : 'none: add one with mode: isolated'})`,
        );
      } else if (net.mode !== 'isolated' || !('host' in net)) {
        add(
          `${at}.restoreTest.network`,
          `network "${test.network}" is ${net.mode}: a restored copy must boot on an isolated network, so it never meets the original or the outside`,
        );
      } else {
        const bootHosts = new Set<string>();
        if (test.host !== undefined) bootHosts.add(test.host);
        else
          for (const vm of p.vms) {
            const h = vms.get(vm)?.host; // a VM the scheduler places: checked when it is placed
            if (h !== undefined) bootHosts.add(h);
          }
        for (const h of bootHosts) {
          if (h !== net.host && hostIdx.has(h))
            add(
              `${at}.restoreTest.network`,
              `isolated network "${test.network}" is on ${net.host}, but the restore test boots on ${h}${test.host === undefined ? " (its VM's host)" : ''}: set restoreTest.host: ${net.host}, or use an isolated network on ${h}`,
            );
        }
      }
    }
  });
}
