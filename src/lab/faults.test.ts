// Faults and the sampler's /proc source against real processes: stand-in QEMU processes (a copy of `tee` named
// qemu-system-x86_64, run under VM uids, holding a disk file open for writing) and a stand-in agent (node with this
// checkout's vmlink path on its command line). Needs root (setuid spawn), as the lab does.
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labSampleSource, Sampler } from '../controller/drills/sampler.js';
import { RecordingRunner } from '../exec/runner.js';
import { labHostStateDir, labRunDir } from '../shared/paths.js';
import { identify, isRunning, processOpenFiles, writeIdentityFile } from '../shared/process.js';
import { loadSpec } from '../spec/load.js';
import { argvGuestName, LabFaults, labVmOwners, labVmProcesses } from './faults.js';
import { Lab } from './lab.js';
import { labAgentIdentityFile } from './processes.js';

const root = mkdtempSync('/tmp/vmlink-faults-');
chmodSync(root, 0o755);
const SPEC = `
version: 1
hosts: [{ name: host1 }, { name: host2 }]
networks: [{ name: app, mode: vxlan, vni: 1091, cidr: 10.91.0.0/24 }]
vms:
  - { name: web, host: host1, memoryMiB: 128, nics: [{ network: app, ip: 10.91.0.11 }] }
lab:
  name: ft
  lan: { cidr: 192.168.91.0/24, gateway: 192.168.91.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.91 }
  segments: [{ name: trunk }]
  hosts:
    - { name: host1, address: 192.168.91.11 }
    - { name: host2, address: 192.168.91.12 }
  peers: [{ name: pc1, address: 192.168.91.20 }]
`;
const UID1 = 0x7000_f101;
const UID2 = 0x7000_f102;
const UID_OTHER = 0x7000_f1ff;
const children: ChildProcess[] = [];
let fakeQemu = '';
let disk = '';
const saved = { state: process.env.VMLINK_STATE_DIR, run: process.env.VMLINK_RUN_DIR };

/** A stand-in QEMU: `tee -a DISK` as `uid`, named qemu-system-x86_64, blocked on its stdin. */
function startQemu(uid: number): ChildProcess {
  const c = spawn(fakeQemu, ['-a', disk], { uid, gid: uid, stdio: ['pipe', 'ignore', 'ignore'] });
  children.push(c);
  return c;
}

const waitFor = async (f: () => Promise<boolean>, ms = 5_000) => {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};

beforeAll(() => {
  process.env.VMLINK_STATE_DIR = join(root, 'state');
  process.env.VMLINK_RUN_DIR = join(root, 'run');
  fakeQemu = join(root, 'qemu-system-x86_64');
  copyFileSync('/usr/bin/tee', fakeQemu);
  chmodSync(fakeQemu, 0o755);
  disk = join(root, 'disk.qcow2');
  writeFileSync(disk, '');
  chmodSync(disk, 0o666);
  for (const [host, uid] of [
    ['host1', UID1],
    ['host2', UID2],
  ] as const) {
    mkdirSync(labHostStateDir('ft', host), { recursive: true });
    writeFileSync(join(labHostStateDir('ft', host), 'vm-ids.json'), JSON.stringify({ vms: { web: uid } }));
  }
  mkdirSync(labRunDir('ft'), { recursive: true });
});

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  process.env.VMLINK_STATE_DIR = saved.state;
  process.env.VMLINK_RUN_DIR = saved.run;
  if (saved.state === undefined) delete process.env.VMLINK_STATE_DIR;
  if (saved.run === undefined) delete process.env.VMLINK_RUN_DIR;
  rmSync(root, { recursive: true, force: true });
});

