// Which spec objects use which secret: for `secret list`, refusing a delete, and refusing a plan that names a
// secret the controller does not hold.
import type { SpecIssue } from '../../shared/errors.js';
import type { Spec } from '../../spec/schema.js';

/** Every use of a secret in `spec`: its name, the user (`vm/disk`) and the spec path. */
export function secretUses(spec: Spec | undefined): Array<{ secret: string; user: string; path: string }> {
  return (spec?.vms ?? []).flatMap((vm, i) =>
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
}

/** The secrets VM `name` of `spec` needs at create and start (its encrypted disks' keys). */
export function secretsOfVm(spec: Spec, name: string): string[] {
  const vm = spec.vms.find((v) => v.name === name);
  return [...new Set((vm?.disks ?? []).flatMap((d) => (d.encryption ? [d.encryption.secret] : [])))];
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
