/*
 * vmlink-qmp-fd: hand a running, jailed QEMU a descriptor root opened, over QMP: a tap for NIC hot-plug, or a
 * file (a hot-plugged volume, an overlay, a secret) that its jail does not show and its uid may not open.
 *
 * Run by the (root) agent in the VM's network namespace as
 *   vmlink-qmp-fd --qmp SOCKET --tap NAME --fdname FDNAME [JSON-COMMAND]...
 *   vmlink-qmp-fd --qmp SOCKET --file PATH (--read-only | --read-write) --fdset N [JSON-COMMAND]...
 * It attaches to the persistent tap NAME (or opens PATH without following a link, a regular file only), connects to
 * QEMU's fd-passing QMP socket, negotiates capabilities, sends `getfd FDNAME` (or `add-fd` into fd set N, which
 * QEMU then opens as /dev/fdset/N) with the descriptor attached (SCM_RIGHTS), then each JSON-COMMAND in order on
 * the same connection (a descriptor named by getfd lives in the monitor that received it: `netdev_add ...
 * fd=FDNAME` must run here). Each reply is printed on stdout, one line each. On a failed command the descriptor
 * is closed in QEMU again.
 *
 * Exit codes: 0 done, 64 usage, 66 tap or file open, 71 QMP connection or protocol, 72 a command failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tap.h"

#define EX_USAGE_ 64
#define EX_TAP 66
#define EX_QMP 71
#define EX_CMD 72
#define MAX_LINE (1 << 20)
#define TIMEOUT_S 20

static void die(int code, const char *fmt, ...) {
  va_list ap;
  fputs("vmlink-qmp-fd: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(code);
}

static void usage(const char *why) {
  die(EX_USAGE_,
      "%s\nusage: vmlink-qmp-fd --qmp SOCKET (--tap NAME --fdname FDNAME | --file PATH (--read-only | --read-write)"
      " --fdset N) [JSON-COMMAND]...",
      why);
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "vmlink-qmp-fd: QEMU did not answer in time\n";
  if (write(2, msg, sizeof msg - 1) < 0) _exit(EX_QMP);
  _exit(EX_QMP);
}

static char buf[MAX_LINE];
static size_t have;

/* Reads the next line QEMU sends (QMP ends every message with a newline); bounded: QEMU is not trusted. */
static char *read_line(int s) {
  static char line[MAX_LINE];
  for (;;) {
    char *nl = memchr(buf, '\n', have);
    if (nl) {
      size_t n = (size_t)(nl - buf);
      memcpy(line, buf, n);
      line[n] = '\0';
      if (n > 0 && line[n - 1] == '\r') line[n - 1] = '\0';
      memmove(buf, nl + 1, have - n - 1);
      have -= n + 1;
      return line;
    }
    if (have == sizeof buf) die(EX_QMP, "QMP message longer than %d bytes", MAX_LINE);
    ssize_t r = read(s, buf + have, sizeof buf - have);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die(EX_QMP, "reading QMP: %s", strerror(errno));
    if (r == 0) die(EX_QMP, "QEMU closed the QMP connection");
    have += (size_t)r;
  }
}

/* The next reply (events are skipped): 0 for {"return"...}, 1 for {"error"...}. */
static int read_reply(int s, char **out) {
  for (;;) {
    char *l = read_line(s);
    while (*l == ' ') l++;
    if (strncmp(l, "{\"return\"", 9) == 0) {
      *out = l;
      return 0;
    }
    if (strncmp(l, "{\"error\"", 8) == 0) {
      *out = l;
      return 1;
    }
  }
}

