/*
 * vmlink-launch: start QEMU unprivileged, with its tap devices already open.
 *
 * Run by the (root) agent as
 *   vmlink-launch --user vmlink-qemu [--tap NAME]... -- /usr/bin/qemu-system-x86_64 ARGS...
 * It attaches to each named persistent tap through /dev/net/tun (which only root may open here),
 * places them on fd 3, 4, ... in order (QEMU: -netdev tap,fd=3), closes every other descriptor,
 * drops to the user (supplementary groups from /etc/group, never root's), sets no_new_privs,
 * checks that root cannot be regained and execs QEMU with a minimal environment.
 * QEMU therefore never runs as root and can keep -sandbox ...,elevateprivileges=deny.
 *
 * Exit codes (QEMU's own codes once exec'd):
 *   64 usage, 65 user lookup, 66 tap open/attach, 67 descriptor setup,
 *   68 privilege drop, 69 privilege check, 70 exec.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tap.h"

#define EX_USAGE_ 64
#define EX_USER 65
#define EX_TAP 66
#define EX_FD 67
#define EX_DROP 68
#define EX_CHECK 69
#define EX_EXEC 70
#define MAX_TAPS 16
#define FIRST_TAP_FD 3

static void die(int code, const char *fmt, ...) {
  va_list ap;
  fputs("vmlink-launch: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(code);
}

static void usage(const char *why) {
  die(EX_USAGE_, "%s\nusage: vmlink-launch --user USER [--tap NAME]... -- /abs/path/qemu ARGS...", why);
}

/* Closes every descriptor >= from (close_range, else one by one up to the limit). */
static void close_from(int from) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, (unsigned)from, ~0U, 0) == 0) return;
#endif
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 65536) max = 65536;
  for (int fd = from; fd < max; fd++) close(fd);
}

/* Fails unless every uid/gid is the target and no capability is left. */
static void check_dropped(uid_t uid, gid_t gid) {
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0) die(EX_CHECK, "getresuid: %s", strerror(errno));
  if (ru != uid || eu != uid || su != uid || rg != gid || eg != gid || sg != gid)
    die(EX_CHECK, "ids not dropped (uid %u/%u/%u gid %u/%u/%u)", ru, eu, su, rg, eg, sg);
  if (setuid(0) == 0 || seteuid(0) == 0) die(EX_CHECK, "could regain uid 0 after dropping privileges");
  if (setgid(0) == 0 || setegid(0) == 0) die(EX_CHECK, "could regain gid 0 after dropping privileges");
  gid_t groups[256];
  int n = getgroups(256, groups);
  if (n < 0) die(EX_CHECK, "getgroups: %s", strerror(errno));
  for (int i = 0; i < n; i++)
    if (groups[i] == 0) die(EX_CHECK, "supplementary group 0 (root) still present");
  struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &hdr, data) < 0) die(EX_CHECK, "capget: %s", strerror(errno));
  for (int i = 0; i < 2; i++)
    if (data[i].effective || data[i].permitted || data[i].inheritable)
      die(EX_CHECK, "capabilities left after dropping privileges");
  if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) die(EX_CHECK, "no_new_privs is not set");
}

int main(int argc, char **argv) {
  const char *user = NULL;
  const char *taps[MAX_TAPS];
  int ntaps = 0;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    } else if (strcmp(argv[i], "--user") == 0 && i + 1 < argc) {
      user = argv[++i];
    } else if (strcmp(argv[i], "--tap") == 0 && i + 1 < argc) {
      if (ntaps == MAX_TAPS) usage("too many --tap options");
      taps[ntaps++] = argv[++i];
    } else {
      usage("unknown or incomplete option");
    }
  }
  if (!user) usage("--user is required");
  if (i >= argc) usage("missing -- and the QEMU command");
  if (argv[i][0] != '/') usage("the QEMU binary must be an absolute path");
  if (geteuid() != 0) die(EX_DROP, "must be started as root (it opens taps, then drops to %s)", user);

  /* Nothing the agent had open leaks into QEMU. */
  close_from(FIRST_TAP_FD);

  errno = 0;
  struct passwd *pw = getpwnam(user);
  if (!pw) die(EX_USER, "user %s not found%s%s (run npm run setup)", user, errno ? ": " : "", errno ? strerror(errno) : "");
  uid_t uid = pw->pw_uid;
  gid_t gid = pw->pw_gid;
  if (uid == 0 || gid == 0) die(EX_USER, "refusing to run QEMU as %s: uid or gid is 0", user);

  /* Open every tap, move them above the target range, then place them at 3, 4, ... in order. */
  int opened[MAX_TAPS];
  for (int t = 0; t < ntaps; t++) {
    char err[256];
    int fd = open_tap(taps[t], err, sizeof err);
    if (fd < 0) die(EX_TAP, "%s", err);
    int high = fcntl(fd, F_DUPFD_CLOEXEC, FIRST_TAP_FD + MAX_TAPS);
    if (high < 0) die(EX_FD, "fcntl(F_DUPFD): %s", strerror(errno));
    close(fd);
    opened[t] = high;
  }
  for (int t = 0; t < ntaps; t++) {
    if (dup2(opened[t], FIRST_TAP_FD + t) < 0) die(EX_FD, "dup2: %s", strerror(errno)); /* clears CLOEXEC */
    close(opened[t]);
  }

  /* Drop: groups first (needs root), then gid, then uid. */
  if (initgroups(user, gid) < 0) die(EX_DROP, "initgroups(%s): %s", user, strerror(errno));
  if (setresgid(gid, gid, gid) < 0) die(EX_DROP, "setresgid(%u): %s", gid, strerror(errno));
  if (setresuid(uid, uid, uid) < 0) die(EX_DROP, "setresuid(%u): %s", uid, strerror(errno));
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die(EX_DROP, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
  check_dropped(uid, gid);

  umask(077);
  /* initgroups() may have opened NSS sockets: QEMU gets the taps and stdio, nothing else. */
  close_from(FIRST_TAP_FD + ntaps);
  /* A minimal environment: nothing of the agent's reaches QEMU. */
  char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "LC_ALL=C", "HOME=/nonexistent", NULL};
  execve(argv[i], &argv[i], envp);
  die(EX_EXEC, "cannot exec %s: %s", argv[i], strerror(errno));
}
