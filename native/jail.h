/*
 * The per-VM jail of vmlink-launch (Firecracker's jailer does the same with pivot_root): a private mount namespace
 * whose root is a small read-only tmpfs holding only what QEMU needs (read-only binds of /usr, the shared loader
 * cache and a VM's images; a read-write bind of the VM's own directory; a few device nodes). Other VMs' directories,
 * /home, the agent's state and the host's /proc, /sys and /dev are simply absent.
 *
 * The dynamic loader named by QEMU's PT_INTERP is placed in the jail as an execute-only copy: the kernel marks a
 * process non-dumpable when it execs a file it cannot read (fs/exec.c would_dump), and execve would otherwise reset
 * the dumpable flag that prctl set. A non-dumpable QEMU cannot be ptraced or have its memory read through /proc by
 * its own uid.
 */
#ifndef VMLINK_JAIL_H
#define VMLINK_JAIL_H

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define JAIL_MAX_BINDS 32

/** One bind mount into the jail, at the same absolute path as on the host. */
struct jail_bind {
  const char *path;
  int writable;
};

/** What the jail shows: binds, device nodes, and where the new root's tmpfs is mounted. */
struct jail {
  const char *root; /* an empty root-owned directory; the tmpfs is mounted on it in the private namespace */
  struct jail_bind binds[JAIL_MAX_BINDS];
  int nbinds;
  const char *devs[JAIL_MAX_BINDS];
  int ndevs;
};

static int jail_fail(char *err, size_t len, const char *what, const char *path) {
  snprintf(err, len, "jail: %s %s: %s", what, path, strerror(errno));
  return -1;
}

/* mkdir -p of `path` (absolute, inside the jail root), mode 0755. */
static int jail_mkdirs(const char *path, char *err, size_t len) {
  char buf[PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return jail_fail(err, len, "path too long", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) return jail_fail(err, len, "mkdir", buf);
    *p = '/';
  }
  if (mkdir(buf, 0755) < 0 && errno != EEXIST) return jail_fail(err, len, "mkdir", buf);
  return 0;
}

/* The PT_INTERP of an ELF64 file ("" for a static binary), or -1. */
static int elf_interp(const char *bin, char *out, size_t outlen, char *err, size_t len) {
  int fd = open(bin, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return jail_fail(err, len, "open", bin);
  Elf64_Ehdr eh;
  int rc = -1;
  out[0] = '\0';
  if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
      eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum > 256) {
    snprintf(err, len, "jail: %s is not a 64-bit ELF executable", bin);
    goto done;
  }
  for (int i = 0; i < eh.e_phnum; i++) {
    Elf64_Phdr ph;
    if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + (Elf64_Off)i * sizeof ph)) != (ssize_t)sizeof ph) {
      snprintf(err, len, "jail: cannot read program headers of %s", bin);
      goto done;
    }
    if (ph.p_type != PT_INTERP) continue;
    if (ph.p_filesz < 2 || ph.p_filesz >= outlen ||
        pread(fd, out, ph.p_filesz, (off_t)ph.p_offset) != (ssize_t)ph.p_filesz || out[ph.p_filesz - 1] != '\0' ||
        out[0] != '/') {
      snprintf(err, len, "jail: bad PT_INTERP in %s", bin);
      goto done;
    }
    break;
  }
  rc = 0;
done:
  close(fd);
  return rc;
}

/* Copies `src` to `dst` with mode 0111: root-owned and execute-only. */
static int copy_exec_only(const char *src, const char *dst, char *err, size_t len) {
  int in = open(src, O_RDONLY | O_CLOEXEC);
  if (in < 0) return jail_fail(err, len, "open", src);
  int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0100);
  if (out < 0) {
    close(in);
    return jail_fail(err, len, "create", dst);
  }
  char buf[65536];
  ssize_t n;
  int rc = 0;
  while ((n = read(in, buf, sizeof buf)) > 0) {
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(out, buf + off, (size_t)(n - off));
      if (w < 0) {
        rc = jail_fail(err, len, "write", dst);
        goto done;
      }
      off += w;
    }
  }
  if (n < 0) rc = jail_fail(err, len, "read", src);
  if (rc == 0 && fchmod(out, 0111) < 0) rc = jail_fail(err, len, "chmod", dst);
done:
  close(in);
  close(out);
  return rc;
}

/* Binds host `path` at the same path under the jail root (read-only unless writable). */
static int jail_bind(const struct jail *j, const char *path, int writable, char *err, size_t len) {
  char dst[PATH_MAX];
  struct stat st;
  if (path[0] != '/' || strstr(path, "/../") || strcmp(path, "/") == 0) {
    snprintf(err, len, "jail: bind path must be absolute and not / or contain /../: %s", path);
    return -1;
  }
  if (stat(path, &st) < 0) return jail_fail(err, len, "stat", path);
  if (snprintf(dst, sizeof dst, "%s%s", j->root, path) >= (int)sizeof dst)
    return jail_fail(err, len, "path too long", path);
  if (S_ISDIR(st.st_mode)) {
    if (jail_mkdirs(dst, err, len) < 0) return -1;
  } else {
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", dst);
    *strrchr(parent, '/') = '\0';
    if (jail_mkdirs(parent, err, len) < 0) return -1;
    int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return jail_fail(err, len, "create mount point", dst);
    close(fd);
  }
  if (mount(path, dst, NULL, MS_BIND, NULL) < 0) return jail_fail(err, len, "bind", path);
  /* QEMU reads and runs from the read-only binds; what it may write it may not execute. */
  unsigned long flags = writable ? MS_NOEXEC : MS_RDONLY;
  if (mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | flags, NULL) < 0)
    return jail_fail(err, len, "remount", path);
  return 0;
}

