// The VMs this controller is migrating now. One migration per VM at a time, across every caller (API, balancer);
// and HA leaves such a VM alone until its migration settled: with the target resuming on arrival, the owner record
// names the target while the guest still runs on the source, so a decision made from the record alone (a
// maintenance stop on the target, then a start elsewhere) could run a second copy.
const migrating = new Set<string>();

/** Whether `vm` is being migrated by this controller. */
export function migrationInFlight(vm: string): boolean {
  return migrating.has(vm);
}

/** Marks `vm` as migrating; false when it already was. */
export function claimMigration(vm: string): boolean {
  if (migrating.has(vm)) return false;
  migrating.add(vm);
  return true;
}

export function releaseMigration(vm: string): void {
  migrating.delete(vm);
}
