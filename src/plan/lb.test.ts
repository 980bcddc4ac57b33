import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { ObservedLb } from '../shared/lb.js';
import { loadSpec } from '../spec/load.js';
import { planChanges } from './diff.js';
import { formatStep } from './format.js';
import { lbConfigHash, planLoadBalancers, resolveLoadBalancers } from './lb.js';
import { resolveSpec } from './resolve.js';
import type { Step } from './steps.js';

const spec = loadSpec(
  readFileSync(fileURLToPath(new URL('../../examples/lb.yaml', import.meta.url)), 'utf8'),
);

describe('load balancers in the plan', () => {
  const desired = resolveLoadBalancers(spec);

  it('resolves one config per LB host: own address and priority, the others as peers, backends by address', () => {
    expect(Object.keys(desired).sort()).toEqual(['host1', 'host2']);
    const [h1] = desired.host1!;
    const [h2] = desired.host2!;
    expect(h1).toMatchObject({
      name: 'web',
      network: 'app',
      bridge: 'vlb-app',
      mtu: 1450,
      prefix: 24,
      gateway: '10.30.0.1',
      vip: '10.30.0.50',
      address: '10.30.0.51',
      priority: 150,
      peers: ['10.30.0.52'],
      frontends: [{ port: 80, protocol: 'http', backendPort: 80 }],
      backends: [
        { vm: 'web1', address: '10.30.0.11' },
        { vm: 'web2', address: '10.30.0.12' },
      ],
      healthCheck: { intervalMs: 500, rise: 2, fall: 2, path: '/' },
    });
    expect(h2).toMatchObject({ address: '10.30.0.52', priority: 140, peers: ['10.30.0.51'], vrid: h1!.vrid });
  });

  const observed = (over: Partial<ObservedLb> = {}): ObservedLb => ({
    name: 'web',
    configHash: lbConfigHash(desired.host1![0]!),
    haproxy: true,
    keepalived: true,
    holdsVip: true,
    problems: [],
    ...over,
  });
  const plan = (seen: ObservedLb[], want = desired.host1!) => {
    const steps: Step[] = [];
    const unchanged: string[] = [];
    planLoadBalancers('host1', want, seen, steps, unchanged);
    return { steps, unchanged };
  };

  it('creates a missing LB, leaves a sound one, repairs a broken one, updates a changed one', () => {
    expect(plan([]).steps.map((s) => s.kind)).toEqual(['lb.create']);
    expect(plan([observed()])).toEqual({ steps: [], unchanged: ['load balancer web on host1'] });
    const broken = plan([observed({ haproxy: false, problems: ['HAProxy is not running'] })]).steps;
    expect(broken).toMatchObject([{ kind: 'lb.update', reason: 'repair: HAProxy is not running' }]);
    expect(plan([observed({ configHash: 'old' })]).steps).toMatchObject([
      { kind: 'lb.update', reason: 'configuration changed' },
    ]);
  });

  it('deletes an LB the spec no longer gives the host', () => {
    expect(plan([observed()], []).steps).toEqual([
      { kind: 'lb.delete', host: 'host1', name: 'web', reason: 'not in the spec' },
    ]);
  });

  it('orders LB creation after the networks and before VMs start; deletion before networks go', () => {
    const create = planChanges(resolveSpec(spec), [], undefined, undefined, desired).steps.map(formatStep);
    const lb = create.findIndex((l) => l.startsWith('+ load balancer web on host1'));
    expect(lb).toBeGreaterThan(create.findIndex((l) => l.startsWith('+ network app on host2')));
    expect(lb).toBeLessThan(create.findIndex((l) => l.startsWith('+ vm web1')));
    expect(create[lb]).toBe('+ load balancer web on host1 (VIP 10.30.0.50 on app, http/80 -> web1, web2)');
    const report = (host: string) => ({
      host,
      agentVersion: '0',
      capabilities: {
        accelerator: 'tcg' as const,
        acceleratorReason: '',
        cpus: 2,
        memoryMiB: 2048,
        network: {},
        backends: ['linux' as const],
      },
      networks: [{ name: 'app', bridge: 'vlb-app', configHash: 'x', problems: [] }],
      vms: [],
      loadBalancers: [observed()],
    });
    const empty = { host1: { networks: [], vms: [] }, host2: { networks: [], vms: [] } };
    const destroy = planChanges(empty, [report('host1'), report('host2')], undefined, undefined, {}).steps;
    const kinds = destroy.map((s) => `${s.kind} ${s.host}`);
    expect(kinds).toEqual([
      'lb.delete host1',
      'lb.delete host2',
      'network.delete host1',
      'network.delete host2',
    ]);
  });
});
