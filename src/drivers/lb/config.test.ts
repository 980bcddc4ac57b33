import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { LbConfig } from '../../shared/lb.js';
import { type LbPaths, renderHaproxyConfig, renderKeepalivedConfig } from './config.js';
import { backendsUp, parseShowStat } from './stats.js';

const golden = join(dirname(fileURLToPath(import.meta.url)), '__golden__');
/** Exact match with `__golden__/<name>`; UPDATE_GOLDEN=1 rewrites it. */
function expectGolden(name: string, text: string): void {
  const file = join(golden, name);
  if (process.env.UPDATE_GOLDEN === '1') {
    mkdirSync(golden, { recursive: true });
    writeFileSync(file, text);
    return;
  }
  if (!existsSync(file))
    throw new Error(`golden file ${file} missing; run with UPDATE_GOLDEN=1 and review it`);
  expect(text).toBe(readFileSync(file, 'utf8'));
}

const dir = '/var/lib/vmlink/agent/lb/web';
const paths: LbPaths = {
  dir,
  haproxyConfig: `${dir}/haproxy.cfg`,
  haproxyPid: `${dir}/haproxy.pid`,
  haproxySocket: `${dir}/haproxy.sock`,
  keepalivedConfig: `${dir}/keepalived.conf`,
  keepalivedPid: `${dir}/keepalived.pid`,
  vrrpPid: `${dir}/vrrp.pid`,
  state: `${dir}/state.json`,
};
const cfg: LbConfig = {
  name: 'web',
  network: 'app',
  bridge: 'vlb-app',
  mtu: 1450,
  prefix: 24,
  gateway: '10.30.0.1',
  vip: '10.30.0.50',
  vrid: 51,
  address: '10.30.0.51',
  priority: 150,
  peers: ['10.30.0.52'],
  frontends: [
    { port: 80, protocol: 'http', backendPort: 80 },
    { port: 5432, protocol: 'tcp', backendPort: 5433 },
  ],
  backends: [
    { vm: 'web1', address: '10.30.0.11' },
    { vm: 'web2', address: '10.30.0.12' },
  ],
  healthCheck: { intervalMs: 500, timeoutMs: 1500, rise: 2, fall: 3, path: '/health' },
};

describe('load balancer configs', () => {
  it('renders haproxy.cfg', () => expectGolden('haproxy.cfg', renderHaproxyConfig(cfg, paths)));
  it('renders keepalived.conf', () => expectGolden('keepalived.conf', renderKeepalivedConfig(cfg, paths)));

  it("leaves HAProxy's check timeout (the interval) to a config recorded without one", () => {
    const { timeoutMs: _, ...old } = cfg.healthCheck;
    const text = renderHaproxyConfig({ ...cfg, healthCheck: old }, paths);
    expect(text).not.toContain('timeout check');
    expect(renderHaproxyConfig(cfg, paths)).toContain('  timeout check 1500\n');
  });

  it('refuses a value that could smuggle a directive into a config', () => {
    const bad: [string, Partial<LbConfig>][] = [
      ['vip', { vip: '10.30.0.50\n  bind *:22' }],
      ['backend', { backends: [{ vm: 'web1 10.0.0.1:22 check\nlisten x', address: '10.30.0.11' }] }],
      ['peer', { peers: ['10.30.0.52 }'] }],
      ['health check path', { healthCheck: { ...cfg.healthCheck, path: '/ HTTP/1.0\r\nHost: x' } }],
      ['health check', { healthCheck: { ...cfg.healthCheck, timeoutMs: 50 } }],
      ['vrid', { vrid: 256 }],
    ];
    for (const [what, patch] of bad) {
      expect(() => renderHaproxyConfig({ ...cfg, ...patch }, paths), what).toThrow(`invalid ${what}`);
      expect(() => renderKeepalivedConfig({ ...cfg, ...patch }, paths), what).toThrow(`invalid ${what}`);
    }
    expect(() => renderHaproxyConfig(cfg, { ...paths, haproxySocket: '/tmp/x y' })).toThrow('invalid path');
  });
});

describe('HAProxy stats', () => {
  const csv = [
    '# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight',
    'fe-80,FRONTEND,,,0,1,4096,3,0,0,0,0,0,,,,,OPEN,',
    'be-80,web1,0,0,0,1,,2,0,0,,0,,0,0,0,0,UP,1',
    'be-80,web2,0,0,0,1,,1,0,0,,0,,0,0,0,0,DOWN 1/2,1',
    'be-80,BACKEND,0,0,0,1,410,3,0,0,0,0,,0,0,0,0,UP,1',
    'be-5432,web1,0,0,0,1,,2,0,0,,0,,0,0,0,0,UP,1',
    'be-5432,web2,0,0,0,1,,2,0,0,,0,,0,0,0,0,UP,1',
    'evil,../../x,0,0,0,1,,2,0,0,,0,,0,0,0,0,UP,1',
  ].join('\n');

  it('reads server states and counts a backend up only where every frontend sees it up', () => {
    const rows = parseShowStat(csv);
    expect(rows).toHaveLength(4);
    expect(backendsUp(rows)).toEqual(['web1']);
  });

  it('reads nothing from an answer without its header', () => {
    expect(parseShowStat('garbage\nbe-80,web1,UP')).toEqual([]);
  });
});
