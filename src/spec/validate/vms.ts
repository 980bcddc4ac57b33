// VMs: NICs (networks, addresses, MACs, VLAN trunks) and port forwards.
import { derivedMac, formatRange, parseCidr, parseIpv4 } from '../net.js';
import type { NetworkSpec, Spec } from '../schema.js';
import { isMultiHost, networkHosts } from '../topology.js';
import type { SubnetPlan } from './addressing.js';
import { type Add, addressProblem } from './common.js';
import type { LabPlan } from './lab.js';

/** VM NICs: known networks that reach the VM's host, fixed addresses usable and unique, MACs unique, trunks. */
export function checkNics(
  spec: Spec,
  netIdx: Map<string, number>,
  vmIdx: Map<string, number>,
  plans: Map<string, SubnetPlan>,
  lab: LabPlan | undefined,
  add: Add,
) {
  const knownHosts = new Set(spec.hosts.map((h) => h.name));
  const netList = spec.networks.map((n) => n.name).join(', ') || 'none defined';
  // Fixed addresses are unique per nat/isolated network; all bridge networks share the physical LAN.
  const ips = new Map<string, string>();
  const macs = new Map<string, string>();
  const reaches = (net: NetworkSpec, vmHost: string) => networkHosts(spec, net).includes(vmHost);
  spec.vms.forEach((vm, vi) => {
    vm.nics.forEach((nic, ni) => {
      const base = `vms[${vi}].nics[${ni}]`;
      // A duplicate VM name is reported once already; its derived MACs would only repeat that.
      const mac = nic.mac ?? (vmIdx.get(vm.name) === vi ? derivedMac(vm.name, ni) : undefined);
      const firstMac = mac === undefined ? undefined : macs.get(mac);
      if (mac === undefined) {
        // nothing to compare
      } else if (firstMac !== undefined)
        add(
          `${base}.mac`,
          nic.mac !== undefined
            ? `MAC ${mac} is already used by ${firstMac}; every NIC needs its own MAC (or leave mac out)`
            : // Derived MACs hold 24 bits of a hash: two are likely to meet once a spec has thousands of NICs.
              `the MAC derived for this NIC from its VM's name and index, ${mac}, is already used by ${firstMac}; give one of them a mac of its own`,
        );
      else macs.set(mac, base);

      if (nic.allowedAddresses?.length && (nic.trunk !== undefined || nic.portSecurity === false))
        add(
          `${base}.allowedAddresses`,
          nic.trunk !== undefined
            ? 'a trunk port is not filtered, so it needs no allowedAddresses; remove them'
            : 'portSecurity: false lets every address out already; remove allowedAddresses or portSecurity: false',
        );
      if (nic.trunk !== undefined) {
        if (nic.network !== undefined)
          add(
            `${base}.trunk`,
            'give either network (an access port) or trunk (a list of vlan networks), not both',
          );
        checkTrunk(spec, vm.name, vm.host, base, nic.trunk, netIdx, netList, knownHosts, add);
        if (nic.ip !== undefined)
          add(
            `${base}.ip`,
            'a trunk port has no single address; remove ip and configure addresses in the guest on its VLAN interfaces',
          );
        return;
      }
      if (nic.network === undefined) {
        add(`${base}.network`, 'is required: give network, or trunk: [vlan networks] for a trunk port');
        return;
      }
      const idx = netIdx.get(nic.network);
      if (idx === undefined) {
        add(`${base}.network`, `unknown network "${nic.network}" (networks: ${netList})`);
        return;
      }
      const net = spec.networks[idx]!;
      // An unknown host is reported once on the VM or network already.
      if (isMultiHost(net)) {
        if (knownHosts.has(vm.host) && !reaches(net, vm.host))
          add(
            `${base}.network`,
            `network "${net.name}" does not reach host "${vm.host}" where VM "${vm.name}" runs (its hosts: ${networkHosts(spec, net).join(', ')}); add "${vm.host}" to networks[${idx}].hosts or move the VM`,
          );
      } else if (net.host !== vm.host && knownHosts.has(vm.host) && knownHosts.has(net.host)) {
        add(
          `${base}.network`,
          `network "${net.name}" is on host "${net.host}" but VM "${vm.name}" is on host "${vm.host}"; networks span one host, so put the VM on "${net.host}" or use a network of "${vm.host}"`,
        );
      }
      if (nic.ip === undefined) return;
      const ip = parseIpv4(nic.ip);
      if (ip === undefined) return;
      const path = `${base}.ip`;
      if (net.mode === 'bridge') {
        if (lab) {
          const lanText = spec.lab?.lan.cidr ?? '';
          const err = addressProblem(ip, lab.lan, lanText);
          if (err) add(path, `${err} (the lab LAN that bridge network "${net.name}" joins)`);
          else if (ip === lab.gateway) add(path, `${nic.ip} is the lab LAN gateway; pick another address`);
          else if (lab.addresses.has(ip))
            add(path, `${nic.ip} is already used by lab machine ${lab.addresses.get(ip)}`);
          else if (lab.dhcp && ip >= lab.dhcp.start && ip <= lab.dhcp.end)
            add(
              path,
              `${nic.ip} collides with the lab DHCP range ${formatRange(lab.dhcp)}; pick an address outside it`,
            );
        }
      } else {
        const plan = plans.get(net.name);
        const cidrText = net.cidr;
        if (plan && cidrText !== undefined) {
          const err = addressProblem(ip, plan.cidr, cidrText);
          if (err) add(path, `${err} (network "${net.name}")`);
          else if (ip === plan.gateway)
            add(path, `${nic.ip} is the gateway of network "${net.name}"; pick another address`);
          else if (ip >= plan.dhcp.start && ip <= plan.dhcp.end)
            add(
              path,
              `${nic.ip} collides with the DHCP range ${formatRange(plan.dhcp)} of network "${net.name}"; pick an address outside it`,
            );
        } else if (cidrText !== undefined) {
          const c = parseCidr(cidrText);
          const err = c && addressProblem(ip, c, cidrText);
          if (err) add(path, `${err} (network "${net.name}")`);
        }
      }
      const key = net.mode === 'bridge' ? `lan\0${ip}` : `${net.name}\0${ip}`;
      const first = ips.get(key);
      if (first !== undefined) add(path, `address ${nic.ip} is already used by ${first}`);
      else ips.set(key, path);
    });
  });
}

