// The lab's upstream router: its nftables ruleset (NAT out, forward LAN -> upstream only) and the LAN's DHCP
// server (a dnsmasq in the router's namespace), as pure renderers plus the check that finds that dnsmasq again.
import { type ProcessIdentity, processFromPidfile } from '../shared/process.js';
import { defaultDhcpRange, formatIpv4, parseCidr, parseIpv4 } from '../spec/net.js';
import type { LabSpec } from '../spec/schema.js';

/** nftables table of the lab's router. */
export const ROUTER_TABLE = 'vmlink-lab';

/** The router's ruleset: masquerade what leaves upstream (eth1), forward only LAN (eth0) -> upstream and replies. */
export function routerRuleset(): string {
  return [
    `table ip ${ROUTER_TABLE} {`,
    '  chain postrouting { type nat hook postrouting priority srcnat; oifname "eth1" masquerade; }',
    '  chain forward { type filter hook forward priority filter; policy drop;',
    '    ct state established,related accept',
    '    iifname "eth0" oifname "eth1" accept',
    '  }',
    '}',
    '',
  ].join('\n');
}

/** The LAN's DHCP pool: `lab.lan.dhcp`, else the default range short of the management station's address. */
export function lanDhcpRange(spec: LabSpec): { start: string; end: string } {
  if (spec.lan.dhcp) return spec.lan.dhcp;
  const lan = parseCidr(spec.lan.cidr)!;
  const r = defaultDhcpRange(lan, parseIpv4(spec.lan.gateway)!);
  // The highest address belongs to the management station.
  return { start: formatIpv4(r.start), end: formatIpv4(Math.min(r.end, lan.broadcast - 2)) };
}

/** Files of the router's dnsmasq. */
export interface LanDhcpFiles {
  pidFile: string;
  leaseFile: string;
}

/** The router dnsmasq's config: DHCP only (no DNS), on the LAN side, the router as gateway. */
export function renderLanDhcpConf(spec: LabSpec, files: LanDhcpFiles): string {
  const lan = parseCidr(spec.lan.cidr)!;
  const range = lanDhcpRange(spec);
  const mask = lan.prefix === 0 ? 0 : (0xffffffff << (32 - lan.prefix)) >>> 0;
  return [
    'interface=eth0',
    'bind-interfaces',
    'except-interface=lo',
    'port=0',
    `dhcp-range=${range.start},${range.end},${formatIpv4(mask)},1h`,
    `dhcp-option=option:router,${spec.lan.gateway}`,
    `dhcp-leasefile=${files.leaseFile}`,
    `pid-file=${files.pidFile}`,
    'dhcp-authoritative',
    '',
  ].join('\n');
}

/** The router's LAN dnsmasq when it runs (pidfile, /proc name and command line), else undefined. */
export function routerDnsmasq(pidfile: string, conf: string): Promise<ProcessIdentity | undefined> {
  return processFromPidfile(pidfile, { comm: 'dnsmasq', args: [`--conf-file=${conf}`] });
}