/* Binds a device node (e.g. /dev/null) into the jail's /dev. */
static int jail_dev(const struct jail *j, const char *dev, char *err, size_t len) {
  char dst[PATH_MAX];
  struct stat st;
  if (strncmp(dev, "/dev/", 5) != 0 || strchr(dev + 5, '/') || stat(dev, &st) < 0 || !S_ISCHR(st.st_mode)) {
    snprintf(err, len, "jail: %s is not a character device directly under /dev", dev);
    return -1;
  }
  snprintf(dst, sizeof dst, "%s%s", j->root, dev);
  int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return jail_fail(err, len, "create mount point", dst);
  close(fd);
  if (mount(dev, dst, NULL, MS_BIND, NULL) < 0) return jail_fail(err, len, "bind", dev);
  if (mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC, NULL) < 0)
    return jail_fail(err, len, "remount", dev);
  return 0;
}

/* The top-level merged-/usr links (/bin -> usr/bin, ...) as the host has them; real directories are bound read-only. */
static int jail_toplevel(const struct jail *j, const char *interp_top, char *err, size_t len) {
  static const char *tops[] = {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};
  for (size_t i = 0; i < sizeof tops / sizeof *tops; i++) {
    const char *t = tops[i];
    if (strcmp(t, interp_top) == 0) continue; /* holds the execute-only loader instead */
    struct stat st;
    if (lstat(t, &st) < 0) continue;
    char dst[PATH_MAX];
    snprintf(dst, sizeof dst, "%s%s", j->root, t);
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = readlink(t, target, sizeof target - 1);
      if (n < 0) return jail_fail(err, len, "readlink", t);
      target[n] = '\0';
      if (symlink(target, dst) < 0) return jail_fail(err, len, "symlink", dst);
    } else if (S_ISDIR(st.st_mode)) {
      if (jail_bind(j, t, 0, err, len) < 0) return -1;
    }
  }
  return 0;
}

/*
 * Enters a private mount namespace and makes `j` the root: tmpfs on j->root, the binds, /dev, the execute-only
 * loader of `qemu`, then pivot_root and a read-only remount of the new root. Returns 0, or -1 with err set.
 */
static int enter_jail(const struct jail *j, const char *qemu, char *err, size_t len) {
  char interp[PATH_MAX], path[PATH_MAX];
  if (elf_interp(qemu, interp, sizeof interp, err, len) < 0) return -1;
  if (interp[0] == '\0') {
    snprintf(err, len, "jail: %s is statically linked; the jail expects a dynamic QEMU (PT_INTERP)", qemu);
    return -1;
  }
  /* The loader's top directory (/lib64) is made fresh in the jail; it must not be one the binds cover. */
  char interp_top[PATH_MAX];
  snprintf(interp_top, sizeof interp_top, "%s", interp);
  char *slash = strchr(interp_top + 1, '/');
  if (!slash) {
    snprintf(err, len, "jail: loader %s is not inside a directory", interp);
    return -1;
  }
  *slash = '\0';
  for (int b = 0; b < j->nbinds; b++) {
    size_t n = strlen(interp_top);
    if (strncmp(j->binds[b].path, interp_top, n) == 0 && (j->binds[b].path[n] == '/' || j->binds[b].path[n] == 0)) {
      snprintf(err, len, "jail: loader directory %s must not be bound (%s)", interp_top, j->binds[b].path);
      return -1;
    }
  }

  if (unshare(CLONE_NEWNS) < 0) return jail_fail(err, len, "unshare", "CLONE_NEWNS");
  /* Nothing mounted here propagates back to the host. */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return jail_fail(err, len, "make private", "/");
  if (mount("tmpfs", j->root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=8m,nr_inodes=4096") < 0)
    return jail_fail(err, len, "mount tmpfs on", j->root);

  for (int b = 0; b < j->nbinds; b++)
    if (jail_bind(j, j->binds[b].path, j->binds[b].writable, err, len) < 0) return -1;
  if (jail_toplevel(j, interp_top, err, len) < 0) return -1;

  /* /dev: only the nodes asked for, and the usual links. */
  snprintf(path, sizeof path, "%s/dev", j->root);
  if (jail_mkdirs(path, err, len) < 0) return -1;
  for (int d = 0; d < j->ndevs; d++)
    if (jail_dev(j, j->devs[d], err, len) < 0) return -1;
  snprintf(path, sizeof path, "%s/dev/fd", j->root);
  if (symlink("/proc/self/fd", path) < 0) return jail_fail(err, len, "symlink", path);

  /* The execute-only loader (see the top of this file). */
  snprintf(path, sizeof path, "%s%s", j->root, interp);
  char parent[PATH_MAX];
  snprintf(parent, sizeof parent, "%s", path);
  *strrchr(parent, '/') = '\0';
  if (jail_mkdirs(parent, err, len) < 0) return -1;
  if (copy_exec_only(interp, path, err, len) < 0) return -1;

  snprintf(path, sizeof path, "%s/.old", j->root);
  if (mkdir(path, 0700) < 0) return jail_fail(err, len, "mkdir", path);
  if (syscall(SYS_pivot_root, j->root, path) < 0) return jail_fail(err, len, "pivot_root to", j->root);
  if (chdir("/") < 0) return jail_fail(err, len, "chdir", "/");
  if (umount2("/.old", MNT_DETACH) < 0) return jail_fail(err, len, "detach", "the old root");
  if (rmdir("/.old") < 0) return jail_fail(err, len, "rmdir", "/.old");
  if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
    return jail_fail(err, len, "remount read-only", "/");
  return 0;
}

#endif
