/*
 * vmlink-launch: start QEMU unprivileged, with its tap devices already open.
 *
 * Run by the (root) agent as
 *   vmlink-launch (--user NAME | --uid N --gid N [--group N]...) [--tap NAME]... [--append-file PATH]...
 *                 [--jail DIR [--bind-ro PATH]... [--bind-rw PATH]... [--dev /dev/NODE]...]
 *                 [--cgroup DIR] [--nofile N] [--nproc N] -- /usr/bin/qemu-system-x86_64 ARGS...
 * It attaches to each named persistent tap through /dev/net/tun (which only root may open here) and places them
 * on fd 3, 4, ... in order (QEMU: -netdev tap,fd=3); then each --append-file, opened by root (O_APPEND, never
 * following a link, created 0600) on the next descriptors (QEMU: -add-fd, so it writes a log it cannot replace).
 * With --cgroup it joins that cgroup v2 directory. With --private-net it enters a new, empty network and IPC
 * namespace (the taps it opened keep working: QEMU needs no network of its own, and reaches no host service, no
 * abstract unix socket and no SysV IPC of the host). With --jail it enters a private mount namespace rooted on
 * DIR showing only the binds and device nodes given (see jail.h), QEMU becoming non-dumpable. It sets the
 * resource limits (no core dumps), closes every other descriptor, drops to the user (named: groups from
 * /etc/group; numeric: exactly the --group list), sets no_new_privs, checks that root cannot be regained and
 * execs QEMU with a minimal environment. QEMU never runs as root and keeps -sandbox ...,elevateprivileges=deny.
 *
 * Exit codes (QEMU's own codes once exec'd):
 *   64 usage, 65 user lookup, 66 tap open/attach, 67 descriptor setup,
 *   68 privilege drop, 69 privilege check, 70 exec, 73 jail or cgroup setup, 74 resource limits.
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

#include <sys/resource.h>

#include "jail.h"
#include "tap.h"

#define EX_USAGE_ 64
#define EX_USER 65
#define EX_TAP 66
#define EX_FD 67
#define EX_DROP 68
#define EX_CHECK 69
#define EX_EXEC 70
#define EX_JAIL 73
#define EX_LIMIT 74
#define MAX_FILES 4
#define MAX_GROUPS 8
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
  die(EX_USAGE_,
      "%s\nusage: vmlink-launch (--user USER | --uid N --gid N [--group N]...) [--tap NAME]... [--append-file PATH]..."
      " [--jail DIR [--bind-ro PATH]... [--bind-rw PATH]... [--dev /dev/NODE]...] [--private-net] [--cgroup DIR] [--nofile N]"
      " [--nproc N] -- /abs/path/qemu ARGS...",
      why);
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

/* A decimal id or limit in [min, max]; usage error otherwise. */
static unsigned long number(const char *s, unsigned long min, unsigned long max, const char *what) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
    char why[128];
    snprintf(why, sizeof why, "%s must be a number from %lu to %lu: %s", what, min, max, s);
    usage(why);
  }
  return v;
}

/* Opens a log QEMU will append to: root opens it (O_NOFOLLOW: never a planted link), a regular file, 0600. */
static int open_append(const char *path) {
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
  if (fd < 0) die(EX_FD, "cannot open %s for appending: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) die(EX_FD, "%s is not a regular file", path);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) die(EX_FD, "fcntl %s: %s", path, strerror(errno));
  return fd;
}

/* Moves this process into the cgroup v2 directory `dir` (the agent created it and set its limits). */
static void join_cgroup(const char *dir) {
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "%s/cgroup.procs", dir) >= (int)sizeof path) die(EX_JAIL, "cgroup path too long");
  int fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) die(EX_JAIL, "cannot open %s: %s", path, strerror(errno));
  char pid[32];
  int n = snprintf(pid, sizeof pid, "%d\n", getpid());
  if (write(fd, pid, (size_t)n) != n) die(EX_JAIL, "cannot join cgroup %s: %s", dir, strerror(errno));
  close(fd);
}

static void limit(int resource, rlim_t value, const char *name) {
  struct rlimit rl = {.rlim_cur = value, .rlim_max = value};
  if (setrlimit(resource, &rl) < 0) die(EX_LIMIT, "setrlimit(%s, %lu): %s", name, (unsigned long)value, strerror(errno));
}

