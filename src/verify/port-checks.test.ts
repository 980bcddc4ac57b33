import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadSpecFile } from '../spec/load.js';
import { SecurityGroupSchema } from '../spec/schema.js';
import { type Endpoint, endpointsOf } from './expect.js';
import { PORT_CHECK_PORTS_MAX, PORT_CHECKS_MAX, portChecksOf } from './port-checks.js';
import { type GroupContext, groupContextOf } from './security-groups.js';

const example = fileURLToPath(new URL('../../examples/security-groups.yaml', import.meta.url));

function plan(listens: (vm: string) => boolean = () => true) {
  const spec = loadSpecFile(example);
  const endpoints = endpointsOf(spec, {});
  const addresses: Record<string, string> = {
    web1: '10.10.0.10',
    app1: '192.168.50.101',
    front1: '192.168.50.102',
  };
  for (const e of endpoints) if (e.kind === 'vm') e.address = addresses[e.vm];
  return portChecksOf(endpoints, [], groupContextOf(spec, endpoints), listens);
}

const key = (c: ReturnType<typeof plan>['checks'][number]) =>
  `${c.src.id}->${c.dst.id}:${c.port} ${c.expected ? 'allow' : 'block'}`;

describe('security-group port checks of examples/security-groups.yaml', () => {
  it('probes each rule port and one unruled port of every NIC with groups, from what the topology lets reach it', () => {
    const p = plan();
    expect(p.checks.map(key).sort()).toEqual(
      [
        // web1 (nat): only its host and its network reach it; the host comes from the gateway address.
        'host1->web1:80 allow',
        'host1->web1:9 block',
        // app1 (app, ssh): 8080 from web members on its L2 (front1, whose egress allows it), 22 from pc1 only.
        'host1->app1:8080 block',
        'host1->app1:22 block',
        'host1->app1:9 block',
        'pc1->app1:8080 block',
        'pc1->app1:22 allow',
        'pc1->app1:9 block',
        'web1->app1:8080 block',
        'web1->app1:22 block',
        'web1->app1:9 block',
        'front1->app1:8080 allow',
        'front1->app1:22 block',
        'front1->app1:9 block',
        // front1 (web, locked): tcp 80 from anywhere on its side of the router.
        'host1->front1:80 allow',
        'host1->front1:9 block',
        'pc1->front1:80 allow',
        'pc1->front1:9 block',
        'web1->front1:80 allow',
        'web1->front1:9 block',
        'app1->front1:80 allow',
        'app1->front1:9 block',
      ].sort(),
    );
    expect(p.notes).toEqual([]);
    expect(p.leftOut).toBe(0);
    const listeners = Object.fromEntries([...p.listeners].map(([e, ports]) => [e.id, ports]));
    expect(listeners).toEqual({ web1: [80, 9], app1: [8080, 22, 9], front1: [80, 9] });
  });

  it('names the deciding rule, and marks the unruled probe', () => {
    const p = plan();
    const c = p.checks.find((x) => x.src.id === 'front1' && x.dst.id === 'app1' && x.port === 22)!;
    expect(c.rule).toBe('no egress rule of web, locked allows tcp 22 to 192.168.50.101');
    expect(p.checks.filter((x) => x.unruled).every((x) => x.port === 9 && !x.expected)).toBe(true);
  });

  it('leaves out NICs whose guest cannot run a listener, saying so', () => {
    const p = plan((vm) => vm !== 'app1');
    expect(p.checks.some((c) => c.dst.id === 'app1')).toBe(false);
    expect(p.notes).toEqual([
      'app1: not port-checked (only the test guest runs the listeners the checks need)',
    ]);
  });

  it('caps the checks of one verify, counting what it left out', () => {
    // 40 peers x (10 rule ports, 8 probed, + 1 unruled) = 360 checks wanted.
    const ports = Array.from({ length: 10 }, (_, i) => 1000 + i);
    const ctx: GroupContext = {
      groups: new Map([['g', SecurityGroupSchema.parse({ name: 'g', rules: [{ protocol: 'tcp', ports }] })]]),
      hostAddress: new Map(),
      gatewayAddress: new Map(),
    };
    const dst: Endpoint = {
      id: 'd',
      kind: 'vm',
      vm: 'd',
      host: 'h1',
      network: 'lan',
      mode: 'bridge',
      mac: '',
      address: '192.168.50.100',
      groups: ['g'],
    };
    const peers: Endpoint[] = Array.from({ length: 40 }, (_, i) => ({
      id: `p${i}`,
      kind: 'peer',
      ns: `ns${i}`,
      address: `192.168.50.${i + 1}`,
    }));
    const p = portChecksOf([dst, ...peers], [], ctx, () => true);
    expect(p.checks).toHaveLength(PORT_CHECKS_MAX);
    expect(p.leftOut).toBe(40 * (PORT_CHECK_PORTS_MAX + 1) - PORT_CHECKS_MAX);
    expect(p.notes).toEqual([
      'd: 10 rule ports, the first 8 checked (1008, 1009 not)',
      `${p.leftOut} port check(s) left out (at most ${PORT_CHECKS_MAX} per verify)`,
    ]);
  });
});