static void send_all(int s, const char *msg, int fd) {
  size_t len = strlen(msg);
  struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  char ctrl[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    memset(ctrl, 0, sizeof ctrl);
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  /* The whole message goes in one sendmsg (QEMU takes the descriptor with the bytes it arrives with). */
  ssize_t w;
  do w = sendmsg(s, &mh, MSG_NOSIGNAL);
  while (w < 0 && errno == EINTR);
  if (w < 0) die(EX_QMP, "writing QMP: %s", strerror(errno));
  if ((size_t)w != len) die(EX_QMP, "short QMP write (%zd of %zu bytes)", w, len);
}

/* Sends one command and returns whether it succeeded; prints the reply. */
static int command(int s, const char *json, int fd) {
  char msg[65536];
  int n = snprintf(msg, sizeof msg, "%s\n", json);
  if (n < 0 || (size_t)n >= sizeof msg) die(EX_USAGE_, "command too long");
  send_all(s, msg, fd);
  char *reply;
  int failed = read_reply(s, &reply);
  printf("%s\n", reply);
  if (failed) fprintf(stderr, "vmlink-qmp-fd: %s\n", reply);
  return !failed;
}

static int valid_fdname(const char *n) {
  size_t len = strlen(n);
  if (len == 0 || len > 32) return 0;
  for (const char *p = n; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
      return 0;
  return 1;
}

/* Opens a file for QEMU: never through a link, never a FIFO or device, only a regular file. */
static int open_file(const char *path, int writable) {
  int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) die(EX_TAP, "cannot open %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) die(EX_TAP, "%s is not a regular file", path);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) die(EX_TAP, "fcntl %s: %s", path, strerror(errno));
  return fd;
}

int main(int argc, char **argv) {
  const char *qmp = NULL, *tap = NULL, *fdname = NULL, *file = NULL;
  int writable = -1;
  long fdset = -1;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    } else if (strcmp(argv[i], "--qmp") == 0 && i + 1 < argc) {
      qmp = argv[++i];
    } else if (strcmp(argv[i], "--tap") == 0 && i + 1 < argc) {
      tap = argv[++i];
    } else if (strcmp(argv[i], "--fdname") == 0 && i + 1 < argc) {
      fdname = argv[++i];
    } else if (strcmp(argv[i], "--file") == 0 && i + 1 < argc) {
      file = argv[++i];
    } else if (strcmp(argv[i], "--read-only") == 0 || strcmp(argv[i], "--read-write") == 0) {
      writable = argv[i][7] == 'w';
    } else if (strcmp(argv[i], "--fdset") == 0 && i + 1 < argc) {
      char *end;
      errno = 0;
      fdset = strtol(argv[++i], &end, 10);
      if (errno || *end || fdset < 0 || fdset > 1000000) usage("--fdset must be a number from 0 to 1000000");
    } else if (argv[i][0] == '-') {
      usage("unknown or incomplete option");
    } else {
      break;
    }
  }
  if (!qmp) usage("--qmp is required");
  if (!tap == !file) usage("give either --tap (with --fdname) or --file");
  if (tap && (!fdname || !valid_fdname(fdname))) usage("--fdname must be 1-32 letters, digits, - or _");
  if (file && (writable < 0 || fdset < 0)) usage("--file needs --read-only or --read-write, and --fdset");

  int tfd;
  if (tap) {
    char err[256];
    tfd = open_tap(tap, err, sizeof err);
    if (tfd < 0) die(EX_TAP, "%s", err);
  } else {
    tfd = open_file(file, writable);
  }

  signal(SIGALRM, on_alarm);
  alarm(TIMEOUT_S);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(qmp) >= sizeof sa.sun_path) die(EX_USAGE_, "QMP socket path too long: %s", qmp);
  strcpy(sa.sun_path, qmp);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) die(EX_QMP, "socket: %s", strerror(errno));
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) die(EX_QMP, "cannot connect to %s: %s", qmp, strerror(errno));

  char *l = read_line(s);
  if (strstr(l, "\"QMP\"") == NULL) die(EX_QMP, "no QMP greeting on %s", qmp);
  if (!command(s, "{\"execute\":\"qmp_capabilities\"}", -1)) die(EX_QMP, "capabilities negotiation failed");

  char pass[128];
  if (tap)
    snprintf(pass, sizeof pass, "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"%s\"}}", fdname);
  else
    snprintf(pass, sizeof pass, "{\"execute\":\"add-fd\",\"arguments\":{\"fdset-id\":%ld,\"opaque\":\"vmlink\"}}",
             fdset);
  if (!command(s, pass, tfd)) exit(EX_CMD);
  close(tfd);

  for (; i < argc; i++) {
    if (!command(s, argv[i], -1)) {
      char closefd[128];
      if (tap)
        snprintf(closefd, sizeof closefd, "{\"execute\":\"closefd\",\"arguments\":{\"fdname\":\"%s\"}}", fdname);
      else
        snprintf(closefd, sizeof closefd, "{\"execute\":\"remove-fd\",\"arguments\":{\"fdset-id\":%ld}}", fdset);
      /* Consumed by a command that succeeded before, or still named here: either way none is left behind. */
      (void)command(s, closefd, -1);
      exit(EX_CMD);
    }
  }
  return 0;
}
