import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RecordingRunner } from '../../../exec/runner.js';
import { jailChecks } from './jail-checks.js';

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vmlink-jail-checks-'));
  await writeFile(join(dir, 'passwd'), 'root:x:0:0::/root:/bin/sh\nodd:x:5001:5001::/:/bin/false\n');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const opts = (runner: RecordingRunner) => ({
  runner,
  launcher: '/b/vmlink-launch',
  range: { first: 5000, count: 10 },
  systemFiles: [join(dir, 'passwd')],
  cgroupRoot: dir, // a plain directory: no cgroup v2 here
  kvmDevice: join(dir, 'no-kvm'),
});

it('reports a jailing launcher, the id range with the ids it skips, TCG without /dev/kvm, and no cgroup v2', async () => {
  const r = new RecordingRunner()
    .on(['/b/vmlink-launch'], { code: 64, stderr: 'vmlink-launch: usage ... [--jail DIR ...] ...' })
    .on(['getent', 'group', 'kvm'], { stdout: 'kvm:x:104:\n' });
  const checks = await jailChecks(opts(r));
  expect(checks.map((c) => [c.name, c.ok, c.detail])).toEqual([
    ['vm jail', true, 'launcher jails each QEMU (own uid, mount namespace, not dumpable, limits)'],
    [
      'vm identities',
      true,
      `one uid/gid per VM from 5000..5009 (1 used by /etc/passwd or /etc/group, skipped); no ${join(dir, 'no-kvm')}: VMs run under TCG`,
    ],
    [
      'vm cgroups',
      true,
      'no cgroup v2 (v1 or hybrid hierarchy): no per-VM cgroups; each QEMU is bounded by its rlimits only',
    ],
  ]);
});

it('fails the jail check for a launcher built before the jail, and names the fix', async () => {
  const r = new RecordingRunner().on(['/b/vmlink-launch'], {
    code: 64,
    stderr: 'usage: --user USER [--tap NAME]',
  });
  const [jail] = await jailChecks(opts(r));
  expect(jail).toMatchObject({
    name: 'vm jail',
    ok: false,
    fix: 'run `npm run build:native` (or npm run setup)',
  });
});
