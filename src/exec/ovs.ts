// Typed wrappers over Open vSwitch's command-line clients: `ovs-vsctl` (several `--`-separated
// commands in ONE OVSDB transaction, `--format=json` output parsed), `ovs-ofctl` (flows) and
// `ovs-appctl` (daemon control). Every command names its instance's sockets explicitly, so several
// OVS instances (one per lab host namespace) never meet through a default path.
import { InvalidRequestError } from '../shared/errors.js';
import { isLinkMtu, isVlanId, LINK_MTU_MAX, MTU_MIN, VLAN_ID_MAX, VLAN_ID_MIN } from '../shared/limits.js';
import { ExecError, type Runner, type RunResult } from './runner.js';

/** One ovs-vsctl command as argv (without the separating `--`). */
export type VsctlCommand = readonly string[];

/** An OVSDB value as `ovs-vsctl --format=json` prints it, decoded: atoms, sets as arrays, maps as records. */
export type OvsValue = string | number | boolean | OvsValue[] | Record<string, string>;

/** One OVSDB row: column name -> decoded value (`_uuid` and uuid references as plain strings). */
export type OvsRow = Record<string, OvsValue>;

/** Where one OVS instance listens. */
export interface OvsEndpoints {
  /** ovsdb-server's unix socket (`punix:` remote). */
  dbSocket: string;
  /** OVS_RUNDIR of ovs-vswitchd: it creates `<rundir>/<bridge>.mgmt` there, which ovs-ofctl connects to. */
  runDir: string;
  /** ovs-vswitchd's unixctl socket (ovs-appctl -t). */
  vswitchdCtl: string;
}

/** Port settings of `add-port` / `set Port`. */
export interface OvsPortSpec {
  /** Access port: VLAN tag. */
  tag?: number;
  /** Trunk port: VLANs passed tagged (empty = all). */
  trunks?: number[];
  vlanMode?: 'access' | 'trunk' | 'native-tagged' | 'native-untagged';
  /** Interface type: '' (system: a kernel device, AF_PACKET in the userspace datapath), internal, vxlan, ... */
  type?: string;
  /** Interface options (vxlan: remote_ip, key, local_ip, dst_port). */
  options?: Record<string, string>;
  /** Interface MTU request. */
  mtu?: number;
  /** Port external_ids (vmlink labels its ports with them). */
  externalIds?: Record<string, string>;
  /** Protected port: NORMAL never forwards between two protected ports (split horizon for tunnel meshes). */
  protected?: boolean;
}

const NAME = /^[A-Za-z0-9_.@:-]{1,15}$/;
const KEY = /^[A-Za-z0-9_.:-]{1,64}$/;
const VALUE = /^[A-Za-z0-9_.:/@-]{0,128}$/;

/** Refuses a bridge/port name OVS or the kernel would reject (same rule as kernel device names). */
export function assertOvsName(name: string, what = 'OVS name'): void {
  if (!NAME.test(name) || name === '.' || name === '..')
    throw new InvalidRequestError(
      `invalid ${what} ${JSON.stringify(name)}: 1-15 characters of [A-Za-z0-9_.@:-]`,
    );
}

function assertVlan(id: number, what: string): void {
  if (!isVlanId(id))
    throw new InvalidRequestError(`${what}: VLAN ${id} out of range ${VLAN_ID_MIN}-${VLAN_ID_MAX}`);
}

/** `key=value` map column syntax of ovs-vsctl, with keys and values restricted to safe characters. */
function mapArgs(column: string, m: Record<string, string>): string[] {
  return Object.entries(m).map(([k, v]) => {
    if (!KEY.test(k) || !VALUE.test(v))
      throw new InvalidRequestError(`invalid ${column} entry ${JSON.stringify(k)}=${JSON.stringify(v)}`);
    return `${column}:${k}=${v === '' ? '""' : v}`;
  });
}

