// QEMU arguments that back a VM's RAM with huge pages (`vms[].memory.hugepages`): a hugetlb memfd, preallocated so a
// host short of pages fails at start rather than when the guest touches its memory. A memfd needs no hugetlbfs
// mount, no file the jailed QEMU must be allowed to create in one, and leaves nothing behind when QEMU exits.

/** The id of the RAM backend object (named by `-machine memory-backend=`). */
export const HUGEPAGES_BACKEND_ID = 'vmlink-ram';

/** `-object memory-backend-memfd,...` for `memoryMiB` of RAM on the host's default-size huge pages. */
export function hugepagesArgs(memoryMiB: number): string[] {
  if (!Number.isInteger(memoryMiB) || memoryMiB < 1) throw new Error(`invalid memory size ${memoryMiB}`);
  return [
    '-object',
    `memory-backend-memfd,id=${HUGEPAGES_BACKEND_ID},size=${memoryMiB}M,hugetlb=on,prealloc=on`,
  ];
}
