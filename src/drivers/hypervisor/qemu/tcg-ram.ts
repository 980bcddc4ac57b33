// The RAM size on a TCG guest's command line. QEMU before 9.0 (Debian 12 ships 7.2) loses guest writes in a live
// migration under TCG: its fast dirty-bitmap sync, taken for a RAM block whose length is a multiple of 64 pages
// (256 KiB), clears the bits without resetting TCG's TLB entries, so stores through entries that were already
// writable go unrecorded and the target gets stale pages (upstream commit 03bfc2188f, "physmem: Fix migration dirty
// bitmap coherency with TCG memory access"). Measured here with two plain QEMUs (bench/migrate-tcg-coherency.ts):
// tens of pages differ after some migrations, and the test guest's virtio-net then dies ("output.0:id 1 is not a
// head!", a soft lockup). A block 8 KiB longer than a multiple of 256 KiB takes QEMU's per-page sync instead, which
// resets the TLB for every page it clears: no page lost in the same runs. The guest sees 8 KiB more RAM; the
// migration's first sync (every page dirty) then stalls the guest once, ~300 ms for 1 GiB here (docs/mobility.md).
//
// Every TCG guest gets the pad, whatever the QEMU version, so that both ends of a migration agree on the RAM size
// (QEMU refuses a migration whose RAM blocks differ in length). Huge-page RAM cannot take it (the backend's size is a
// multiple of the huge page): the migration explain refuses live migration of such a VM under TCG instead.

/** KiB added to a TCG guest's RAM: the least that makes its length no multiple of 256 KiB (QEMU rounds to 8 KiB). */
export const TCG_RAM_PAD_KIB = 8;

/** The `-m` value of a VM: `memoryMiB` as given, or under TCG (and not on huge pages) with the pad, in KiB. */
export function memoryArg(memoryMiB: number, accel: 'kvm' | 'tcg', hugepages: boolean): string {
  if (accel !== 'tcg' || hugepages) return String(memoryMiB);
  return `${memoryMiB * 1024 + TCG_RAM_PAD_KIB}k`;
}