/** Column settings of a port (Port table) and its interface (Interface table). */
function portColumns(s: OvsPortSpec): { port: string[]; iface: string[] } {
  const port: string[] = [];
  const iface: string[] = [];
  if (s.tag !== undefined) {
    assertVlan(s.tag, 'tag');
    port.push(`tag=${s.tag}`);
  }
  if (s.trunks !== undefined) {
    for (const t of s.trunks) assertVlan(t, 'trunks');
    port.push(`trunks=${s.trunks.length ? [...s.trunks].sort((a, b) => a - b).join(',') : '[]'}`);
  }
  if (s.vlanMode) port.push(`vlan_mode=${s.vlanMode}`);
  if (s.protected !== undefined) port.push(`protected=${s.protected}`);
  if (s.externalIds) port.push(...mapArgs('external_ids', s.externalIds));
  if (s.type !== undefined) {
    if (!/^[a-z_]*$/.test(s.type)) throw new InvalidRequestError(`invalid interface type ${s.type}`);
    iface.push(`type=${s.type === '' ? '""' : s.type}`);
  }
  if (s.options) iface.push(...mapArgs('options', s.options));
  if (s.mtu !== undefined) {
    if (!isLinkMtu(s.mtu))
      throw new InvalidRequestError(`mtu ${s.mtu} out of range ${MTU_MIN}-${LINK_MTU_MAX}`);
    iface.push(`mtu_request=${s.mtu}`);
  }
  return { port, iface };
}

/** Argv builders of the ovs-vsctl commands vmlink uses (combine them into one transaction with `Ovs.vsctl`). */
export const vsctlCmd = {
  /** `--may-exist add-br NAME` and its datapath type, other_config and external_ids. */
  addBr(
    name: string,
    opts: {
      datapathType?: 'netdev' | 'system';
      externalIds?: Record<string, string>;
      otherConfig?: Record<string, string>;
    } = {},
  ): VsctlCommand[] {
    assertOvsName(name, 'bridge');
    const set = [
      ...(opts.datapathType ? [`datapath_type=${opts.datapathType}`] : []),
      ...mapArgs('external_ids', opts.externalIds ?? {}),
      ...mapArgs('other_config', opts.otherConfig ?? {}),
    ];
    return [['--may-exist', 'add-br', name], ...(set.length ? [['set', 'Bridge', name, ...set]] : [])];
  },
  /** `--if-exists del-br NAME`. */
  delBr(name: string): VsctlCommand[] {
    assertOvsName(name, 'bridge');
    return [['--if-exists', 'del-br', name]];
  },
  /** `--may-exist add-port BR PORT` plus its port and interface columns (also applied when it existed). */
  addPort(bridge: string, port: string, spec: OvsPortSpec = {}): VsctlCommand[] {
    assertOvsName(bridge, 'bridge');
    assertOvsName(port, 'port');
    const c = portColumns(spec);
    return [
      ['--may-exist', 'add-port', bridge, port],
      ...(c.port.length ? [['set', 'Port', port, ...c.port]] : []),
      ...(c.iface.length ? [['set', 'Interface', port, ...c.iface]] : []),
    ];
  },
  /** Sets port/interface columns of an existing port. */
  setPort(port: string, spec: OvsPortSpec): VsctlCommand[] {
    assertOvsName(port, 'port');
    const c = portColumns(spec);
    return [
      ...(c.port.length ? [['set', 'Port', port, ...c.port]] : []),
      ...(c.iface.length ? [['set', 'Interface', port, ...c.iface]] : []),
    ];
  },
  /** Clears Port columns (e.g. tag, trunks). */
  clearPort(port: string, columns: ('tag' | 'trunks' | 'vlan_mode')[]): VsctlCommand[] {
    assertOvsName(port, 'port');
    return columns.length ? [['clear', 'Port', port, ...columns]] : [];
  },
  /** `--if-exists del-port [BR] PORT`. */
  delPort(port: string, bridge?: string): VsctlCommand[] {
    assertOvsName(port, 'port');
    if (bridge !== undefined) assertOvsName(bridge, 'bridge');
    return [['--if-exists', 'del-port', ...(bridge ? [bridge] : []), port]];
  },
  /** Removes keys from a map column of a record. */
  removeKeys(table: 'Bridge' | 'Port' | 'Interface', record: string, column: string, keys: string[]) {
    assertOvsName(record);
    return keys.length ? [['remove', table, record, column, ...keys]] : [];
  },
};

/** Decodes one OVSDB JSON value (RFC 7047 notation: ["uuid",x], ["set",[...]], ["map",[[k,v],...]]). */
export function decodeOvsValue(v: unknown): OvsValue {
  if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string') {
    const [tag, body] = v as [string, unknown];
    if (tag === 'uuid' || tag === 'named-uuid') return String(body);
    if (tag === 'set') return (body as unknown[]).map(decodeOvsValue);
    if (tag === 'map')
      return Object.fromEntries((body as [unknown, unknown][]).map(([k, x]) => [String(k), String(x)]));
  }
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
  throw new InvalidRequestError(`unexpected OVSDB value ${JSON.stringify(v)}`);
}

