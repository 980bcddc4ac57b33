import { describe, expect, it } from 'vitest';
import { loadSpec } from '../../spec/load.js';
import { clusterMembersOf } from './members.js';

describe('cluster membership', () => {
  it("lists compute hosts with their agents' mutual-TLS address (the spec's, else the underlay address), not storage hosts", () => {
    const spec = loadSpec(
      `version: 1
cluster: { store: etcd, heartbeatSeconds: 3, endpoints: ["https://10.0.0.9:2379"] }
hosts:
  - { name: h1, agent: "https://10.0.0.1:7443" }
  - { name: h2, agent: "unix:///run/h2.sock", address: 10.0.0.2 }
  - { name: h3, agent: "unix:///run/h3.sock" }
  - { name: san, agent: "https://10.0.0.8:7443", role: storage }
`,
      't',
    );
    expect(clusterMembersOf(spec)).toEqual({
      heartbeatSeconds: 3,
      hosts: [
        { name: 'h1', agent: 'https://10.0.0.1:7443' },
        { name: 'h2', agent: 'https://10.0.0.2:7443' },
      ],
    });
  });
});
