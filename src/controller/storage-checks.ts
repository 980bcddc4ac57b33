// Verify's storage checks at run time, through the agents: TCP connects from each compute host to the portals its
// VMs' volumes need, each VM's open block devices (query-block) and a read and write of each volume in its guest.
// Which checks run and what they expect: ../verify/storage.ts.
import type { VmConfig } from '../shared/model.js';
import type { ProbeResult } from '../shared/results.js';
import type { Spec } from '../spec/schema.js';
import {
  diskIoArgv,
  openMatches,
  parseDiskIo,
  type StorageCheck,
  storageChecksOf,
  volumeLabel,
} from '../verify/storage.js';
import type { AgentClient } from './agents.js';
import { limit } from './probe-sources.js';

/** What the storage checks ask of a host's agent (an `AgentClient`; a fake in unit tests). */
export type StorageAgent = Pick<AgentClient, 'probeBatch' | 'exec'> & Partial<Pick<AgentClient, 'openDisks'>>;

/** One storage check's outcome, as verify reports it (`storage` in its result). */
export interface StorageCell {
  check: StorageCheck['check'];
  /** The compute host it ran from (portal) or the VM's host. */
  host: string;
  vm?: string;
  disk?: string;
  /** `pool/volume` of a disk check; the pools behind a portal. */
  volume: string;
  /** What was checked: `address:port (service)`, or the volume as its host opens it. */
  target: string;
  ok: boolean;
  detail: string;
  /** The check did not run (agent unreachable, no guest agent): it proves nothing either way. */
  unmeasured?: boolean;
  ms?: number;
}

/** How long a portal connect may take. */
const PORTAL_TIMEOUT_MS = 3_000;
/** How long a guest's disk I/O check may take (TCG guests are slow; a stalled iSCSI session waits for its timeout). */
const DISK_IO_TIMEOUT_MS = 60_000;
/** VMs checked at once. */
const VMS_AT_ONCE = 4;

/** Where a disk source leads, for people (never a secret: CHAP names only its user). */
export function sourceTarget(c: Extract<StorageCheck, { check: 'open' | 'io' }>): string {
  const s = c.source;
  if (s.kind === 'iscsi') return `iscsi://${s.portal}/${s.iqn}/${s.lun}`;
  if (s.kind === 'nfs') return `nfs://${s.server}${s.export}/${s.file}`;
  return s.path;
}

const firstLine = (e: unknown): string =>
  (e instanceof Error ? e.message : String(e)).split('\n')[0]!.slice(0, 200);

