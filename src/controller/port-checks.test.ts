import { describe, expect, it } from 'vitest';
import type { Endpoint, VmEndpoint } from '../verify/expect.js';
import type { PortCheck } from '../verify/port-checks.js';
import { type GuestExec, portCell, startListeners, stopListeners } from './port-checks.js';

const nic = (vm: string, network = 'lan'): VmEndpoint => ({
  id: vm,
  kind: 'vm',
  vm,
  host: 'host1',
  network,
  mode: 'bridge',
  mac: '',
  address: '192.168.50.101',
  groups: ['app'],
});
const pc1: Endpoint = { id: 'pc1', kind: 'peer', ns: 'x', address: '192.168.50.20' };
const check = (port: number, expected: boolean): PortCheck => ({
  src: pc1,
  dst: nic('app1'),
  protocol: 'tcp',
  port,
  expected,
  rule: expected
    ? 'allowed in by ssh: ingress tcp 22 from 192.168.50.20/32'
    : 'no ingress rule of app allows tcp 9',
  unruled: !expected,
});

describe('port-check listeners through the guest agent', () => {
  it('starts one script per VM for the union of its NICs ports, and believes only the ports it asked about', async () => {
    const calls: Array<{ vm: string; host: string; script: string }> = [];
    const exec: GuestExec = async (vm, host, argv) => {
      calls.push({ vm, host, script: argv[2]! });
      // A hostile guest claims an extra port and garbles a line.
      return {
        exitCode: 0,
        stdout: 'listen 22 1\nlisten 9 0\nlisten 8080 1\nlisten 443 1\nlisten 22 1 x\n',
        stderr: '',
      };
    };
    const a = nic('app1');
    const b = nic('app1', 'natnet');
    const l = await startListeners(
      new Map([
        [a, [8080, 22]],
        [b, [22, 9]],
      ]),
      exec,
    );
    expect(calls).toHaveLength(1);
    expect(calls[0]!.vm).toBe('app1');
    expect(calls[0]!.script).toContain('for p in 8080 22 9; do');
    expect([...l.get('app1')!.up].sort()).toEqual([22, 8080]);
  });

  it('a guest that does not answer gets no listener, with the reason; stopping reports what it could not stop', async () => {
    const exec: GuestExec = async () => {
      throw new Error('guest agent not connected\nmore');
    };
    const listeners = new Map([[nic('app1'), [22]]]);
    const l = await startListeners(listeners, exec);
    expect(l.get('app1')).toEqual({ up: new Set(), why: 'guest agent not connected' });
    expect(await stopListeners(listeners, exec)).toEqual([
      'app1: port-check listeners not stopped (guest agent not connected\nmore)',
    ]);
  });
});

describe('port-check cells', () => {
  const up = new Map([['app1', { up: new Set([22, 9]) }]]);

  it('an answer with the destination page is reachable; a blocked port measured unreachable is an expected block', () => {
    const ok = portCell(check(22, true), { reachable: true, rttMs: 3, detail: 'vmlink-guest app1' }, up);
    expect(ok).toMatchObject({ kind: 'port', port: 22, expected: true, observed: true, ok: true });
    const blocked = portCell(check(9, false), { reachable: false, detail: 'download timed out' }, up);
    expect(blocked).toMatchObject({ observed: false, ok: true, blockedBy: 'security-group' });
    expect(blocked.rule).toBe('no ingress rule of app allows tcp 9');
    const leak = portCell(check(9, false), { reachable: true, detail: 'vmlink-guest app1' }, up);
    expect(leak.ok).toBe(false);
  });

  it('another service answering is not the destination; a port without a listener proves nothing', () => {
    const other = portCell(check(22, true), { reachable: true, detail: 'vmlink-guest front1' }, up);
    expect(other).toMatchObject({ observed: false, ok: false });
    expect(other.detail).toBe('answered by another service: vmlink-guest front1');
    const none = portCell(check(8080, true), { reachable: true, detail: 'vmlink-guest app1' }, up);
    expect(none).toMatchObject({ observed: false, unmeasured: true, ok: false });
    expect(none.detail).toBe('not measured: no listener on tcp 8080 in app1');
    // Not even an expected block passes without a listener: it would pass with the service simply absent.
    const vacuous = portCell(check(9, false), { reachable: false, detail: 'x' }, new Map());
    expect(vacuous.ok).toBe(false);
  });
});
