// Which spec objects use which secret: for `secret list`, refusing a delete, refusing a plan that names a secret the
// controller does not hold, and knowing which secrets a step needs on its host.
import type { SpecIssue } from '../../shared/errors.js';
import { vmVolumeName } from '../../shared/storage.js';
import type { Spec } from '../../spec/schema.js';

/**
 * Every use of a secret in `spec`: its name, the user and the spec path. Users are VM disks (LUKS keys), pools
 * (an iscsi pool's CHAP password) and volumes (LUKS keys).
 */
export function secretUses(spec: Spec | undefined): Array<{ secret: string; user: string; path: string }> {
  const disks = (spec?.vms ?? []).flatMap((vm, i) =>
    vm.disks.flatMap((d, j) =>
      d.encryption
        ? [
            {
              secret: d.encryption.secret,
              user: `vm ${vm.name} disk ${d.name}`,
              path: `vms[${i}].disks[${j}].encryption.secret`,
            },
          ]
        : [],
    ),
  );
  const pools = (spec?.pools ?? []).flatMap((p, i) =>
    p.chap ? [{ secret: p.chap.secret, user: `pool ${p.name} (CHAP)`, path: `pools[${i}].chap.secret` }] : [],
  );
  const volumes = (spec?.volumes ?? []).flatMap((v, i) =>
    v.encryption
      ? [
          {
            secret: v.encryption.secret,
            user: `volume ${v.pool}/${v.name}`,
            path: `volumes[${i}].encryption.secret`,
          },
        ]
      : [],
  );
  return [...disks, ...pools, ...volumes];
}

/**
 * The secrets VM `name` of `spec` needs on its host at create and start: its encrypted disks' keys (its own disks,
 * and the volumes of `volumes:` it attaches or boots from) and the CHAP password of each iscsi pool it uses.
 */
export function secretsOfVm(spec: Spec, name: string): string[] {
  const vm = spec.vms.find((v) => v.name === name);
  if (!vm) return [];
  const used: Array<{ pool: string; volume: string | undefined }> = vm.disks.flatMap((d) =>
    d.pool ? [{ pool: d.pool, volume: d.volume ?? vmVolumeName(vm.name, d.name) }] : [],
  );
  if (vm.image.kind === 'volume')
    used.push({
      pool: vm.image.pool,
      volume: vm.image.clone ? vmVolumeName(vm.name, 'root') : vm.image.volume,
    });
  const names = vm.disks.flatMap((d) => (d.encryption ? [d.encryption.secret] : []));
  for (const u of used) {
    const pool = spec.pools.find((p) => p.name === u.pool);
    if (pool?.type === 'iscsi' && pool.chap) names.push(pool.chap.secret);
    const volume = spec.volumes.find((v) => v.pool === u.pool && v.name === u.volume);
    if (volume?.encryption) names.push(volume.encryption.secret);
  }
  return [...new Set(names)];
}

/**
 * The secret holding the key of volume `pool/volume` as the spec declares it: a `volumes:` entry's encryption, or
 * the encryption of the `{ pool, sizeMiB }` disk the volume was made for.
 */
export function volumeKeySecret(spec: Spec, pool: string, volume: string): string | undefined {
  const v = spec.volumes.find((x) => x.pool === pool && x.name === volume);
  if (v) return v.encryption?.secret;
  for (const vm of spec.vms)
    for (const d of vm.disks)
      if (d.pool === pool && !d.volume && vmVolumeName(vm.name, d.name) === volume)
        return d.encryption?.secret;
  return undefined;
}

/** A plan-time issue for each use of a secret the controller does not hold (names only: no value is read). */
export function missingSecretIssues(spec: Spec, known: ReadonlySet<string>): SpecIssue[] {
  return secretUses(spec)
    .filter((u) => !known.has(u.secret))
    .map((u) => ({
      path: u.path,
      message: `secret "${u.secret}" (for ${u.user}) does not exist on the controller: create it with \`vmlink secret set ${u.secret}\` (value on stdin)`,
    }));
}
