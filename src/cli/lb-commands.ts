// `vmlink lb list [--json]`: load balancers of the applied spec with what their hosts report.
import type { Command } from 'commander';
import { LbListSchema } from '../controller/wire-lb.js';
import { type Api, emit } from './io.js';
import { renderLbList } from './render-lb.js';

/** `vmlink lb`. */
export function addLbCommands(program: Command, api: Api): void {
  const lb = program
    .command('lb')
    .description('load balancers (HAProxy + Keepalived, docs/load-balancers.md)');
  lb.command('list')
    .description(
      'each load balancer: its VIP and the host holding it, backends UP or DOWN in HAProxy, HAProxy and Keepalived per host',
    )
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api().get('/v1/load-balancers', LbListSchema);
      emit(!!o.json, r, () => renderLbList(r));
    });
}
