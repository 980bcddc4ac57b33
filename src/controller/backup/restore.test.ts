import { describe, expect, it } from 'vitest';
import type { Manifest } from '../../shared/backup.js';
import type { VmConfig } from '../../shared/model.js';
import { derivedMac } from '../../spec/net.js';
import type { Spec } from '../../spec/schema.js';
import { newVmConfig } from './restore.js';

describe('restore as a new VM', () => {
  it("gives the copy none of the source's addresses: neither its fixed one nor its DHCP reservation", () => {
    const nic = { network: 'natnet', backend: 'linux', bridge: 'vlb-natnet', mtu: 1500 } as const;
    const source: VmConfig = {
      name: 'web1',
      cpus: 1,
      memoryMiB: 256,
      image: { kind: 'test-guest' },
      disks: [],
      nics: [
        { ...nic, tap: 'vlt-web1-0', mac: derivedMac('web1', 0), reservedIp: '10.10.0.5' },
        {
          ...nic,
          tap: 'vlt-web1-1',
          mac: derivedMac('web1', 1),
          staticIp: { address: '10.10.0.6', prefixLength: 24 },
        },
      ],
      state: 'running',
    };
    // No --network: the copy keeps the source's networks (the spec is not consulted).
    const manifest = { id: 'web1@20261201T020000Z', disks: [] } as unknown as Manifest;
    const { config } = newVmConfig({} as Spec, source, manifest, 'copy', 'h1');
    expect(config.nics).toHaveLength(2);
    for (const [i, n] of config.nics.entries()) {
      expect(n.mac).toBe(derivedMac('copy', i));
      expect(n).not.toHaveProperty('reservedIp');
      expect(n).not.toHaveProperty('staticIp');
    }
  });
});
