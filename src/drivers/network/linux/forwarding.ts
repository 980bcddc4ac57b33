// IPv4 forwarding of the namespace the driver manages. A nat network turns it on; nothing turns it
// off again, since other software on the host may rely on it.
import { readFile } from 'node:fs/promises';
import type { Runner } from '../../../exec/runner.js';

/** Whether net.ipv4.ip_forward is on in `netns` (undefined = this process's own namespace). */
export async function ipForwarding(runner: Runner, netns: string | undefined): Promise<boolean> {
  // In its own namespace (the agent's case) /proc answers without spawning sysctl.
  if (netns === undefined) return (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim() === '1';
  const r = await runner.run(['sysctl', '-n', 'net.ipv4.ip_forward'], { netns });
  return r.stdout.trim() === '1';
}

/** Turns net.ipv4.ip_forward on in `netns`. */
export async function enableIpForwarding(runner: Runner, netns: string | undefined): Promise<void> {
  await runner.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'], { netns });
}
