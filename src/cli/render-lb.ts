// Load balancers in the CLI's words: verify's LB checks and `vmlink lb list`.
import type { Status, VerifyResult } from '../controller/wire.js';
import type { LbView } from '../controller/wire-lb.js';
import { table } from './render.js';

const CHECK = {
  vip: 'VIP held once',
  host: 'LB host',
  reach: 'VIP reached',
  healthy: 'UP backends only',
  backend: 'backend',
} as const;

/** Renders the LB checks of a verify result (empty string when there are none). */
export function renderLbChecks(r: Pick<VerifyResult, 'loadBalancers'>): string {
  const rows = r.loadBalancers ?? [];
  if (!rows.length) return '';
  return [
    "Load balancers (one host holds the VIP; HAProxy and Keepalived run; the VIP answers on each frontend, from backends HAProxy marks UP only; HAProxy's view of each backend matches a direct probe):",
    table(
      ['lb', 'check', 'from', 'to', 'result'],
      rows.map((c) => [
        c.lb,
        CHECK[c.check],
        c.from ?? '',
        c.to,
        c.ok
          ? `${c.takenOut ? 'ok, TAKEN OUT' : 'ok'}: ${c.detail}`
          : `${c.unmeasured ? 'FAIL:unmeasured' : 'FAIL'}: ${c.detail}`,
      ]),
    ),
  ].join('\n');
}

/** The lines of verify's mismatch list for failed LB checks. */
export function lbMismatchLines(r: Pick<VerifyResult, 'loadBalancers'>): string[] {
  return (r.loadBalancers ?? [])
    .filter((c) => !c.ok)
    .map(
      (c) =>
        `  load balancer ${c.lb} ${CHECK[c.check]}${c.from ? ` from ${c.from}` : ''} -> ${c.to}: ${c.detail}`,
    );
}

const yes = (v: boolean | undefined, what: string) => (v === undefined ? '?' : v ? what : `NO ${what}`);

/** `vmlink lb list`: one block per LB (VIP, holder, backends, frontends) and a row per LB host. */
export function renderLbList(lbs: readonly LbView[]): string {
  if (!lbs.length) return 'No load balancers in the applied spec.';
  return lbs
    .map((lb) => {
      const holder =
        lb.vipHolders.length === 1
          ? `held by ${lb.vipHolders[0]}`
          : lb.vipHolders.length
            ? `HELD BY ${lb.vipHolders.length} HOSTS: ${lb.vipHolders.join(', ')}`
            : 'HELD BY NO HOST';
      const backends = lb.backends
        .map((b) => `${b.vm}${b.address ? ` ${b.address}` : ''} ${b.state}`)
        .join(', ');
      return [
        `${lb.name}: VIP ${lb.vip} on ${lb.network}, ${holder}`,
        `  frontends: ${lb.frontends.map((f) => `${f.port}/${f.protocol}${f.backendPort !== f.port ? ` -> ${f.backendPort}` : ''}`).join(', ')}`,
        `  backends (HAProxy on ${lb.statsFrom ?? 'no host answered'}): ${backends}`,
        table(
          ['host', 'address', 'priority', 'VIP', 'HAProxy', 'Keepalived', 'problems'],
          lb.hosts.map((h) => [
            h.host,
            h.address,
            h.priority,
            h.holdsVip ? 'holds' : h.reachable ? '' : '?',
            yes(h.haproxy, 'running'),
            yes(h.keepalived, 'running'),
            h.problems.join('; '),
          ]),
        )
          .split('\n')
          .map((l) => `  ${l}`)
          .join('\n'),
      ].join('\n');
    })
    .join('\n\n');
}

/** `vmlink status`'s load-balancer lines from the hosts' reports: per LB the VIP holder, backends UP, problems. */
export function renderLbStatus(hosts: Status['hosts']): string[] {
  const names = [...new Set(hosts.flatMap((h) => (h.report?.loadBalancers ?? []).map((l) => l.name)))].sort();
  return names.map((name) => {
    const seen = hosts.flatMap((h) => {
      const lb = h.report?.loadBalancers?.find((l) => l.name === name);
      return lb ? [{ host: h.name, lb }] : [];
    });
    const holders = seen.filter((s) => s.lb.holdsVip).map((s) => s.host);
    const stats = seen.find((s) => s.lb.holdsVip && s.lb.backendsUp) ?? seen.find((s) => s.lb.backendsUp);
    const problems = seen.flatMap((s) => s.lb.problems.map((p) => `${s.host}: ${p}`));
    return `load balancer ${name}: VIP ${holders.length === 1 ? `on ${holders[0]}` : holders.length ? `ON ${holders.join(' AND ')}` : 'ON NO HOST'}; backends UP: ${stats?.lb.backendsUp?.join(', ') || (stats ? 'none' : '?')}${problems.length ? `; ${problems.join('; ')}` : ''}`;
  });
}
