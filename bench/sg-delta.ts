// Security groups on the linux backend: what one group's rule change costs on a host with 200 ports in 20 groups,
// as vmlink applies it (one transaction of that group's own chains) vs reloading the whole bridge table (every port
// guard, port chain and group). Runs in its own network namespace (no devices needed: nftables keys ports by name).
//   npx tsx bench/sg-delta.ts [--repeat N]
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { ensurePortsScript } from '../src/drivers/network/linux/port-guard.js';
import { ensureGroupScript } from '../src/drivers/network/linux/security-groups.js';
import type { PortConfig } from '../src/drivers/network/types.js';
import { Nft } from '../src/exec/nft.js';
import { SystemRunner } from '../src/exec/runner.js';
import type { SecurityGroupConfig } from '../src/shared/security-groups.js';
import { deleteNamespace, median, onCleanup, round } from './lib.js';

const PORTS = 200;
const GROUPS = 20;
const repeat = Number(process.argv[process.argv.indexOf('--repeat') + 1]) || 7;

const mac = (i: number) =>
  `52:54:00:5a:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;
const ports: PortConfig[] = Array.from({ length: PORTS }, (_, i) => ({
  tap: `vlt-bench${i}`,
  bridge: 'vlb-bench',
  mtu: 1500,
  security: { mac: mac(i), addresses: [`10.50.${i >> 8}.${(i & 0xff) + 1}`] },
  // Each port in its own group and the next one: 20 members per group.
  securityGroups: [`g${i % GROUPS}`, `g${(i + 1) % GROUPS}`],
}));
const group = (g: number, variant = 0): SecurityGroupConfig => ({
  name: `g${g}`,
  rules: [
    {
      direction: 'ingress',
      protocol: 'tcp',
      ports: [
        { from: 22, to: 22 },
        { from: 8000, to: 8000 + variant },
      ],
    },
    { direction: 'ingress', protocol: 'icmp', group: `g${(g + 1) % GROUPS}` },
    { direction: 'ingress', protocol: 'udp', ports: [{ from: 53, to: 53 }], cidr: '10.0.0.0/8' },
    { direction: 'egress', protocol: 'tcp', ports: [{ from: 443, to: 443 }] },
    { direction: 'egress', protocol: 'any', group: `g${g}` },
  ],
  memberMacs: ports
    .filter((p) => p.securityGroups!.includes(`g${g}`))
    .map((p) => p.security!.mac)
    .sort(),
});

/** The whole bridge table in one transaction: deleted and rebuilt with every group and port. */
function wholeTable(variant: number): string {
  const groups = Array.from({ length: GROUPS }, (_, g) => ensureGroupScript(group(g, g === 0 ? variant : 0)));
  return ['table bridge vmlink {}', 'delete table bridge vmlink', ...groups, ensurePortsScript(ports)].join(
    '\n',
  );
}

async function time(nft: Nft, script: string): Promise<number> {
  const t0 = performance.now();
  await nft.load(script);
  return performance.now() - t0;
}

async function main(): Promise<void> {
  const ns = `vlbench-sg-${randomBytes(3).toString('hex')}`;
  const runner = new SystemRunner();
  await runner.run(['ip', 'netns', 'add', ns]);
  const cleanup = onCleanup(`namespace ${ns}`, () => deleteNamespace(ns));
  try {
    const nft = new Nft(runner, ns);
    await nft.load(wholeTable(0));
    const whole: number[] = [];
    const delta: number[] = [];
    let wholeScript = '';
    let deltaScript = '';
    for (let i = 1; i <= repeat; i++) {
      // The same change both ways: group g0 opens one more port.
      const next = group(0, i);
      const prev = group(0, i - 1);
      deltaScript = ensureGroupScript(next, prev);
      wholeScript = wholeTable(i);
      // Alternate the order so that background noise hits both.
      if (i % 2) {
        delta.push(await time(nft, deltaScript));
        whole.push(await time(nft, wholeScript));
      } else {
        whole.push(await time(nft, wholeScript));
        delta.push(await time(nft, deltaScript));
      }
    }
    const lines = (s: string) => s.split('\n').filter(Boolean).length;
    const row = (label: string, ms: number[], s: string) =>
      `${label.padEnd(28)} ${String(round(median(ms), 1)).padStart(8)} ms ${String(lines(s)).padStart(7)} lines ${String(s.length).padStart(8)} bytes`;
    console.log(
      `security group rule change, ${PORTS} ports in ${GROUPS} groups, median of ${repeat} (nft -f in a namespace)`,
    );
    console.log(row('whole bridge table reload', whole, wholeScript));
    console.log(row('vmlink: one group delta', delta, deltaScript));
    console.log(
      `ratio whole / delta: ${round(median(whole) / median(delta), 1)}x time, ${round(wholeScript.length / deltaScript.length, 1)}x bytes`,
    );
  } finally {
    await cleanup();
  }
}

await main();
