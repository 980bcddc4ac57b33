import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { defaultVrid } from '../../shared/lb.js';
import { expectIssue, specIssues } from './issues.test-util.js';

// examples/lb.yaml is the sound base every case breaks in one place.
const example = parse(
  readFileSync(fileURLToPath(new URL('../../../examples/lb.yaml', import.meta.url)), 'utf8'),
);
// biome-ignore lint/suspicious/noExplicitAny: test specs are plain JSON edited in place
const base = (): any => structuredClone(example);
const lbPath = 'loadBalancers[0]';

describe('loadBalancers validation', () => {
  it('accepts the example', () => {
    expect(specIssues(base())).toEqual([]);
  });

  it('refuses an unknown network, a single-host network and one without a cidr', () => {
    const s = base();
    s.loadBalancers[0].network = 'nope';
    expectIssue(specIssues(s), `${lbPath}.network`, 'unknown network "nope"');
    const n = base();
    n.networks.push({ name: 'lan', mode: 'isolated', host: 'host1', cidr: '10.40.0.0/24' });
    n.loadBalancers[0].network = 'lan';
    expectIssue(specIssues(n), `${lbPath}.network`, 'a load balancer needs a vxlan or vlan network');
    const c = base();
    delete c.networks[0].cidr;
    delete c.networks[0].gateway;
    for (const v of c.vms) v.nics[0].ip = undefined;
    expectIssue(specIssues(c), `${lbPath}.network`, 'has no cidr');
  });

  it('refuses a health check timeout out of bounds, naming it', () => {
    const s = base();
    s.loadBalancers[0].healthCheck.timeoutMs = 50;
    expectIssue(specIssues(s), `${lbPath}.healthCheck.timeoutMs`, '100');
  });

  it('refuses an ovs network', () => {
    const s = base();
    s.networks[0].backend = 'ovs';
    expectIssue(specIssues(s), `${lbPath}.network`, 'backend linux only');
  });

  it('refuses a VIP outside the subnet, on the gateway, in the DHCP range or taken', () => {
    const cases: [string, string][] = [
      ['10.31.0.5', 'is outside 10.30.0.0/24'],
      ['10.30.0.1', 'is the gateway'],
      ['10.30.0.150', 'inside the DHCP range 10.30.0.100-10.30.0.199'],
      ['10.30.0.11', "already used by VM web1's NIC"],
      ['10.30.0.255', 'broadcast address'],
      ['10.30.0.51', 'already used by LB address'],
    ];
    for (const [vip, msg] of cases) {
      const s = base();
      s.loadBalancers[0].vip = vip;
      // The VIP is checked before the hosts' addresses: a host address equal to it is the one reported taken.
      const issues = specIssues(s);
      if (vip === '10.30.0.51') expectIssue(issues, `${lbPath}.hosts[0].address`, 'already used by VIP');
      else expectIssue(issues, `${lbPath}.vip`, msg);
    }
  });

  it('refuses fewer than two hosts, unknown or repeated hosts, and hosts off the network', () => {
    const one = base();
    one.loadBalancers[0].hosts.pop();
    expectIssue(specIssues(one), `${lbPath}.hosts`, 'at least two hosts');
    const unknown = base();
    unknown.loadBalancers[0].hosts[1].host = 'host9';
    expectIssue(specIssues(unknown), `${lbPath}.hosts[1].host`, 'unknown host "host9"');
    const twice = base();
    twice.loadBalancers[0].hosts[1].host = 'host1';
    expectIssue(specIssues(twice), `${lbPath}.hosts[1].host`, 'duplicate load balancer host "host1"');
    const off = base();
    off.hosts.push({ name: 'host3' });
    off.lab.hosts.push({ name: 'host3', address: '192.168.61.13' });
    off.networks[0].hosts = ['host1', 'host2'];
    off.loadBalancers[0].hosts[1].host = 'host3';
    expectIssue(specIssues(off), `${lbPath}.hosts[1].host`, 'is not a member of network "app"');
  });

  it('refuses a VM allowed to send from the VIP', () => {
    const s = base();
    s.vms[0].nics[0].allowedAddresses = ['10.30.0.50'];
    expectIssue(specIssues(s), 'vms[0].nics[0].allowedAddresses[0]', 'only its LB ports may send from it');
  });

  it('refuses two LB hosts on one address', () => {
    const s = base();
    s.loadBalancers[0].hosts[1].address = '10.30.0.51';
    expectIssue(specIssues(s), `${lbPath}.hosts[1].address`, 'already used by LB address');
  });

  it('refuses unknown backends, backends off the network or without a fixed ip, and repeats', () => {
    const s = base();
    s.loadBalancers[0].backends = ['web1', 'nope', 'web1'];
    const issues = specIssues(s);
    expectIssue(issues, `${lbPath}.backends[1]`, 'unknown VM "nope"');
    expectIssue(issues, `${lbPath}.backends[2]`, 'duplicate backend "web1"');
    const noIp = base();
    delete noIp.vms[1].nics[0].ip;
    expectIssue(specIssues(noIp), `${lbPath}.backends[1]`, 'has no fixed ip');
    const off = base();
    off.networks.push({ name: 'other', mode: 'vxlan', vni: 3002, cidr: '10.32.0.0/24' });
    off.vms[1].nics[0] = { network: 'other', ip: '10.32.0.12' };
    expectIssue(specIssues(off), `${lbPath}.backends[1]`, 'has no NIC on network "app"');
  });

  it('refuses repeated frontend ports, a check path without http, and bad shapes', () => {
    const s = base();
    s.loadBalancers[0].frontends = [{ port: 80 }, { port: 80, protocol: 'http' }];
    expectIssue(specIssues(s), `${lbPath}.frontends[1].port`, 'duplicate frontend port "80"');
    const p = base();
    p.loadBalancers[0].frontends = [{ port: 80, protocol: 'tcp' }];
    p.loadBalancers[0].healthCheck.path = '/health';
    expectIssue(specIssues(p), `${lbPath}.healthCheck.path`, 'needs an http frontend');
    const shape = base();
    shape.loadBalancers[0].healthCheck = { intervalMs: 5, path: 'no slash; rm' };
    shape.loadBalancers[0].frontends[0].protocol = 'udp';
    const issues = specIssues(shape);
    expect(issues.map((i) => i.path)).toEqual(
      expect.arrayContaining([
        `${lbPath}.healthCheck.intervalMs`,
        `${lbPath}.healthCheck.path`,
        `${lbPath}.frontends[0].protocol`,
      ]),
    );
  });

  it('refuses two load balancers with one name or one VRRP router id on a network', () => {
    const s = base();
    const second = structuredClone(s.loadBalancers[0]);
    second.vip = '10.30.0.60';
    second.hosts[0].address = '10.30.0.61';
    second.hosts[1].address = '10.30.0.62';
    s.loadBalancers.push(second);
    const issues = specIssues(s);
    expectIssue(issues, 'loadBalancers[1].name', 'duplicate load balancer name "web"');
    expectIssue(issues, 'loadBalancers[1].vrid', `VRRP router id ${defaultVrid('web')} is already used`);
  });
});
