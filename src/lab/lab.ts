import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Runner } from '../exec/runner.js';
import { InvalidRequestError, TimeoutError, UnavailableError } from '../shared/errors.js';
import { AnyAnswerSchema, HttpClient } from '../shared/http/client.js';
import type { OpContext } from '../shared/op.js';
import {
  AGENT_TCP_PORT,
  labAgentOwnSocket,
  labAgentSocket,
  labHostStateDir,
  labRunDir,
  labTokenFile,
  stateDir,
} from '../shared/paths.js';
import { defaultDhcpRange, formatIpv4, parseCidr, parseIpv4 } from '../spec/net.js';
import type { LabSpec } from '../spec/schema.js';
import { labNamespaces, machineNs, mgmtNs, routerNs, switchNs, upstreamNs } from './names.js';

const VMLINK_BIN = fileURLToPath(new URL('../../bin/vmlink.js', import.meta.url));

/** A lab segment: an extra L2 switch every lab host joins on its next NIC (eth1, eth2, ...). */
export interface LabSegment {
  name: string;
  mtu: number;
}

/** Options of a lab beyond its spec. */
export interface LabOptions {
  /** Uplink NIC of each host's agent (spec `hosts[].uplink`); default eth0. */
  uplinks?: Record<string, string>;
}

/** The management station's address on the lab LAN: the highest usable address of `lab.lan.cidr`. */
export function labMgmtAddress(spec: LabSpec): string {
  return formatIpv4(parseCidr(spec.lan.cidr)!.broadcast - 1);
}

/** The LAN's MTU (`lab.lan.mtu`, default 1500). */
export function labLanMtu(spec: LabSpec): number {
  return (spec.lan as { mtu?: number }).mtu ?? 1500;
}

/** The lab's extra segments in order (`lab.segments`); host NIC eth(i+1) joins segment i. */
export function labSegments(spec: LabSpec): LabSegment[] {
  const segs = (spec as { segments?: Array<{ name: string; mtu?: number }> }).segments ?? [];
  return segs.map((s) => ({ name: s.name, mtu: s.mtu ?? 1500 }));
}

/** Where the controller reaches a lab host's agent across the LAN. */
export const labAgentTcp = (address: string): string => `http://${address}:${AGENT_TCP_PORT}`;

/** The lab: network namespaces standing in for physical machines, built and removed without touching the root namespace. */
export class Lab {
  constructor(
    private readonly runner: Runner,
    readonly spec: LabSpec,
    private readonly opts: LabOptions = {},
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
    const mtu = labLanMtu(spec);
    const segments = labSegments(spec);
    const mgmt = labMgmtAddress(spec);
    const taken = [spec.lan.gateway, ...[...spec.hosts, ...spec.peers].map((m) => m.address)];
    if (taken.includes(mgmt))
      throw new InvalidRequestError(
        `lab address ${mgmt} is the lab's management station (the highest address of ${spec.lan.cidr}); give the machine another address`,
        'lab',
      );
    if (!(await this.linkExists(sw, 'lan'))) {
      await this.runner.run(['ip', '-batch', '-'], {
        netns: sw,
        input: `link add lan type bridge\nlink set lan mtu ${mtu}\nlink set lan up\n`,
      });
    }
    for (const [si, seg] of segments.entries()) {
      if (await this.linkExists(sw, segBridge(si))) continue;
      say(`creating segment ${seg.name} (MTU ${seg.mtu})`);
      await this.runner.run(['ip', '-batch', '-'], {
        netns: sw,
        input: `link add ${segBridge(si)} type bridge\nlink set ${segBridge(si)} mtu ${seg.mtu}\nlink set ${segBridge(si)} up\n`,
      });
    }
    // One veth per LAN machine: `eth0` in the machine, `pN` (management station: `pmgmt`) on the switch's bridge.
    const lanMachines = [
      {
        ns: routerNs(spec.name),
        port: 'p0',
        address: spec.lan.gateway,
        gateway: undefined as string | undefined,
      },
      { ns: mgmtNs(spec.name), port: 'pmgmt', address: mgmt, gateway: undefined as string | undefined },
      ...[...spec.hosts, ...spec.peers].map((m, i) => ({
        ns: machineNs(spec.name, m.name),
        port: `p${i + 1}`,
        address: m.address,
        gateway: spec.lan.gateway,
      })),
    ];
    for (const m of lanMachines) {
      if (await this.linkExists(m.ns, 'eth0')) continue;
      say(`wiring ${m.ns} to the LAN as ${m.address}`);
      await this.runner.run(
        [
          'ip',
          'link',
          'add',
          'eth0',
          'mtu',
          String(mtu),
          'type',
          'veth',
          'peer',
          'name',
          m.port,
          'mtu',
          String(mtu),
          'netns',
          sw,
        ],
        { netns: m.ns },
      );
      await this.runner.run(['ip', '-batch', '-'], {
        netns: sw,
        input: `link set ${m.port} master lan\nlink set ${m.port} up\n`,
      });
      const cmds = [`addr add ${m.address}/${lan.prefix} dev eth0`, 'link set eth0 up'];
      if (m.gateway) cmds.push(`route add default via ${m.gateway}`);
      await this.runner.run(['ip', '-batch', '-'], { netns: m.ns, input: `${cmds.join('\n')}\n` });
    }
    // Every host joins every segment on its next NIC: eth1 on the first segment, eth2 on the second, ...
    for (const [hi, h] of spec.hosts.entries()) {
      const ns = machineNs(spec.name, h.name);
      for (const [si, seg] of segments.entries()) {
        const nic = `eth${si + 1}`;
        if (await this.linkExists(ns, nic)) continue;
        const port = `h${hi}s${si}`;
        say(`wiring ${h.name} to segment ${seg.name} as ${nic}`);
        await this.runner.run(
          [
            'ip',
            'link',
            'add',
            nic,
            'mtu',
            String(seg.mtu),
            'type',
            'veth',
            'peer',
            'name',
            port,
            'mtu',
            String(seg.mtu),
            'netns',
            sw,
          ],
          { netns: ns },
        );
        await this.runner.run(['ip', '-batch', '-'], {
          netns: sw,
          input: `link set ${port} master ${segBridge(si)}\nlink set ${port} up\n`,
        });
        await this.runner.run(['ip', 'link', 'set', nic, 'up'], { netns: ns });
      }
    }
    await this.upRouter(say);
    this.ensureToken();
    await this.ensureRelay(say);
    for (const h of spec.hosts) await this.ensureAgent(h.name, h.address, say);
    // The controller's path: relay socket -> management station -> LAN -> the agent's TCP listener.
    const cut: string[] = [];
    for (const h of spec.hosts) {
      if (!(await agentAnswers(labAgentSocket(spec.name, h.name), 5_000, this.token())))
        cut.push(`${h.name} (${labAgentTcp(h.address)})`);
    }
    if (cut.length)
      throw new UnavailableError(
        `the agent of ${cut.join(', ')} runs but does not answer across the lab LAN; its host's network may be cut (see \`vmlink status\`)`,
      );
  }

