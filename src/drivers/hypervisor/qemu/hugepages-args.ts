// QEMU arguments that back a VM's RAM with huge pages (`vms[].memory.hugepages`): a file memory backend on hugetlbfs,
// preallocated so a host short of pages fails at start rather than when the guest touches its memory.

/** Where Debian (systemd) mounts hugetlbfs. */
export const HUGEPAGES_MOUNT_DEFAULT = '/dev/hugepages';
/** The id of the RAM backend object (named by `-machine memory-backend=`). */
export const HUGEPAGES_BACKEND_ID = 'vmlink-ram';

/** `-object memory-backend-file,...` for `memoryMiB` of RAM on the hugetlbfs at `mount`. */
export function hugepagesArgs(memoryMiB: number, mount: string): string[] {
  if (!/^\/[\w./-]*$/.test(mount) || mount.includes('..'))
    throw new Error(`invalid hugetlbfs mount ${mount}`);
  return [
    '-object',
    `memory-backend-file,id=${HUGEPAGES_BACKEND_ID},size=${memoryMiB}M,mem-path=${mount},prealloc=on,share=off`,
  ];
}
