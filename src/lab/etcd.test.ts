import { describe, expect, it } from 'vitest';
import { LabSchema } from '../spec/schema-lab.js';
import { labControllerArgv, labControllerSockets } from './cluster.js';
import { labEtcdArgv, labEtcdDirs, labEtcdEndpoints, labEtcdLocation } from './etcd.js';
import { labNamespaces } from './names.js';

const lab = LabSchema.parse({
  name: 'ha',
  lan: { cidr: '192.168.85.0/24', gateway: '192.168.85.1' },
  upstream: { cidr: '203.0.113.0/24', address: '203.0.113.85' },
  hosts: [{ name: 'host1', address: '192.168.85.11' }],
  etcd: [
    { name: 'etcd1', address: '192.168.85.21' },
    { name: 'etcd2', address: '192.168.85.22' },
    { name: 'etcd3', address: '192.168.85.23' },
  ],
  controllers: [{ name: 'ctl1', address: '192.168.85.31' }],
});

/** The value after `flag` in `argv`. */
const arg = (argv: string[], flag: string) => argv[argv.indexOf(flag) + 1];

describe('lab etcd', () => {
  it('gives agents and controllers the members as URLs and as a store location', () => {
    expect(labEtcdEndpoints(lab)).toEqual([
      'https://192.168.85.21:2379',
      'https://192.168.85.22:2379',
      'https://192.168.85.23:2379',
    ]);
    expect(labEtcdLocation(lab)).toBe('etcd://192.168.85.21:2379,192.168.85.22:2379,192.168.85.23:2379');
  });

  it('runs each member with TLS on both ports, client and peer certificate checks, and lab timings', () => {
    const argv = labEtcdArgv(lab, lab.etcd[1]!);
    const dirs = labEtcdDirs('ha', 'etcd2');
    expect(argv[0]).toBe('etcd');
    expect(arg(argv, '--name')).toBe('etcd2');
    expect(arg(argv, '--data-dir')).toBe(dirs.data);
    expect(arg(argv, '--listen-client-urls')).toBe('https://192.168.85.22:2379');
    expect(arg(argv, '--listen-peer-urls')).toBe('https://192.168.85.22:2380');
    expect(arg(argv, '--initial-cluster')).toBe(
      'etcd1=https://192.168.85.21:2380,etcd2=https://192.168.85.22:2380,etcd3=https://192.168.85.23:2380',
    );
    expect(argv).toContain('--client-cert-auth');
    expect(argv).toContain('--peer-client-cert-auth');
    // Clients are checked against the controller's CA, peers against the lab's own peer CA.
    expect(arg(argv, '--trusted-ca-file')).toBe(`${dirs.tls}/ca.pem`);
    expect(arg(argv, '--peer-trusted-ca-file')).toBe(`${dirs.peerTls}/ca.pem`);
    expect(arg(argv, '--heartbeat-interval')).toBe('100');
    expect(arg(argv, '--election-timeout')).toBe('1000');
    expect(argv.some((a) => a.startsWith('http://'))).toBe(false);
  });

  it('gives every member and controller a namespace of the lab', () => {
    expect(labNamespaces(lab)).toEqual(
      expect.arrayContaining(['vl-ha-etcd1', 'vl-ha-etcd2', 'vl-ha-etcd3', 'vl-ha-ctl1']),
    );
  });

  it("starts cluster controllers on the lab's etcd with the shared CA and secrets key", () => {
    const argv = labControllerArgv(lab, 'ctl1', {
      pkiDir: '/var/lib/vmlink/pki',
      secretsKeyFile: '/var/lib/vmlink/secrets.key',
      heartbeatSeconds: 5,
    });
    const [sock] = labControllerSockets(lab);
    expect(sock).toMatch(/\/lab\/ha\/ctl1\.sock$/);
    // --socket is the program's option: before the command.
    expect(argv.indexOf('--socket')).toBeLessThan(argv.indexOf('daemon'));
    expect(arg(argv, '--socket')).toBe(sock);
    expect(arg(argv, '--store')).toBe(labEtcdLocation(lab));
    expect(arg(argv, '--name')).toBe('ctl1');
    expect(arg(argv, '--pki-dir')).toBe('/var/lib/vmlink/pki');
    expect(arg(argv, '--secrets-key')).toBe('/var/lib/vmlink/secrets.key');
    expect(arg(argv, '--heartbeat-ms')).toBe('5000');
  });
});