  /** Kills every process in the lab's namespaces (agents, QEMU, dnsmasq), deletes them and the lab's files. */
  async down(ctx: OpContext = {}): Promise<void> {
    const say = ctx.progress ?? (() => {});
    const existing = new Set(await this.namespaces());
    const mine = labNamespaces(this.spec).filter((ns) => existing.has(ns));
    // Agents first, so none restarts what the next step kills.
    for (const h of this.spec.hosts) this.killPidfile(this.agentPidfile(h.name));
    this.killPidfile(this.relayPidfile());
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
          // The highest address belongs to the management station.
          return { start: formatIpv4(r.start), end: formatIpv4(Math.min(r.end, lan.broadcast - 2)) };
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

  private relayPidfile(): string {
    return join(labRunDir(this.spec.name), 'relay.pid');
  }

  private token(): string {
    return readFileSync(labTokenFile(this.spec.name), 'utf8').trim();
  }

  /** Creates the lab's agent token (32 random bytes, hex, mode 0600) unless it exists. */
  private ensureToken(): void {
    const file = labTokenFile(this.spec.name);
    if (existsSync(file) && readFileSync(file, 'utf8').trim()) return;
    writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  }

  /** Starts the management relay (one process, one socket per host) unless it runs with these routes. */
  private async ensureRelay(say: (m: string) => void): Promise<void> {
    const { spec } = this;
    const dir = labRunDir(spec.name);
    const routes = spec.hosts.flatMap((h) => [
      '--listen',
      `unix://${labAgentSocket(spec.name, h.name)}`,
      '--to',
      labAgentTcp(h.address),
    ]);
    const argsFile = join(dir, 'relay.args');
    const pidfile = this.relayPidfile();
    const same = existsSync(argsFile) && readFileSync(argsFile, 'utf8') === JSON.stringify(routes);
    const socketsThere = spec.hosts.every((h) => existsSync(labAgentSocket(spec.name, h.name)));
    if (same && socketsThere && pidAlive(readPid(pidfile))) return;
    this.killPidfile(pidfile);
    say(`starting the management relay in ${mgmtNs(spec.name)} (${labMgmtAddress(spec)})`);
    for (const h of spec.hosts) rmSync(labAgentSocket(spec.name, h.name), { force: true });
    const pid = await this.runner.spawnDetached([process.execPath, VMLINK_BIN, 'lab', 'relay', ...routes], {
      netns: mgmtNs(spec.name),
      logFile: join(dir, 'relay.log'),
    });
    writeFileSync(pidfile, `${pid}\n`);
    writeFileSync(argsFile, JSON.stringify(routes));
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (spec.hosts.every((h) => existsSync(labAgentSocket(spec.name, h.name)))) return;
      if (!pidAlive(pid)) break;
      await sleep(100);
    }
    throw new TimeoutError(
      `the lab's management relay did not come up; see ${join(dir, 'relay.log')}`,
      'lab',
    );
  }

  private async ensureAgent(host: string, address: string, say: (m: string) => void): Promise<void> {
    const socket = labAgentOwnSocket(this.spec.name, host);
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
        '--listen-tcp',
        labAgentTcp(address),
        '--token-file',
        labTokenFile(this.spec.name),
        '--uplink',
        this.opts.uplinks?.[host] ?? 'eth0',
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

/** Switch bridge of lab segment `i`. */
const segBridge = (i: number): string => `seg${i}`;

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

async function agentAnswers(socket: string, timeoutMs: number, token?: string): Promise<boolean> {
  if (!existsSync(socket)) return false;
  try {
    await new HttpClient(`unix://${socket}`, { timeoutMs, ...(token ? { token } : {}) }).get(
      '/v1/health',
      AnyAnswerSchema,
    );
    return true;
  } catch {
    return false;
  }
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
