import { expect, it } from 'vitest';
import { z } from 'zod';
import { GUEST_EXEC_ARGS_MAX, GUEST_EXEC_INPUT_MAX } from '../shared/limits.js';
import type { HostStatus, VmView } from './controller.js';
import type { VerifyResult } from './verify.js';
import { StatusSchema, VerifyResultSchema, VmExecBodySchema, VmListSchema } from './wire.js';

/** `T` with every optional field required, all the way down: a fixture of it must name every field there is. */
type Full<T> = T extends (infer U)[] ? Full<U>[] : T extends object ? { [K in keyof T]-?: Full<T[K]> } : T;

// Fixtures typed Full<...> of what the controller returns: a field added there fails to compile here until it is
// named, and then the round trip fails until the API contract carries it (clients drop fields it does not know).
const verify: Full<VerifyResult> = {
  endpoints: [
    { id: 'web1', kind: 'vm', address: '10.10.0.10', host: 'host1', network: 'natnet', nic: 'eth0' },
  ],
  cells: [
    {
      from: 'web1',
      to: 'pc1',
      kind: 'port',
      protocol: 'tcp',
      port: 22,
      expected: false,
      rule: 'no ingress rule of ssh allows tcp 22 from 192.168.50.10',
      blockedBy: 'security-group',
      observed: false,
      rttMs: 0.4,
      detail: 'timed out',
      unmeasured: false,
      ok: true,
    },
  ],
  pmtu: [
    {
      network: 'natnet',
      from: 'web1',
      to: 'app1',
      expectedMtu: 1500,
      measuredMtu: 1500,
      ok: true,
      detail: 'ok',
    },
  ],
  routers: [{ vm: 'r1', host: 'host1', networks: ['a', 'b'] }],
  storage: [
    {
      check: 'io',
      host: 'host1',
      vm: 'web1',
      disk: 'data',
      volume: 'nas/web1-data',
      target: 'nfs://192.168.50.30/vmlink/nas/web1-data.qcow2',
      ok: true,
      detail: '/dev/vdb (64 MiB): last 4 KiB read, written back and read again',
      unmeasured: false,
      ms: 812,
    },
  ],
  loadBalancers: [
    {
      lb: 'web',
      check: 'backend',
      from: 'host1',
      to: 'web2',
      port: 80,
      detail: 'taken out: DOWN in HAProxy on host1; directly: Connection refused',
      takenOut: true,
      unmeasured: false,
      ok: true,
    },
  ],
  notes: ['front1: not port-checked'],
  ok: true,
  mismatches: 0,
  measuredAt: '2026-01-01T00:00:00.000Z',
  durationMs: 1234,
};

const vm: Full<VmView> = {
  name: 'web1',
  host: 'host1',
  desired: 'running',
  state: 'running',
  cpus: 1,
  memoryMiB: 256,
  cpu: { pin: [1], quota: '50%', vcpus: [{ vcpu: 0, thread: 4321, cpus: '1' }], cpuMax: '50000 100000' },
  networks: ['natnet'],
  reportAgeMs: 1200,
  nics: [
    {
      network: 'natnet',
      trunk: ['natnet'],
      tap: 'vlt-web1-0',
      mac: '52:54:00:12:34:56',
      addresses: ['10.0.0.5/24'],
      addressSource: 'guest-agent',
    },
  ],
  problems: [],
};

// The host report inside is covered by agent/wire.test.ts; here, the fields status adds around it.
const host: Full<Omit<HostStatus, 'report'>> = {
  name: 'host1',
  address: 'unix:///run/vmlink/lab/x/host1.sock',
  reachable: false,
  reportAgeMs: 0,
  state: 'unreachable',
  lastSeen: '2026-01-01T00:00:00.000Z',
  missed: 3,
  error: 'missed 3 heartbeats',
  tuningDrift: ['ecn 2 -> 1'],
};

/** What a client receives: encoded by the server's serializer, sent as JSON, parsed by the client. */
const roundTrip = <S extends z.ZodType>(schema: S, value: unknown) =>
  schema.parse(JSON.parse(JSON.stringify(z.encode(schema, value as z.output<S>))));

it('carries every field of verify results, VM views and host status through the API contract', () => {
  expect(roundTrip(VerifyResultSchema, verify)).toEqual(verify);
  expect(roundTrip(VmListSchema, [vm])).toEqual([vm]);
  const status = { spec: { source: 'site.yaml', appliedAt: '2026-01-01T00:00:00.000Z' }, hosts: [host] };
  expect(roundTrip(StatusSchema, status)).toEqual(status);
});

it('bounds a guest command as the agent does: too many arguments or too much input is refused at the API', () => {
  expect(VmExecBodySchema.safeParse({ argv: ['true'] }).success).toBe(true);
  expect(VmExecBodySchema.safeParse({ argv: Array(GUEST_EXEC_ARGS_MAX + 1).fill('x') }).success).toBe(false);
  expect(
    VmExecBodySchema.safeParse({ argv: ['cat'], input: 'x'.repeat(GUEST_EXEC_INPUT_MAX + 1) }).success,
  ).toBe(false);
});
