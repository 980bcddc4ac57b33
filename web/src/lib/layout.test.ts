import { describe, expect, it } from 'vitest';
import { layoutTopology } from './layout.js';
import { hostLinkKey, vmLinkKey } from './matrix.js';
import type { VmItem } from './types.js';

const vm = (name: string, host: string, networks: string[]): VmItem => ({
  name,
  host,
  desired: 'running',
  state: 'running',
  networks,
  nics: networks.map((n) => ({ network: n, tap: 't', mac: 'm', addresses: [] })),
  problems: [],
});

describe('topology layout', () => {
  const input = {
    hosts: [
      { name: 'h1', address: '', reachable: true, state: 'up' as const },
      { name: 'h2', address: '', reachable: false, state: 'unreachable' as const },
    ],
    networks: [
      { name: 'lan', mode: 'isolated', backend: 'linux', hosts: ['h1', 'h2'] },
      { name: 'dmz', mode: 'nat', backend: 'linux', hosts: ['h2'] },
    ],
    vms: [vm('web', 'h1', ['lan']), vm('db', 'h2', ['lan', 'dmz']), vm('x', 'h3', [])],
    links: new Map([
      [vmLinkKey('db', 'dmz'), 'mismatch' as const],
      [hostLinkKey('h1', 'lan'), 'ok' as const],
    ]),
  };

  it('places every VM inside its host, hosts side by side, networks above them', () => {
    const t = layoutTopology(input, 1200);
    // h3 is named only by a VM: it still gets a box.
    expect(t.hosts.map((h) => h.name)).toEqual(['h1', 'h2', 'h3']);
    for (const v of t.vms) {
      const box = t.hosts.find((h) => h.name === v.host)!.box;
      expect(v.box.x).toBeGreaterThanOrEqual(box.x);
      expect(v.box.x + v.box.w).toBeLessThanOrEqual(box.x + box.w);
      expect(v.box.y + v.box.h).toBeLessThanOrEqual(box.y + box.h);
    }
    const [a, b, c] = t.hosts.map((h) => h.box);
    expect(a!.x + a!.w).toBeLessThan(b!.x);
    expect(b!.x + b!.w).toBeLessThan(c!.x);
    expect(c!.x + c!.w).toBeLessThanOrEqual(1200);
    expect(t.networks.every((n) => n.y + n.r < a!.y)).toBe(true);
  });

  it('draws one link per VM NIC network and per network host, coloured from the matrix', () => {
    const t = layoutTopology(input, 1200);
    const byKey = new Map(t.links.map((l) => [l.key, l.status]));
    expect(t.links).toHaveLength(3 + 3);
    expect(byKey.get(vmLinkKey('db', 'dmz'))).toBe('mismatch');
    expect(byKey.get(hostLinkKey('h1', 'lan'))).toBe('ok');
    expect(byKey.get(vmLinkKey('web', 'lan'))).toBe('none');
  });

  it('grows host boxes in rows when many VMs share a host', () => {
    const many = Array.from({ length: 20 }, (_, i) => vm(`v${i}`, 'h1', ['lan']));
    const t = layoutTopology({ ...input, vms: many }, 800);
    const rows = new Set(t.vms.map((v) => v.box.y));
    expect(rows.size).toBeGreaterThan(1);
    const h1 = t.hosts.find((h) => h.name === 'h1')!.box;
    expect(Math.max(...t.vms.map((v) => v.box.y + v.box.h))).toBeLessThanOrEqual(h1.y + h1.h);
    expect(t.height).toBeGreaterThanOrEqual(h1.y + h1.h);
  });
});
