import { describe, expect, it } from 'vitest';
import { replaceTableScript } from '../exec/nft.js';
import { LabSchema } from '../spec/schema-lab.js';
import { lanDhcpRange, ROUTER_TABLE, renderLanDhcpConf, routerRuleset } from './router.js';

const spec = LabSchema.parse({
  name: 'qs',
  lan: { cidr: '192.168.50.0/24', gateway: '192.168.50.1' },
  upstream: { cidr: '203.0.113.0/24', address: '203.0.113.1' },
  hosts: [{ name: 'host1', address: '192.168.50.10' }],
  peers: [],
});

describe('lab router', () => {
  it('keeps the management station address (the highest) out of the DHCP pool', () => {
    const r = lanDhcpRange(spec);
    expect(r.end).not.toBe('192.168.50.254');
    expect(
      lanDhcpRange({
        ...spec,
        lan: { ...spec.lan, dhcp: { start: '192.168.50.100', end: '192.168.50.120' } },
      }),
    ).toEqual({ start: '192.168.50.100', end: '192.168.50.120' });
  });

  it('renders a DHCP-only dnsmasq config with our pid and lease files', () => {
    const conf = renderLanDhcpConf(spec, { pidFile: '/run/x/r.pid', leaseFile: '/run/x/r.leases' });
    const r = lanDhcpRange(spec);
    expect(conf.split('\n')).toEqual(
      expect.arrayContaining([
        'port=0',
        `dhcp-range=${r.start},${r.end},255.255.255.0,1h`,
        'dhcp-option=option:router,192.168.50.1',
        'pid-file=/run/x/r.pid',
        'dhcp-leasefile=/run/x/r.leases',
      ]),
    );
  });

  it('loads its ruleset as one atomic table replacement', () => {
    const script = replaceTableScript('ip', ROUTER_TABLE, routerRuleset());
    expect(script.split('\n').slice(0, 3)).toEqual([
      'table ip vmlink-lab {}',
      'delete table ip vmlink-lab',
      'table ip vmlink-lab {',
    ]);
    expect(script).toContain('oifname "eth1" masquerade');
    expect(script).toContain('policy drop');
  });
});