/** A trunk port: distinct, known vlan networks of one segment, backend ovs, all reaching the VM's host. */
export function checkTrunk(
  spec: Spec,
  vmName: string,
  vmHost: string,
  base: string,
  trunk: string[],
  netIdx: Map<string, number>,
  netList: string,
  knownHosts: Set<string>,
  add: Add,
) {
  const seen = new Map<string, number>();
  let segment: { name: string; k: number; net: string } | undefined;
  trunk.forEach((member, k) => {
    const path = `${base}.trunk[${k}]`;
    const dup = seen.get(member);
    if (dup !== undefined) {
      add(path, `network "${member}" is listed twice (already at ${base}.trunk[${dup}]); list each once`);
      return;
    }
    seen.set(member, k);
    const idx = netIdx.get(member);
    if (idx === undefined) {
      add(path, `unknown network "${member}" (networks: ${netList})`);
      return;
    }
    const net = spec.networks[idx]!;
    if (net.mode !== 'vlan') {
      add(
        path,
        `network "${member}" is mode ${net.mode}; a trunk port carries vlan networks only (use an access NIC { network: ${member} } instead)`,
      );
      return;
    }
    if (net.backend !== 'ovs')
      add(
        path,
        `vlan network "${member}" uses backend ${net.backend}; trunk ports need backend: ovs on every member network (set networks[${idx}].backend: ovs)`,
      );
    if (segment === undefined) segment = { name: net.segment, k, net: member };
    else if (segment.name !== net.segment)
      add(
        path,
        `vlan network "${member}" is on segment ${net.segment} but "${segment.net}" (${base}.trunk[${segment.k}]) is on segment ${segment.name}; a trunk port carries one segment`,
      );
    if (knownHosts.has(vmHost) && !networkHosts(spec, net).includes(vmHost))
      add(
        path,
        `network "${member}" does not reach host "${vmHost}" where VM "${vmName}" runs; add "${vmHost}" to networks[${idx}].hosts or move the VM`,
      );
  });
}

/** Port forwards: host ports unique per host, target VMs known, with a NIC on the network and a fixed ip. */
export function checkForwards(spec: Spec, vmIdx: Map<string, number>, add: Add) {
  const used = new Map<string, string>();
  spec.networks.forEach((n, i) => {
    if (n.mode !== 'nat') return;
    n.forwards.forEach((f, k) => {
      const base = `networks[${i}].forwards[${k}]`;
      const key = `${n.host}\0${f.protocol}\0${f.hostPort}`;
      const first = used.get(key);
      if (first !== undefined)
        add(
          `${base}.hostPort`,
          `${f.protocol} port ${f.hostPort} on host "${n.host}" is already forwarded by ${first}`,
        );
      else used.set(key, base);

      const vi = vmIdx.get(f.vm);
      if (vi === undefined) {
        add(`${base}.vm`, `unknown VM "${f.vm}"`);
        return;
      }
      const vm = spec.vms[vi]!;
      const nics = vm.nics.map((nic, ni) => ({ nic, ni })).filter(({ nic }) => nic.network === n.name);
      if (nics.length === 0) {
        add(`${base}.vm`, `VM "${f.vm}" has no NIC on network "${n.name}"; add one or forward to another VM`);
        return;
      }
      if (!nics.some(({ nic }) => nic.ip !== undefined)) {
        add(
          `${base}.vm`,
          `give vms[${vi}].nics[${nics[0]!.ni}] a fixed ip so the forward has a stable target`,
        );
      }
    });
  });
}
