// The HA lab that the drills' lab test and bench/ha-failover.ts both use: 3 hosts, a 3-member etcd, two cluster
// controllers, and two protected guests on a vxlan network, on LAN 192.168.<n>.0/24 (each user its own `n`).

/** The spec of the HA lab `lab` on LAN 192.168.`n`.0/24 (VNI 1300+n, overlay 10.`n`.0.0/24). */
export function haLabSpec(lab: string, n: number): string {
  const net = `192.168.${n}`;
  return `
version: 1
cluster: { store: etcd, heartbeatSeconds: 5 }
hosts: [{ name: host1 }, { name: host2 }, { name: host3 }]
networks:
  - { name: app, mode: vxlan, vni: ${1300 + n}, cidr: 10.${n}.0.0/24 }
vms:
  - { name: web, host: host1, memoryMiB: 128, ha: { state: started }, nics: [{ network: app, ip: 10.${n}.0.11 }] }
  - { name: db, host: host2, memoryMiB: 128, ha: { state: started }, nics: [{ network: app, ip: 10.${n}.0.12 }] }
lab:
  name: ${lab}
  lan: { cidr: ${net}.0/24, gateway: ${net}.1 }
  upstream: { cidr: 203.0.113.0/24, address: 203.0.113.${n} }
  hosts:
    - { name: host1, address: ${net}.11 }
    - { name: host2, address: ${net}.12 }
    - { name: host3, address: ${net}.13 }
  etcd:
    - { name: etcd1, address: ${net}.21 }
    - { name: etcd2, address: ${net}.22 }
    - { name: etcd3, address: ${net}.23 }
  controllers:
    - { name: ctl1, address: ${net}.31 }
    - { name: ctl2, address: ${net}.32 }
`;
}
