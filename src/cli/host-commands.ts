// `vmlink host join|rotate-cert`: a host's credential with the controller's CA.
import type { Command } from 'commander';
import { JoinTokenSchema, RotatedSchema } from '../controller/wire.js';
import { HostDevicesListSchema } from '../controller/wire-devices.js';
import { VmlinkError } from '../shared/errors.js';
import { addMaintenanceCommand } from './ha-commands.js';
import { type Api, emit } from './io.js';
import { renderHostDevices } from './render-devices.js';

/** Seconds in a duration such as `90s`, `15m`, `1h`, `30d` (a bare number is seconds); `flag` names it in errors. */
export function parseDuration(text: string, flag = '--ttl'): number {
  const m = text.trim().match(/^(\d+)\s*([smhd]?)$/);
  if (!m)
    throw new VmlinkError('invalid', `${flag} must be a duration such as 90s, 15m, 1h or 30d, got ${text}`);
  const unit = m[2] as '' | 's' | 'm' | 'h' | 'd';
  return Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86_400 } as const)[unit];
}

/** `vmlink host ...`. */
export function addHostCommands(program: Command, api: Api): void {
  const host = program
    .command('host')
    .description("hosts: join a new host, rotate a host's certificate, list a host's devices, maintenance");
  addMaintenanceCommand(host, api);
  host
    .command('join')
    .description(
      "print a one-time, expiring token for NAME's agent to join (run `vmlink agent --join URL --join-token TOKEN` there)",
    )
    .argument('<name>', 'host name as in the spec')
    .option('--ttl <duration>', 'how long the token is valid (at most 24h)', '1h')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { ttl: string; json?: boolean }) => {
      const r = await api().post(
        `/v1/hosts/${name}/join-token`,
        { ttlSeconds: parseDuration(o.ttl) },
        JoinTokenSchema,
      );
      emit(!!o.json, r, () =>
        [
          `Join token for ${r.host} (single use, valid until ${r.expiresAt}):`,
          `  ${r.token}`,
          `CA fingerprint (SHA-256, pinned by the token): ${r.caFingerprint}`,
          'On the host:',
          `  vmlink agent --host ${r.host} --join https://CONTROLLER:PORT --join-token TOKEN --listen-tcp https://ADDR:7443 ...`,
        ].join('\n'),
      );
    });
  host
    .command('rotate-cert')
    .description("give NAME's agent a new key and certificate (it keeps serving); the old one is revoked")
    .argument('<name>', 'host name as in the spec')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const r = await api().post(`/v1/hosts/${name}/rotate-cert`, {}, RotatedSchema);
      emit(
        !!o.json,
        r,
        () =>
          `${r.host}: new certificate serial ${r.serial} (valid until ${r.notAfter}); serial ${r.previousSerial ?? '?'} revoked`,
      );
    });
  host
    .command('devices')
    .description(
      'PCI devices (IDs, names, class, driver, IOMMU group, NUMA node, SR-IOV, vGPU types, what the host uses) and USB devices of HOST, or of every host',
    )
    .argument('[host]', 'host name as in the spec (default: every host)')
    .option('--json', 'machine-readable output')
    .action(async (name: string | undefined, o: { json?: boolean }) => {
      const r = await api().get(
        name === undefined ? '/v1/devices' : `/v1/hosts/${encodeURIComponent(name)}/devices`,
        HostDevicesListSchema,
      );
      emit(!!o.json, r, () => renderHostDevices(r));
    });
}
