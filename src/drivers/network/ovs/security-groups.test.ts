import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SecurityGroupConfig } from '../../../shared/security-groups.js';
import type { SecurityGroupStore } from '../security-group-store.js';
import { ovsSecurityGroupStore } from './security-group-state.js';
import { applySecurityGroup, removeSecurityGroup } from './security-groups.js';

const web = (port: number): SecurityGroupConfig => ({
  name: 'web',
  rules: [{ direction: 'ingress', protocol: 'tcp', ports: [{ from: port, to: port }] }],
  memberMacs: ['52:54:00:00:00:0a'],
});

describe('ovs security group operations', () => {
  let dir = '';
  let groups: SecurityGroupStore;
  // What the flow tables were rebuilt from, each time (the group records the rebuild saw).
  let rebuilds: string[][];
  let failNext = false;
  const host = () => ({
    groups,
    syncAllFlows: async () => {
      rebuilds.push((await groups.readAll()).map((g) => `${g.config.name}:${g.configHash}`));
      if (failNext) {
        failNext = false;
        throw new Error('ovs-ofctl: bundle refused');
      }
    },
  });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-ovs-sg-'));
    groups = ovsSecurityGroupStore(dir);
    rebuilds = [];
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('records, rebuilds, and on a failed rebuild puts the previous record and tables back', async () => {
    await applySecurityGroup(host(), web(80), 'h1');
    expect(rebuilds).toEqual([['web:h1']]);
    failNext = true;
    await expect(applySecurityGroup(host(), web(81), 'h2')).rejects.toThrow(/bundle refused/);
    expect(rebuilds.slice(1)).toEqual([['web:h2'], ['web:h1']]);
    expect(await groups.read('web')).toEqual({ config: web(80), configHash: 'h1' });
    // A new group whose rebuild fails is not left recorded.
    failNext = true;
    await expect(
      applySecurityGroup(host(), { name: 'db', rules: [], memberMacs: [] }, 'd1'),
    ).rejects.toThrow();
    expect((await groups.readAll()).map((g) => g.config.name)).toEqual(['web']);
  });

  it('refuses a group past the flow budget before recording it', async () => {
    const macs = Array.from(
      { length: 8000 },
      (_, i) =>
        `52:54:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
    );
    await applySecurityGroup(host(), { name: 'many', rules: [], memberMacs: macs }, 'm1');
    const wide: SecurityGroupConfig = {
      name: 'wide',
      // 8000 members x 30 port matches per rule: 240,000 flows on each port.
      rules: [{ direction: 'ingress', protocol: 'tcp', ports: [{ from: 1, to: 65534 }], group: 'many' }],
      memberMacs: [],
    };
    await expect(applySecurityGroup(host(), wide, 'w1')).rejects.toThrow(/would make 240000 flows per port/);
    expect(await groups.read('wide')).toBeUndefined();
  });

  it('removes a group and rebuilds; a missing one changes nothing', async () => {
    await applySecurityGroup(host(), web(80), 'h1');
    await removeSecurityGroup(host(), 'web');
    await removeSecurityGroup(host(), 'web');
    expect(rebuilds).toEqual([['web:h1'], []]);
    expect(await groups.readAll()).toEqual([]);
  });
});
