import { describe, expect, it } from 'vitest';
import { RecordingRunner } from '../exec/runner.js';
import { observeForDoctor, parseBridgeLinks } from './doctor-observe.js';
import { DoctorObservationsSchema } from './wire-doctor.js';

// Captured here from iproute2 6.1 (`bridge -json link show`): a looped veth pair on an STP bridge.
const BRIDGE_LINKS =
  '[{"ifindex":3,"link":"d0","ifname":"d1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"master":"b0","state":"blocking","priority":32,"cost":2},{"ifindex":4,"link":"d1","ifname":"d0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"master":"b0","state":"forwarding","priority":32,"cost":2}]\n';
// `ip -json -details link show` of a host with a vxlan port on a bridge (trimmed to the fields the parser reads).
const LINKS = JSON.stringify([
  { ifindex: 1, ifname: 'lo', mtu: 65536, flags: ['LOOPBACK', 'UP'], operstate: 'UNKNOWN' },
  { ifindex: 2, ifname: 'eth0', mtu: 1400, flags: ['UP'], operstate: 'UP' },
  {
    ifindex: 5,
    ifname: 'vlb-ov',
    mtu: 1450,
    flags: ['UP'],
    operstate: 'UP',
    linkinfo: { info_kind: 'bridge' },
  },
  {
    ifindex: 6,
    ifname: 'vlx-ov',
    mtu: 1450,
    master: 'vlb-ov',
    flags: ['UP'],
    operstate: 'UP',
    linkinfo: { info_kind: 'vxlan', info_data: { id: 1401, port: 4789, learning: false } },
  },
]);

describe('agent doctor observations', () => {
  it('parses bridge ports and their STP states; skips entries without a master or with odd names', () => {
    expect(parseBridgeLinks(BRIDGE_LINKS)).toEqual([
      { bridge: 'b0', port: 'd1', state: 'blocking' },
      { bridge: 'b0', port: 'd0', state: 'forwarding' },
    ]);
    expect(
      parseBridgeLinks(
        '[{"ifname":"x","state":"forwarding"},{"ifname":"a b","master":"b0","state":"forwarding"},{"ifname":"y","master":"b0","state":"weird"}]',
      ),
    ).toEqual([]);
    expect(parseBridgeLinks('')).toEqual([]);
    expect(() => parseBridgeLinks('{"a":1}')).toThrow(/not a JSON array/);
  });

  it('observes bridge ports and links; a failing source is named, not fatal; the answer fits its schema', async () => {
    const runner = new RecordingRunner()
      .on(['bridge', '-json', 'link', 'show'], { stdout: BRIDGE_LINKS })
      .on(['ip'], { stdout: LINKS });
    const ovs = {
      pid: async () => 123,
      ovs: { ports: async () => Promise.reject(new Error('ovs-vsctl: database connection failed\nmore')) },
    } as never;
    const o = await observeForDoctor({ runner, ovs, now: () => 42 });
    expect(DoctorObservationsSchema.parse(o)).toEqual(o);
    expect(o.at).toBe(42);
    expect(o.bridgePorts).toHaveLength(2);
    expect(o.links).toEqual([
      { name: 'eth0', mtu: 1400 },
      { name: 'vlb-ov', mtu: 1450, kind: 'bridge' },
      { name: 'vlx-ov', mtu: 1450, kind: 'vxlan', master: 'vlb-ov' },
    ]);
    expect(o.errors).toEqual(['OVS ports: ovs-vsctl: database connection failed']);
  });
});