/** Parses `ovs-vsctl --format=json list|find ...` output into rows keyed by heading. */
export function parseVsctlJson(text: string): OvsRow[] {
  if (text.trim() === '') return [];
  const doc = JSON.parse(text) as { headings: string[]; data: unknown[][] };
  return doc.data.map((row) => Object.fromEntries(doc.headings.map((h, i) => [h, decodeOvsValue(row[i])])));
}

/** A set column as an array (OVSDB prints a one-element set as the bare atom). */
export function asSet(v: OvsValue | undefined): (string | number | boolean)[] {
  if (v === undefined) return [];
  if (Array.isArray(v)) return v as (string | number | boolean)[];
  if (typeof v === 'object') return [];
  return [v];
}

/** An optional integer column (`tag`): empty set -> undefined. */
export function asOptInt(v: OvsValue | undefined): number | undefined {
  const s = asSet(v);
  return typeof s[0] === 'number' ? s[0] : undefined;
}

/** A map column as a record. */
export function asMap(v: OvsValue | undefined): Record<string, string> {
  return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
}

/** A bridge as read from OVSDB. */
export interface OvsBridge {
  name: string;
  datapathType: string;
  ports: string[];
  externalIds: Record<string, string>;
  otherConfig: Record<string, string>;
}

/** A port with its (single) interface, as read from OVSDB. */
export interface OvsPort {
  name: string;
  bridge?: string;
  tag?: number;
  trunks: number[];
  vlanMode?: string;
  externalIds: Record<string, string>;
  type: string;
  options: Record<string, string>;
  /** OpenFlow port number; -1 when the interface failed to open. */
  ofport?: number;
  /** Why the interface could not be opened, if it could not. */
  error?: string;
  linkState?: string;
}

/** One OVS instance's clients, bound to one runner and (optionally) one network namespace. */
export class Ovs {
  constructor(
    private readonly runner: Runner,
    readonly endpoints: OvsEndpoints,
    /** Namespace the clients run in (only matters for the kernel devices they touch; sockets are paths). */
    readonly netns?: string,
  ) {}

  private env(): Record<string, string> {
    return { OVS_RUNDIR: this.endpoints.runDir };
  }

  /**
   * Runs commands as ONE ovs-vsctl transaction (`ovs-vsctl --db=... -- CMD1 -- CMD2`). Without `noWait`
   * it returns once ovs-vswitchd applied the change.
   */
  async vsctl(
    cmds: readonly VsctlCommand[],
    opts: { noWait?: boolean; timeoutS?: number; json?: boolean; allowFailure?: boolean } = {},
  ): Promise<RunResult> {
    const argv = [
      'ovs-vsctl',
      `--db=unix:${this.endpoints.dbSocket}`,
      `--timeout=${opts.timeoutS ?? 20}`,
      ...(opts.noWait ? ['--no-wait'] : []),
      ...(opts.json ? ['--format=json'] : []),
      ...cmds.flatMap((c) => ['--', ...c]),
    ];
    return this.runner.run(argv, {
      netns: this.netns,
      env: this.env(),
      allowFailure: opts.allowFailure,
      timeoutMs: ((opts.timeoutS ?? 20) + 5) * 1000,
    });
  }

  /** Rows of a table (`list TABLE`), only `columns` (plus `_uuid`). */
  async list(table: string, columns: string[]): Promise<OvsRow[]> {
    const r = await this.vsctl([[`--columns=${['_uuid', ...columns].join(',')}`, 'list', table]], {
      json: true,
      noWait: true,
    });
    return parseVsctlJson(r.stdout);
  }

  /** Every bridge. */
  async bridges(): Promise<OvsBridge[]> {
    const rows = await this.list('Bridge', [
      'name',
      'datapath_type',
      'ports',
      'external_ids',
      'other_config',
    ]);
    return rows.map((r) => ({
      name: String(r.name),
      datapathType: String(r.datapath_type ?? ''),
      ports: asSet(r.ports).map(String),
      externalIds: asMap(r.external_ids),
      otherConfig: asMap(r.other_config),
    }));
  }

