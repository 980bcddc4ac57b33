import { describe, expect, it } from 'vitest';
import { AlertExprError, parseAlertExpr, unsafeRegexReason } from './alert-expr.js';

describe('alert expressions', () => {
  it('parses a metric, matchers and aggregations (by before or after)', () => {
    expect(parseAlertExpr('vmlink_host_cpu_utilization')).toMatchObject({
      metric: 'vmlink_host_cpu_utilization',
      matchers: [],
      labels: ['host'],
    });
    const e = parseAlertExpr(`vmlink_vm_cpu_utilization{host="h2", vm=~'web-.*', vm!="web-9",}`);
    expect(e.matchers.map((m) => [m.label, m.op, m.value])).toEqual([
      ['host', '=', 'h2'],
      ['vm', '=~', 'web-.*'],
      ['vm', '!=', 'web-9'],
    ]);
    expect(e.matchers[1]!.re!.test('web-1')).toBe(true);
    // Anchored: a regex matches the whole value.
    expect(e.matchers[1]!.re!.test('xweb-1')).toBe(false);
    expect(parseAlertExpr('max by (host) (vmlink_vm_cpu_utilization)')).toMatchObject({
      aggregation: { fn: 'max', by: ['host'] },
      labels: ['host'],
    });
    expect(parseAlertExpr('sum(vmlink_vm_memory_rss_bytes) by (host)').aggregation).toEqual({
      fn: 'sum',
      by: ['host'],
    });
    expect(parseAlertExpr('avg(vmlink_host_cpu_utilization)').labels).toEqual([]);
    expect(parseAlertExpr('vmlink_vm_running{vm=~"db\\\\d+"}').matchers[0]!.re!.test('db12')).toBe(true);
  });

  it.each([
    ['vmlink_host_cpu', /unknown metric "vmlink_host_cpu" \(did you mean vmlink_host_cpus\?\)/],
    ['vmlink_host_cpu_utilization{pool="x"}', /has no label pool \(its labels: host\)/],
    [
      'max by (vm) (vmlink_host_cpu_utilization)',
      /max by \(vm\): vmlink_host_cpu_utilization has no label vm/,
    ],
    ['vmlink_apply_duration_seconds', /is a histogram/],
    ['vmlink_host_up{host=h1}', /expected a quoted value for label host at 21/],
    ['vmlink_host_up{host="h1"', /expected "}" at the end/],
    ['vmlink_host_up{host~"h1"}', /unexpected "~" at 20/],
    ['vmlink_host_up > 1', /unexpected ">"/],
    ['max(vmlink_host_up) by (host) by (host)', /unexpected "by"|"by" given twice/],
    ['vmlink_host_up{host="h1}', /unterminated string/],
    ['vmlink_host_up{host=~"(a+)+"}', /repeats a group that itself repeats/],
    ['vmlink_host_up{host=~"(a|b)*"}', /repeats a group that itself repeats or alternates/],
    ['vmlink_host_up{host=~"(a)\\\\1"}', /backreference/],
    ['vmlink_host_up{host=~"(?=a)a"}', /lookaround/],
    ['vmlink_host_up{host=~"(?<!a)b"}', /lookaround/],
    ['vmlink_host_up{host=~"a{1,1000}"}', /repeats more than 100 times/],
    ['vmlink_host_up{host=~"a*b*c*d*"}', /more than 3 repetitions/],
    ['vmlink_host_up{host=~"[a"}', /unterminated \[/],
    ['vmlink_host_up{host=~"a)"}', /unbalanced \)/],
  ])('refuses %s', (src, message) => {
    expect(() => parseAlertExpr(src)).toThrow(AlertExprError);
    expect(() => parseAlertExpr(src)).toThrow(message);
  });

  it('refuses regexes longer than the bound', () => {
    expect(unsafeRegexReason('a'.repeat(129))).toMatch(/longer than 128/);
    expect(unsafeRegexReason('web-[0-9]+|db-(primary|replica)')).toBeUndefined();
  });

  it('an accepted regex stays fast on a hostile 128-character label value (the longest an agent may send)', () => {
    // The worst shape the checks let through: three unbounded repetitions of overlapping classes, no match.
    const re = parseAlertExpr('vmlink_host_up{host=~".*.*.*x"}').matchers[0]!.re!;
    // No timing assertion: an exponential pattern would not finish within the test's timeout at all.
    expect(re.test('a'.repeat(128))).toBe(false);
  });
});
