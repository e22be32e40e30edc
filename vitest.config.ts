import { defineConfig } from 'vitest/config';

// Integration and end-to-end tests boot qemu guests and run mmdebstrap; they share
// the package-stage cache, so files run one at a time and tests get generous timeouts.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 15 * 60_000,
    hookTimeout: 15 * 60_000,
    reporters: ['default'],
  },
});
