import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { ObservedLb } from '../shared/lb.js';
import type { ProbeResult } from '../shared/results.js';
import { loadSpec } from '../spec/load.js';
import { endpointsOf, routersOf } from './expect.js';
import {
  answeredBy,
  judgeLb,
  LB_PROBES_MAX,
  type LbHostAnswer,
  type LbMeasured,
  lbNotes,
  lbPlansOf,
  lbProbesOf,
} from './lb.js';
import { groupContextOf } from './security-groups.js';

const spec = loadSpec(readFileSync(new URL('../../examples/lb.yaml', import.meta.url), 'utf8'), 'lb.yaml');
const endpoints = endpointsOf(spec, { web1: ['52:54:00:00:00:01'], web2: ['52:54:00:00:00:02'] });
const plan = () => {
  const { plans, notes } = lbPlansOf(spec, endpoints, routersOf(spec), groupContextOf(spec, endpoints));
  expect(notes).toEqual([]);
  expect(plans).toHaveLength(1);
  return plans[0]!;
};

const page = (vm: string): ProbeResult => ({ reachable: true, rttMs: 1, detail: `vmlink-guest ${vm}` });
const refused: ProbeResult = { reachable: false, detail: 'Connection refused' };
const lbOn = (o: Partial<ObservedLb> = {}): ObservedLb => ({
  name: 'web',
  configHash: 'abc',
  haproxy: true,
  keepalived: true,
  holdsVip: false,
  backendsUp: ['web1', 'web2'],
  problems: [],
  ...o,
});
const answers = (h1: Partial<ObservedLb>, h2: Partial<ObservedLb> = {}): LbHostAnswer[] => [
  { host: 'host1', lb: lbOn(h1) },
  { host: 'host2', lb: lbOn(h2) },
];
const measured = (vip: ProbeResult[], direct: Record<string, ProbeResult>): LbMeasured => ({
  vip: new Map([['host1', new Map([[80, vip]])]]),
  direct: new Map(Object.entries(direct)),
});
const byCheck = (cells: ReturnType<typeof judgeLb>, check: string) => cells.filter((c) => c.check === check);

describe('lbPlansOf', () => {
  it('probes the VIP of a private overlay from its gateway host (peers cannot reach it), and each backend directly', () => {
    const p = plan();
    expect(p.sources.map((s) => s.id)).toEqual(['host1']);
    expect(p.requests).toBe(4);
    const probes = lbProbesOf(p, 2000);
    expect(probes.filter((x) => x.port === 80).map((x) => x.probe)).toEqual(
      Array(4).fill({ kind: 'http', target: '10.30.0.50', port: 80, timeoutMs: 2000 }),
    );
    expect(probes.filter((x) => x.backend).map((x) => [x.backend, x.probe.target])).toEqual([
      ['web1', '10.30.0.11'],
      ['web2', '10.30.0.12'],
    ]);
  });
});