describe('lab VM processes from /proc', () => {
  it('maps QEMU processes to host and VM by uid, ignoring QEMU of other uids', async () => {
    const spec = loadSpec(SPEC, 'ft.yaml');
    const a = startQemu(UID1);
    const other = startQemu(UID_OTHER);
    const owners = await labVmOwners(spec.lab!);
    expect([...owners]).toEqual([
      [UID1, { host: 'host1', vm: 'web' }],
      [UID2, { host: 'host2', vm: 'web' }],
    ]);
    await waitFor(async () => (await labVmProcesses(owners)).length === 1);
    const procs = await labVmProcesses(owners);
    expect(procs).toMatchObject([{ host: 'host1', vm: 'web', uid: UID1, id: { pid: a.pid } }]);
    expect(procs.some((p) => p.id.pid === other.pid)).toBe(false);
    a.kill('SIGKILL');
    other.kill('SIGKILL');
    await waitFor(async () => (await labVmProcesses(owners)).length === 0);
  });

  it('reads the guest a QEMU command line names', () => {
    expect(argvGuestName(['qemu', '-name', 'guest=web1,debug-threads=on'])).toBe('web1');
    expect(argvGuestName(['qemu', '-m', '128'])).toBeUndefined();
  });

  it('lists the files a process holds open for writing, with device and inode', async () => {
    const c = startQemu(UID_OTHER);
    await waitFor(async () => (await processOpenFiles(c.pid!)).length > 0);
    const files = await processOpenFiles(c.pid!);
    expect(files).toEqual([expect.objectContaining({ path: disk, write: true })]);
    c.kill('SIGKILL');
    // Our own stdout and the like are no regular files; a file we only read is no write.
    expect((await processOpenFiles(process.pid)).filter((f) => f.path === disk)).toEqual([]);
  });
});

describe('the sampler on real processes, and killHost', () => {
  it('sees one VM twice and its disk with two writers, then killHost leaves one copy and no agent', async () => {
    const spec = loadSpec(SPEC, 'ft.yaml');
    const faults = new LabFaults(new RecordingRunner(), spec.lab!, new Lab(new RecordingRunner(), spec.lab!));
    startQemu(UID1);
    const b = startQemu(UID2);
    // The stand-in agent of host2: node, with this checkout's vmlink on its command line as the lab's agents have.
    const bin = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));
    const agent = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1e6)', bin], { stdio: 'ignore' });
    children.push(agent);
    await waitFor(async () => (await identify(agent.pid!)) !== undefined);
    await writeIdentityFile(labAgentIdentityFile('ft', 'host2'), (await identify(agent.pid!))!);

    const sampler = new Sampler(labSampleSource(spec, spec.lab!), 50);
    await waitFor(async () => ((await sampler.sampleOnce())?.procs.length ?? 0) === 2);
    const both = sampler.latest()!;
    expect(both.procs.map((p) => p.host).sort()).toEqual(['host1', 'host2']);
    expect(both.procs[0]!.writes).toEqual([expect.stringMatching(new RegExp(`^file:\\d+:\\d+ ${disk}$`))]);

    const kill = await faults.killHost('host2');
    expect(kill.vms).toEqual(['web']);
    expect(await isRunning(agent.pid!)).toBe(false);
    expect(await isRunning(b.pid!)).toBe(false);
    const after = await sampler.sampleOnce();
    expect(after!.procs.map((p) => p.host)).toEqual(['host1']);
    const sum = await sampler.stop();
    expect(sum.vmTwice.count).toBeGreaterThanOrEqual(1);
    expect(sum.vmTwice.examples[0]).toMatchObject({ confirmed: true });
    expect(sum.vmTwice.examples[0]!.what).toMatch(
      /^web ran twice: web on host\d \(pid \d+\) and web on host\d/,
    );
    expect(sum.diskTwoWriters.examples[0]!.what).toMatch(new RegExp(`^${disk} written by web on host\\d`));
    await expect(faults.killHost('host2')).rejects.toThrow(/the agent of host2 is not running/);
    await expect(faults.killHost('host9')).rejects.toThrow(
      /lab ft has no host host9 \(hosts: host1, host2\)/,
    );
  });

  it("cuts a host's LAN and segment ports on the lab switch, and puts them back", async () => {
    const spec = loadSpec(SPEC, 'ft.yaml');
    const runner = new RecordingRunner();
    const faults = new LabFaults(runner, spec.lab!, new Lab(runner, spec.lab!));
    await faults.partitionHost('host2');
    await faults.healPartition('host2');
    expect(runner.lines()).toEqual([
      '[vl-ft--sw] ip link set dev p2 down',
      '[vl-ft--sw] ip link set dev h1s0 down',
      '[vl-ft--sw] ip link set dev p2 up',
      '[vl-ft--sw] ip link set dev h1s0 up',
    ]);
  });
});
