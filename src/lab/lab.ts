import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { OpContext } from '../drivers/network/types.js';
import type { Runner } from '../exec/runner.js';
import { TimeoutError } from '../shared/errors.js';
import { HttpClient } from '../shared/http/client.js';
import { labAgentSocket, labHostStateDir, labRunDir, stateDir } from '../shared/paths.js';
import { defaultDhcpRange, formatIpv4, parseCidr, parseIpv4 } from '../spec/net.js';
import type { LabSpec } from '../spec/schema.js';
import { labNamespaces, machineNs, routerNs, switchNs, upstreamNs } from './names.js';

const VMLINK_BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));

/** The lab: network namespaces standing in for physical machines, built and removed without touching the root namespace. */
export class Lab {
  constructor(
    private readonly runner: Runner,
    readonly spec: LabSpec,
  ) {}

  /** Builds whatever is missing (idempotent) and (re)starts any host agent that is not running. */
  async up(ctx: OpContext = {}): Promise<void> {
    const { spec } = this;
    const say = ctx.progress ?? (() => {});
    mkdirSync(labRunDir(spec.name), { recursive: true, mode: 0o755 });
    const existing = new Set(await this.namespaces());
    for (const ns of labNamespaces(spec)) {
      if (existing.has(ns)) continue;
      say(`creating namespace ${ns}`);
      await this.runner.run(['ip', 'netns', 'add', ns]);
      await this.runner.run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
    }
    const lan = parseCidr(spec.lan.cidr)!;
    const sw = switchNs(spec.name);
    if (!(await this.linkExists(sw, 'lan'))) {
      await this.runner.run(['ip', '-batch', '-'], {
        netns: sw,
        input: 'link add lan type bridge\nlink set lan up\n',
      });
    }
    // One veth per LAN machine: `eth0` in the machine, `pN` on the switch's bridge.
    const lanMachines = [
      { ns: routerNs(spec.name), address: spec.lan.gateway, gateway: undefined as string | undefined },
      ...[...spec.hosts, ...spec.peers].map((m) => ({
        ns: machineNs(spec.name, m.name),
        address: m.address,
        gateway: spec.lan.gateway,
      })),
    ];
    for (const [i, m] of lanMachines.entries()) {
      if (await this.linkExists(m.ns, 'eth0')) continue;
      say(`wiring ${m.ns} to the LAN as ${m.address}`);
      await this.runner.run(
        ['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${i}`, 'netns', sw],
        { netns: m.ns },
      );
      await this.runner.run(['ip', '-batch', '-'], {
        netns: sw,
        input: `link set p${i} master lan\nlink set p${i} up\n`,
      });
      const cmds = [`addr add ${m.address}/${lan.prefix} dev eth0`, 'link set eth0 up'];
      if (m.gateway) cmds.push(`route add default via ${m.gateway}`);
      await this.runner.run(['ip', '-batch', '-'], { netns: m.ns, input: `${cmds.join('\n')}\n` });
    }
    await this.upRouter(say);
    for (const h of spec.hosts) await this.ensureAgent(h.name, say);
  }

  /** Kills every process in the lab's namespaces (agents, QEMU, dnsmasq), deletes them and the lab's files. */
  async down(ctx: OpContext = {}): Promise<void> {
    const say = ctx.progress ?? (() => {});
    const existing = new Set(await this.namespaces());
    const mine = labNamespaces(this.spec).filter((ns) => existing.has(ns));
    // Agents first, so none restarts what the next step kills.
    for (const h of this.spec.hosts) this.killPidfile(this.agentPidfile(h.name));
    for (const ns of mine) {
      const pids = await this.nsPids(ns);
      if (pids.length) say(`stopping ${pids.length} process(es) in ${ns}`);
      await killAll(pids);
    }
    for (const ns of mine) {
      say(`deleting namespace ${ns}`);
      await this.runner.run(['ip', 'netns', 'del', ns]);
    }
    rmSync(labRunDir(this.spec.name), { recursive: true, force: true });
    rmSync(join(stateDir(), 'lab', this.spec.name), { recursive: true, force: true });
  }

  /** Namespaces of this lab that exist now. */
  async existingNamespaces(): Promise<string[]> {
    const all = new Set(await this.namespaces());
    return labNamespaces(this.spec).filter((ns) => all.has(ns));
  }

  /** The router's address on the upstream network: the first host address that is not the upstream machine's. */
  routerUpstreamAddress(): string {
    const up = parseCidr(this.spec.upstream.cidr)!;
    const first = up.network + 1;
    return formatIpv4(formatIpv4(first) === this.spec.upstream.address ? first + 1 : first);
  }

  private async upRouter(say: (m: string) => void): Promise<void> {
    const { spec } = this;
    const rt = routerNs(spec.name);
    const upNs = upstreamNs(spec.name);
    const up = parseCidr(spec.upstream.cidr)!;
    if (!(await this.linkExists(rt, 'eth1'))) {
      say(`wiring the router to the upstream network ${spec.upstream.cidr}`);
      await this.runner.run(
        ['ip', 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', upNs],
        { netns: rt },
      );
      await this.runner.run(['ip', '-batch', '-'], {
        netns: rt,
        input: `addr add ${this.routerUpstreamAddress()}/${up.prefix} dev eth1\nlink set eth1 up\n`,
      });
      // The upstream machine gets no route back into the LAN: like the internet, it sees only the router.
      await this.runner.run(['ip', '-batch', '-'], {
        netns: upNs,
        input: `addr add ${spec.upstream.address}/${up.prefix} dev eth0\nlink set eth0 up\n`,
      });
    }
    await this.runner.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'], { netns: rt });
    await this.runner.run(['nft', '-f', '-'], {
      netns: rt,
      input: [
        'table ip vmlink-lab {}',
        'delete table ip vmlink-lab',
        'table ip vmlink-lab {',
        '  chain postrouting { type nat hook postrouting priority srcnat; oifname "eth1" masquerade; }',
        '  chain forward { type filter hook forward priority filter; policy drop;',
        '    ct state established,related accept',
        '    iifname "eth0" oifname "eth1" accept',
        '  }',
        '}',
        '',
      ].join('\n'),
    });
    await this.ensureLanDhcp(say);
  }

  private async ensureLanDhcp(say: (m: string) => void): Promise<void> {
    const { spec } = this;
    const dir = labRunDir(spec.name);
    const pidfile = join(dir, 'router-dnsmasq.pid');
    if (pidAlive(readPid(pidfile), 'dnsmasq')) return;
    const lan = parseCidr(spec.lan.cidr)!;
    const range = spec.lan.dhcp
      ? spec.lan.dhcp
      : (() => {
          const r = defaultDhcpRange(lan, parseIpv4(spec.lan.gateway)!);
          return { start: formatIpv4(r.start), end: formatIpv4(r.end) };
        })();
    say(`starting the LAN's DHCP server on the router (${range.start}-${range.end})`);
    const conf = join(dir, 'router-dnsmasq.conf');
    writeFileSync(
      conf,
      [
        'interface=eth0',
        'bind-interfaces',
        'except-interface=lo',
        'port=0',
        `dhcp-range=${range.start},${range.end},${formatIpv4(maskOf(lan.prefix))},1h`,
        `dhcp-option=option:router,${spec.lan.gateway}`,
        `dhcp-leasefile=${join(dir, 'router-dnsmasq.leases')}`,
        `pid-file=${pidfile}`,
        'dhcp-authoritative',
        '',
      ].join('\n'),
    );
    await this.runner.run(['dnsmasq', `--conf-file=${conf}`], { netns: routerNs(spec.name) });
  }

  private agentPidfile(host: string): string {
    return join(labRunDir(this.spec.name), `${host}.agent.pid`);
  }

  private async ensureAgent(host: string, say: (m: string) => void): Promise<void> {
    const socket = labAgentSocket(this.spec.name, host);
    const pidfile = this.agentPidfile(host);
    if (pidAlive(readPid(pidfile)) && (await agentAnswers(socket, 2_000))) return;
    this.killPidfile(pidfile);
    say(`starting the agent of ${host} in ${machineNs(this.spec.name, host)}`);
    const dir = labHostStateDir(this.spec.name, host);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    const pid = await this.runner.spawnDetached(
      [
        process.execPath,
        VMLINK_BIN,
        'agent',
        '--host',
        host,
        '--listen',
        `unix://${socket}`,
        '--state-dir',
        dir,
      ],
      {
        netns: machineNs(this.spec.name, host),
        logFile: join(labRunDir(this.spec.name), `${host}.agent.log`),
        env: { VMLINK_LOG: process.env.VMLINK_LOG ?? 'info' },
      },
    );
    writeFileSync(pidfile, `${pid}\n`);
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (await agentAnswers(socket, 2_000)) return;
      if (!pidAlive(pid)) break;
      await sleep(200);
    }
    throw new TimeoutError(
      `the agent of ${host} did not come up; see ${join(labRunDir(this.spec.name), `${host}.agent.log`)}`,
      `host/${host}`,
    );
  }

  private killPidfile(pidfile: string): void {
    const pid = readPid(pidfile);
    if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(pidfile, { force: true });
  }

  private async namespaces(): Promise<string[]> {
    const r = await this.runner.run(['ip', '-json', 'netns', 'list']);
    const list = r.stdout.trim() ? (JSON.parse(r.stdout) as Array<{ name: string }>) : [];
    return list.map((n) => n.name);
  }

  private async linkExists(ns: string, dev: string): Promise<boolean> {
    const r = await this.runner.run(['ip', 'link', 'show', 'dev', dev], { netns: ns, allowFailure: true });
    return r.code === 0;
  }

  private async nsPids(ns: string): Promise<number[]> {
    const r = await this.runner.run(['ip', 'netns', 'pids', ns], { allowFailure: true });
    return r.stdout.split(/\s+/).filter(Boolean).map(Number);
  }
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Reads a pidfile; undefined when missing or garbled. */
export function readPid(path: string): number | undefined {
  if (!existsSync(path)) return undefined;
  const n = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

/** Whether `pid` is alive (and, when given, its /proc comm is `comm`). */
export function pidAlive(pid: number | undefined, comm?: string): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  if (!comm) return true;
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm;
  } catch {
    return false;
  }
}

async function killAll(pids: number[]): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {}
  }
  const deadline = Date.now() + 3_000;
  while (Date.now() < deadline && pids.some((p) => pidAlive(p))) await sleep(100);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  const hard = Date.now() + 3_000;
  while (Date.now() < hard && pids.some((p) => pidAlive(p))) await sleep(50);
}

async function agentAnswers(socket: string, timeoutMs: number): Promise<boolean> {
  if (!existsSync(socket)) return false;
  try {
    await new HttpClient(`unix://${socket}`, { timeoutMs }).get('/v1/health');
    return true;
  } catch {
    return false;
  }
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
