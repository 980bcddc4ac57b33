// Alert rules (docs/observability.md) against the catalog and the rest of the spec: names unique, each `expr` parses
// and names a metric and labels of the catalog, `{{label}}` in a summary is a label the rule's instances carry, a
// threshold can be reached, and a `scale` action names a volume of the spec whose pool can grow it.
import { POOL_FEATURE_REASONS, POOL_FEATURES } from '../../shared/storage.js';
import { AlertExprError, parseAlertExpr } from '../alert-expr.js';
import type { Spec } from '../schema.js';
import { specVolumeSize, vmVolumeUses } from '../storage.js';
import { type Add, dupes } from './common.js';

/** Metrics whose value is a share (0..1): a threshold above 1 never holds. */
const SHARES = new Set([
  'vmlink_host_cpu_utilization',
  'vmlink_host_memory_utilization',
  'vmlink_pool_utilization',
]);

export function checkAlerts(spec: Spec, add: Add) {
  dupes(
    spec.alerts,
    (r) => r.name,
    (i) => `alerts[${i}].name`,
    'alert rule name',
    add,
  );
  spec.alerts.forEach((rule, i) => {
    const at = `alerts[${i}]`;
    let labels: readonly string[] = [];
    try {
      const expr = parseAlertExpr(rule.expr);
      labels = expr.labels;
      const share = SHARES.has(expr.metric) && expr.aggregation?.fn !== 'sum';
      if (share && rule.threshold > 1 && (rule.op === '>' || rule.op === '>='))
        add(
          `${at}.threshold`,
          `${expr.metric} is a share from 0 to 1, so ${rule.op} ${rule.threshold} never holds: write ${rule.threshold / 100} for ${rule.threshold} %`,
        );
    } catch (e) {
      if (!(e instanceof AlertExprError)) throw e;
      add(`${at}.expr`, e.message);
      labels = [];
    }
    for (const m of (rule.summary ?? '').matchAll(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g)) {
      const name = m[1]!;
      if (name !== 'value' && name !== 'threshold' && !labels.includes(name))
        add(
          `${at}.summary`,
          `{{${name}}} is not a label of this rule's instances (their labels: ${labels.join(', ') || 'none'}; also {{value}}, {{threshold}})`,
        );
    }
    rule.actions.forEach((a, j) => {
      if (a.type === 'scale') checkScale(spec, a, `${at}.actions[${j}]`, add);
    });
  });
}

function checkScale(
  spec: Spec,
  a: { volume: string; growByMiB: number; maxMiB: number },
  at: string,
  add: Add,
) {
  const [poolName, name] = a.volume.split('/') as [string, string];
  const pool = spec.pools.find((p) => p.name === poolName);
  if (!pool) {
    add(
      `${at}.volume`,
      `unknown pool "${poolName}" (pools: ${spec.pools.map((p) => p.name).join(', ') || 'none defined'})`,
    );
    return;
  }
  const uses = spec.vms.flatMap((vm, vi) => vmVolumeUses(vm, vi).map((u) => ({ ...u, vm: vm.name })));
  const made = uses.find((u) => u.kind === 'made' && u.disk && u.pool === poolName && u.volume === name);
  const named = spec.volumes.some((v) => v.pool === poolName && v.name === name);
  if (!named && !made) {
    const known = [
      ...spec.volumes.filter((v) => v.pool === poolName).map((v) => v.name),
      ...uses.filter((u) => u.kind === 'made' && u.disk && u.pool === poolName).map((u) => u.volume),
    ];
    add(
      `${at}.volume`,
      `pool "${poolName}" has no volume "${name}" in the spec (its volumes: ${known.join(', ') || 'none'}); scale grows a volume of volumes: or a VM disk's volume`,
    );
    return;
  }
  const size = named ? specVolumeSize(spec, poolName, name) : made?.disk?.sizeMiB;
  if (size !== undefined && a.maxMiB <= size)
    add(
      `${at}.maxMiB`,
      `volume ${a.volume} is ${size} MiB already, so maxMiB ${a.maxMiB} lets it never grow`,
    );
  // A pool that cannot grow a volume a running VM holds open can never scale one a VM of the spec uses.
  const user = uses.find((u) => u.pool === poolName && u.volume === name && u.kind !== 'template');
  if (user && !POOL_FEATURES[pool.type].onlineResize)
    add(
      `${at}.volume`,
      `volume ${a.volume} is used by VM ${user.vm}, and ${POOL_FEATURE_REASONS[pool.type]?.onlineResize ?? `${pool.type} pools cannot grow a volume a VM has open`}: scale cannot grow it while the VM runs (use a dir or nfs pool)`,
    );
}