describe('judgeLb', () => {
  it('is green when one host holds the VIP, both run, and answers come from UP backends', () => {
    const cells = judgeLb(
      plan(),
      answers({ holdsVip: true }),
      measured([page('web1'), page('web2'), page('web1'), page('web2')], {
        web1: page('web1'),
        web2: page('web2'),
      }),
    );
    expect(cells.every((c) => c.ok)).toBe(true);
    expect(byCheck(cells, 'vip')[0]!.detail).toBe('held by host1');
    expect(byCheck(cells, 'reach')[0]!.detail).toBe('4 of 4 requests answered');
    expect(byCheck(cells, 'healthy')[0]!.detail).toBe('answered by web1, web2, all UP in HAProxy on host1');
    expect(byCheck(cells, 'host')).toHaveLength(2);
    expect(lbNotes(cells)).toEqual([]);
  });

  it('names a backend HAProxy took out, and stays green when the backend is really down', () => {
    const cells = judgeLb(
      plan(),
      answers({ holdsVip: true, backendsUp: ['web1'] }),
      measured([page('web1'), page('web1'), page('web1'), page('web1')], {
        web1: page('web1'),
        web2: refused,
      }),
    );
    expect(cells.every((c) => c.ok)).toBe(true);
    const web2 = byCheck(cells, 'backend').find((c) => c.to === 'web2')!;
    expect(web2.takenOut).toBe(true);
    expect(web2.detail).toBe('taken out: DOWN in HAProxy on host1; directly: Connection refused');
    expect(lbNotes(cells)).toEqual([
      'load balancer web: backend web2 is taken out (DOWN in HAProxy on host1; directly: Connection refused)',
    ]);
  });

  it('fails when a DOWN backend answers through the VIP, or HAProxy disagrees with the backend itself', () => {
    const cells = judgeLb(
      plan(),
      answers({ holdsVip: true, backendsUp: ['web1'] }),
      measured([page('web1'), page('web2')], { web1: refused, web2: page('web2') }),
    );
    expect(byCheck(cells, 'healthy')[0]).toMatchObject({
      ok: false,
      detail: 'answered by web2, not UP in HAProxy on host1',
    });
    const be = byCheck(cells, 'backend');
    expect(be.find((c) => c.to === 'web1')).toMatchObject({ ok: false });
    expect(be.find((c) => c.to === 'web1')!.detail).toMatch(
      /^UP in HAProxy on host1 but does not answer directly/,
    );
    expect(be.find((c) => c.to === 'web2')).toMatchObject({
      ok: false,
      detail: 'DOWN in HAProxy on host1 but answers directly (vmlink-guest web2)',
    });
  });

  it('fails on two VIP holders, on none, and on a host whose HAProxy is gone', () => {
    const two = judgeLb(
      plan(),
      answers({ holdsVip: true }, { holdsVip: true }),
      measured([page('web1')], {}),
    );
    expect(byCheck(two, 'vip')[0]).toMatchObject({ ok: false, detail: 'held by host1 and host2 at once' });
    const none = judgeLb(
      plan(),
      answers({}, { haproxy: false, problems: ['HAProxy is not running'] }),
      measured([refused], {}),
    );
    expect(byCheck(none, 'vip')[0]).toMatchObject({ ok: false, detail: 'no host holds it' });
    expect(byCheck(none, 'host').find((c) => c.to === 'host2')).toMatchObject({
      ok: false,
      detail: 'HAProxy is not running',
    });
    expect(byCheck(none, 'reach')[0]).toMatchObject({
      ok: false,
      detail: '0 of 1 requests answered (Connection refused)',
    });
  });

  it('marks what it could not measure: a silent host, no stats, unattributed answers, probes that did not run', () => {
    const cells = judgeLb(
      plan(),
      [
        { host: 'host1', error: 'its agent did not answer: timeout' },
        { host: 'host2', lb: lbOn({ backendsUp: undefined }) },
      ],
      measured([{ reachable: true, detail: 'hello' }], {}),
    );
    expect(byCheck(cells, 'vip')[0]).toMatchObject({ ok: false, unmeasured: true });
    expect(byCheck(cells, 'host').find((c) => c.to === 'host1')).toMatchObject({
      ok: false,
      unmeasured: true,
    });
    expect(byCheck(cells, 'healthy')[0]).toMatchObject({ ok: true, unmeasured: true });
    expect(byCheck(cells, 'backend').every((c) => c.unmeasured && !c.ok)).toBe(true);
    const none = judgeLb(plan(), answers({ holdsVip: true }), { vip: new Map(), direct: new Map() });
    expect(byCheck(none, 'reach')[0]).toMatchObject({ ok: false, unmeasured: true });
  });

  it('reads the test guest page only, strictly', () => {
    expect(answeredBy(page('web1'))).toBe('web1');
    expect(answeredBy({ reachable: true, detail: 'vmlink-guest web1; rm -rf' })).toBeUndefined();
    expect(answeredBy({ reachable: false, detail: 'vmlink-guest web1' })).toBeUndefined();
  });

  it('keeps a verify within LB_PROBES_MAX probes, naming the frontends left out', () => {
    const many = {
      ...spec,
      loadBalancers: Array.from({ length: 20 }, (_, i) => ({
        ...spec.loadBalancers[0]!,
        name: `web${i}`,
        frontends: Array.from({ length: 4 }, (_, k) => ({ port: 80 + k, protocol: 'http' as const })),
      })),
    };
    const { plans, notes } = lbPlansOf(many, endpoints, routersOf(many), groupContextOf(many, endpoints));
    const probes = plans.flatMap((p) => lbProbesOf(p, 2000));
    expect(probes.length).toBeLessThanOrEqual(LB_PROBES_MAX);
    expect(probes.length).toBeGreaterThan(LB_PROBES_MAX - 20);
    expect(notes.length).toBeGreaterThan(0);
    expect(notes.at(-1)).toMatch(
      /^load balancer web19: frontend\(s\) 80, 81, 82, 83 not probed \(at most 256/,
    );
  });
});