  /** Every port with its interface and bridge (one list transaction per table). */
  async ports(): Promise<OvsPort[]> {
    const [bridges, ports, ifaces] = await Promise.all([
      this.list('Bridge', ['name', 'ports']),
      this.list('Port', ['name', 'tag', 'trunks', 'vlan_mode', 'interfaces', 'external_ids']),
      this.list('Interface', ['name', 'type', 'options', 'ofport', 'error', 'link_state']),
    ]);
    const bridgeOf = new Map<string, string>();
    for (const b of bridges) for (const p of asSet(b.ports)) bridgeOf.set(String(p), String(b.name));
    const ifaceById = new Map(ifaces.map((i) => [String(i._uuid), i]));
    return ports.map((p) => {
      const i = ifaceById.get(String(asSet(p.interfaces)[0]));
      const bridge = bridgeOf.get(String(p._uuid));
      const tag = asOptInt(p.tag);
      const ofport = asOptInt(i?.ofport);
      const error = asSet(i?.error)[0];
      const linkState = asSet(i?.link_state)[0];
      const vlanMode = asSet(p.vlan_mode)[0];
      return {
        name: String(p.name),
        ...(bridge ? { bridge } : {}),
        ...(tag !== undefined ? { tag } : {}),
        trunks: asSet(p.trunks).map(Number),
        ...(vlanMode !== undefined ? { vlanMode: String(vlanMode) } : {}),
        externalIds: asMap(p.external_ids),
        type: String(i?.type ?? ''),
        options: asMap(i?.options),
        ...(ofport !== undefined ? { ofport } : {}),
        ...(error !== undefined ? { error: String(error) } : {}),
        ...(linkState !== undefined ? { linkState: String(linkState) } : {}),
      };
    });
  }

  /** The OpenFlow management socket of a bridge in this instance. */
  mgmt(bridge: string): string {
    assertOvsName(bridge, 'bridge');
    return `unix:${this.endpoints.runDir}/${bridge}.mgmt`;
  }

  /** Runs `ovs-ofctl ARGS` against this instance. */
  async ofctl(args: readonly string[], opts: { input?: string; allowFailure?: boolean } = {}) {
    return this.runner.run(['ovs-ofctl', ...args], {
      netns: this.netns,
      env: this.env(),
      input: opts.input,
      allowFailure: opts.allowFailure,
    });
  }

  /** Makes the bridge's flow table exactly `flows` (ovs-ofctl replace-flows: unchanged flows stay, counters too). */
  async replaceFlows(bridge: string, flows: readonly string[]): Promise<void> {
    for (const f of flows)
      if (/[\n\r]/.test(f)) throw new InvalidRequestError(`invalid flow ${JSON.stringify(f)}`);
    await this.ofctl(['replace-flows', this.mgmt(bridge), '-'], { input: `${flows.join('\n')}\n` });
  }

  /** `ovs-ofctl dump-flows` of a bridge; `names` prints port names instead of numbers. */
  async dumpFlows(bridge: string, opts: { names?: boolean; stats?: boolean } = {}): Promise<string> {
    const r = await this.ofctl([
      'dump-flows',
      ...(opts.names ? ['--names'] : ['--no-names']),
      ...(opts.stats === false ? ['--no-stats'] : []),
      this.mgmt(bridge),
    ]);
    return r.stdout;
  }

  /** Runs `ovs-appctl -t CTL ARGS` against ovs-vswitchd (or another unixctl socket). */
  async appctl(args: readonly string[], target = this.endpoints.vswitchdCtl): Promise<string> {
    const r = await this.runner.run(['ovs-appctl', '-t', target, ...args], {
      netns: this.netns,
      env: this.env(),
      allowFailure: true,
    });
    if (r.code !== 0) throw new ExecError(r);
    return r.stdout;
  }
}

/** One flow as `dump-flows` prints it, without the volatile fields (duration, ages; counters unless `counters`). */
export function cleanFlowLine(line: string, counters = false): string {
  const volatile = counters ? 'duration|idle_age|hard_age' : 'duration|n_packets|n_bytes|idle_age|hard_age';
  return line
    .trim()
    .replace(new RegExp(`\\b(${volatile})=[^,\\s]+,?\\s*`, 'g'), '')
    .replace(/^,\s*/, '')
    .replace(/\s+/g, ' ')
    .trim();
}

/** Flow lines of a `dump-flows` reply (header dropped), cleaned with `cleanFlowLine`. */
export function parseFlowDump(text: string, counters = false): string[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '' && !/^(NXST|OFPST)_FLOW reply/.test(l.trim()))
    .map((l) => cleanFlowLine(l, counters));
}
