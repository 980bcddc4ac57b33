// HAProxy and Keepalived configuration of one load balancer on one host (docs/load-balancers.md). Pure: the driver
// writes these files atomically and (re)starts the processes. Every value is checked again here, since a config line
// built from an unchecked string could smuggle in a directive (the wire schema checks them too).
import { InvalidRequestError } from '../../shared/errors.js';
import type { LbConfig } from '../../shared/lb.js';

/** Where one load balancer's files live on its host (all under its own state directory). */
export interface LbPaths {
  dir: string;
  haproxyConfig: string;
  haproxyPid: string;
  /** HAProxy's stats socket (admin level, mode 0600): backend states for reports. */
  haproxySocket: string;
  keepalivedConfig: string;
  keepalivedPid: string;
  vrrpPid: string;
  /** The driver's record of what it applied (config and hash). */
  state: string;
}

/** The interface inside the LB's namespace (the veth end that carries its address and, when it holds it, the VIP). */
export const LB_INNER_DEV = 'eth0';

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const NAME = /^[a-z][a-z0-9-]{0,30}$/;
const PATH = /^\/[A-Za-z0-9._/-]{1,300}$/;
const CHECK_PATH = /^\/[A-Za-z0-9._~/-]{0,127}$/;

/** Refuses any value of `cfg` or `paths` that is not what its field allows (before it reaches a config line). */
export function assertLbConfig(cfg: LbConfig, paths: LbPaths): void {
  const bad = (what: string, v: unknown) => {
    throw new InvalidRequestError(
      `load balancer ${cfg.name}: invalid ${what} ${JSON.stringify(v)}`,
      cfg.name,
    );
  };
  if (!NAME.test(cfg.name)) bad('name', cfg.name);
  for (const [what, a] of [
    ['vip', cfg.vip],
    ['address', cfg.address],
    ...cfg.peers.map((p) => ['peer', p] as const),
    ...cfg.backends.map((b) => ['backend address', b.address] as const),
    ...(cfg.gateway ? [['gateway', cfg.gateway] as const] : []),
  ] as const)
    if (!IPV4.test(a)) bad(what, a);
  for (const b of cfg.backends) if (!NAME.test(b.vm)) bad('backend', b.vm);
  const int = (v: number, lo: number, hi: number) => Number.isInteger(v) && v >= lo && v <= hi;
  if (!int(cfg.vrid, 1, 255)) bad('vrid', cfg.vrid);
  if (!int(cfg.priority, 1, 254)) bad('priority', cfg.priority);
  if (!int(cfg.prefix, 8, 30)) bad('prefix', cfg.prefix);
  for (const f of cfg.frontends) {
    if (!int(f.port, 1, 65535)) bad('port', f.port);
    if (!int(f.backendPort, 1, 65535)) bad('backend port', f.backendPort);
    if (f.protocol !== 'tcp' && f.protocol !== 'http') bad('protocol', f.protocol);
  }
  const hc = cfg.healthCheck;
  if (
    !int(hc.intervalMs, 100, 60_000) ||
    (hc.timeoutMs !== undefined && !int(hc.timeoutMs, 100, 60_000)) ||
    !int(hc.rise, 1, 10) ||
    !int(hc.fall, 1, 10)
  )
    bad('health check', hc);
  if (!CHECK_PATH.test(hc.path)) bad('health check path', hc.path);
  for (const p of Object.values(paths)) if (!PATH.test(p)) bad('path', p);
}

/**
 * haproxy.cfg: one frontend per port bound to the VIP (`ip_nonlocal_bind` lets the standby bind it too, so taking the
 * VIP over needs no restart), one backend each, round robin over the backends with health checks. A request to a
 * backend that fails is retried once on another (`option redispatch`), so a backend dying between two checks costs
 * fewer failed requests.
 */
export function renderHaproxyConfig(cfg: LbConfig, paths: LbPaths): string {
  assertLbConfig(cfg, paths);
  const hc = cfg.healthCheck;
  const lines = [
    `# vmlink load balancer ${cfg.name} (generated; edits are overwritten)`,
    'global',
    '  maxconn 4096',
    `  stats socket ${paths.haproxySocket} mode 600 level admin`,
    '  hard-stop-after 30s',
    '',
    'defaults',
    '  timeout connect 2s',
    '  timeout client 30s',
    '  timeout server 30s',
    '  retries 2',
    '  option redispatch',
    // A check's connect waits at most the interval; its answer `timeout check` more (HAProxy's default: the interval).
    ...(hc.timeoutMs === undefined ? [] : [`  timeout check ${hc.timeoutMs}`]),
    `  default-server inter ${hc.intervalMs} fastinter ${hc.intervalMs} downinter ${hc.intervalMs} rise ${hc.rise} fall ${hc.fall}`,
  ];
  for (const f of cfg.frontends) {
    const be = `be-${f.port}`;
    lines.push(
      '',
      `frontend fe-${f.port}`,
      `  mode ${f.protocol}`,
      `  bind ${cfg.vip}:${f.port}`,
      `  default_backend ${be}`,
      '',
      `backend ${be}`,
      `  mode ${f.protocol}`,
      '  balance roundrobin',
    );
    if (f.protocol === 'http') lines.push(`  option httpchk GET ${hc.path}`);
    for (const b of cfg.backends) lines.push(`  server ${b.vm} ${b.address}:${f.backendPort} check`);
  }
  return `${lines.join('\n')}\n`;
}

/** VRRP advertisement interval (s): a backup takes the VIP over after about three missed ones. */
export const VRRP_ADVERT_INTERVAL_S = 0.5;

/**
 * keepalived.conf: VRRPv3 over unicast to the other LB hosts' addresses (no multicast on the overlay, and only those
 * peers are heard: `check_unicast_src`), `nopreempt` (a recovered host does not take the VIP back: one move per
 * failure, not two), and a track script that puts the instance in FAULT when this host's HAProxy is gone, so the VIP
 * moves to a host whose HAProxy runs.
 */
export function renderKeepalivedConfig(cfg: LbConfig, paths: LbPaths): string {
  assertLbConfig(cfg, paths);
  const id = `lb_${cfg.name.replaceAll('-', '_')}`;
  return `${[
    `# vmlink load balancer ${cfg.name} (generated; edits are overwritten)`,
    'global_defs {',
    `  router_id ${id}`,
    '  script_user root',
    '  enable_script_security',
    '  vrrp_garp_master_refresh 10',
    '}',
    '',
    `vrrp_script ${id}_haproxy {`,
    `  script "/usr/bin/pgrep -F ${paths.haproxyPid} -x haproxy"`,
    '  interval 1',
    '  timeout 1',
    '  fall 1',
    '  rise 1',
    '}',
    '',
    `vrrp_instance ${id} {`,
    '  state BACKUP',
    '  nopreempt',
    `  interface ${LB_INNER_DEV}`,
    `  virtual_router_id ${cfg.vrid}`,
    `  priority ${cfg.priority}`,
    `  advert_int ${VRRP_ADVERT_INTERVAL_S}`,
    '  version 3',
    '  check_unicast_src',
    `  unicast_src_ip ${cfg.address}`,
    '  unicast_peer {',
    ...cfg.peers.map((p) => `    ${p}`),
    '  }',
    '  virtual_ipaddress {',
    `    ${cfg.vip}/${cfg.prefix} dev ${LB_INNER_DEV}`,
    '  }',
    '  track_script {',
    `    ${id}_haproxy`,
    '  }',
    '}',
  ].join('\n')}\n`;
}
