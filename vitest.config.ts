import { defineConfig } from 'vitest/config';

// Unit tests run in parallel; integration tests boot real QEMU guests and build
// namespaces, so they run one file at a time (2-core machine). Both first rebuild dist/ when it is stale: tests
// that run the real `vmlink` (bin/vmlink.js) run the compiled code.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['src/**/*.test.ts'],
          testTimeout: 20_000,
          globalSetup: ['test/helpers/build-dist.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.int.test.ts'],
          fileParallelism: false,
          testTimeout: 240_000,
          hookTimeout: 240_000,
          globalSetup: ['test/helpers/build-dist.ts'],
        },
      },
    ],
  },
});
