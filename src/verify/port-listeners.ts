// Listeners for port checks in the test guest: busybox httpd on each checked port, serving the guest's own page
// (`vmlink-guest NAME`), so that a probe that connects also proves which VM answered. Started and stopped through the
// guest agent with these scripts; the guest's answer is untrusted and read within bounds.

/** Where the test guest serves its page from, and keeps the pids of the listeners vmlink started (tmpfs). */
export const GUEST_DIRS = { www: '/www', pids: '/run/vmlink/port-check' } as const;
type Dirs = { www: string; pids: string };

function checkedDirs(d: Dirs): Dirs {
  for (const p of [d.www, d.pids]) if (!/^\/[\w./-]+$/.test(p)) throw new Error(`unexpected directory: ${p}`);
  return d;
}

/** The body the test guest's httpd serves (its /www/index.html): proves the probe reached `vm`. */
export function guestPage(vm: string): string {
  return `vmlink-guest ${vm}`;
}

function checkedPorts(ports: readonly number[]): string {
  for (const p of ports)
    if (!Number.isInteger(p) || p < 1 || p > 65_535) throw new Error(`port-check port out of range: ${p}`);
  return ports.join(' ');
}

/**
 * A busybox `sh` script that starts `httpd -f` on every port not already serving the guest's page (port 80 is, from
 * boot), records the pid of each it started, then says per port whether the page answers on 127.0.0.1 (loopback:
 * no port filter on the way), as `listen PORT 1|0`.
 */
export function listenScript(ports: readonly number[], vm: string, dirs: Dirs = GUEST_DIRS): string {
  const list = checkedPorts(ports);
  const { www, pids } = checkedDirs(dirs);
  const page = guestPage(vm);
  if (!/^[\w .-]+$/.test(page)) throw new Error(`unexpected guest page text: ${page}`);
  return [
    `d=${pids}; mkdir -p "$d"`,
    `serves() { timeout 2 wget -q -O - "http://127.0.0.1:$1/" 2>/dev/null | grep -qx '${page}'; }`,
    `for p in ${list}; do`,
    '  serves "$p" && continue',
    `  httpd -f -p "$p" -h ${www} </dev/null >/dev/null 2>&1 &`,
    '  echo $! >"$d/$p.pid"',
    'done',
    `for p in ${list}; do`,
    '  ok=0; i=0',
    '  while [ $i -lt 10 ]; do serves "$p" && { ok=1; break; }; sleep 0.2; i=$((i + 1)); done',
    '  echo "listen $p $ok"',
    'done',
    '',
  ].join('\n');
}

/** A busybox `sh` script that stops the listeners `listenScript` started on `ports` (only httpd processes). */
export function stopScript(ports: readonly number[], dirs: Dirs = GUEST_DIRS): string {
  return [
    `d=${checkedDirs(dirs).pids}`,
    `for p in ${checkedPorts(ports)}; do`,
    '  f="$d/$p.pid"; [ -f "$f" ] || continue',
    '  pid=$(cat "$f"); rm -f "$f"',
    '  case "$pid" in *[!0-9]*|"") continue ;; esac',
    '  grep -q httpd "/proc/$pid/cmdline" 2>/dev/null && kill "$pid"',
    'done',
    'exit 0',
    '',
  ].join('\n');
}

/** Most bytes of a listen script's output read (one short line per port). */
const LISTEN_OUTPUT_MAX = 4096;

/** The ports `listenScript` reported serving, from its (untrusted) output; ports it did not name are not. */
export function parseListen(stdout: string, ports: readonly number[]): Set<number> {
  const up = new Set<number>();
  for (const line of stdout.slice(0, LISTEN_OUTPUT_MAX).split('\n')) {
    const m = /^listen (\d{1,5}) 1$/.exec(line.trim());
    if (m && ports.includes(Number(m[1]))) up.add(Number(m[1]));
  }
  return up;
}
