// A namespace with one bridge and tap devices on it: the network a driver-level test gives its QEMU guests.
import type { Runner } from '../../src/exec/runner.js';

/** (Re)creates namespace `ns` holding bridge `bridge` (up) and the taps `taps` (vnet_hdr, up) enslaved to it. */
export async function createBridgedTaps(
  runner: Runner,
  ns: string,
  bridge: string,
  taps: readonly string[],
): Promise<void> {
  await runner.run(['ip', 'netns', 'del', ns], { allowFailure: true });
  await runner.run(['ip', 'netns', 'add', ns]);
  const lines = [`link add ${bridge} type bridge`, `link set ${bridge} up`];
  for (const tap of taps)
    lines.push(
      `tuntap add dev ${tap} mode tap vnet_hdr`,
      `link set ${tap} master ${bridge}`,
      `link set ${tap} up`,
    );
  for (const line of lines) await runner.run(['ip', '-n', ns, ...line.split(' ')]);
}
