// Load balancers: each reference known (network, hosts, backend VMs), the network one the LB can join on every LB
// host, and every address (VIP, LB host addresses) a free host address of the subnet that DHCP never hands out.
import { defaultVrid } from '../../shared/lb.js';
import { formatRange, parseCidr, parseIpv4 } from '../net.js';
import type { Spec } from '../schema.js';
import { isMultiHost, networkHosts } from '../topology.js';
import { subnetPlan } from './addressing.js';
import { type Add, addressProblem, dupes } from './common.js';

/** Every check of `loadBalancers:`. */
export function checkLoadBalancers(spec: Spec, add: Add) {
  const lbs = spec.loadBalancers;
  dupes(
    lbs,
    (l) => l.name,
    (i) => `loadBalancers[${i}].name`,
    'load balancer name',
    add,
  );
  // Addresses already taken on each network: VM NICs' fixed addresses, then each LB's as it is checked.
  const taken = new Map<string, Map<number, string>>();
  const takenOn = (net: string) => {
    const m = taken.get(net) ?? new Map<number, string>();
    taken.set(net, m);
    return m;
  };
  spec.vms.forEach((vm, vi) => {
    vm.nics.forEach((nic, ni) => {
      const ip = nic.ip === undefined ? undefined : parseIpv4(nic.ip);
      if (nic.network !== undefined && ip !== undefined)
        takenOn(nic.network).set(ip, `VM ${vm.name}'s NIC (vms[${vi}].nics[${ni}].ip)`);
    });
  });
  const vrids = new Map<string, string>();

  lbs.forEach((lb, i) => {
    const base = `loadBalancers[${i}]`;
    const net = spec.networks.find((n) => n.name === lb.network);
    if (!net) {
      const known = spec.networks.map((n) => n.name).join(', ') || 'none declared';
      add(`${base}.network`, `unknown network "${lb.network}" (networks: ${known})`);
      return;
    }
    if (!isMultiHost(net)) {
      add(
        `${base}.network`,
        `network "${net.name}" is ${net.mode} (on one host); a load balancer needs a vxlan or vlan network present on each of its hosts`,
      );
      return;
    }
    if (net.backend !== 'linux')
      add(
        `${base}.network`,
        `network "${net.name}" uses backend ${net.backend}; load balancers support backend linux only for now`,
      );
    const cidr = net.cidr === undefined ? undefined : parseCidr(net.cidr);
    if (!cidr || net.cidr === undefined) {
      add(
        `${base}.network`,
        `network "${net.name}" has no cidr; a load balancer needs one for its addresses`,
      );
      return;
    }
    const vrid = lb.vrid ?? defaultVrid(lb.name);
    const vkey = `${net.name}/${vrid}`;
    const other = vrids.get(vkey);
    if (other)
      add(
        `${base}.vrid`,
        `VRRP router id ${vrid} is already used by ${other} on network "${net.name}"; set a different vrid`,
      );
    else vrids.set(vkey, `load balancer "${lb.name}"`);

    const plan = subnetPlan(net);
    const used = takenOn(net.name);
    const checkAddress = (text: string, path: string, what: string) => {
      const ip = parseIpv4(text);
      if (ip === undefined) return;
      const err = addressProblem(ip, cidr, net.cidr as string);
      const by = used.get(ip);
      const problem = err
        ? `${what} ${err}`
        : plan && ip === plan.gateway
          ? `${what} ${text} is the gateway of network "${net.name}"; pick a free address`
          : plan && ip >= plan.dhcp.start && ip <= plan.dhcp.end
            ? `${what} ${text} is inside the DHCP range ${formatRange(plan.dhcp)} of network "${net.name}"; pick an address outside it`
            : by
              ? `${what} ${text} is already used by ${by}; pick a free address`
              : undefined;
      if (problem) add(path, problem);
      else used.set(ip, `${what} of load balancer "${lb.name}" (${path})`);
    };
    checkAddress(lb.vip, `${base}.vip`, 'VIP');
    // The VIP is an allowed address of the LB ports only: no VM may be let to send from it.
    spec.vms.forEach((vm, vi) => {
      vm.nics.forEach((nic, ni) => {
        const k = nic.network === net.name ? (nic.allowedAddresses ?? []).indexOf(lb.vip) : -1;
        if (k >= 0)
          add(
            `vms[${vi}].nics[${ni}].allowedAddresses[${k}]`,
            `${lb.vip} is the VIP of load balancer "${lb.name}"; only its LB ports may send from it: remove it here`,
          );
      });
    });

    const members = new Set(networkHosts(spec, net));
    dupes(
      lb.hosts,
      (h) => h.host,
      (k) => `${base}.hosts[${k}].host`,
      'load balancer host',
      add,
    );
    lb.hosts.forEach((h, k) => {
      const path = `${base}.hosts[${k}]`;
      const host = spec.hosts.find((x) => x.name === h.host);
      if (!host) add(`${path}.host`, `unknown host "${h.host}"`);
      else if (host.role === 'storage')
        add(`${path}.host`, `host "${h.host}" is a storage host; load balancers run on compute hosts`);
      else if (!members.has(h.host))
        add(
          `${path}.host`,
          `host "${h.host}" is not a member of network "${net.name}" (members: ${[...members].join(', ')}); add it to the network's hosts or pick a member`,
        );
      checkAddress(h.address, `${path}.address`, 'LB address');
    });

    dupes(
      lb.frontends,
      (f) => String(f.port),
      (k) => `${base}.frontends[${k}].port`,
      'frontend port',
      add,
    );

    dupes(
      lb.backends,
      (b) => b,
      (k) => `${base}.backends[${k}]`,
      'backend',
      add,
    );
    lb.backends.forEach((b, k) => {
      const path = `${base}.backends[${k}]`;
      const vm = spec.vms.find((v) => v.name === b);
      const nic = vm?.nics.find((n) => n.network === net.name);
      if (!vm) add(path, `unknown VM "${b}"`);
      else if (!nic) add(path, `VM "${b}" has no NIC on network "${net.name}"; give it one`);
      else if (nic.ip === undefined)
        add(
          path,
          `VM "${b}"'s NIC on network "${net.name}" has no fixed ip; backends need one (set vms[].nics[].ip)`,
        );
    });
    if (lb.healthCheck.path !== '/' && !lb.frontends.some((f) => f.protocol === 'http'))
      add(
        `${base}.healthCheck.path`,
        'a check path needs an http frontend (tcp frontends check a connect); remove path or set protocol: http',
      );
  });
}
