// The port-check listener scripts run for real with busybox (the test guest's shell, httpd and wget), in a private
// network namespace of their own (`unshare -n`: gone when the shell exits): listeners start and answer with the
// guest's page, a port already serving it is left alone, the stop script stops only what the start script started.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { HOST_BUSYBOX } from '../../src/exec/probe.js';
import { guestPage, listenScript, parseListen, stopScript } from '../../src/verify/port-listeners.js';

const dir = mkdtempSync(join(tmpdir(), 'vmlink-port-listeners-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('starts, proves and stops listeners with busybox in a private network namespace', () => {
  const bin = join(dir, 'bin');
  const dirs = { www: join(dir, 'www'), pids: join(dir, 'pids') };
  mkdirSync(bin);
  mkdirSync(dirs.www);
  // The guest's PATH: busybox applets only.
  for (const a of ['sh', 'httpd', 'wget', 'timeout', 'grep', 'sleep', 'cat', 'kill', 'mkdir', 'rm', 'ip'])
    symlinkSync(HOST_BUSYBOX, join(bin, a));
  writeFileSync(join(dirs.www, 'index.html'), `${guestPage('t1')}\n`);
  writeFileSync(join(dir, 'listen.sh'), listenScript([8080, 22, 9], 't1', dirs));
  writeFileSync(join(dir, 'stop.sh'), stopScript([8080, 22, 9], dirs));
  // Port 80 is served from the start, as by the guest's init; the script must not start a second listener there.
  const script = [
    `PATH=${bin}`,
    'ip link set lo up',
    // Foreground and killed at the end: nothing may outlive the namespace's shell.
    `httpd -f -p 80 -h ${dirs.www} </dev/null >/dev/null 2>&1 & init=$!`,
    `sh ${dir}/listen.sh`,
    // Again: every port serves now, so nothing new is started (the pids recorded stay those of the first run).
    `sh ${dir}/listen.sh >/dev/null`,
    'echo "--- before stop"',
    'wget -q -O - http://127.0.0.1:22/',
    `sh ${dir}/stop.sh`,
    'sleep 0.3',
    'wget -q -O - http://127.0.0.1:22/ >/dev/null 2>&1 || echo "22 stopped"',
    'wget -q -O - http://127.0.0.1:80/ >/dev/null 2>&1 && echo "80 kept"',
    'kill $init',
  ].join('\n');
  const out = execFileSync('unshare', ['-n', HOST_BUSYBOX, 'sh', '-c', script], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  const [started, after] = out.split('--- before stop\n') as [string, string];
  expect([...parseListen(started, [8080, 22, 9])].sort()).toEqual([22, 8080, 9].sort());
  expect(after).toBe(`${guestPage('t1')}\n22 stopped\n80 kept\n`);
  expect(readdirSync(dirs.pids)).toEqual([]);
});

it('reports a port it cannot serve (in use by another service) as not listening', () => {
  const bin = join(dir, 'bin');
  const dirs = { www: join(dir, 'www'), pids: join(dir, 'pids2') };
  writeFileSync(join(dir, 'listen2.sh'), listenScript([2222], 't1', dirs));
  writeFileSync(join(dir, 'stop2.sh'), stopScript([2222], dirs));
  const other = join(dir, 'other');
  mkdirSync(other);
  writeFileSync(join(other, 'index.html'), 'something else\n');
  const script = [
    `PATH=${bin}`,
    'ip link set lo up',
    `httpd -f -p 2222 -h ${other} </dev/null >/dev/null 2>&1 & o=$!`,
    `sh ${dir}/listen2.sh`,
    `sh ${dir}/stop2.sh`,
    'kill $o',
  ].join('\n');
  const out = execFileSync('unshare', ['-n', HOST_BUSYBOX, 'sh', '-c', script], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  expect(out).toBe('listen 2222 0\n');
  expect(parseListen(out, [2222]).size).toBe(0);
});
