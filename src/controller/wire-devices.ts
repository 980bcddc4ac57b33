// Wire types of `GET /v1/devices` and `GET /v1/hosts/:name/devices`: each host's device inventory, or why not.
import { z } from 'zod';
import { DeviceInventorySchema } from '../agent/wire-storage.js';

/** One host's devices as its agent read them, or the error that kept them from the answer. */
export const HostDevicesSchema = z.object({
  host: z.string(),
  devices: DeviceInventorySchema.optional(),
  error: z.string().optional(),
});
export type HostDevices = z.infer<typeof HostDevicesSchema>;

export const HostDevicesListSchema = z.object({ hosts: z.array(HostDevicesSchema) });
export type HostDevicesList = z.infer<typeof HostDevicesListSchema>;
