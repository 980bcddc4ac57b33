// The plan's rules for disks that `vmlink vm move-disk` moved (docs/mobility.md "The spec"): a move rewrites the
// VM's recorded config (the disk's new source) but keeps the config hash it was applied with, so the plan compares
// the recorded config itself; and a running VM whose disk sits in another place than the spec's is refused rather
// than restarted onto a new, empty volume.
import { ConflictError } from '../shared/errors.js';
import type { DiskConfig, ObservedVm, VmConfig } from '../shared/model.js';
import { vmVolumeName } from '../shared/storage.js';
import { vmConfigHash } from './hash.js';

/**
 * Whether `o` is realised as the config of hash `hash` asks. The recorded hash decides, unless the recorded config
 * no longer hashes to it (a disk moved live since the apply): then that config does, so a disk moved to where the
 * spec now says is converged (`no changes`), and one moved away from it is not.
 */
export function realisedAs(o: ObservedVm, hash: string): boolean {
  if (!o.config) return o.configHash === hash;
  const now = vmConfigHash(o.config);
  return now === o.configHash ? o.configHash === hash : now === hash;
}

const place = (d: DiskConfig): string => (d.source ? `pool ${d.source.pool}` : "the VM's directory");

/**
 * Why applying `want` to VM `o` on `host` would lose what a disk holds: each disk of the VM's own (the VM
 * directory's, or its `<vm>-<disk>` volume) that sits elsewhere than the spec says, with the fix. Asked of a VM
 * that runs and is to run (it would restart onto an empty disk), and of any VM whose disks `vm move-disk` moved
 * since the apply (its recorded config no longer hashes to the recorded hash: the spec would put it back onto an
 * empty disk). Empty otherwise: a stopped VM whose spec names another pool switches at its next start, the old
 * volume kept.
 */
export function diskMoveRefusals(host: string, want: VmConfig, o: ObservedVm): string[] {
  if (!o.config) return [];
  const live = (o.state === 'running' || o.state === 'paused') && want.state === 'running';
  const moved = vmConfigHash(o.config) !== o.configHash;
  if (!live && !moved) return [];
  const seen = new Map(o.config.disks.map((d) => [d.name, d]));
  const out: string[] = [];
  for (const d of want.disks) {
    const now = seen.get(d.name);
    if (!now || d.media === 'cdrom' || now.media === 'cdrom') continue;
    if ((now.source?.pool ?? '') === (d.source?.pool ?? '')) continue;
    // A named volume of `volumes:` in another pool is another disk (the old volume is kept): not a move.
    if (d.source && d.source.volume !== vmVolumeName(want.name, d.name)) continue;
    const what = `vm ${want.name} on ${host}: disk ${d.name} sits in ${place(now)} but the spec puts it in ${place(d)}; applying would ${live ? 'restart the VM' : 'put the VM'} onto an empty disk`;
    out.push(
      d.source?.kind === 'file'
        ? `${what}. Move it: \`vmlink vm move-disk ${want.name} ${d.name} --to-pool ${d.source.pool}\`, then apply (or keep ${place(now)} in the spec)`
        : live
          ? `${what}. \`vmlink vm move-disk\` moves a disk only into a dir pool of the VM's host: keep ${place(now)} in the spec, or set the VM's state to stopped first (it then starts on the new, empty disk; the old volume is kept)`
          : `${what}. \`vmlink vm move-disk\` moves a disk only into a dir pool of the VM's host: keep ${place(now)} in the spec`,
    );
  }
  return out;
}

/** Throws one `ConflictError` naming every refusal (nothing applied), as the storage plan's refusals do. */
export function refuseDiskMoves(refusals: readonly string[]): void {
  if (!refusals.length) return;
  const text = refusals.map((r) => `  ${r}`).join('\n');
  const subject = /^vm (\S+)/.exec(refusals[0]!)?.[1];
  throw new ConflictError(
    `the plan is refused, nothing was changed:\n${text}`,
    subject ? `vm/${subject}` : undefined,
  );
}