int main(int argc, char **argv) {
  const char *user = NULL, *cgroup = NULL;
  long uid_opt = -1, gid_opt = -1;
  gid_t groups[MAX_GROUPS];
  int ngroups = 0;
  const char *taps[MAX_TAPS], *files[MAX_FILES];
  int ntaps = 0, nfiles = 0;
  struct jail jail = {0};
  unsigned long nofile = 0, nproc = 0;
  int private_net = 0;
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    } else if (strcmp(a, "--user") == 0 && has) {
      user = argv[++i];
    } else if (strcmp(a, "--uid") == 0 && has) {
      uid_opt = (long)number(argv[++i], 1, 0x7fffffff, "--uid");
    } else if (strcmp(a, "--gid") == 0 && has) {
      gid_opt = (long)number(argv[++i], 1, 0x7fffffff, "--gid");
    } else if (strcmp(a, "--group") == 0 && has) {
      if (ngroups == MAX_GROUPS) usage("too many --group options");
      groups[ngroups++] = (gid_t)number(argv[++i], 1, 0x7fffffff, "--group");
    } else if (strcmp(a, "--tap") == 0 && has) {
      if (ntaps == MAX_TAPS) usage("too many --tap options");
      taps[ntaps++] = argv[++i];
    } else if (strcmp(a, "--append-file") == 0 && has) {
      if (nfiles == MAX_FILES) usage("too many --append-file options");
      files[nfiles++] = argv[++i];
    } else if (strcmp(a, "--jail") == 0 && has) {
      jail.root = argv[++i];
    } else if ((strcmp(a, "--bind-ro") == 0 || strcmp(a, "--bind-rw") == 0) && has) {
      if (jail.nbinds == JAIL_MAX_BINDS) usage("too many --bind options");
      jail.binds[jail.nbinds].writable = a[8] == 'w';
      jail.binds[jail.nbinds++].path = argv[++i];
    } else if (strcmp(a, "--dev") == 0 && has) {
      if (jail.ndevs == JAIL_MAX_BINDS) usage("too many --dev options");
      jail.devs[jail.ndevs++] = argv[++i];
    } else if (strcmp(a, "--private-net") == 0) {
      private_net = 1;
    } else if (strcmp(a, "--cgroup") == 0 && has) {
      cgroup = argv[++i];
    } else if (strcmp(a, "--nofile") == 0 && has) {
      nofile = number(argv[++i], 64, 1 << 20, "--nofile");
    } else if (strcmp(a, "--nproc") == 0 && has) {
      nproc = number(argv[++i], 16, 1 << 22, "--nproc");
    } else {
      usage("unknown or incomplete option");
    }
  }
  if (!user == (uid_opt < 0)) usage("give either --user or --uid (with --gid)");
  if ((uid_opt < 0) != (gid_opt < 0)) usage("--uid and --gid go together");
  if (user && ngroups) usage("--group goes with --uid (a named user's groups come from /etc/group)");
  if (!jail.root && (jail.nbinds || jail.ndevs)) usage("--bind-ro, --bind-rw and --dev need --jail");
  if (jail.root && jail.root[0] != '/') usage("--jail must be an absolute path");
  if (i >= argc) usage("missing -- and the QEMU command");
  if (argv[i][0] != '/') usage("the QEMU binary must be an absolute path");
  if (geteuid() != 0) die(EX_DROP, "must be started as root (it opens taps, then drops privileges)");

  /* Nothing the agent had open leaks into QEMU. */
  close_from(FIRST_TAP_FD);

  uid_t uid;
  gid_t gid;
  if (user) {
    errno = 0;
    struct passwd *pw = getpwnam(user);
    if (!pw)
      die(EX_USER, "user %s not found%s%s (run npm run setup)", user, errno ? ": " : "", errno ? strerror(errno) : "");
    uid = pw->pw_uid;
    gid = pw->pw_gid;
  } else {
    uid = (uid_t)uid_opt;
    gid = (gid_t)gid_opt;
  }
  if (uid == 0 || gid == 0) die(EX_USER, "refusing to run QEMU as uid %u gid %u", uid, gid);
  for (int g = 0; g < ngroups; g++)
    if (groups[g] == 0) die(EX_USER, "refusing supplementary group 0");

  /* Open every tap and log, move them above the target range, then place them at 3, 4, ... in order. */
  int opened[MAX_TAPS + MAX_FILES];
  int nfds = ntaps + nfiles;
  for (int t = 0; t < nfds; t++) {
    char err[256];
    int fd = t < ntaps ? open_tap(taps[t], err, sizeof err) : open_append(files[t - ntaps]);
    if (fd < 0) die(EX_TAP, "%s", err);
    int high = fcntl(fd, F_DUPFD_CLOEXEC, FIRST_TAP_FD + MAX_TAPS + MAX_FILES);
    if (high < 0) die(EX_FD, "fcntl(F_DUPFD): %s", strerror(errno));
    close(fd);
    opened[t] = high;
  }
  for (int t = 0; t < nfds; t++) {
    if (dup2(opened[t], FIRST_TAP_FD + t) < 0) die(EX_FD, "dup2: %s", strerror(errno)); /* clears CLOEXEC */
    close(opened[t]);
  }

  if (cgroup) join_cgroup(cgroup);
  /* Groups of a named user are looked up while /etc is still visible. */
  if (user && initgroups(user, gid) < 0) die(EX_DROP, "initgroups(%s): %s", user, strerror(errno));
  if (private_net && unshare(CLONE_NEWNET | CLONE_NEWIPC) < 0)
    die(EX_JAIL, "unshare(CLONE_NEWNET | CLONE_NEWIPC): %s", strerror(errno));
  if (jail.root) {
    char err[512];
    if (enter_jail(&jail, argv[i], err, sizeof err) < 0) die(EX_JAIL, "%s", err);
  }

  limit(RLIMIT_CORE, 0, "RLIMIT_CORE");
  if (nofile) limit(RLIMIT_NOFILE, nofile, "RLIMIT_NOFILE");
  if (nproc) limit(RLIMIT_NPROC, nproc, "RLIMIT_NPROC");
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die(EX_LIMIT, "PR_SET_DUMPABLE: %s", strerror(errno));

  /* Drop: groups first (needs root), then gid, then uid. */
  if (!user && setgroups((size_t)ngroups, groups) < 0) die(EX_DROP, "setgroups: %s", strerror(errno));
  if (setresgid(gid, gid, gid) < 0) die(EX_DROP, "setresgid(%u): %s", gid, strerror(errno));
  if (setresuid(uid, uid, uid) < 0) die(EX_DROP, "setresuid(%u): %s", uid, strerror(errno));
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die(EX_DROP, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
  check_dropped(uid, gid);

  umask(077);
  /* initgroups() may have opened NSS sockets: QEMU gets the taps, logs and stdio, nothing else. */
  close_from(FIRST_TAP_FD + nfds);
  /* A minimal environment: nothing of the agent's reaches QEMU. */
  char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "LC_ALL=C", "HOME=/nonexistent", NULL};
  execve(argv[i], &argv[i], envp);
  die(EX_EXEC, "cannot exec %s: %s", argv[i], strerror(errno));
}
