import { defineConfig } from 'vitest/config';
import { gracefulStop } from './test/helpers/graceful-stop.js';

// Unit tests run in parallel. Integration tests build namespaces and labs and boot real QEMU guests, so each of their
// two lanes runs one file at a time; scripts/test-integration.sh runs the lanes side by side in two vitest processes
// (2-core machine):
// - `integration`: every file that boots guests or starts a lab's storage servers (tgtd control sockets, rpcbind and
//   ganesha's files are machine-wide), and any new file unless it is listed below;
// - `integration-light`: files that boot no guest and start no lab storage machine (namespaces, OVS, nftables, etcd,
//   tgtd on their own control port, qemu-nbd), which mostly wait on daemons and timers.
// Both first rebuild dist/ when it is stale: tests that run the real `vmlink` (bin/vmlink.js) run the compiled code.
export const LIGHT = [
  'agent-lease',
  'apply-failure',
  'backup-cluster',
  'backup-store',
  'commit-confirm',
  'controllers',
  'coordination',
  'doctor',
  'fleet-sim',
  'ha-manager',
  'heartbeat',
  'lab-cluster',
  'lb',
  'nbd',
  'network-linux',
  'network-ovs',
  'network-vxlan',
  'port-listeners',
  'secrets-cli',
  'storage-api',
  'storage-fence',
  'storage-iscsi',
  'store-etcd',
  'tls',
  'tuning',
].map((name) => `test/integration/${name}.int.test.ts`);

// SIGUSR2 cancels a run and lets afterAll clean up (test/helpers/int-run.ts sends it on Ctrl-C).
const plugins = [gracefulStop()];

const integration = {
  fileParallelism: false,
  testTimeout: 240_000,
  hookTimeout: 240_000,
  globalSetup: ['test/helpers/build-dist.ts'],
};

export default defineConfig({
  test: {
    projects: [
      {
        plugins,
        test: {
          name: 'unit',
          include: ['src/**/*.test.ts', 'web/**/*.test.ts', 'test/helpers/**/*.test.ts'],
          // One worker process for every file (vitest runs one at a time on 2 CPUs anyway): a fresh process per file
          // spent ~2/3 of the suite's time importing the same modules again (measured 2 Dec 2026: 1357 -> 647 s wall,
          // 424 -> 176 s CPU under the same load). Files share the process: a test restores what it changes
          // (process.env, fake timers, spies) and keeps its state in its own module.
          isolate: false,
          testTimeout: 20_000,
          // vitest's 10 s default timed out a beforeAll making a LUKS image with the real qemu-img under load.
          hookTimeout: 20_000,
          globalSetup: ['test/helpers/build-dist.ts'],
        },
      },
      {
        plugins,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.int.test.ts'],
          exclude: LIGHT,
          ...integration,
        },
      },
      { plugins, test: { name: 'integration-light', include: LIGHT, ...integration } },
    ],
  },
});