/** Runs the storage checks and returns one cell per check, in the plan's order. */
export async function runStorageChecks(
  checks: readonly StorageCheck[],
  agents: ReadonlyMap<string, StorageAgent>,
): Promise<StorageCell[]> {
  const cells: StorageCell[] = new Array(checks.length);
  const jobs: Array<() => Promise<void>> = [];

  // Portals: every connect of one host in one probe batch.
  const byHost = new Map<string, number[]>();
  checks.forEach((c, i) => {
    if (c.check !== 'portal') return;
    byHost.set(c.host, [...(byHost.get(c.host) ?? []), i]);
  });
  for (const [host, idx] of byHost)
    jobs.push(async () => {
      const portals = idx.map((i) => checks[i] as Extract<StorageCheck, { check: 'portal' }>);
      let results: ProbeResult[];
      try {
        const agent = agents.get(host);
        if (!agent) throw new Error(`no agent for host ${host}`);
        results = await agent.probeBatch({
          from: { kind: 'host' },
          probes: portals.map((p) => ({
            kind: 'tcp',
            target: p.address,
            port: p.port,
            timeoutMs: PORTAL_TIMEOUT_MS,
          })),
        });
      } catch (e) {
        results = portals.map(() => ({
          reachable: false,
          detail: `not measured: ${firstLine(e)}`,
          unmeasured: true,
        }));
      }
      idx.forEach((ci, k) => {
        const p = portals[k]!;
        const r = results[k] ?? { reachable: false, detail: 'not measured: no result', unmeasured: true };
        cells[ci] = {
          check: 'portal',
          host,
          volume: p.pools.join(', '),
          target: `${p.address}:${p.port} (${p.service})`,
          ok: r.reachable && !r.unmeasured,
          detail: r.reachable ? 'connected' : `${host} cannot connect to ${p.address}:${p.port}: ${r.detail}`,
          ...(r.unmeasured ? { unmeasured: true } : {}),
          ...(r.rttMs === undefined ? {} : { ms: r.rttMs }),
        };
      });
    });

  // Disks: per VM, its open block devices once, then each disk's guest I/O in turn.
  const byVm = new Map<string, number[]>();
  checks.forEach((c, i) => {
    if (c.check === 'portal') return;
    byVm.set(c.vm, [...(byVm.get(c.vm) ?? []), i]);
  });
  for (const idx of byVm.values())
    jobs.push(async () => {
      const first = checks[idx[0]!] as Extract<StorageCheck, { check: 'open' | 'io' }>;
      const agent = agents.get(first.host);
      let open: Array<{ disk: string; target: string }> | string;
      try {
        if (!agent?.openDisks) throw new Error(`the agent of ${first.host} cannot list open disks`);
        open = (await agent.openDisks(first.vm)).disks;
      } catch (e) {
        open = firstLine(e);
      }
      for (const ci of idx) {
        const c = checks[ci] as Extract<StorageCheck, { check: 'open' | 'io' }>;
        const base = {
          host: c.host,
          vm: c.vm,
          disk: c.disk,
          volume: volumeLabel(c.source),
          target: sourceTarget(c),
        };
        if (c.check === 'open') {
          cells[ci] = { check: 'open', ...base, ...openCell(c, open) };
          continue;
        }
        const started = Date.now();
        try {
          if (!agent) throw new Error(`no agent for host ${c.host}`);
          const r = await agent.exec(c.vm, diskIoArgv(c.serial, c.write), DISK_IO_TIMEOUT_MS);
          const io = parseDiskIo(r.exitCode, r.stdout, r.stderr);
          cells[ci] = {
            check: 'io',
            ...base,
            ok: io.ok,
            detail: io.ok ? io.detail : `the guest of ${c.vm} cannot use disk ${c.disk}: ${io.detail}`,
            ...(io.unmeasured ? { unmeasured: true } : {}),
            ms: Date.now() - started,
          };
        } catch (e) {
          cells[ci] = {
            check: 'io',
            ...base,
            ok: false,
            detail: `not measured: ${firstLine(e)}`,
            unmeasured: true,
          };
        }
      }
    });
  await limit(jobs, VMS_AT_ONCE);
  return cells;
}

/** The open check's verdict from QEMU's open disks (or why they could not be listed). */
function openCell(
  c: Extract<StorageCheck, { check: 'open' }>,
  open: Array<{ disk: string; target: string }> | string,
): Pick<StorageCell, 'ok' | 'detail' | 'unmeasured'> {
  if (typeof open === 'string') return { ok: false, detail: `not measured: ${open}`, unmeasured: true };
  const d = open.find((o) => o.disk === c.disk);
  if (!d)
    return {
      ok: false,
      detail: `QEMU of ${c.vm} does not have disk ${c.disk} open (open: ${open.map((o) => o.disk).join(', ') || 'none'})`,
    };
  if (!openMatches(c.source, d.target))
    return {
      ok: false,
      detail: `QEMU of ${c.vm} has ${d.target} open as ${c.disk}, not ${volumeLabel(c.source)}`,
    };
  return { ok: true, detail: `open in QEMU: ${d.target}` };
}

/**
 * Verify's storage part: plans the checks from the resolved spec (guest I/O only in the test guest, which has dd
 * and direct I/O), runs them and says what it left out.
 */
export async function verifyStorage(
  desired: Readonly<Record<string, { vms: readonly VmConfig[] }>>,
  spec: Spec,
  agents: ReadonlyMap<string, StorageAgent>,
  progress: (m: string) => void,
): Promise<{ cells: StorageCell[]; notes: string[] }> {
  const plan = storageChecksOf(desired, (vm) =>
    spec.vms.some((v) => v.name === vm && v.image.kind === 'test-guest'),
  );
  if (!plan.checks.length) return { cells: [], notes: plan.notes };
  for (const n of plan.notes) progress(n);
  progress(`checking ${plan.checks.length} storage paths (portals, open volumes, guest reads and writes)`);
  return { cells: await runStorageChecks(plan.checks, agents), notes: plan.notes };
}
