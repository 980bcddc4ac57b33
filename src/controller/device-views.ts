// `vmlink host devices`: each host's PCI and USB devices, as its agent reads them now.
import { NotFoundError } from '../shared/errors.js';
import type { Spec } from '../spec/schema.js';
import type { AgentFactory } from './hosts.js';
import type { HostDevices, HostDevicesList } from './wire-devices.js';

/**
 * The devices of `host` (or of every host of `spec`), asked of each agent at once. A host that does not answer,
 * or whose agent predates devices, is listed with the reason instead, so one host down hides no other.
 */
export async function hostDevices(
  spec: Spec | undefined,
  agents: AgentFactory,
  host?: string,
): Promise<HostDevicesList> {
  const names = spec?.hosts.map((h) => h.name) ?? [];
  if (host !== undefined && !names.includes(host)) throw new NotFoundError('host', host);
  const hosts = await Promise.all(
    (host === undefined ? names : [host]).map(async (name): Promise<HostDevices> => {
      const agent = agents(spec!, name);
      try {
        // An agent client without the devices call (a test fake) still has the inventory in its report.
        const devices = agent.devices ? await agent.devices() : (await agent.report()).devices;
        return devices
          ? { host: name, devices }
          : { host: name, error: 'its agent does not report devices (upgrade it)' };
      } catch (e) {
        return { host: name, error: (e as Error).message.split('\n')[0]! };
      }
    }),
  );
  return { hosts };
}
