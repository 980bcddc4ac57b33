// `vmlink doctor` for storage: each path from a compute host to a pool it uses, explained when it is down, with the
// evidence and the fix. A portal that does not answer (which host, which address:port, the connect's own error);
// a pool its storage host does not hold or reports problems with (an nfs pool: the exports the server has); an
// iSCSI login refused (CHAP: QEMU's error from the last failed apply). Asks agents only; runs no host command.
import type { DoctorCheck } from '../agent/wire-doctor.js';
import { resolveSpec } from '../plan/resolve.js';
import type { HostReport, VmConfig } from '../shared/model.js';
import type { Spec } from '../spec/schema.js';
import { type PortalService, storageChecksOf } from '../verify/storage.js';
import type { AgentClient } from './agents.js';
import { runStorageChecks } from './storage-checks.js';
import type { StoreEvent } from './store/types.js';

/** What the storage doctor asks of an agent. */
export type StorageDoctorAgent = Pick<AgentClient, 'probeBatch' | 'exec' | 'report'>;

/** What serves each portal service, for the fix. */
const SERVER_OF: Record<PortalService, string> = {
  iscsi: 'tgtd (the iSCSI target)',
  nfs: 'nfs-ganesha',
  portmapper: 'rpcbind (NFSv3 clients ask it first)',
};

/** QEMU's words (libiscsi) when a target refuses the initiator's login: CHAP or an initiator not allowed. */
const LOGIN_REFUSED = /authentication fail|authorization fail|login (?:failed|to target)|chap/i;

/** Most characters of evidence quoted from an event (QEMU errors carry long command lines). */
const EVIDENCE_CHARS = 400;

/** The storage checks of `vmlink doctor` for the applied spec (none when it has no pool disks). */
export async function storageDoctor(
  spec: Spec,
  agents: ReadonlyMap<string, StorageDoctorAgent>,
  events: readonly StoreEvent[],
  desired: Readonly<Record<string, { vms: readonly VmConfig[] }>> = resolveSpec(spec),
): Promise<DoctorCheck[]> {
  const out: DoctorCheck[] = [];
  const poolHost = new Map(spec.pools.map((p) => [p.name, p.host]));
  const storageHosts = [...new Set(spec.pools.filter((p) => p.type !== 'dir').map((p) => p.host))];

  // Each portal from each compute host that uses it.
  const plan = storageChecksOf(desired, () => false);
  const portals = plan.checks.filter((c) => c.check === 'portal');
  const cells = await runStorageChecks(portals, agents);
  portals.forEach((p, i) => {
    const c = cells[i]!;
    const server = poolHost.get(p.pools[0]!) ?? 'the storage host';
    out.push({
      name: `storage portal ${p.address}:${p.port} (${p.service}) from ${p.host}`,
      ok: c.ok,
      detail: c.ok ? `connected (pools ${p.pools.join(', ')})` : c.detail,
      ...(c.ok
        ? {}
        : {
            fix: `on ${server}: is ${SERVER_OF[p.service]} running and listening on ${p.address}:${p.port}? (a lab starts it with \`vmlink lab up -f SPEC\`); check pools[].address of ${p.pools.join(', ')} and that ${p.host} routes to ${p.address}`,
          }),
    });
  });

  // Each iscsi/nfs pool as its storage host reports it.
  for (const host of storageHosts) {
    let report: HostReport;
    try {
      const agent = agents.get(host);
      if (!agent) throw new Error(`no agent for host ${host}`);
      report = await agent.report();
    } catch (e) {
      out.push({
        name: `storage host ${host}`,
        ok: false,
        detail: `its agent does not answer: ${(e as Error).message.split('\n')[0]}`,
        fix: 'start it (a lab: `vmlink lab up -f SPEC`), then `vmlink doctor` again',
      });
      continue;
    }
    const held = report.pools ?? [];
    const exports = held
      .filter((p) => p.type === 'nfs' && !p.problems.some((x) => /export/i.test(x)))
      .map((p) => p.config?.nfs?.pseudoPath ?? p.name);
    for (const pool of spec.pools.filter((p) => p.host === host && p.type !== 'dir')) {
      const seen = held.find((p) => p.name === pool.name);
      const name = `storage pool ${pool.name} (${pool.type}) on ${host}`;
      if (!seen) {
        out.push({
          name,
          ok: false,
          detail: `${host} does not hold it${pool.type === 'nfs' ? `; its NFS server exports ${exports.join(', ') || 'nothing'}` : ''}`,
          fix: '`vmlink apply -f SPEC` creates it (see `vmlink plan`)',
        });
        continue;
      }
      if (!seen.problems.length) {
        out.push({ name, ok: true, detail: `${seen.volumes.length} volume(s), ${seen.freeMiB} MiB free` });
        continue;
      }
      const exportGone = pool.type === 'nfs' && seen.problems.some((x) => /export/i.test(x));
      out.push({
        name,
        ok: false,
        detail: `${seen.problems.join('; ')}${exportGone ? ` (the server exports ${exports.join(', ') || 'nothing'})` : ''}`,
        fix: exportGone
          ? `\`vmlink apply -f SPEC\` repairs the pool and re-exports it; if nfs-ganesha is down on ${host}, \`vmlink lab up -f SPEC\` restarts it`
          : `\`vmlink apply -f SPEC\` repairs a pool with problems; if its server is down on ${host}, \`vmlink lab up -f SPEC\` restarts it`,
      });
    }
  }

  // An iSCSI login refused: the last apply failure that says so, unless an apply succeeded since.
  const lastOk = lastIndex(events, (e) => e.kind === 'apply');
  const refused = lastIndex(events, (e) => e.kind === 'apply.failed' && LOGIN_REFUSED.test(e.message));
  if (refused > lastOk) {
    const msg = events[refused]!.message;
    const chapPools = spec.pools.filter((p) => p.type === 'iscsi' && p.chap);
    // The pool whose target name the error quotes, else the one the failed VM's disks use, else the only one.
    const vmNamed = spec.vms.find((v) => new RegExp(`\\bvm ${v.name}\\b`, 'i').test(msg));
    const pool =
      chapPools.find((p) => msg.includes(`.${p.name}.`)) ??
      chapPools.find((p) => vmNamed?.disks.some((d) => d.pool === p.name)) ??
      chapPools[0];
    out.push({
      name: `storage iSCSI login${pool ? ` to pool ${pool.name} on ${pool.host}` : ''}`,
      ok: false,
      detail: `the target refused the login (last apply, ${events[refused]!.time}): ${msg.slice(0, EVIDENCE_CHARS)}`,
      fix: pool?.chap
        ? `the CHAP password the VM's host sent is not the one the pool's target has: \`vmlink secret set ${pool.chap.secret}\` with the right one, then \`vmlink apply -f SPEC\` (the pool's target is bound to the secret's value again)`
        : "check the pool's CHAP secret (`vmlink secret list`) and its clients (pools[].clients), then apply again",
    });
  }
  return out;
}

/** Index of the last element that matches, -1 when none. */
function lastIndex<T>(list: readonly T[], match: (x: T) => boolean): number {
  for (let i = list.length - 1; i >= 0; i--) if (match(list[i]!)) return i;
  return -1;
}
