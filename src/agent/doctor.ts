import { accessSync, constants, existsSync } from 'node:fs';
import { DEFAULT_IMAGES_DIR } from '../drivers/hypervisor/qemu/driver.js';
import { jailChecks } from '../drivers/hypervisor/qemu/jail-checks.js';
import {
  DEFAULT_QEMU_USER,
  defaultLauncherPath,
  lookupQemuUser,
} from '../drivers/hypervisor/qemu/launcher.js';
import type { Runner } from '../exec/runner.js';
import type { DoctorCheck } from './wire-doctor.js';

const SETUP =
  'run `npm run setup` (installs Debian packages, the QEMU user, the launcher and the test guest)';

// The agent reports these (`GET /v1/doctor`, gathered by the controller's own route); the composition root also
// runs them for `vmlink doctor` on a machine with no controller yet, where there is nobody to ask.

/** Whether `argv` (a binary's version query) runs, as a check naming the package that provides it. */
export async function binaryCheck(
  runner: Runner,
  name: string,
  argv: string[],
  pkg: string,
): Promise<DoctorCheck> {
  const r = await runner
    .run(argv, { allowFailure: true, timeoutMs: 10_000 })
    .catch((e: Error) => ({ code: 127, stdout: '', stderr: e.message }));
  return {
    name,
    ok: r.code === 0,
    detail: r.code === 0 ? (r.stdout || r.stderr).split('\n')[0]!.trim() : 'not found',
    ...(r.code === 0 ? {} : { fix: `apt-get install ${pkg} (or ${SETUP})` }),
  };
}

/** Root and Node: what every agent needs, whatever its role. */
function baseChecks(): DoctorCheck[] {
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  return [
    {
      name: 'root',
      ok: process.getuid?.() === 0,
      detail: `uid ${process.getuid?.()}`,
      fix: 'run vmlink as root: it manages namespaces, bridges and nftables',
    },
    { name: 'node', ok: nodeMajor >= 20, detail: process.version, fix: 'install Node.js 20 or newer' },
  ];
}

/**
 * A storage host's prerequisites (`vmlink agent --role storage`): what its pools need (qemu-img for volumes, tgtd and
 * tgtadm for iscsi pools, rpcbind and nfs-ganesha for nfs pools); no QEMU, KVM, bridges or test guest.
 */
export async function storageHostPrerequisites(runner: Runner): Promise<DoctorCheck[]> {
  return [
    ...baseChecks(),
    await binaryCheck(runner, 'qemu-img', ['qemu-img', '--version'], 'qemu-utils'),
    await binaryCheck(runner, 'tgtd', ['tgtadm', '--version'], 'tgt'),
    await binaryCheck(
      runner,
      'nfs-ganesha',
      ['sh', '-c', 'command -v ganesha.nfsd'],
      'nfs-ganesha nfs-ganesha-vfs',
    ),
    await binaryCheck(runner, 'rpcbind', ['sh', '-c', 'command -v rpcbind'], 'rpcbind'),
  ];
}

/** Checks this host's prerequisites for running an agent or the lab, with the drivers' own paths and names; never changes anything. */
export async function hostPrerequisites(runner: Runner): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = baseChecks();
  const bin = async (name: string, argv: string[], pkg: string) => {
    checks.push(await binaryCheck(runner, name, argv, pkg));
  };
  await bin('qemu', ['qemu-system-x86_64', '--version'], 'qemu-system-x86');
  await bin('qemu-img', ['qemu-img', '--version'], 'qemu-utils');
  await bin('iproute2', ['ip', '-V'], 'iproute2');
  await bin('nftables', ['nft', '--version'], 'nftables');
  await bin('dnsmasq', ['dnsmasq', '--version'], 'dnsmasq-base');
  await bin('busybox', ['/bin/busybox', '--help'], 'busybox-static');
  await bin('ping', ['ping', '-V'], 'iputils-ping');
  await bin('genisoimage', ['genisoimage', '--version'], 'genisoimage');
  await bin('open vswitch', ['ovs-vsctl', '--version'], 'openvswitch-switch');
  await bin('iperf3', ['iperf3', '--version'], 'iperf3');
  const user = await lookupQemuUser(runner, DEFAULT_QEMU_USER).then(
    () => true,
    () => false,
  );
  checks.push({
    name: 'qemu user',
    ok: user,
    detail: user ? `${DEFAULT_QEMU_USER} exists` : `no ${DEFAULT_QEMU_USER} user: QEMU must not run as root`,
    fix: SETUP,
  });
  const launcher = defaultLauncherPath();
  checks.push({
    name: 'launcher',
    ok: existsSync(launcher),
    detail: existsSync(launcher) ? launcher : `${launcher} missing`,
    fix: 'run `npm run build:native`',
  });
  checks.push(...(await jailChecks({ runner, launcher })));
  const guest = `${DEFAULT_IMAGES_DIR}/test-guest/manifest.json`;
  checks.push({
    name: 'test guest',
    ok: existsSync(guest),
    detail: existsSync(guest) ? 'built' : 'not built',
    fix: 'run `npx tsx src/guest/main.ts` (or npm run setup)',
  });
  let tun = false;
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
    tun = true;
  } catch {}
  checks.push({
    name: '/dev/net/tun',
    ok: tun,
    detail: tun ? 'present' : 'missing or not accessible',
    fix: 'load the tun module: modprobe tun',
  });
  return checks;
}
